"""The controller's API: HTTP/1.1 over two Unix sockets (aiohttp), served to `domctl` commands,
curl, Ansible's `uri` module and anything else that speaks HTTP (docs/api.md).

The daemon builds one `ApiServer` over its `Backend` and starts it once the controller runs;
`close()` at shutdown ends every stream cleanly (its chunked body is terminated) and removes both
socket files.

Resources are protocol.ROUTES (shared with the client and the OpenAPI document at
/v1/openapi.json): JSON bodies, errors as `{"error": {"type": T, "message": M}}` with the HTTP
status of protocol.ERROR_STATUS (400 BadRequest, 403 PermissionDenied, 404 NotFound, 405
MethodNotAllowed, 409 Busy, 413 TooLarge, 422 Invalid, 500 Failed or Internal, 501
NotSupported). Streams (events, logs, watch) are chunked `application/x-ndjson`, one JSON
document per line; a stream whose source fails ends with a line `{"error": {...}}`. A stream
ends when the client disconnects (the handler is cancelled and its subscription closed), when a
finite stream is done, or at `close()`. The arguments are checked by parsing.py and the streams
built by streams.py before anything reaches the client.

`<runtime>/domctl.sock` (0600) serves every route; `<runtime>/domctl-ro.sock` (0666) serves the
GETs and refuses every POST with 403 PermissionDenied, naming the read-write socket. Each socket is
bound under a temporary name, given its mode, then renamed over the final path (replacing a
stale file), so it is never reachable with looser permissions; aiohttp serves the pre-bound
socket (web.SockSite). The peer's pid, uid and gid (SO_PEERCRED of the request's connection)
reach the backend as a `Caller`, and every request is logged with them, its op and its domain.
Limits (settings.ApiSettings): a request's line, each header and its body within `max_request`
bytes; a connection that sends no complete request within `request_timeout` is closed. A
backend call that changes something runs to its end even when the client goes away. A bad
client or a failing backend call never stops the server.

Public surface:
    ApiServer(backend, rw_path, ro_path, settings: ApiSettings): async start(), async close()
    Backend (protocol the daemon implements), EventSubscription (protocol), Caller
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import socket
import struct
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog
from aiohttp import web

from controller.api import openapi, streams
from controller.api.parsing import Refused, flag, parse_body, parse_query
from controller.engine.requests import NotRunning as ActionNotRunning
from controller.engine.stats import NotRunning as StatsNotRunning
from controller.manifests.errors import ManifestError
from controller.protocol import (
    ERROR_STATUS,
    HOST_SHUTDOWN_MODE,
    HOST_SHUTDOWN_PARALLEL,
    HOST_SHUTDOWN_TIMEOUT,
    NDJSON,
    ROUTES,
    Route,
    installed_version,
    selects,
)
from controller.settings import ApiSettings
from controller.state.networks import NoSuchNetwork
from controller.state.status import NoSuchDomain
from reconcilers.errors import BusyError, DomctlError, NotSupportedError

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the peer's credentials, and which socket it came through."""

    pid: int
    uid: int
    gid: int
    read_only: bool


class EventSubscription(Protocol):
    """Live event records (controller.events.Subscription is one): `async for`, then close()."""

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]: ...

    def close(self) -> None: ...


