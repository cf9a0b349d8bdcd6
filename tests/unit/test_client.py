"""The synchronous Client against a real ApiServer running on its own loop in a thread, and
against bare sockets that misbehave (stale, silent, cut off mid-reply); how ops map to routes;
socket_path's order of choice.

Permission cases run in a forked child that drops to an unprivileged uid (needs root).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.api.server import Caller
from controller.cli.client import ApiError, Client, DaemonNotRunning, socket_path
from controller.settings import ApiSettings
from reconcilers.model import Cause, EventDetail, EventType, Reason, State
from tests.support.api import DocsBackend, ThreadedServer

NOBODY = 65534
SETTINGS = ApiSettings(request_timeout=1.0, log_poll=0.02)


class Backend(DocsBackend):
    """Just enough of the daemon for the client: one domain, real events, a log file."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, {"web-1": {"name": "web-1", "state": "running"}})

    async def act(self, name: str, action: str, caller: Caller,
                  force_boot: bool = False) -> dict[str, Any]:
        return {"message": f"{action} by uid {caller.uid}"}


@pytest.fixture
def server(sockdir: Path, tmp_path: Path) -> Iterator[ThreadedServer]:
    with ThreadedServer(Backend(tmp_path), sockdir, SETTINGS) as running:
        yield running


def emit(server: ThreadedServer, message: str) -> dict[str, Any]:
    return server.run(lambda: server.backend.bus.emit(  # type: ignore[no-any-return]
        "web-1", EventType.STARTED, EventDetail.BOOTED, State.RUNNING, Reason.BOOTED, Cause.API,
        None, message))


def test_call_returns_the_result(server: ThreadedServer) -> None:
    assert Client(server.rw).call("get") == [{"name": "web-1", "state": "running"}]
    started = Client(server.rw).call("start", name="web-1")
    assert started == {"message": f"start by uid {os.getuid()}"}
    assert Client(server.ro).call("ping")["readOnly"] is True


def test_error_replies_raise_api_error_with_type_and_message(server: ThreadedServer) -> None:
    with pytest.raises(ApiError) as caught:
        Client(server.rw).call("get", name="nope")
    assert (caught.value.type, caught.value.message) == ("NotFound", "no domain named nope")
    with pytest.raises(ApiError) as caught:
        Client(server.ro).call("stop", name="web-1")
    assert caught.value.type == "PermissionDenied" and str(server.rw) in caught.value.message


def test_a_too_large_request_still_reads_the_servers_refusal(server: ThreadedServer) -> None:
    with pytest.raises(ApiError) as caught:
        Client(server.rw).call("get", name="x" * 4_000_000)
    assert caught.value.type == "BadRequest" and "HTTP 400" in caught.value.message
    with pytest.raises(ApiError) as caught:
        Client(server.rw).call("host-shutdown", mode="x" * 4_000_000)
    assert caught.value.type == "TooLarge" and "request too large" in caught.value.message
    assert Client(server.rw).call("ping")


def test_arguments_go_to_the_path_query_or_body(server: ThreadedServer) -> None:
    assert Client(server.rw).call("get", name="web-1", disks=True, invalid=False) == [
        {"name": "web-1", "state": "running", "disks": []}]
    with pytest.raises(ApiError) as caught:
        Client(server.rw).call("get", labelSelector="a=b,=c")
    assert caught.value.type == "BadRequest" and "no valid label key" in caught.value.message
    assert Client(server.rw).call("get", labelSelector="tier=web") == []
    assert Client(server.rw).call("start", name="web-1", forceBoot=None) == {
        "message": f"start by uid {os.getuid()}"}
    with pytest.raises(ApiError, match="needs the argument 'name'"):
        Client(server.rw).call("describe")
    with pytest.raises(ApiError, match="unknown op 'format'"):
        Client(server.rw).call("format")
    assert "/v1/domains/{name}" in Client(server.ro).call("openapi")["paths"]


