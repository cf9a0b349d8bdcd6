"""ApiServer on real Unix sockets with a small fake Backend, spoken to with aiohttp's client.

The fake stands in for the daemon (whose own tests, tests/daemon/test_http_api.py, run the real
one); its events come from a real EventBus, so subscriptions are the real thing. Every bad
request is followed by a good one: the server must keep serving.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import pytest
import structlog
from structlog.testing import capture_logs

from controller.api import server as api
from controller.api.server import ApiServer, Caller
from controller.protocol import ACTIONS, NDJSON, ROUTES, rfc3339
from controller.settings import ApiSettings
from controller.state.events import EventBus, Subscription
from reconcilers.errors import BusyError, DriverError, NotSupportedError
from reconcilers.model import Cause, EventDetail, EventType, Reason, State
from tests.support.api import DocsBackend
from tests.support.domains import domain, manifest
from tests.support.waiting import async_wait_until

FAST = ApiSettings(request_timeout=0.3, log_poll=0.02, close_timeout=1.0)
BROKE = DriverError("web-1", "status", "the status store broke")
WRITES = [route for route in ROUTES if route.write]


def status(name: str, state: str = "running", **labels: str) -> dict[str, Any]:
    return {"name": name, "uuid": f"uuid-{name}", "driver": "qemu", "desired": "running",
            "state": state, "reason": "booted", "pid": 100, "id": 1, "conditions": [],
            "labels": labels}


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
        super().__init__(directory, {
            "web-1": status("web-1", tier="web", env="prod"), "db": status("db", tier="db"),
            **{name: status(name) for name in self.FAILURES}})
        self.calls: list[tuple[str, str, Caller]] = []
        self.subscriptions: list[TrackedSubscription] = []

    def diff(self, name: str | None) -> list[dict[str, Any]]:
        return [{"name": "web-1", "changes": [{"field": "memory", "old": 1, "new": 2,
                                               "apply": "restart"}]}]

    def subscribe(self, name: str | None) -> TrackedSubscription:
        self.subscriptions.append(TrackedSubscription(self.bus.subscribe(name)))
        return self.subscriptions[-1]

    def recent_events(self, name: str | None, n: int) -> list[dict[str, Any]]:
        return self.bus.recent(name, n)

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


def emit(bus: EventBus, domain: str, message: str = "",
         event: EventType = EventType.STARTED) -> dict[str, Any]:
    detail, state, reason = ((EventDetail.BOOTED, State.RUNNING, Reason.BOOTED)
                             if event is EventType.STARTED else
                             (EventDetail.DESTROYED, State.SHUTOFF, Reason.DESTROYED))
    return bus.emit(domain, event, detail, state, reason, Cause.API, {"uid": 0}, message)


@dataclass
class Served:
    backend: FakeBackend
    server: ApiServer
    rw: Path
    ro: Path
    session: aiohttp.ClientSession
    ro_session: aiohttp.ClientSession

    async def get(self, path: str, read_only: bool = False) -> tuple[int, Any]:
        session = self.ro_session if read_only else self.session
        async with session.get(f"http://localhost{path}") as response:
            return response.status, await response.json(content_type=None)

    async def post(self, path: str, body: Any = None,
                   read_only: bool = False, data: bytes | None = None) -> tuple[int, Any]:
        session = self.ro_session if read_only else self.session
        async with session.post(f"http://localhost{path}", json=body, data=data) as response:
            return response.status, await response.json(content_type=None)

    async def lines(self, path: str) -> list[Any]:
        """Every item of a finite stream."""
        async with self.session.get(f"http://localhost{path}") as response:
            assert response.status == 200 and response.content_type == NDJSON
            return [json.loads(line) async for line in response.content]


def unix_session(path: Path) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path)))


@pytest.fixture
async def served(sockdir: Path, tmp_path: Path) -> AsyncIterator[Served]:
    backend = FakeBackend(tmp_path)
    rw, ro = sockdir / "domctl.sock", sockdir / "domctl-ro.sock"
    server = ApiServer(backend, rw, ro, FAST)
    await server.start()
    async with unix_session(rw) as session, unix_session(ro) as ro_session:
        yield Served(backend, server, rw, ro, session, ro_session)
    await server.close()
    backend.bus.close()


class Stream:
    """A held-open streaming request, read line by line."""

    def __init__(self, session: aiohttp.ClientSession, response: aiohttp.ClientResponse) -> None:
        self.session, self.response = session, response

    @classmethod
    async def open(cls, socket_path: Path, path: str) -> Stream:
        session = unix_session(socket_path)
        response = await session.get(f"http://localhost{path}")
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"] == NDJSON
        assert response.headers["Transfer-Encoding"] == "chunked"
        return cls(session, response)

    async def next(self) -> Any:
        """The next item; None when the stream ended cleanly (its chunked body finished)."""
        line = await asyncio.wait_for(self.response.content.readline(), 5)
        return json.loads(line) if line else None

    async def items(self, n: int) -> list[Any]:
        return [await self.next() for _ in range(n)]

    async def close(self) -> None:
        self.response.close()
        await self.session.close()


async def ok(served: Served) -> None:
    """The server still serves."""
    assert (await served.get("/v1/version"))[0] == 200


# --- round trips ---------------------------------------------------------------------------

async def test_reads_round_trip(served: Served) -> None:
    code, version = await served.get("/v1/version")
    assert code == 200 and version["readOnly"] is False and "version" in version
    assert (await served.get("/v1/domains")) == (200, await served.backend.get(None))
    assert (await served.get("/v1/domains/db")) == (200, [status("db", tier="db")])
    code, described = await served.get("/v1/domains/web-1/description")
    assert code == 200 and described["status"]["name"] == "web-1" and described["job"] is None
    assert (await served.get("/v1/diff"))[1][0]["changes"][0]["apply"] == "restart"
    assert (await served.get("/v1/domains/web-1/generation")) == (
        200, {"name": "web-1", "generation": None})
    assert (await served.get("/v1/domains/web-1/export"))[1]["name"] == "web-1"
    full = (await served.get("/v1/domains/web-1/export?defaults=1"))[1]["manifest"]["spec"]
    assert full["restartPolicy"] == "Always"  # a default, written
    assert (await served.get("/v1/domains/web-1/display")) == (
        200, {"vnc": "127.0.0.1:1", "host": "127.0.0.1", "port": 5901})


async def test_stats_of_every_running_domain_by_selector_and_of_one(served: Served) -> None:
    code, figures = await served.get("/v1/stats?labelSelector=tier")
    assert code == 200 and [f["name"] for f in figures] == ["db", "web-1"]
    assert (await served.get("/v1/domains/db/stats"))[1][0]["cpu"]["seconds"] == 1.0
    served.backend.docs["db"] = status("db", state="shutoff", tier="db")
    code, reply = await served.get("/v1/domains/db/stats")
    assert (code, reply["error"]["type"]) == (409, "NotRunning")


async def test_exec_takes_a_command_of_strings(served: Served) -> None:
    code, reply = await served.post("/v1/domains/web-1/exec", {"command": ["ls", "-l"]})
    assert (code, reply) == (200, {"argv": ["exec-in", "web-1", "ls", "-l"]})
    bad_bodies: list[dict[str, Any]] = [{"command": "ls -l"}, {"command": ["ls", 1]},
                                        {"command": []}, {}]
    for bad in bad_bodies:
        code, reply = await served.post("/v1/domains/web-1/exec", bad)
        assert (code, reply["error"]["type"]) == (400, "BadRequest"), bad


async def test_a_preview_is_a_read_the_read_only_socket_serves(served: Served) -> None:
    text = manifest(domain("new-vm"))
    code, reply = await served.post("/v1/previews", {"file": "new.yaml", "text": text},
                                    read_only=True)
    assert (code, reply) == (200, [{"name": "new-vm", "action": "create", "changes": []}])
    code, reply = await served.post("/v1/previews", {"file": "new.yaml",
                                                     "text": text.replace("driver", "drivr")})
    assert (code, reply["error"]["type"]) == (422, "Invalid")
    assert reply["error"]["message"].startswith("new.yaml:")


@pytest.mark.parametrize(("selector", "names"), [
    ("tier=web", ["web-1"]), ("tier==db", ["db"]), ("tier", ["db", "web-1"]),
    ("tier,env!=prod", ["db"]), ("!tier", ["broken", "busy", "crash", "lxc-1"]),
    ("tier=web,env=dev", [])])
async def test_get_filters_by_label_selector(served: Served, selector: str,
                                             names: list[str]) -> None:
    code, documents = await served.get(f"/v1/domains?labelSelector={selector}")
    assert code == 200 and [doc["name"] for doc in documents] == names


async def test_a_bad_label_selector_is_a_400_that_says_why(served: Served) -> None:
    code, reply = await served.get("/v1/domains?labelSelector=tier=web,=x")
    assert code == 400 and reply["error"]["type"] == "BadRequest"
    assert "'=x' has no valid label key" in reply["error"]["message"]


@pytest.mark.parametrize("action", ACTIONS)
async def test_actions_reach_the_backend_with_the_callers_credentials(served: Served,
                                                                      action: str) -> None:
    reply = await served.post(f"/v1/domains/web-1/actions/{action}")
    assert reply == (200, {"message": f"web-1: {action} requested"})
    [(done, name, caller)] = served.backend.calls
    assert (done, name) == (action, "web-1")
    assert caller == Caller(pid=os.getpid(), uid=os.getuid(), gid=os.getgid(), read_only=False)


async def test_start_force_boot_and_host_shutdown_arguments(served: Served) -> None:
    assert (await served.post("/v1/domains/web-1/actions/start", {"forceBoot": True}))[0] == 200
    assert served.backend.calls[-1][:2] == ("start --force-boot", "web-1")
    code, refused = await served.post("/v1/domains/web-1/actions/stop", {"forceBoot": True})
    assert code == 400 and refused["error"] == {
        "type": "BadRequest", "message": "POST /v1/domains/{name}/actions/stop has no parameter "
        "'forceBoot' (known: none)"}
    code, defaults = await served.post("/v1/host-shutdown")
    assert defaults["message"] == "host-shutdown --mode save --parallel 4 --timeout 300: " \
        "nothing runs"
    _, given = await served.post("/v1/host-shutdown", {"mode": "shutdown", "parallel": 2,
                                                       "timeout": 9})
    assert given["message"].startswith("host-shutdown --mode shutdown --parallel 2 --timeout 9")
    code, bad = await served.post("/v1/host-shutdown", {"parallel": "4"})
    assert code == 400 and "'parallel' must be a integer" in bad["error"]["message"]


async def test_prune_needs_confirm_true(served: Served) -> None:
    assert (await served.post("/v1/prune", {"confirm": True}))[1]["message"] == "nothing to prune"
    for body in ({"confirm": False}, None):
        code, refused = await served.post("/v1/prune", body)
        assert code == 400 and "confirm" in refused["error"]["message"]
    assert [c[0] for c in served.backend.calls] == ["prune"]


async def test_events_filtered_by_limit_since_type_and_labels(served: Served) -> None:
    bus = served.backend.bus
    for i in range(25):
        emit(bus, "web-1", f"m{i}")
    assert [r["message"] for r in await served.lines("/v1/events?name=web-1")] == \
        [f"m{i}" for i in range(5, 25)]  # the last 20 by default
    assert [r["message"] for r in await served.lines("/v1/events?name=web-1&limit=2")] == \
        ["m23", "m24"]
    emit(bus, "db", "db stopped", EventType.STOPPED)
    stopped = await served.lines("/v1/events?type=stopped,undefined")
    assert [r["message"] for r in stopped] == ["db stopped"]
    assert [r["message"] for r in await served.lines("/v1/events?labelSelector=tier=db")] == \
        ["db stopped"]
    since = rfc3339(time.time() + 60)
    assert await served.lines(f"/v1/events?since={since}") == []
    assert len(await served.lines("/v1/events?since=2000-01-01T00:00:00Z")) == 26  # all since
    code, refused = await served.get("/v1/events?since=yesterday")
    assert code == 400 and "not an RFC 3339 time" in refused["error"]["message"]


async def test_each_request_is_logged_with_op_uid_and_domain(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    with capture_logs() as logs:
        # A fresh logger: the module's may be cached under another test's configuration.
        monkeypatch.setattr(api, "log", structlog.get_logger(api.__name__))
        await served.get("/v1/domains/db", read_only=True)
    [entry] = [e for e in logs if e["event"] == "api request"]
    assert entry["op"] == "get" and entry["uid"] == os.getuid() and entry["domain"] == "db"
    assert entry["socket"] == "ro" and entry["pid"] == os.getpid()


async def test_openapi_lists_exactly_the_routes_the_server_serves(served: Served) -> None:
    code, document = await served.get("/v1/openapi.json")
    assert code == 200 and document["openapi"].startswith("3.1")
    listed = {(method.upper(), path) for path, operations in document["paths"].items()
              for method in operations}
    assert listed == {(route.method, route.path) for route in ROUTES}
    for method, path in listed:  # each is served: no "no resource" / "does not take"
        async with served.session.request(method, "http://localhost" + path.replace(
                "{name}", "web-1") + ("?lines=0" if path.endswith("/log") else ""),
                json={"confirm": True} if path == "/v1/prune" else None) as response:
            refusal = (await response.json()).get("error", {}) if response.status != 200 \
                else {}
            assert refusal.get("type") != "MethodNotAllowed", (method, path, refusal)
            assert not refusal.get("message", "").startswith("no resource"), (method, path)
    assert (await served.get("/v1/domains/web-1/shell"))[0] == 404


# --- the two sockets -----------------------------------------------------------------------

async def test_socket_modes(served: Served) -> None:
    for path, mode in ((served.rw, 0o600), (served.ro, 0o666)):
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == mode
    assert sorted(p.name for p in served.rw.parent.iterdir()) == ["domctl-ro.sock", "domctl.sock"]


@pytest.mark.parametrize("route", WRITES, ids=[route.op for route in WRITES])
async def test_read_only_socket_refuses_every_post(served: Served, route: Any) -> None:
    code, reply = await served.post(route.path.replace("{name}", "web-1"), {}, read_only=True)
    assert code == 403 and reply["error"]["type"] == "PermissionDenied"
    assert f"cannot run '{route.op}'" in reply["error"]["message"]
    assert str(served.rw) in reply["error"]["message"]
    assert served.backend.calls == []


async def test_read_only_socket_serves_reads(served: Served) -> None:
    assert (await served.get("/v1/version", read_only=True))[1]["readOnly"] is True
    assert (await served.get("/v1/domains/db", read_only=True))[0] == 200
    assert (await served.get("/v1/domains/db/description", read_only=True))[0] == 200
    assert (await served.get("/v1/domains/web-1/diff", read_only=True))[0] == 200


async def test_a_stale_socket_file_is_replaced(sockdir: Path, tmp_path: Path) -> None:
    rw, ro = sockdir / "domctl.sock", sockdir / "domctl-ro.sock"
    rw.write_text("left by a crashed controller")
    backend = FakeBackend(tmp_path)
    server = ApiServer(backend, rw, ro, FAST)
    await server.start()
    async with unix_session(rw) as session, session.get("http://localhost/v1/version") as reply:
        assert reply.status == 200
    await server.close()
    backend.bus.close()
    assert not rw.exists() and not ro.exists()


# --- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "code", "type_", "text"), [
    ("GET", "/v1/domains/nope", 404, "NotFound", "no domain named nope"),
    ("GET", "/v1/domains/nope/description", 404, "NotFound", "no domain named nope"),
    ("GET", "/v1/domains/nope/log", 404, "NotFound", "no domain named nope"),
    ("GET", "/v1/networks/nope", 404, "NotFound", "nope"),
    ("POST", "/v1/domains/busy/actions/stop", 409, "Busy", "busy running modify since"),
    ("POST", "/v1/domains/lxc-1/actions/suspend", 501, "NotSupported",
     "suspend is not supported by the lxc driver"),
    ("POST", "/v1/domains/broken/actions/start", 500, "Failed", "qemu: could not open disk"),
    ("POST", "/v1/domains/crash/actions/start", 500, "Internal",
     "RuntimeError: a bug in the daemon"),
])
async def test_backend_errors_become_status_codes_and_typed_errors(
        served: Served, method: str, path: str, code: int, type_: str, text: str) -> None:
    async with served.session.request(method, f"http://localhost{path}") as response:
        reply = await response.json()
    assert response.status == code and reply["error"]["type"] == type_
    assert text in reply["error"]["message"]
    await ok(served)


async def test_an_invalid_manifest_is_a_422(served: Served) -> None:
    served.backend.docs["typo"] = {"kind": "InvalidManifest", "name": "typo",
                                   "message": "typo.yaml:3:1: memory: not a size"}
    code, reply = await served.get("/v1/domains/typo/generation")
    assert code == 422 and reply["error"] == {"type": "Invalid",
                                              "message": "typo.yaml:3:1: memory: not a size"}


@pytest.mark.parametrize(("method", "path", "body", "code", "text"), [
    ("GET", "/v1/domains?nmae=x", None, 400, "has no parameter 'nmae'"),
    ("GET", "/v1/domains?disks=maybe", None, 400, "'disks' must be 1 or 0"),
    ("GET", "/v1/domains/db/log?lines=-1", None, 400, "whole number 0 or more"),
    ("GET", "/v1/events?name=", None, 400, "'name' must not be empty"),
    ("GET", "/v1/events?limit=1&limit=2", None, 400, "given twice"),
    ("POST", "/v1/prune", b"{not json", 400, "the body is not JSON"),
    ("POST", "/v1/prune", b"[1, 2]", 400, "must be a JSON object"),
    ("POST", "/v1/host-shutdown", b'{"parallel": true}', 400, "'parallel' must be a integer"),
    ("POST", "/v1/host-shutdown", b'{"timeout": -1}', 400, "must not be negative"),
    ("POST", "/v1/host-shutdown", b'{"mode": ""}', 400, "must not be empty"),
    ("GET", "/v1/format-disk", None, 404, "no resource GET /v1/format-disk"),
    ("POST", "/v1/domains/db", b"", 405, "does not take POST"),
    ("POST", "/v1/prune", b" " * 70000, 413, "request too large (limit 65536 bytes)"),
])
async def test_bad_requests_get_an_error_and_the_server_serves_on(
        served: Served, method: str, path: str, body: bytes | None, code: int,
        text: str) -> None:
    async with served.session.request(method, f"http://localhost{path}", data=body) as response:
        reply = await response.json()
    assert response.status == code and text in reply["error"]["message"], reply
    await ok(served)


async def test_a_too_long_request_line_is_refused(served: Served) -> None:
    async with served.session.get("http://localhost/v1/domains/" + "x" * 70000) as response:
        assert response.status == 400
    await ok(served)


async def test_a_silent_client_is_closed_without_holding_up_others(served: Served) -> None:
    reader, writer = await asyncio.open_unix_connection(str(served.rw))
    writer.write(b"GET /v1/version HTTP/1.1\r\n")  # and never the rest of the head
    await ok(served)  # served while the silent one waits
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed after request_timeout
    writer.close()
    await ok(served)


async def test_twenty_concurrent_clients_with_open_streams(served: Served) -> None:
    streams = [await Stream.open(served.ro, "/v1/events?follow=1") for _ in range(3)]
    requests = [served.get("/v1/domains/web-1") if i % 3 else
                served.post("/v1/domains/db/actions/start") if i % 2 else
                served.get("/v1/version", read_only=True) for i in range(20)]
    replies = await asyncio.gather(*requests)
    assert all(code == 200 for code, _ in replies)
    record = emit(served.backend.bus, "db")
    for stream in streams:
        assert await stream.items(1) == [record]
        await stream.close()


# --- streams -------------------------------------------------------------------------------

async def test_events_follow_sends_recent_then_live_and_closes_on_disconnect(
        served: Served) -> None:
    old = emit(served.backend.bus, "web-1", "before")
    stream = await Stream.open(served.rw, "/v1/events?name=web-1&follow=1&limit=1")
    assert await stream.items(1) == [old]
    emit(served.backend.bus, "db", "another domain")
    live = emit(served.backend.bus, "web-1", "after subscribing")
    assert await stream.items(1) == [live]
    [subscription] = served.backend.subscriptions
    await stream.close()
    await async_wait_until(lambda: subscription.closed, "the server to close the subscription")


async def test_close_ends_every_stream_cleanly_and_removes_the_sockets(served: Served) -> None:
    (served.backend.directory / "db.log").write_text("one\n")
    events = await Stream.open(served.rw, "/v1/events?follow=1")
    logs = await Stream.open(served.ro, "/v1/domains/db/log?follow=1&lines=5")
    assert await logs.items(1) == [{"line": "one"}]
    await served.server.close()
    assert await events.next() is None  # the chunked body ended: no error, no truncation
    assert await logs.next() is None
    assert served.backend.subscriptions[0].closed
    assert not served.rw.exists() and not served.ro.exists()
    await events.close()
    await logs.close()


async def test_a_stream_ended_by_its_source_ends_cleanly(served: Served) -> None:
    stream = await Stream.open(served.rw, "/v1/events?follow=1")
    served.backend.subscriptions[0].inner.close()  # as EventBus.close() at daemon shutdown
    assert await stream.next() is None
    await stream.close()


async def test_a_stream_whose_source_fails_ends_with_an_error_line(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    async def failing(name: str | None) -> AsyncIterator[dict[str, Any]]:
        yield {"name": "web-1"}
        raise BROKE

    monkeypatch.setattr(served.backend, "watch_status", failing)
    assert await served.lines("/v1/domains/web-1?watch=1") == [
        {"name": "web-1"}, {"error": {"type": "Failed", "message": str(BROKE)}}]


async def test_watch_sends_the_document_at_every_change_and_deleted(served: Served) -> None:
    stream = await Stream.open(served.rw, "/v1/domains/web-1?watch=1")
    assert await stream.next() == served.backend.docs["web-1"]
    served.backend.docs["web-1"] = status("web-1", state="paused")
    assert (await stream.next())["state"] == "paused"
    del served.backend.docs["web-1"]
    assert await stream.next() == {"name": "web-1", "deleted": True}
    await stream.close()
    never = await Stream.open(served.rw, "/v1/domains/nope?watch=1")
    assert await never.next() == {"name": "nope", "deleted": True}  # at once
    await never.close()


async def test_watch_of_every_domain_under_a_label_selector(served: Served) -> None:
    stream = await Stream.open(served.ro, "/v1/domains?watch=1&labelSelector=tier")
    assert [doc["name"] for doc in await stream.items(2)] == ["db", "web-1"]
    served.backend.docs["db"] = status("db", state="paused", tier="db")
    served.backend.docs["busy"] = status("busy", state="paused")  # not selected: not sent
    served.backend.docs["web-2"] = status("web-2", tier="web")
    assert [(doc["name"], doc["state"]) for doc in await stream.items(2)] == [
        ("db", "paused"), ("web-2", "running")]
    del served.backend.docs["db"]
    assert await stream.next() == {"name": "db", "deleted": True}
    served.backend.docs["web-2"] = status("web-2")  # its label gone: it leaves the selection
    assert await stream.next() == {"name": "web-2", "deleted": True}
    await stream.close()


async def test_logs_send_the_last_lines(served: Served) -> None:
    log = served.backend.directory / "web-1.log"
    log.write_text("".join(f"line {i}\n" for i in range(150)) + "unfinished")

    async def lines(query: str = "") -> list[str]:
        return [item["line"] for item in await served.lines(f"/v1/domains/web-1/log{query}")]

    default = await lines()
    assert len(default) == 100 and default[0] == "line 51" and default[-1] == "unfinished"
    assert await lines("?lines=2") == ["line 149", "unfinished"]
    assert await lines("?lines=0") == []
    log.write_bytes(b"\n".join(b"x" * 1000 for _ in range(300)) + b"\n")  # past one read block
    assert await lines("?lines=200") == ["x" * 1000] * 200


async def test_logs_follow_sees_appends_rotation_and_truncation(served: Served) -> None:
    log = served.backend.directory / "web-1.log"
    log.write_text("old 1\nold 2\n")
    stream = await Stream.open(served.rw, "/v1/domains/web-1/log?follow=1&lines=1")
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
    stream = await Stream.open(served.rw, "/v1/domains/db/log?follow=1")
    await asyncio.sleep(0.05)
    (served.backend.directory / "db.log").write_text("first boot\n")
    assert await stream.items(1) == [{"line": "first boot"}]
    await stream.close()
