"""One API request, from the line a client sends to a checked `(op, args)`.

Called by the API server (controller/api/server.py) once per connection, before anything
reaches the backend: `read_request` reads the single request line within the size and time
limits of ApiSettings, `parse` decodes it and checks the op and every argument against `ARGS`.
Whatever it refuses raises `Refused`, which the server sends back as the error reply.

It never writes to the connection, never calls the backend and never decides who may run an op
(the read-only socket's check is the server's).

Public surface:
    ARGS (op -> {argument: (type, required)}), Refused(type_, message)
    async read_request(reader, settings) -> bytes, parse(line) -> (op, args)
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from controller.protocol import ACTIONS
from controller.settings import ApiSettings

# op -> {argument: (type, required)}; anything else in "args" is a BadRequest.
ARGS: dict[str, dict[str, tuple[type, bool]]] = {
    "ping": {}, "get": {"name": (str, False), "disks": (bool, False),
            "invalid": (bool, False)},
    "networks": {"name": (str, False)}, "describe": {"name": (str, True)},
    "diff": {"name": (str, False)}, "wait": {"name": (str, True)},
    "watch": {"name": (str, True)}, "export": {"name": (str, True)},
    "events": {"name": (str, False), "follow": (bool, False), "n": (int, False)},
    "logs": {"name": (str, True), "follow": (bool, False), "lines": (int, False)},
    **{action: {"name": (str, True)} for action in (*ACTIONS, "console")},
    "start": {"name": (str, True), "forceBoot": (bool, False)},
    "prune": {"confirm": (bool, True)},
    "host-shutdown": {"mode": (str, False), "parallel": (int, False), "timeout": (int, False)},
}


class Refused(Exception):
    """A request the server refuses before reaching the backend."""

    def __init__(self, type_: str, message: str) -> None:
        self.type = type_
        self.message = message
        super().__init__(message)


async def read_request(reader: asyncio.StreamReader, settings: ApiSettings) -> bytes:
    timeout = settings.request_timeout
    try:
        line = await asyncio.wait_for(reader.readuntil(b"\n"), timeout)
    except asyncio.LimitOverrunError:
        raise Refused("BadRequest", "request too large (limit "
                      f"{settings.max_request} bytes)") from None
    except asyncio.IncompleteReadError as err:
        line = err.partial  # EOF ends the line too (`printf ... | nc -U`)
    except TimeoutError:
        raise Refused("BadRequest", f"no complete request line within {timeout:g} s") from None
    if not line.strip():
        raise Refused("BadRequest", "empty request")
    return line


def parse(line: bytes) -> tuple[str, dict[str, Any]]:
    try:
        request = json.loads(line)
    except ValueError as err:
        raise Refused("BadRequest", f"malformed JSON: {err}") from None
    if not isinstance(request, dict):
        raise Refused("BadRequest",
                      "the request must be a JSON object {\"op\": ..., \"args\": {...}}")
    op, args = request.get("op"), request.get("args", {})
    if not isinstance(op, str) or op not in ARGS:
        raise Refused("BadRequest", f"unknown op {op!r}; known: {', '.join(sorted(ARGS))}")
    if not isinstance(args, dict):
        raise Refused("BadRequest", f"'args' of {op} must be an object")
    return op, _check_args(op, args)


def _check_args(op: str, args: dict[str, Any]) -> dict[str, Any]:
    spec = ARGS[op]
    unknown = sorted(set(args) - set(spec))
    if unknown:
        raise Refused("BadRequest", f"{op} has no argument {unknown[0]!r}")
    checked = {key: value for key, value in args.items() if value is not None}
    for key, (type_, required) in spec.items():
        if key not in checked:
            if required:
                raise Refused("BadRequest", f"{op} needs the argument {key!r}")
            continue
        value = checked[key]
        # bool is an int in Python, not in the protocol.
        if not isinstance(value, type_) or (type_ is int and isinstance(value, bool)):
            raise Refused("BadRequest", f"{op}: {key!r} must be a {type_.__name__}")
        if (isinstance(value, int) and value < 0) or (isinstance(value, str) and not value):
            raise Refused("BadRequest", f"{op}: {key!r} must not be "
                          f"{'negative' if type_ is int else 'empty'}")
    return checked