def test_stream_yields_items_until_the_end(server: ThreadedServer) -> None:
    for i in range(3):
        emit(server, f"m{i}")
    items = list(Client(server.rw).stream("events", name="web-1"))
    assert [i["message"] for i in items] == ["m0", "m1", "m2"]
    items = list(Client(server.rw).stream("events", name="web-1", limit=1, type="started"))
    assert [i["message"] for i in items] == ["m2"]
    (server.backend.directory / "web-1.log").write_text("a\nb\n")
    assert list(Client(server.rw).stream("logs", name="web-1", lines=1)) == [{"line": "b"}]


def test_a_followed_stream_gets_live_items_and_the_end_at_close(sockdir: Path,
                                                                 tmp_path: Path) -> None:
    with ThreadedServer(Backend(tmp_path), sockdir, SETTINGS) as server:
        stream = Client(server.rw, timeout=5).stream("events", follow=True)

        def emit_once_subscribed() -> None:
            assert server.backend.subscribed.wait(5)
            emit(server, "live")

        emitter = threading.Thread(target=emit_once_subscribed)
        emitter.start()
        assert next(stream)["message"] == "live"  # connects, subscribes, then waits
        emitter.join()
    assert list(stream) == []  # the server's close() ended it cleanly


def test_watch_every_domain_and_a_deleted_one(server: ThreadedServer) -> None:
    watch = Client(server.rw, timeout=5).stream("watch", name=None)
    assert next(watch) == {"name": "web-1", "state": "running"}
    server.run(lambda: server.backend.docs.pop("web-1"))
    assert next(watch) == {"name": "web-1", "deleted": True}
    del watch  # closes its connection
    assert next(Client(server.rw).stream("watch", name="gone")) == {"name": "gone",
                                                                    "deleted": True}


def test_an_idle_stream_times_out(server: ThreadedServer) -> None:
    with pytest.raises(ApiError) as caught:
        list(Client(server.rw).stream("events", idle=0.2, follow=True))
    assert caught.value.type == "Timeout"


def test_stream_on_a_plain_op_is_a_protocol_error(server: ThreadedServer) -> None:
    with pytest.raises(ApiError, match="not a stream"):
        list(Client(server.rw).stream("ping"))
    with pytest.raises(ApiError, match="is a stream"):
        Client(server.rw).call("events")


def test_missing_socket_says_start_domctl_run(sockdir: Path) -> None:
    path = sockdir / "domctl.sock"
    with pytest.raises(DaemonNotRunning) as caught:
        Client(path).call("ping")
    assert str(path) in caught.value.message and "domctl run" in caught.value.message
    assert "DOMCTL_SOCKET" in caught.value.message


def test_a_stale_socket_refuses_and_says_so(sockdir: Path) -> None:
    path = sockdir / "domctl.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))  # bound, never listening: what a killed controller leaves
        with pytest.raises(DaemonNotRunning) as caught:
            Client(path).call("ping")
    assert "stale" in caught.value.message and "domctl run" in caught.value.message


def test_a_silent_server_times_out(sockdir: Path) -> None:
    path = sockdir / "domctl.sock"
    with socket.socket(socket.AF_UNIX) as silent:
        silent.bind(str(path))
        silent.listen()
        with pytest.raises(ApiError) as caught:
            Client(path, timeout=0.2).call("ping")
    assert caught.value.type == "Timeout" and "0.2 s" in caught.value.message


@contextlib.contextmanager
def canned(sockdir: Path, reply: bytes, asked: list[bytes] | None = None) -> Iterator[Path]:
    """A socket whose one connection gets `reply`, whatever it asks (kept in `asked`), then is
    closed."""
    path = sockdir / "domctl.sock"
    with socket.socket(socket.AF_UNIX) as fake:
        fake.bind(str(path))
        fake.listen()

        def answer() -> None:
            connection, _ = fake.accept()
            with connection:
                request = connection.recv(65536)
                if asked is not None:
                    asked.append(request)
                connection.sendall(reply)

        answering = threading.Thread(target=answer)
        answering.start()
        try:
            yield path
        finally:
            answering.join()


