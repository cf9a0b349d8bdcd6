"""ApiServer on real Unix sockets with a small fake Backend; raw asyncio clients speak the wire.

The fake stands in for the daemon (whose own tests run the real one); its events come from a
real EventBus, so subscriptions are the real thing. Every bad client is followed by a good one:
the server must keep serving.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import structlog
from structlog.testing import capture_logs

from controller.api import server as api
from controller.api.server import ApiServer, Caller
from controller.protocol import ACTIONS, WRITE_OPS
from controller.settings import ApiSettings
from controller.state.events import EventBus, Subscription
from reconcilers.errors import BusyError, DriverError, NotSupportedError
from reconcilers.model import Cause, EventDetail, EventType, Reason, State
from tests.support.api import DocsBackend
from tests.support.waiting import async_wait_until

FAST = ApiSettings(request_timeout=0.3, log_poll=0.02, close_timeout=1.0)


def status(name: str, state: str = "running") -> dict[str, Any]:
    return {"name": name, "uuid": f"uuid-{name}", "driver": "qemu", "desired": "running",
            "state": state, "reason": "booted", "pid": 100, "id": 1, "conditions": []}


class TrackedSubscription:
    """A real Subscription that remembers whether the server closed it."""

    def __init__(self, inner: Subscription) -> None:
        self.inner = inner
        self.closed = False

    def __aiter__(self) -> Subscription:
        return self.inner

    def close(self) -> None:
        self.closed = True
        self.inner.close()


class FakeBackend(DocsBackend):
    FAILURES: ClassVar[dict[str, Exception]] = {
        "busy": BusyError("busy", "modify", "2025-11-24T16:00:00.000Z"),
        "lxc-1": NotSupportedError("lxc", "suspend"),
        "broken": DriverError("broken", "start", "qemu: could not open disk"),
        "crash": RuntimeError("a bug in the daemon"),
    }

    def __init__(self, directory: Path) -> None:
        super().__init__(directory,
                         {name: status(name) for name in ("web-1", "db", *self.FAILURES)})
        self.calls: list[tuple[str, str, Caller]] = []
        self.subscriptions: list[TrackedSubscription] = []

    def diff(self, name: str | None) -> list[dict[str, Any]]:
        return [{"name": "web-1", "changes": [{"field": "memory", "old": 1, "new": 2,
                                               "apply": "restart"}]}]

    def subscribe(self, name: str | None) -> TrackedSubscription:
        self.subscriptions.append(TrackedSubscription(self.bus.subscribe(name)))
        return self.subscriptions[-1]

    async def act(self, name: str, action: str, caller: Caller,
                  force_boot: bool = False) -> dict[str, Any]:
        self._known(name)
        if name in self.FAILURES:
            raise self.FAILURES[name]
        self.calls.append((f"{action} --force-boot" if force_boot else action, name, caller))
        return {"message": f"{name}: {action} requested"}

    def prune(self, caller: Caller) -> dict[str, Any]:
        self.calls.append(("prune", "", caller))
        return {"message": "nothing to prune"}


def emit(bus: EventBus, domain: str, message: str = "") -> dict[str, Any]:
    return bus.emit(domain, EventType.STARTED, EventDetail.BOOTED, State.RUNNING, Reason.BOOTED,
                    Cause.API, {"uid": 0}, message)


@dataclass
class Served:
    backend: FakeBackend
    server: ApiServer
    rw: Path
    ro: Path


@pytest.fixture
async def served(sockdir: Path, tmp_path: Path) -> AsyncIterator[Served]:
    backend = FakeBackend(tmp_path)
    rw, ro = sockdir / "domctl.sock", sockdir / "domctl-ro.sock"
    server = ApiServer(backend, rw, ro, FAST)
    await server.start()
    yield Served(backend, server, rw, ro)
    await server.close()
    backend.bus.close()


async def exchange(path: Path, request: bytes | dict[str, Any]) -> list[dict[str, Any]]:
    """Send one request; every reply line until the server closes."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    data = request if isinstance(request, bytes) else json.dumps(request).encode() + b"\n"
    writer.write(data)
    await writer.drain()
    replies = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    return [json.loads(line) for line in replies.splitlines()]


async def call(path: Path, op: str, **args: Any) -> dict[str, Any]:
    replies = await exchange(path, {"op": op, "args": args})
    assert len(replies) == 1
    return replies[0]