class Backend(Protocol):
    """What the API serves, implemented by the daemon. Called on the server's event loop.

    Unknown names raise `controller.status.NoSuchDomain`; `DomctlError`s reach the client
    with their message (BusyError as Busy, NotSupportedError as NotSupported, others Failed).
    """

    async def get(self, name: str | None, disks: bool = False,
                  invalid: bool = False) -> list[dict[str, Any]]:
        """Status documents (DESIGN §6) with the domain's `labels` ({} when no manifest gives
        any), all domains sorted by name, or only `name`; with
        `disks`, each with its storage read now (`disks`: Driver.disks). Then the invalid
        manifests that stand for no domain (`kind: InvalidManifest`); `invalid`: only those."""
        ...

    def networks(self, name: str | None) -> list[dict[str, Any]]:
        """Network status documents, all sorted by name, or only `name` (NoSuchNetwork)."""
        ...

    async def describe(self, name: str) -> dict[str, Any]:
        """{"status": {...}, "disks": [...], "events": [...], "job": {...} | None,
        "message": str}; for a name only invalid manifests go by, {"invalid": [...],
        "message": str}."""
        ...

    def diff(self, name: str | None) -> list[dict[str, Any]]:
        """[{"name": ..., "changes": [{"field", "old", "new", "apply": "live"|"restart"}]}]."""
        ...

    def export(self, name: str, defaults: bool = False) -> dict[str, Any]:
        """{"name", "running": bool, "source": "FILE:LINE" | None, "manifest": {...} (the live
        spec's manifest document, else the manifest's; with `defaults` every field written),
        "differences": [{"field", "path", "manifest", "live"}] (the manifest on disk against
        the live spec, rendered values; None where a value is left out, at its default)}."""
        ...

    def labels(self, name: str) -> dict[str, str]:
        """The domain's labels, from its manifest ({} without one)."""
        ...

    async def stats(self, name: str | None) -> list[dict[str, Any]]:
        """The figures of every running domain, or of `name` (NotFound, NotRunning): the form
        of controller/engine/stats.py's to_json."""
        ...

    async def display(self, name: str) -> dict[str, Any]:
        """{"vnc": "HOST:DISPLAY" | None, "host", "port"}: where its VNC server listens now."""
        ...

    def exec(self, name: str, command: list[str]) -> dict[str, Any]:
        """{"argv": [...]}: the host command running `command` in the running domain."""
        ...

    def preview(self, text: str, file: str) -> list[dict[str, Any]]:
        """What the manifest file `text` (named `file`) would change (engine/candidate.py);
        ManifestError (Invalid) with its problems."""
        ...

    def recent_events(self, name: str | None, n: int) -> list[dict[str, Any]]:
        """The last `n` event records (of `name`, or of every domain), oldest first."""
        ...

    def subscribe(self, name: str | None) -> EventSubscription:
        """Event records emitted from now on; the server closes it when the stream ends."""
        ...

    def log_path(self, name: str) -> Path:
        """The domain's log file (it may not exist yet)."""
        ...

    def watch_status(self, name: str | None) -> AsyncGenerator[dict[str, Any], None]:
        """`name`'s status document now, then at every change of it; {"name": name, "deleted":
        true} while it has none (at once, or when it goes). None: every domain's documents
        now and at every change, and a deleted one for each that goes."""
        ...

    async def act(self, name: str, action: str, caller: Caller,
                  force_boot: bool = False) -> dict[str, Any]:
        """Run one of ACTIONS for `caller`; the result has at least {"message": str}.
        `force_boot` (start only): discard a managed-save image and boot afresh."""
        ...

    async def host_shutdown(self, mode: str, parallel: int, timeout: int,
                            caller: Caller) -> dict[str, Any]:
        """Save (mode "save") or shut down ("shutdown") every running domain, `parallel` at
        a time, graceful shutdowns bounded by `timeout` seconds; {"domains": [{"name",
        "mode", "result", "ok"}], "ok": bool, "message": str}. Refused("BadRequest") for a
        bad mode or a parallel below 1."""
        ...

    def console(self, name: str) -> dict[str, Any]:
        """{"socket": path, "argv": []} for a socket to relay, or {"argv": [...]} to run."""
        ...

    async def wait(self, name: str) -> dict[str, Any]:
        """Re-read the manifests directory now; {"name": name, "generation": G | None}: the
        generation a status must show as observedGeneration before `domctl wait` may look at
        its conditions (None: no manifest declares the name yet). An invalid manifest raises
        Refused("Invalid", its problems)."""
        ...

    def prune(self, caller: Caller) -> dict[str, Any]:
        """Confirm the held pruning of removed manifests; at least {"message": str}."""
        ...


_CALLER = web.AppKey("caller_read_only", bool)