@pytest.mark.parametrize(("reply", "type_", "text"), [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\"", "Disconnected",
     "without a complete reply"),
    (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "Protocol", "not an HTTP reply"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "Protocol", "not an HTTP header"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "Protocol",
     "not a chunk size"),
    (b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 4\r\n\r\noops", "HTTP502",
     "HTTP 502: oops"),
])
def test_a_broken_reply_is_an_api_error(sockdir: Path, reply: bytes, type_: str,
                                         text: str) -> None:
    with canned(sockdir, reply) as path, pytest.raises(ApiError) as caught:
        Client(path, timeout=5).call("ping")
    assert caught.value.type == type_ and text in caught.value.message


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n{\"version\": 1}",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 14\r\n\r\n"
    b"{\"version\": 1}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\n{\"ver\r\n"
    b"9\r\nsion\": 1}\r\n0\r\nX-Trailer: t\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\n{\"version\": 1}",  # ended by the connection's end
], ids=["length", "interim-1xx", "chunked-extension-trailer", "close-delimited"])
def test_every_body_framing_of_http_1_1_is_read(sockdir: Path, reply: bytes) -> None:
    with canned(sockdir, reply) as path:
        assert Client(path, timeout=5).call("ping") == {"version": 1}


def test_a_name_is_percent_encoded_in_the_path_and_the_query(sockdir: Path) -> None:
    seen: list[bytes] = []
    with canned(sockdir, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]", seen) as path:
        Client(path, timeout=5).call("get", labelSelector="tier in (a b)/ü")
    assert seen[0].startswith(b"GET /v1/domains?labelSelector=tier%20in%20%28a%20b%29%2F%C3%BC "
                              b"HTTP/1.1\r\n")


def as_nobody(function: Callable[[], Any]) -> Any:
    """`function()` run in a forked child as uid/gid nobody; its JSON-able result."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged uid")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery from here on
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            result = json.dumps(function()).encode()
        except BaseException as err:
            result = json.dumps({"child error": repr(err)}).encode()
        os.write(write, result)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def test_an_unprivileged_user_gets_the_read_only_socket(server: ThreadedServer) -> None:
    def attempt() -> dict[str, Any]:
        chosen = socket_path(None, {}, str(server.rw.parent))
        try:
            Client(server.rw).call("ping")
            refused = ""
        except DaemonNotRunning as err:
            refused = err.message
        return {"chosen": str(chosen), "refused": refused,
                "ro": Client(chosen).call("ping")}

    result = as_nobody(attempt)
    assert result["chosen"] == str(server.ro)
    assert result["refused"].startswith(f"permission denied opening {server.rw}")
    assert str(server.ro) in result["refused"]
    assert result["ro"]["readOnly"] is True


def test_socket_path_order(tmp_path: Path) -> None:
    runtime, root_runtime = tmp_path / "user", tmp_path / "root"
    runtime.mkdir()
    root_runtime.mkdir()
    env = {"DOMCTL_SOCKET": "/from/env.sock"}

    def chosen(env: dict[str, str], explicit: str | None = None) -> str:
        return socket_path(explicit, env, str(runtime), [str(root_runtime)])

    assert chosen(env, "/explicit.sock") == "/explicit.sock"
    assert chosen(env) == "/from/env.sock"
    assert chosen({}) == str(runtime / "domctl.sock")
    (root_runtime / "domctl-ro.sock").touch()
    assert chosen({}) == str(root_runtime / "domctl-ro.sock")
    (runtime / "domctl-ro.sock").touch()
    assert chosen({}) == str(runtime / "domctl-ro.sock")
    (runtime / "domctl.sock").touch()
    assert chosen({}) == str(runtime / "domctl.sock")
