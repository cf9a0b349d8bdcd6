"""The synchronous client of the controller's HTTP API (controller/api/server.py, docs/api.md),
used by `domctl` commands.

An op (`get`, `start`, `events`, ...) goes to its route through protocol.ROUTES, the table the
server registers: its path parameters fill the path, the other arguments become the query
string of a GET or the JSON body of a POST (None: left out; a GET's True is `1`, its False left
out). HTTP/1.1 is written and read here, over a plain blocking AF_UNIX socket, so the timeouts
are ours (the response head's, and a stream's idle time between two items): a request line and
headers, and a reply's status, headers and body of a Content-Length, in chunks or up to the end
of the connection, nothing more, since the only server is the daemon's aiohttp. A library would
cost more than the reading it does at every start of a CLI command (issue 12: within 3x `python
-c pass`): h11 15-18 ms of imports (dataclasses and inspect), http.client as much (the email
package), httpx 60 ms; curl and Ansible's uri module are the tests of the server's HTTP
(tests/daemon/test_http_api.py). One connection per request (`Connection: close`): a command
makes one call, or polls a few. Error replies become
`ApiError(type, message)` (the body's error type, or the HTTP status's); a socket that is
missing, refuses or may not be opened becomes `DaemonNotRunning`, whose message names the path
and what to do.

Public surface:
    Client(path, timeout=60.0): call(op, **args) -> Any; stream(op, idle=None, **args)
        -> Iterator[dict]
    ApiError(type, message), DaemonNotRunning(path, reason)
    socket_path(explicit, env, runtime_dir, fallback_dirs=()) -> str
"""

from __future__ import annotations

import json
import os
import socket

from controller.protocol import ERROR_STATUS, RO_SOCKET, RW_SOCKET, Route, route_for

TYPE_CHECKING = False  # typing's constant without typing's import (cli/__init__.py)
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from types import TracebackType
    from typing import Any

_READ_SIZE = 65536
_MAX_HEAD = 65536  # bytes of a response head (aiohttp's own limit on a request's is 8190)
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class ApiError(Exception):
    """An error reply of the daemon (`type` is its error type: NotFound, Busy, ...), or a
    broken exchange (Disconnected, Timeout, Protocol)."""

    def __init__(self, type_: str, message: str) -> None:
        self.type = type_
        self.message = message
        super().__init__(message)


class DaemonNotRunning(ApiError):
    """No daemon answers on the socket: missing, refused, or not ours to open."""

    def __init__(self, path: str, error: OSError) -> None:
        self.path = path
        if isinstance(error, FileNotFoundError):
            message = (f"no controller socket at {path}: start the controller with `domctl run`, "
                       "or point --socket / DOMCTL_SOCKET at its socket")
        elif isinstance(error, ConnectionRefusedError):
            message = (f"nothing listens on {path} (a stale socket): start the controller "
                       "with `domctl run`")
        elif isinstance(error, PermissionError):
            read_only = os.path.join(os.path.dirname(path), RO_SOCKET)
            message = (f"permission denied opening {path}: run as root, or use the read-only "
                       f"socket {read_only}; check --socket / DOMCTL_SOCKET")
        else:
            message = f"cannot connect to {path}: {error.strerror or error}"
        super().__init__("DaemonNotRunning", message)


