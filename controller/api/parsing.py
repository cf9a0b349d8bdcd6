"""One API request's arguments, from an HTTP request's path, query string and body to a checked
`args` dict for the route (controller/protocol.py's ROUTES).

Called by the API server (controller/api/server.py) once per request, before anything reaches
the backend: `parse_query` reads a GET's query string, `parse_body` a POST's JSON body, each
checked against the route's parameters (known names, types, no negative numbers, no empty
strings). Whatever it refuses raises `Refused`, which the server sends back as the error reply.
Kept apart from the server so the rules of a well-formed request are plain functions, without
sockets or aiohttp.

It never calls the backend and never decides who may run an op (the read-only socket's check is
the server's).

Public surface:
    Refused(type_, message)
    parse_query(route, items) -> args, parse_body(route, body) -> args
    flag(text) -> bool (a query string's boolean)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from controller.protocol import Route

_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no", "")


class Refused(Exception):
    """A request the server refuses before (or instead of) reaching the backend; `type` is one of
    protocol.ERROR_STATUS."""

    def __init__(self, type_: str, message: str) -> None:
        self.type = type_
        self.message = message
        super().__init__(message)


def flag(text: str) -> bool:
    """A boolean query parameter: 1/true/yes or 0/false/no (or empty); ValueError otherwise."""
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError(text)


def parse_query(route: Route, items: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """A GET's query parameters as typed args (`disks=1` → True, `lines=5` → 5)."""
    args: dict[str, Any] = {}
    for key, text in items:
        if key in route.select:
            continue  # the parameter that chose this route (watch=1)
        type_ = _param(route, key)
        if key in args:
            raise Refused("BadRequest", f"{_what(route)}: parameter {key!r} given twice")
        if type_ is bool:
            try:
                args[key] = flag(text)
            except ValueError:
                raise Refused("BadRequest", f"{_what(route)}: {key!r} must be 1 or 0 (true or "
                              f"false), not {text!r}") from None
        elif type_ is int:
            if not text.isdigit():
                raise Refused("BadRequest", f"{_what(route)}: {key!r} must be a whole number "
                              f"0 or more, not {text!r}")
            args[key] = int(text)
        elif not text:
            raise Refused("BadRequest", f"{_what(route)}: {key!r} must not be empty")
        else:
            args[key] = text
    return _required(route, args)


def parse_body(route: Route, body: bytes) -> dict[str, Any]:
    """A POST's JSON object body (empty: no arguments) as checked args."""
    if not body.strip():
        return _required(route, {})
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as err:
        raise Refused("BadRequest", f"{_what(route)}: the body is not JSON: {err}") from None
    if not isinstance(document, dict):
        raise Refused("BadRequest", f"{_what(route)}: the body must be a JSON object")
    args = {key: value for key, value in document.items() if value is not None}
    for key, value in args.items():
        type_ = _param(route, key)
        # bool is an int in Python, not in JSON.
        if not isinstance(value, type_) or (type_ is int and isinstance(value, bool)) or (
                isinstance(value, list) and not all(isinstance(item, str) for item in value)):
            raise Refused("BadRequest", f"{_what(route)}: {key!r} must be a "
                          f"{_JSON_TYPES[type_]}")
        if (isinstance(value, int) and value < 0) or (
                isinstance(value, str | list) and not value):
            raise Refused("BadRequest", f"{_what(route)}: {key!r} must not be "
                          f"{'negative' if type_ is int else 'empty'}")
    return _required(route, args)


_JSON_TYPES = {bool: "boolean", int: "integer", str: "string", list: "array of strings"}


def _param(route: Route, key: str) -> type:
    try:
        return route.params[key]
    except KeyError:
        known = ", ".join(sorted(route.params)) or "none"
        raise Refused("BadRequest", f"{_what(route)} has no parameter {key!r} (known: "
                      f"{known})") from None


def _required(route: Route, args: dict[str, Any]) -> dict[str, Any]:
    for key in sorted(route.required - set(args)):
        raise Refused("BadRequest", f"{_what(route)} needs {key!r}")
    return args


def _what(route: Route) -> str:
    return f"{route.method} {route.path}"
