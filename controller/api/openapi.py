"""The OpenAPI 3.1 document the daemon serves at GET /v1/openapi.json, built from protocol.ROUTES.

Called once by the API server (controller/api/server.py). Generated from the same table the
server registers and the client sends by, so the document cannot drift from the routes (a test
compares the two). It describes paths, parameters, bodies, the error body and the streams'
content type; the documents themselves are described in docs/api.md and DESIGN §6, not as
schemas here.

Public surface:
    document(version) -> dict
"""

from __future__ import annotations

from typing import Any

from controller.protocol import ERROR_STATUS, NDJSON, ROUTES, Route

_TYPES = {bool: "boolean", int: "integer", str: "string"}
_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["type", "message"], "properties": {
        "type": {"type": "string", "enum": sorted(ERROR_STATUS)},
        "message": {"type": "string"}}}}}


def document(version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        operation = paths.setdefault(route.path, {}).get(route.method.lower())
        if operation is None:
            paths[route.path][route.method.lower()] = _operation(route)
        else:  # a second op on the same path, picked by a query parameter (watch=1)
            operation["description"] += f" With {_selected_by(route)}: {route.summary}"
            operation["parameters"] += [p for p in _parameters(route)
                                        if p not in operation["parameters"]]
            operation["responses"]["200"]["content"][NDJSON] = {"schema": {}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "domctl", "version": version,
                 "description": "The domctl controller's API, HTTP/1.1 over its Unix sockets: "
                 "domctl.sock (mode 0600) serves every route, domctl-ro.sock (0666) the GETs "
                 "only. Streams are application/x-ndjson, one JSON document per line."},
        "paths": paths,
        "components": {"schemas": {"Error": _ERROR}},
    }


def _operation(route: Route) -> dict[str, Any]:
    content: dict[str, Any] = ({NDJSON: {"schema": {}}} if route.stream
               else {"application/json": {"schema": {}}})
    operation: dict[str, Any] = {
        "operationId": _operation_id(route),
        "summary": route.op,
        "description": (f"With {_selected_by(route)}: " if route.select else "") + route.summary,
        "parameters": _parameters(route),
        "responses": {
            "200": {"description": "the result", "content": content},
            **{str(status): {"description": ", ".join(t for t, s in ERROR_STATUS.items()
                                                       if s == status),
                             "content": {"application/json": {
                                 "schema": {"$ref": "#/components/schemas/Error"}}}}
               for status in sorted(set(ERROR_STATUS.values()))},
        },
    }
    if route.method == "POST":
        operation["requestBody"] = {"required": bool(route.required), "content": {
            "application/json": {"schema": {
                "type": "object", "additionalProperties": False,
                "required": sorted(route.required),
                "properties": {key: _schema(type_) for key, type_ in route.params.items()}}}}}
    return operation


def _schema(type_: type) -> dict[str, Any]:
    if type_ is list:
        return {"type": "array", "items": {"type": "string"}, "minItems": 1}
    return {"type": _TYPES[type_]}


def _parameters(route: Route) -> list[dict[str, Any]]:
    found = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
             for name in route.path_params]
    if route.method == "GET":
        found += [{"name": key, "in": "query", "required": key in route.required,
                   "schema": _schema(type_)} for key, type_ in route.params.items()]
        found += [{"name": key, "in": "query", "required": False,
                   "schema": {"type": "string", "enum": [value]}}
                  for key, value in route.select.items()]
    return found


def _operation_id(route: Route) -> str:
    """The op, or for an op with two routes (all / one), getAll and getOne."""
    if sum(other.op == route.op for other in ROUTES) == 1:
        return route.op
    return f"{route.op}{'One' if route.path_params else 'All'}"


def _selected_by(route: Route) -> str:
    return "&".join(f"{key}={value}" for key, value in route.select.items())