class Client:
    def __init__(self, path: str | os.PathLike[str], timeout: float = 60.0) -> None:
        self.path = os.fspath(path)
        self.timeout = timeout

    def call(self, op: str, **args: Any) -> Any:
        """Run one request and return its result; raises ApiError for an error reply."""
        route = _route(op, args)
        if route.stream:
            raise ApiError("Protocol", f"'{op}' is a stream: use stream()")
        with self._exchange(route, args) as exchange:
            body = b"".join(exchange.body())
        return _json(body)

    def stream(self, op: str, idle: float | None = None,
               **args: Any) -> Iterator[dict[str, Any]]:
        """The items of a streaming request, until the daemon ends the stream. Only the
        response head is bound by the timeout: a followed stream may stay quiet for long, or for
        at most `idle` seconds between two items (then ApiError "Timeout", and the stream is
        gone). A line `{"error": ...}` (the stream's source failed) raises ApiError."""
        route = _route(op, args)
        if not route.stream:
            raise ApiError("Protocol", f"'{op}' is not a stream: use call()")
        with self._exchange(route, args) as exchange:
            exchange.sock.settimeout(idle)
            exchange.timeout = idle
            pending = b""
            for chunk in exchange.body():
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    if line.strip():
                        yield _item(line)
            if pending.strip():
                yield _item(pending)

    def _exchange(self, route: Route, args: dict[str, Any]) -> _Exchange:
        """Send the request; the exchange once the response head is in, a success (`with` it:
        its connection closes at the end of the block)."""
        method, target, body = _request(route, args)
        exchange = _Exchange(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), self.path,
                             self.timeout)
        try:
            exchange.sock.settimeout(self.timeout)
            try:
                exchange.sock.connect(self.path)
            except OSError as err:
                raise DaemonNotRunning(self.path, err) from None
            exchange.send(method, target, body)
            status = exchange.head()
            if not 200 <= status < 300:
                _raise_error(status, b"".join(exchange.body()))
        except BaseException:
            exchange.sock.close()
            raise
        return exchange


class _Exchange:
    """One request and its response on one connection: HTTP/1.1 as the daemon (aiohttp)
    speaks it to us, a status line and headers, then a body of a Content-Length, in chunks
    (streams), or up to the end of the connection. A context manager closing the connection
    (a class of its own, not contextlib's: the CLI does not load contextlib)."""

    def __init__(self, sock: socket.socket, path: str, timeout: float | None) -> None:
        self.sock, self.path, self.timeout = sock, path, timeout
        self._buffer = b""
        self._headers: dict[str, str] = {}

    def __enter__(self) -> _Exchange:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.sock.close()

    def send(self, method: str, target: str, body: bytes | None) -> None:
        head = [f"{method} {target} HTTP/1.1", "Host: localhost", "User-Agent: domctl",
                "Connection: close", "Accept: application/json, application/x-ndjson"]
        if body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        data = ("\r\n".join(head) + "\r\n\r\n").encode() + (body or b"")
        try:  # noqa: SIM105 (contextlib.suppress: contextlib is not loaded by the CLI)
            self.sock.sendall(data)
        except OSError:  # the daemon may refuse early ("request too large"): its reply is
            pass  # still readable

    def head(self) -> int:
        """The response's status code, once its head is in (an interim 1xx is skipped)."""
        while True:
            status_line, *fields = self._until(b"\r\n\r\n", _MAX_HEAD).split(b"\r\n")
            version, _, rest = status_line.partition(b" ")
            code = rest[:3]
            if not version.startswith(b"HTTP/1.") or not code.isdigit():
                raise ApiError("Protocol", f"not an HTTP reply: {status_line[:200]!r}")
            if not code.startswith(b"1"):
                break
        for field in fields:
            name, colon, value = field.decode("latin-1").partition(":")
            if not colon:
                raise ApiError("Protocol", f"not an HTTP header: {field[:200]!r}")
            self._headers[name.strip().lower()] = value.strip()
        return int(code)

    def body(self) -> Iterator[bytes]:
        """The response body's pieces as they arrive, until its end."""
        if "chunked" in self._headers.get("transfer-encoding", "").lower():
            while size := self._chunk_size():
                yield self._exactly(size)
                self._until(b"\r\n", 2)
            while self._until(b"\r\n", _MAX_HEAD):  # trailer fields, up to an empty line
                pass
        elif "content-length" in self._headers:
            try:
                length = int(self._headers["content-length"])
            except ValueError:
                raise ApiError("Protocol", "a Content-Length that is no number") from None
            yield self._exactly(length)
        else:  # the body ends with the connection
            while self._buffer or self._fill(eof_ok=True):
                piece, self._buffer = self._buffer, b""
                yield piece

    def _chunk_size(self) -> int:
        line = self._until(b"\r\n", 1024).split(b";", 1)[0].strip()
        try:
            return int(line, 16)
        except ValueError:
            raise ApiError("Protocol", f"not a chunk size: {line[:40]!r}") from None

    def _until(self, marker: bytes, limit: int) -> bytes:
        """The bytes before the next `marker` (consumed with it), at most `limit` of them."""
        while (end := self._buffer.find(marker)) < 0:
            if len(self._buffer) > limit:
                raise ApiError("Protocol", f"a reply line longer than {limit} bytes")
            self._fill()
        found, self._buffer = self._buffer[:end], self._buffer[end + len(marker):]
        return found

    def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        found, self._buffer = self._buffer[:size], self._buffer[size:]
        return found

    def _fill(self, eof_ok: bool = False) -> bool:
        """Read more of the reply; False at its end when `eof_ok`, else the end is an error."""
        try:
            data = self.sock.recv(_READ_SIZE)
        except TimeoutError:
            raise ApiError("Timeout", f"no reply from the controller at {self.path} within "
                           f"{self.timeout:g} s") from None
        except OSError as err:
            raise ApiError("Disconnected", f"lost the connection to {self.path}: {err}") from None
        if not data and not eof_ok:
            raise ApiError("Disconnected", f"the controller at {self.path} closed the "
                           "connection without a complete reply")
        self._buffer += data
        return bool(data)