class ApiServer:
    def __init__(self, backend: Backend, rw_path: Path, ro_path: Path,
                 settings: ApiSettings = ApiSettings()) -> None:
        self._backend = backend
        self._paths = {False: rw_path, True: ro_path}
        self._settings = settings
        self._runners: list[web.AppRunner] = []
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        limit = self._settings.max_request
        try:
            for read_only, mode in ((False, 0o600), (True, 0o666)):
                sock = _bind(self._paths[read_only], mode)
                runner = web.AppRunner(
                    self._app(read_only), handle_signals=False, access_log=None,
                    handler_cancellation=True, shutdown_timeout=self._settings.close_timeout,
                    keepalive_timeout=self._settings.request_timeout,
                    max_line_size=limit, max_field_size=limit)
                self._runners.append(runner)
                await runner.setup()
                await web.SockSite(runner, sock).start()
        except BaseException:
            await self.close()  # no half-started server: both sockets or none
            raise
        log.info("api listening", rw=str(self._paths[False]), ro=str(self._paths[True]))

    async def close(self) -> None:
        """Stop accepting, end every stream, let the other requests finish (close_timeout),
        remove both socket files."""
        self._stopping.set()
        for path in self._paths.values():
            path.unlink(missing_ok=True)
        await asyncio.gather(*(runner.cleanup() for runner in self._runners),
                             return_exceptions=True)
        self._runners.clear()

    def _app(self, read_only: bool) -> web.Application:
        app = web.Application(client_max_size=self._settings.max_request,
                              middlewares=[_json_errors])
        app[_CALLER] = read_only
        by_path: dict[tuple[str, str], list[Route]] = {}
        for route in ROUTES:
            by_path.setdefault((route.method, route.path), []).append(route)
        for (method, path), routes in by_path.items():
            app.router.add_route(method, path, functools.partial(self._handle, routes))
        return app

    async def _handle(self, routes: list[Route], request: web.Request) -> web.StreamResponse:
        caller = _peer(request)
        route = _pick(routes, request)
        request_log = log.bind(uid=caller.uid, pid=caller.pid, op=route.op,
                               socket="ro" if caller.read_only else "rw",
                               **_subject(route, request.match_info.get("name")))
        try:
            self._check_allowed(route, caller)
            if route.method == "GET":
                args = parse_query(route, request.query.items())
            else:
                args = parse_body(route, await _body(request, self._settings.max_request))
            args.update(request.match_info)
            request_log = request_log.bind(**_subject(route, args.get("name")))  # ?name= too
            request_log.info("api request")
            if route.stream:
                return await self._pump(request, self._open_stream(route.op, args))
            result = await self._call(route, args, caller)
        except Exception as err:
            type_, message = _error(err)
            request_log.info("api request refused", error=type_, message=message)
            return _error_response(type_, message)
        return web.json_response(result, dumps=_dumps)

    def _check_allowed(self, route: Route, caller: Caller) -> None:
        if caller.read_only and route.write:
            who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
            raise Refused("PermissionDenied", f"the read-only socket cannot run '{route.op}' "
                          f"({route.method} {route.path}); use {self._paths[False]} (as {who})")

    async def _call(self, route: Route, args: dict[str, Any], caller: Caller) -> Any:
        if route.write:  # a change runs to its end even if the client goes away meanwhile
            return await asyncio.shield(self._change(route.op, args, caller))
        backend, op = self._backend, route.op
        if op == "ping":
            return {"version": installed_version(), "readOnly": caller.read_only}
        if op == "openapi":
            return openapi.document(installed_version())
        if op == "get":
            wanted = streams.selector(args)
            documents = await backend.get(args.get("name"), bool(args.get("disks", False)),
                                          bool(args.get("invalid", False)))
            return [doc for doc in documents
                    if wanted is None or selects(wanted, doc.get("labels") or {})]
        if op == "networks":
            return backend.networks(args.get("name"))
        if op == "describe":
            return await backend.describe(args["name"])
        if op == "diff":
            return backend.diff(args.get("name"))
        if op == "export":
            return backend.export(args["name"], bool(args.get("defaults", False)))
        if op == "stats":
            wanted = streams.selector(args)
            figures = await backend.stats(args.get("name"))
            return [item for item in figures if wanted is None
                    or selects(wanted, backend.labels(str(item["name"])))]
        if op == "display":
            return await backend.display(args["name"])
        if op == "preview":
            return backend.preview(args["text"], args["file"])
        return await backend.wait(args["name"])

    async def _change(self, op: str, args: dict[str, Any], caller: Caller) -> Any:
        backend = self._backend
        if op == "console":
            return backend.console(args["name"])
        if op == "exec":
            return backend.exec(args["name"], args["command"])
        if op == "prune":
            if args["confirm"] is not True:
                raise Refused("BadRequest", "prune needs {\"confirm\": true}")
            return backend.prune(caller)
        if op == "host-shutdown":
            return await backend.host_shutdown(
                args.get("mode", HOST_SHUTDOWN_MODE), args.get("parallel", HOST_SHUTDOWN_PARALLEL),
                args.get("timeout", HOST_SHUTDOWN_TIMEOUT), caller)
        if args.get("forceBoot"):
            return await backend.act(args["name"], op, caller, force_boot=True)
        return await backend.act(args["name"], op, caller)

    def _open_stream(self, op: str, args: dict[str, Any]) -> streams.Stream:
        """Set up a stream before its head is sent, so errors are plain error replies and a
        subscription exists by the time the client sees the head."""
        if op == "watch":
            return streams.watch(self._backend, args)
        if op == "logs":
            return streams.logs(self._backend, args, self._settings.log_poll)
        return streams.events(self._backend, args)

    async def _pump(self, request: web.Request, stream: streams.Stream) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": NDJSON})
        response.enable_chunked_encoding()
        error: tuple[str, str] | None = None
        try:
            await response.prepare(request)
            forward = asyncio.ensure_future(_forward(response, stream.items))
            stopping = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait({forward, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (forward, stopping):
                    task.cancel()
                await asyncio.gather(forward, stopping, return_exceptions=True)
            failure = forward.exception() if forward.done() and not forward.cancelled() else None
            if isinstance(failure, ConnectionError):
                return response  # the client went away while a line was written
            if failure is not None:
                error = _error(failure)
        finally:
            stream.cleanup()
            aclose = getattr(stream.items, "aclose", None)
            if aclose is not None:
                await aclose()
        if error is not None:
            await response.write(_line({"error": {"type": error[0], "message": error[1]}}))
        await response.write_eof()
        return response


async def _forward(response: web.StreamResponse, items: AsyncIterator[Any]) -> None:
    async for item in items:
        await response.write(_line(item))


def _subject(route: Route, name: str | None) -> dict[str, str]:
    """What a request's log line names: its domain (or network), when it has one."""
    if not name:
        return {}
    return {"network" if route.op == "networks" else "domain": name}


def _pick(routes: list[Route], request: web.Request) -> Route:
    """The route a query selects among those sharing a path (`watch=1`), else the plain one."""
    for route in routes:
        with contextlib.suppress(ValueError):
            if route.select and all(flag(request.query.get(key, "")) for key in route.select):
                return route
    return next(route for route in routes if not route.select)


async def _body(request: web.Request, limit: int) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise Refused("TooLarge", f"request too large (limit {limit} bytes)") from None


@web.middleware
async def _json_errors(request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                       ) -> web.StreamResponse:
    """aiohttp's own refusals (no such resource, wrong method) as JSON error bodies."""
    try:
        return await handler(request)
    except web.HTTPException as err:
        if err.status == 404:
            return _error_response("NotFound", f"no resource {request.method} {request.path}; "
                                   "the routes are listed at /v1/openapi.json")
        if err.status == 405:
            return _error_response("MethodNotAllowed", f"{request.path} does not take "
                                   f"{request.method}; see /v1/openapi.json")
        if err.status == 413:
            return _error_response("TooLarge", f"request too large: {err.text}")
        return _error_response("BadRequest", f"{err.status}: {err.text}")


def _error_response(type_: str, message: str) -> web.Response:
    return web.json_response({"error": {"type": type_, "message": message}},
                             status=ERROR_STATUS[type_], dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _line(item: Any) -> bytes:
    return _dumps(item).encode() + b"\n"


def _bind(path: Path, mode: int) -> socket.socket:
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(temporary))
        os.chmod(temporary, mode)
        os.replace(temporary, path)  # replaces a stale socket: the daemon's flock says it is ours
    except BaseException:
        sock.close()
        temporary.unlink(missing_ok=True)
        raise
    return sock


def _peer(request: web.Request) -> Caller:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        raise ConnectionResetError("the client went away")
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return Caller(pid=pid, uid=uid, gid=gid, read_only=request.app[_CALLER])


def _error(err: BaseException | None) -> tuple[str, str]:
    if isinstance(err, Refused):
        return err.type, err.message
    for class_, type_ in ((NoSuchDomain, "NotFound"), (NoSuchNetwork, "NotFound"),
                          (BusyError, "Busy"), (NotSupportedError, "NotSupported"),
                          (ActionNotRunning, "NotRunning"), (StatsNotRunning, "NotRunning"),
                          (ManifestError, "Invalid"), (DomctlError, "Failed")):
        if isinstance(err, class_):
            return type_, str(err)
    log.error("api request failed unexpectedly; the server keeps serving", exc_info=err)
    return "Internal", (f"internal error: {type(err).__name__}: {err}; see the controller's "
                        "log")