class Stream:
    """A held-open streaming request, read line by line."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, path: Path, op: str, **args: Any) -> Stream:
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(json.dumps({"op": op, "args": args}).encode() + b"\n")
        stream = cls(reader, writer)
        assert await stream.next() == {"ok": True, "stream": True}
        return stream

    async def next(self) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), 5)
        assert line, "the server closed the stream"
        message: dict[str, Any] = json.loads(line)
        return message

    async def items(self, n: int) -> list[Any]:
        return [(await self.next())["item"] for _ in range(n)]

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def ok(path: Path) -> None:
    """The server still serves."""
    assert (await call(path, "ping"))["ok"] is True


# --- round trips ---------------------------------------------------------------------------

async def test_read_ops_round_trip(served: Served) -> None:
    ping = await call(served.rw, "ping")
    assert ping["ok"] and ping["result"]["readOnly"] is False and "version" in ping["result"]
    assert (await call(served.rw, "get"))["result"] == await served.backend.get(None)
    assert (await call(served.rw, "get", name="db"))["result"] == [status("db")]
    described = (await call(served.rw, "describe", name="web-1"))["result"]
    assert described["status"] == status("web-1") and described["job"] is None
    assert (await call(served.rw, "diff"))["result"][0]["changes"][0]["apply"] == "restart"


@pytest.mark.parametrize("action", ACTIONS)
async def test_actions_reach_the_backend_with_the_callers_credentials(served: Served,
                                                                      action: str) -> None:
    reply = await call(served.rw, action, name="web-1")
    assert reply == {"ok": True, "result": {"message": f"web-1: {action} requested"}}
    [(done, name, caller)] = served.backend.calls
    assert (done, name) == (action, "web-1")
    assert caller == Caller(pid=os.getpid(), uid=os.getuid(), gid=os.getgid(), read_only=False)


async def test_start_force_boot_and_host_shutdown_arguments(served: Served) -> None:
    assert (await call(served.rw, "start", name="web-1", forceBoot=True))["ok"] is True
    assert served.backend.calls[-1][:2] == ("start --force-boot", "web-1")
    refused = await call(served.rw, "stop", name="web-1", forceBoot=True)
    assert refused["error"] == {"type": "BadRequest",
                                "message": "stop has no argument 'forceBoot'"}
    defaults = await call(served.rw, "host-shutdown")
    assert defaults["result"]["message"] == ("host-shutdown --mode save --parallel 4 "
                                             "--timeout 300: nothing runs")
    given = await call(served.rw, "host-shutdown", mode="shutdown", parallel=2, timeout=9)
    assert given["result"]["message"].startswith("host-shutdown --mode shutdown --parallel 2 "
                                                 "--timeout 9")
    bad = await call(served.rw, "host-shutdown", parallel="4")
    assert bad["error"]["type"] == "BadRequest" and "'parallel' must be a int" in \
        bad["error"]["message"]


async def test_prune_needs_confirm_true(served: Served) -> None:
    assert (await call(served.rw, "prune", confirm=True))["result"]["message"] == "nothing to prune"
    refused = await call(served.rw, "prune", confirm=False)
    assert refused["error"]["type"] == "BadRequest" and "confirm" in refused["error"]["message"]
    assert [c[0] for c in served.backend.calls] == ["prune"]


async def test_events_without_follow_send_recent_events_then_end(served: Served) -> None:
    for i in range(25):
        emit(served.backend.bus, "web-1", f"m{i}")
    replies = await exchange(served.rw, {"op": "events", "args": {"name": "web-1"}})
    assert replies[0] == {"ok": True, "stream": True} and replies[-1] == {"end": True}
    assert [r["item"]["message"] for r in replies[1:-1]] == [f"m{i}" for i in range(5, 25)]
    replies = await exchange(served.rw, {"op": "events", "args": {"name": "web-1", "n": 2}})
    assert [r["item"]["message"] for r in replies[1:-1]] == ["m23", "m24"]


async def test_each_request_is_logged_with_op_uid_and_domain(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    with capture_logs() as logs:
        # A fresh logger: the module's may be cached under another test's configuration.
        monkeypatch.setattr(api, "log", structlog.get_logger(api.__name__))
        await call(served.ro, "get", name="db")
    [entry] = [e for e in logs if e["event"] == "api request"]
    assert entry["op"] == "get" and entry["uid"] == os.getuid() and entry["domain"] == "db"
    assert entry["socket"] == "ro"


# --- the two sockets -----------------------------------------------------------------------

async def test_socket_modes(served: Served) -> None:
    for path, mode in ((served.rw, 0o600), (served.ro, 0o666)):
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == mode
    assert sorted(p.name for p in served.rw.parent.iterdir()) == ["domctl-ro.sock", "domctl.sock"]


@pytest.mark.parametrize("op", sorted(WRITE_OPS))
async def test_read_only_socket_refuses_every_write_op(served: Served, op: str) -> None:
    args = {"prune": {"confirm": True}, "host-shutdown": {}}.get(op, {"name": "web-1"})
    reply = await call(served.ro, op, **args)
    assert reply["ok"] is False and reply["error"]["type"] == "PermissionDenied"
    assert f"cannot run '{op}'" in reply["error"]["message"]
    assert str(served.rw) in reply["error"]["message"]
    assert served.backend.calls == []


async def test_read_only_socket_serves_reads(served: Served) -> None:
    assert (await call(served.ro, "ping"))["result"]["readOnly"] is True
    assert (await call(served.ro, "get", name="web-1"))["result"] == [status("web-1")]
    assert (await call(served.ro, "describe", name="db"))["ok"] is True
    assert (await call(served.ro, "diff", name="web-1"))["ok"] is True
    replies = await exchange(served.ro, {"op": "logs", "args": {"name": "db"}})
    assert replies == [{"ok": True, "stream": True}, {"end": True}]


async def test_a_stale_socket_file_is_replaced(sockdir: Path, tmp_path: Path) -> None:
    rw, ro = sockdir / "domctl.sock", sockdir / "domctl-ro.sock"
    rw.write_text("left by a crashed controller")
    backend = FakeBackend(tmp_path)
    server = ApiServer(backend, rw, ro, FAST)
    await server.start()
    await ok(rw)
    await server.close()
    backend.bus.close()
    assert not rw.exists() and not ro.exists()


# --- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize(("op", "args", "type_", "text"), [
    ("get", {"name": "nope"}, "NotFound", "no domain named nope"),
    ("describe", {"name": "nope"}, "NotFound", "no domain named nope"),
    ("logs", {"name": "nope"}, "NotFound", "no domain named nope"),
    ("stop", {"name": "busy"}, "Busy", "busy running modify since"),
    ("suspend", {"name": "lxc-1"}, "NotSupported", "suspend is not supported by the lxc driver"),
    ("start", {"name": "broken"}, "Failed", "qemu: could not open disk"),
    ("start", {"name": "crash"}, "Internal", "RuntimeError: a bug in the daemon"),
])
async def test_backend_errors_become_typed_error_replies(served: Served, op: str,
                                                         args: dict[str, Any], type_: str,
                                                         text: str) -> None:
    reply = await call(served.rw, op, **args)
    assert reply["ok"] is False and reply["error"]["type"] == type_
    assert text in reply["error"]["message"]
    await ok(served.rw)


@pytest.mark.parametrize(("request_", "text"), [
    (b"{not json\n", "malformed JSON"),
    (b"[1, 2]\n", "must be a JSON object"),
    (b'{"op": "format-disk"}\n', "unknown op 'format-disk'"),
    (b'{"args": {}}\n', "unknown op None"),
    (b'{"op": "get", "args": [1]}\n', "must be an object"),
    (b'{"op": "get", "args": {"nmae": "x"}}\n', "no argument 'nmae'"),
    (b'{"op": "describe"}\n', "needs the argument 'name'"),
    (b'{"op": "stop", "args": {"name": 3}}\n', "'name' must be a str"),
    (b'{"op": "events", "args": {"follow": "yes"}}\n', "'follow' must be a bool"),
    (b'{"op": "events", "args": {"n": true}}\n', "'n' must be a int"),
    (b'{"op": "logs", "args": {"name": "db", "lines": -1}}\n', "must not be negative"),
    (b'{"op": "get", "args": {"name": ""}}\n', "must not be empty"),
    (b'{"op": "get", "args": {"name": "' + b"x" * 70000 + b'"}}\n', "request too large"),
    (b"\n", "empty request"),
])
async def test_bad_requests_get_an_error_and_the_server_serves_on(served: Served, request_: bytes,
                                                                  text: str) -> None:
    [reply] = await exchange(served.rw, request_)
    assert reply["ok"] is False and reply["error"]["type"] == "BadRequest"
    assert text in reply["error"]["message"]
    await ok(served.rw)


@pytest.mark.parametrize(("sent", "type_"), [(b'{"op": "ping"}', None), (b"", "BadRequest")])
async def test_eof_ends_the_request_line(served: Served, sent: bytes, type_: str | None) -> None:
    reader, writer = await asyncio.open_unix_connection(str(served.rw))
    writer.write(sent)
    writer.write_eof()
    reply = json.loads(await asyncio.wait_for(reader.read(), 5))
    writer.close()
    assert reply.get("error", {}).get("type") == type_


async def test_a_silent_client_times_out_without_holding_up_others(served: Served) -> None:
    reader, writer = await asyncio.open_unix_connection(str(served.rw))
    await ok(served.rw)  # served while the silent one waits
    reply = json.loads(await asyncio.wait_for(reader.read(), 5))
    writer.close()
    assert reply["error"] == {"type": "BadRequest",
                              "message": "no complete request line within 0.3 s"}
    await ok(served.rw)


async def test_twenty_concurrent_clients_with_open_streams(served: Served) -> None:
    streams = [await Stream.open(served.ro, "events", follow=True) for _ in range(3)]
    requests = [call(served.rw, "get", name="web-1") if i % 3 else
                call(served.rw, "start", name="db") if i % 2 else call(served.ro, "ping")
                for i in range(20)]
    replies = await asyncio.gather(*requests)
    assert all(r["ok"] for r in replies)
    record = emit(served.backend.bus, "db")
    for stream in streams:
        assert await stream.items(1) == [record]
        await stream.close()


# --- streams -------------------------------------------------------------------------------

async def test_events_follow_sends_recent_then_live_and_closes_on_disconnect(
        served: Served) -> None:
    old = emit(served.backend.bus, "web-1", "before")
    stream = await Stream.open(served.rw, "events", name="web-1", follow=True, n=1)
    assert await stream.items(1) == [old]
    emit(served.backend.bus, "db", "another domain")
    live = emit(served.backend.bus, "web-1", "after subscribing")
    assert await stream.items(1) == [live]
    [subscription] = served.backend.subscriptions
    await stream.close()
    await async_wait_until(lambda: subscription.closed, "the server to close the subscription")


async def test_close_ends_every_stream_and_removes_the_sockets(served: Served) -> None:
    (served.backend.directory / "db.log").write_text("one\n")
    events = await Stream.open(served.rw, "events", follow=True)
    logs = await Stream.open(served.ro, "logs", name="db", follow=True, lines=5)
    assert await logs.items(1) == [{"line": "one"}]
    await served.server.close()
    assert await events.next() == {"end": True}
    assert await logs.next() == {"end": True}
    assert served.backend.subscriptions[0].closed
    assert not served.rw.exists() and not served.ro.exists()
    await events.close()
    await logs.close()


async def test_a_stream_ended_by_its_source_says_end(served: Served) -> None:
    stream = await Stream.open(served.rw, "events", follow=True)
    served.backend.subscriptions[0].inner.close()  # as EventBus.close() at daemon shutdown
    assert await stream.next() == {"end": True}
    await stream.close()


async def test_logs_send_the_last_lines(served: Served) -> None:
    log = served.backend.directory / "web-1.log"
    log.write_text("".join(f"line {i}\n" for i in range(150)) + "unfinished")

    async def lines(**args: Any) -> list[str]:
        replies = await exchange(served.rw, {"op": "logs", "args": {"name": "web-1", **args}})
        assert replies[0] == {"ok": True, "stream": True} and replies[-1] == {"end": True}
        return [r["item"]["line"] for r in replies[1:-1]]

    default = await lines()
    assert len(default) == 100 and default[0] == "line 51" and default[-1] == "unfinished"
    assert await lines(lines=2) == ["line 149", "unfinished"]
    assert await lines(lines=0) == []
    log.write_bytes(b"\n".join(b"x" * 1000 for _ in range(300)) + b"\n")  # past one read block
    assert await lines(lines=200) == ["x" * 1000] * 200


async def test_logs_follow_sees_appends_rotation_and_truncation(served: Served) -> None:
    log = served.backend.directory / "web-1.log"
    log.write_text("old 1\nold 2\n")
    stream = await Stream.open(served.rw, "logs", name="web-1", follow=True, lines=1)
    assert await stream.items(1) == [{"line": "old 2"}]
    with log.open("a") as file:
        file.write("appended\nhalf ")
        file.flush()
        assert await stream.items(1) == [{"line": "appended"}]
        file.write("a line\n")
    assert await stream.items(1) == [{"line": "half a line"}]
    log.rename(log.with_suffix(".log.1"))
    log.write_text("after rotation\n")
    assert await stream.items(1) == [{"line": "after rotation"}]
    log.write_text("cut\n")  # truncated in place, shorter than before
    assert await stream.items(1) == [{"line": "cut"}]
    await stream.close()


async def test_logs_follow_waits_for_a_log_that_does_not_exist_yet(served: Served) -> None:
    stream = await Stream.open(served.rw, "logs", name="db", follow=True)
    await asyncio.sleep(0.05)
    (served.backend.directory / "db.log").write_text("first boot\n")
    assert await stream.items(1) == [{"line": "first boot"}]
    await stream.close()