def _route(op: str, args: dict[str, Any]) -> Route:
    try:
        return route_for(op, args)
    except KeyError:
        raise ApiError("BadRequest", f"unknown op {op!r}") from None


def _request(route: Route, args: Mapping[str, Any]) -> tuple[str, str, bytes | None]:
    """Method, target and body (None for a GET) of `route` with `args`."""
    given = {key: value for key, value in args.items() if value is not None}
    path = route.path
    for name in route.path_params:
        if name not in given:
            raise ApiError("BadRequest", f"{route.op} needs the argument {name!r}")
        path = path.replace(f"{{{name}}}", _quote(str(given.pop(name))))
    if route.method != "GET":
        return route.method, path, json.dumps(given).encode()
    query = [*route.select.items(),
             *((key, "1" if value is True else str(value)) for key, value in given.items()
               if value is not False)]
    encoded = "&".join(f"{_quote(key)}={_quote(value)}" for key, value in query)
    return route.method, f"{path}?{encoded}" if query else path, None


def _quote(text: str) -> str:
    """RFC 3986 percent-encoding of everything but the unreserved characters (urllib.parse's
    quote with safe="", without its import)."""
    return "".join(chr(byte) if byte in _UNRESERVED else f"%{byte:02X}"
                   for byte in text.encode())


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError("Protocol", f"not a JSON reply: {body[:200]!r}") from None


def _item(line: bytes) -> dict[str, Any]:
    item = _json(line)
    if not isinstance(item, dict):
        raise ApiError("Protocol", f"not a JSON object in a stream: {line[:200]!r}")
    if set(item) == {"error"}:
        _raise_error(500, line)
    return item


def _raise_error(status: int, body: bytes) -> None:
    """An error reply as ApiError: the body's {"error": {"type", "message"}}, or for another
    body (aiohttp's own refusal of a malformed request) the status's type and the text."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        document = None
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, dict):
        raise ApiError(str(error.get("type", "Unknown")), str(error.get("message", error)))
    type_ = next((t for t, s in ERROR_STATUS.items() if s == status), f"HTTP{status}")
    raise ApiError(type_, f"HTTP {status}: {body.decode(errors='replace').strip()[:500]}")


def socket_path(explicit: str | None, env: Mapping[str, str], runtime_dir: str,
                fallback_dirs: Sequence[str] = ()) -> str:
    """`--socket`, else DOMCTL_SOCKET, else the read-write socket of `runtime_dir` when the
    caller may open it, else its read-only one; `fallback_dirs` (a user's CLI looking for the
    root controller) are tried the same way when `runtime_dir` has no socket at all. With no
    socket anywhere: the read-write path, which DaemonNotRunning will name. Paths are strings:
    pathlib costs the CLI 3.5 ms of imports at every start."""
    if explicit:
        return explicit
    if env.get("DOMCTL_SOCKET"):
        return env["DOMCTL_SOCKET"]
    for directory in (runtime_dir, *fallback_dirs):
        rw, ro = os.path.join(directory, RW_SOCKET), os.path.join(directory, RO_SOCKET)
        if os.path.exists(rw) and os.access(rw, os.R_OK | os.W_OK):
            return rw
        if os.path.exists(ro):
            return ro
        if os.path.exists(rw):
            return rw  # not ours to open: DaemonNotRunning says so
    return os.path.join(runtime_dir, RW_SOCKET)
