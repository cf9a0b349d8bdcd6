"""The API commands through the console script's `main(argv)` (tests/support/cli.py) against a
real ApiServer in a background thread: the output, the exit codes, the global options before
and after the command, and the parser's help.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from controller.api.parsing import Refused
from controller.api.server import Caller
from controller.cli import waiting
from controller.protocol import rfc3339
from controller.settings import ApiSettings
from controller.state.status import ConditionType
from reconcilers.errors import BusyError
from reconcilers.model import Cause, EventDetail, EventType, Reason, State
from tests.support.cli import Result, invoke

from .apisupport import DocsBackend, ThreadedServer

pytestmark = pytest.mark.usefixtures("quiet_logs")  # tests/unit/conftest.py


def status(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "uuid": f"uuid-{name}", "driver": "qemu", "desired": "running",
            "state": "running", "reason": "booted", "pid": 4242, "id": 1,
            "generation": "3f2a", "observedGeneration": "3f2a", "restarts": 0,
            "since": rfc3339(time.time() - 180), "backoffUntil": None,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Running",
                            "message": "", "lastTransitionTime": "2025-11-24T16:00:00.000Z"}],
            "pending": [], **fields}


LAN = {"kind": "Network", "name": "lan", "state": "active", "bridge": "dc-lan",
       "ipv4": "10.0.0.1/24", "ipv6": None, "nat": True, "dnsmasqPid": 77, "users": ["web-1"],
       "leases": [{"mac": "52:54:00:aa:bb:cc", "address": "10.0.0.5"}], "since": None,
       "conditions": [{"type": "RemovalBlocked", "status": "True", "reason": "InUse",
                       "message": "removal waits for running domains: web-1"}]}

STALLED = [{"type": "Ready", "status": "False", "reason": "NotRunning", "message": "shut off",
            "lastTransitionTime": "2025-11-24T16:00:00.000Z"},
           {"type": "Stalled", "status": "True", "reason": "BackingOff",
            "message": "start failed: could not open disk", "lastTransitionTime": ""}]
PENDING = [{"field": "memory", "old": 536870912, "new": 1073741824, "apply": "restart"},
           {"field": "state", "old": "running", "new": None, "apply": "live"}]


DISKS: list[dict[str, Any]] = [
    {"name": "root", "device": "disk", "source": "/pool/web-1/root.qcow2",
     "image": "/images/debian.qcow2", "format": "qcow2", "virtualSize": 20 * 2**30,
     "actualSize": 1536 * 1024},
    {"name": "seed", "device": "cdrom", "source": None,
     "problem": "not made yet (at the next start)"}]


class Backend(DocsBackend):
    DISKS: ClassVar[list[dict[str, Any]]] = DISKS
    JOB: ClassVar[dict[str, Any] | None] = {
        "job": "modify", "owner": "reconcile", "since": "2025-11-24T16:00:01Z",
        "interruptible": False}
    MESSAGE: ClassVar[str] = "running on its last valid spec"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, {
            "web-1": status("web-1", pending=PENDING, management="Observe", interfaces=[
                {"name": "dt-1a2b3c4d-0", "mac": "52:54:00:aa:bb:cc", "network": "lan",
                 "bridge": "dc-lan", "addresses": ["10.0.0.5/24"]}],
                labels={"tier": "web", "env": "prod"}, display="127.0.0.1:1"),
            "db": status("db", driver="lxc", state="shutoff", reason="failed", pid=None, id=None,
                         conditions=STALLED, since=None, labels={"tier": "db"})},
            {"lan": LAN})
        self.calls: list[tuple[str, str, int]] = []

    def diff(self, name: str | None) -> list[dict[str, Any]]:
        return [{"name": n, "changes": self.docs[n]["pending"]} for n in sorted(self.docs)
                if name in (None, n)]

    async def act(self, name: str, action: str, caller: Caller,
                  force_boot: bool = False) -> dict[str, Any]:
        self._known(name)
        if name == "db":
            raise BusyError("db", "destroy", "2025-11-24T16:00:00.000Z")
        self.calls.append((f"{action} --force-boot" if force_boot else action, name,
                           caller.uid))
        return {"message": f"{name}: {action} requested"}

    def prune(self, caller: Caller) -> dict[str, Any]:
        self.calls.append(("prune", "", caller.uid))
        return {"message": "pruned 3 domains"}

    async def host_shutdown(self, mode: str, parallel: int, timeout: int,
                            caller: Caller) -> dict[str, Any]:
        self.calls.append((f"host-shutdown {mode} {parallel} {timeout}", "", caller.uid))
        return {"mode": mode, "ok": False, "message": "2 domain(s) held down; not cleanly: db",
                "domains": [{"name": "web-1", "mode": mode, "result": "saved", "ok": True},
                            {"name": "db", "mode": "shutdown", "ok": False,
                             "result": "save failed (not supported); shutoff (shutdown)"}]}


@pytest.fixture
def server(sockdir: Path, tmp_path: Path) -> Iterator[ThreadedServer]:
    with ThreadedServer(Backend(tmp_path), sockdir, ApiSettings(log_poll=0.02)) as running:
        yield running


Cli = Callable[[list[str]], Result]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    return lambda argv: invoke(capsys, argv)


def run(cli: Cli, server: ThreadedServer | Path, *args: str) -> Result:
    path = server.rw if isinstance(server, ThreadedServer) else server
    return cli(["--log-level", "debug", "--socket", str(path), *args])


def emit(server: ThreadedServer, domain: str, message: str = "") -> dict[str, Any]:
    return server.run(lambda: server.backend.bus.emit(  # type: ignore[no-any-return]
        domain, EventType.STARTED, EventDetail.BOOTED, State.RUNNING, Reason.BOOTED,
        Cause.API, {"uid": 0}, message))


# --- get, describe, diff -------------------------------------------------------------------

def test_get_table(cli: Cli, server: ThreadedServer) -> None:
    result = run(cli, server, "get")
    assert result.exit_code == 0, result.output
    header, db, web = result.stdout.splitlines()
    assert header.split() == ["NAME", "DRIVER", "DESIRED", "STATE", "REASON", "ID", "PID", "AGE",
                              "MESSAGE"]
    assert db.split() == ["db", "lxc", "running", "shutoff", "failed", "-", "-", "-",
                          "start", "failed:", "could", "not", "open", "disk"]
    assert web.split() == ["web-1", "qemu", "running", "running", "booted", "1", "4242", "3m",
                           "-"]
    assert header.index("MESSAGE") == db.index("start failed")  # aligned columns


def test_get_wide_adds_the_addresses(cli: Cli, server: ThreadedServer) -> None:
    result = run(cli, server, "get", "-o", "wide")
    assert result.exit_code == 0, result.output
    header, _, web = result.stdout.splitlines()
    assert header.split()[-4:] == ["ADDRESSES", "VNC", "MESSAGE", "LABELS"]
    assert web.split()[-4:] == ["10.0.0.5/24", "127.0.0.1:1", "-", "env=prod,tier=web"]
    assert header.split()[3] == "MODE" and web.split()[3] == "Observe"


def test_a_fleets_documents_get_a_host_column(cli: Cli, server: ThreadedServer) -> None:
    for name, doc in server.backend.docs.items():
        server.backend.docs[name] = {**doc, "host": "h2" if name == "web-1" else None}
    result = run(cli, server, "get")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split()[:2] == ["NAME", "HOST"]
    assert {row.split()[0]: row.split()[1] for row in rows}["web-1"] == "h2"


def test_get_networks_and_one_network(cli: Cli, server: ThreadedServer) -> None:
    result = run(cli, server, "get", "networks")
    assert result.exit_code == 0, result.output
    header, lan = result.stdout.splitlines()
    assert header.split() == ["NAME", "STATE", "BRIDGE", "IPV4", "IPV6", "NAT", "LEASES",
                              "USERS", "AGE", "MESSAGE"]
    assert lan.split()[:8] == ["lan", "active", "dc-lan", "10.0.0.1/24", "-", "yes", "1",
                               "web-1"]
    assert lan.endswith("removal waits for running domains: web-1")
    one = run(cli, server, "get", "network", "lan", "-o", "json")
    assert json.loads(one.stdout)["bridge"] == "dc-lan"
    missing = run(cli, server, "get", "network", "wan")
    assert missing.exit_code == 1 and "no network named wan" in missing.stderr
    bad = run(cli, server, "get", "a", "b")
    assert bad.exit_code == 2 and "networks [NAME]" in bad.output


def test_describe_shows_the_interfaces(cli: Cli, server: ThreadedServer) -> None:
    result = run(cli, server, "describe", "web-1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    start = lines.index("Interfaces:")
    assert lines[start + 2].split() == ["dt-1a2b3c4d-0", "52:54:00:aa:bb:cc", "lan",
                                        "10.0.0.5/24"]
    assert "Management:          Observe" in lines


@pytest.mark.parametrize(("output", "load"), [("json", json.loads), ("yaml", yaml.safe_load)])
def test_get_documents(cli: Cli, server: ThreadedServer, output: str,
                       load: Callable[[str], Any]) -> None:
    """The documents whole, with each domain's disks (asked for only by -o json/yaml)."""
    docs = server.backend.docs
    one = run(cli, server, "get", "web-1", "-o", output)
    assert one.exit_code == 0 and load(one.stdout) == {**docs["web-1"], "disks": DISKS}
    every = run(cli, server, "get", "-o", output)
    assert load(every.stdout) == [{**docs[n], "disks": DISKS} for n in ("db", "web-1")]


def test_describe_shows_the_disks(cli: Cli, server: ThreadedServer) -> None:
    result = run(cli, server, "describe", "web-1")
    lines = result.stdout.splitlines()
    start = lines.index("Disks:")
    assert lines[start + 1].split() == ["NAME", "DEVICE", "SOURCE", "IMAGE", "FORMAT",
                                        "VIRTUAL", "ALLOCATED"]
    assert lines[start + 2].split() == ["root", "disk", "/pool/web-1/root.qcow2",
                                        "/images/debian.qcow2", "qcow2", "20.0Gi", "1.5Mi"]
    assert lines[start + 3].split()[:3] == ["seed", "cdrom", "-"]
    assert lines[start + 3].endswith("not made yet (at the next start)")


def test_get_unknown_name_exits_1(cli: Cli, server: ThreadedServer) -> None:
    result = run(cli, server, "get", "nope")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == "error: no domain named nope\n"


def names(result: Result) -> list[str]:
    """The NAME column of a table (its header left out)."""
    return [line.split()[0] for line in result.stdout.splitlines()[1:]]


def test_get_show_labels_adds_a_labels_column(cli: Cli, server: ThreadedServer) -> None:
    header, db, web = run(cli, server, "get", "--show-labels").stdout.splitlines()
    assert header.split()[-2:] == ["MESSAGE", "LABELS"]
    assert db.split()[-1] == "tier=db" and web.split()[-2:] == ["-", "env=prod,tier=web"]


@pytest.mark.parametrize(("selector", "selected"), [
    ("tier=web", ["web-1"]), ("tier!=web", ["db"]), ("tier", ["db", "web-1"]),
    ("env", ["web-1"]), ("!env", ["db"]), ("tier=db,env", []), ("tier=web,env==prod", ["web-1"])])
def test_get_selector(cli: Cli, server: ThreadedServer, selector: str,
                      selected: list[str]) -> None:
    result = run(cli, server, "get", "-l", selector)
    assert result.exit_code == 0, result.output
    assert names(result) == selected
    assert (result.stderr == "no domains\n") == (not selected)


def test_a_bad_selector_is_a_usage_error_before_any_request(cli: Cli, sockdir: Path) -> None:
    nowhere = sockdir / "domctl.sock"  # a request would fail with exit 1
    for argv in (["get", "-l", "tier=we b"], ["stop", "-l", "=web"], ["events", "-l", "a,,b"],
                 ["wait", "-l", "x=a=b", "--for", "delete"]):
        result = run(cli, nowhere, *argv)
        assert result.exit_code == 2, (argv, result.output)
        assert "label selector" in result.stderr, result.stderr


@pytest.mark.parametrize("argv", [["get", "web-1", "-l", "tier=web"],
                                  ["get", "networks", "-l", "tier=web"],
                                  ["get", "networks", "-w"], ["get", "-w", "--invalid"],
                                  ["stop", "web-1", "-l", "tier=web"], ["stop"],
                                  ["events", "--name", "web-1", "-l", "tier=web"],
                                  ["wait", "web-1", "-l", "tier=web", "--for", "delete"],
                                  ["wait", "web-1", "--all", "--for", "delete"],
                                  ["wait", "--for", "delete"]])
def test_what_does_not_go_together_is_a_usage_error(cli: Cli, server: ThreadedServer,
                                                   argv: list[str]) -> None:
    result = run(cli, server, *argv)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"usage: domctl {argv[0]} "), result.stderr
    assert server.backend.calls == []


def test_get_output_name(cli: Cli, server: ThreadedServer) -> None:
    assert run(cli, server, "get", "-o", "name").stdout == "domain/db\ndomain/web-1\n"
    assert run(cli, server, "get", "-o", "name", "-l", "tier=db").stdout == "domain/db\n"
    assert run(cli, server, "get", "web-1", "-o", "name").stdout == "domain/web-1\n"
    assert run(cli, server, "get", "networks", "-o", "name").stdout == "network/lan\n"


@pytest.mark.parametrize(("argv", "printed"), [
    (["get", "-o", "jsonpath={.items[*].name}"], "db web-1"),
    (["get", "web-1", "-o", "jsonpath={.state}/{.labels.tier}"], "running/web"),
    (["get", "-o=jsonpath={range .items[*]}{.name}{'\\t'}{.state}{\"\\n\"}{end}"],
     "db\tshutoff\nweb-1\trunning\n"),
    (["get", "-o", 'jsonpath={.items[?(@.state=="running")].interfaces[*].addresses[*]}'],
     "10.0.0.5/24"),
    (["get", "web-1", "-o", "jsonpath={.labels}"], '{"tier": "web", "env": "prod"}'),
    (["get", "web-1", "-o", "jsonpath={.disks[0].name} {.pid} {.nothing}"], "root 4242 "),
    (["get", "-l", "tier=db", "-o", "jsonpath={.items[*].name}"], "db")])
def test_get_jsonpath(cli: Cli, server: ThreadedServer, argv: list[str],
                      printed: str) -> None:
    """kubectl's templates: on the document of `get NAME`, else on a List of them; no newline
    added, values joined by spaces, non-strings as JSON, a missing path prints nothing."""
    result = run(cli, server, *argv)
    assert result.exit_code == 0, result.output
    assert result.stdout == printed


@pytest.mark.parametrize(("output", "why"), [
    ("jsonpath={.items[}", "jsonpath template '{.items[}'"),
    ("jsonpath={range .items[*]}{.name}", "{range ...} without its {end}"),
    ("jsonpath={name}", "a path starts with '.', '@' or '$'"),
    ("jsonpath={.name", "without its '}'"),
    ("jsonpath", "expected one of table, wide, name, json, yaml or jsonpath=TEMPLATE"),
    ("names", "expected one of")])
def test_a_bad_output_is_a_usage_error_before_any_request(cli: Cli, sockdir: Path,
                                                          output: str, why: str) -> None:
    result = run(cli, sockdir / "domctl.sock", "get", "-o", output)
    assert result.exit_code == 2, result.output
    assert why in result.stderr, result.stderr


def later(*steps: tuple[float, Callable[[], object]]) -> threading.Thread:
    """A thread running each step's function once its delay (from now) has passed."""
    def play() -> None:
        started = time.monotonic()
        for delay, step in steps:
            time.sleep(max(0.0, started + delay - time.monotonic()))
            step()

    thread = threading.Thread(target=play)
    thread.start()
    return thread


def test_get_watch_prints_a_row_per_change_until_the_stream_ends(
        cli: Cli, server: ThreadedServer) -> None:
    docs = server.backend.docs
    player = later((0.4, lambda: docs.update(db=status("db", labels={"tier": "db"}))),
                   (0.8, lambda: docs.pop("web-1")), (1.2, server.close))
    result = run(cli, server, "get", "-w")
    player.join()
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["NAME", "DRIVER", "DESIRED", "STATE", "REASON", "ID", "PID", "AGE",
                              "MESSAGE"]
    assert [row.split()[:4] for row in rows] == [  # the listing, then one row per change
        ["db", "lxc", "running", "shutoff"], ["web-1", "qemu", "running", "running"],
        ["db", "qemu", "running", "running"], ["web-1", "-", "-", "-"]]
    assert rows[-1].split()[-1] == "deleted"
    assert all(row.index("running") == header.index("DESIRED") for row in rows[:3])


def test_get_watch_other_formats_print_each_changed_document(cli: Cli,
                                                             server: ThreadedServer) -> None:
    docs = server.backend.docs
    player = later((0.4, lambda: docs.update({"web-1": status("web-1", state="paused")})),
                   (0.8, server.close))
    result = run(cli, server, "get", "web-1", "-w", "-o", "jsonpath={.name}={.state}")
    player.join()
    assert result.exit_code == 0, result.output
    assert result.stdout == "web-1=running\nweb-1=paused\n"


def test_describe(cli: Cli, server: ThreadedServer) -> None:
    emit(server, "web-1", "booted by the test")
    result = run(cli, server, "describe", "web-1")
    assert result.exit_code == 0, result.output
    text = result.stdout
    for expected in ("Name:                web-1", "State:               running (booted)",
                     "Message:             running on its last valid spec",
                     "Conditions:\n  TYPE ", "  Ready   True     Running",
                     "Pending changes:\n  memory: 536870912 -> 1073741824 (restart required)",
                     "  state: running -> (unset) (live)",
                     "Job:\n  modify by reconcile since 2025-11-24T16:00:01Z",
                     "booted by the test"):
        assert expected in text, text


def test_diff(cli: Cli, server: ThreadedServer) -> None:
    result = run(cli, server, "diff")
    assert result.exit_code == 0
    assert result.stdout == ("web-1:\n  memory: 536870912 -> 1073741824 (restart required)\n"
                             "  state: running -> (unset) (live)\n")
    assert run(cli, server, "diff", "db").stdout == "db: no changes\n"


# --- events, logs --------------------------------------------------------------------------

def test_events_json_has_exactly_the_documented_keys(cli: Cli,
                                                     server: ThreadedServer) -> None:
    emit(server, "web-1", "one")
    emit(server, "web-1", "two")
    result = run(cli, server, "events", "--name", "web-1", "-o", "json")
    assert result.exit_code == 0
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["message"] for r in records] == ["one", "two"]
    assert all(set(r) == {"time", "domain", "event", "detail", "state", "reason", "cause",
                          "message"} for r in records)


def test_events_text_lines(cli: Cli, server: ThreadedServer) -> None:
    record = emit(server, "web-1", "hello")
    line = run(cli, server, "events").stdout.strip()
    assert line.split() == [record["time"], "web-1", "started/booted", "running/booted", "api",
                            "hello"]


def test_events_follow_prints_live_events_until_the_server_ends(cli: Cli,
                                                                 server: ThreadedServer) -> None:
    def emit_then_close() -> None:
        assert server.backend.subscribed.wait(10), "events --follow never subscribed"
        emit(server, "db", "live one")
        server.close()

    closer = threading.Thread(target=emit_then_close)
    closer.start()
    result = run(cli, server, "events", "--follow", "-o", "json")
    closer.join()
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["message"] for line in result.stdout.splitlines()] == ["live one"]


def emit_event(server: ThreadedServer, domain: str, event: EventType,
               detail: EventDetail) -> dict[str, Any]:
    return server.run(lambda: server.backend.bus.emit(  # type: ignore[no-any-return]
        domain, event, detail, State.SHUTOFF, Reason.SHUTDOWN, Cause.MANIFEST, {}, event.value))


def test_events_filters(cli: Cli, server: ThreadedServer) -> None:
    """--type, --limit, --since and -l go to the controller, which filters."""
    for _ in range(3):
        emit(server, "web-1", "started")
        emit_event(server, "web-1", EventType.STOPPED, EventDetail.SHUTDOWN)
    emit_event(server, "web-1", EventType.DEFINED, EventDetail.UPDATED)

    def messages(*argv: str) -> list[str]:
        result = run(cli, server, "events", "-o", "json", *argv)
        assert result.exit_code == 0, result.output
        return [json.loads(line)["message"] for line in result.stdout.splitlines()]

    assert messages("--type", "stopped") == ["stopped"] * 3
    assert messages("--type", "stopped,defined", "--limit", "2") == ["stopped", "defined"]
    assert messages("--type", "defined", "--type", "started") == ["started"] * 3 + ["defined"]
    assert messages("--limit", "1") == ["defined"]
    assert len(messages("--since", "1h")) == 7
    assert messages("--since", "1h", "--limit", "2") == ["stopped", "defined"]
    assert messages("--since", rfc3339(time.time() + 3600)) == []
    assert messages("--since", "2025-11-24T16:00:00Z", "--type", "defined") == ["defined"]
    assert len(messages("-l", "tier=web")) == 7
    assert messages("-l", "tier=db") == []


@pytest.mark.parametrize("since", ["yesterday", "5", "1y", "2025-13-01T00:00:00Z"])
def test_events_since_refuses_what_is_no_time(cli: Cli, sockdir: Path, since: str) -> None:
    result = run(cli, sockdir / "domctl.sock", "events", "--since", since)
    assert result.exit_code == 2 and "neither a duration" in result.stderr, result.output


def test_logs(cli: Cli, server: ThreadedServer) -> None:
    (server.backend.directory / "web-1.log").write_text("booting\nready\n")
    assert run(cli, server, "logs", "web-1").stdout == "booting\nready\n"
    assert run(cli, server, "logs", "web-1", "--lines", "1").stdout == "ready\n"


# --- wait ----------------------------------------------------------------------------------

@pytest.mark.parametrize("for_", ["state=running", "condition=Ready", "condition=ready=true"])
def test_wait_met_exits_0(cli: Cli, server: ThreadedServer, for_: str) -> None:
    result = run(cli, server, "wait", "web-1", "--for", for_)
    assert result.exit_code == 0 and result.stdout == f"web-1: {for_}\n"


def test_wait_times_out_with_exit_3(cli: Cli, server: ThreadedServer) -> None:
    started = time.monotonic()
    result = run(cli, server, "wait", "db", "--for", "condition=Ready", "--timeout", "0.5")
    assert 0.5 <= time.monotonic() - started < 3
    assert result.exit_code == 3
    assert result.stderr == ("error: timed out waiting for db: condition=Ready; start failed: "
                             "could not open disk\n")


def test_wait_for_a_domain_that_appears_later(cli: Cli, server: ThreadedServer) -> None:
    timer = threading.Timer(0.3, lambda: server.backend.docs.update(new=status("new")))
    timer.start()
    result = run(cli, server, "wait", "new", "--for", "state=running", "--timeout", "5")
    timer.join()
    assert result.exit_code == 0, result.output


class EditedBackend(Backend):
    """web-1's manifest was just edited: the controller holds `on_disk`, its status still
    shows the old generation (Ready) until the test lets a pass project the new one."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.on_disk: list[str] = ["4b1c"]
        self.asked = 0

    async def wait(self, name: str) -> dict[str, Any]:
        self.asked += 1
        if name == "bad":
            raise Refused("Invalid", "bad.yaml:3:3: spec.memory: 'lots' is not a size")
        return {"name": name, "generation": self.on_disk[0]}


@pytest.fixture
def edited(sockdir: Path, tmp_path: Path) -> Iterator[ThreadedServer]:
    with ThreadedServer(EditedBackend(tmp_path), sockdir, ApiSettings()) as running:
        yield running


def test_wait_waits_for_the_generation_on_disk_when_called(cli: Cli,
                                                           edited: ThreadedServer) -> None:
    docs = edited.backend.docs
    timer = threading.Timer(0.6, lambda: docs.update({"web-1": status(
        "web-1", generation="4b1c", observedGeneration="4b1c")}))
    started = time.monotonic()
    timer.start()
    result = run(cli, edited, "wait", "web-1", "--for", "condition=Ready", "--timeout", "10")
    timer.join()
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started >= 0.6, "Ready of the old generation was taken"


def test_wait_times_out_naming_the_generation_not_observed(cli: Cli,
                                                           edited: ThreadedServer) -> None:
    result = run(cli, edited, "wait", "web-1", "--for", "state=running", "--timeout", "0.5")
    assert result.exit_code == 3
    assert result.stderr == ("error: timed out waiting for web-1: state=running; generation "
                             "4b1c not observed yet (observedGeneration 3f2a)\n")


def test_wait_follows_a_manifest_changed_again(cli: Cli, edited: ThreadedServer) -> None:
    backend = edited.backend

    def edited_again() -> None:  # a later edit: the status settles on a third generation
        backend.on_disk[0] = "5d2e"
        backend.docs["web-1"] = status("web-1", generation="5d2e", observedGeneration="5d2e")

    timer = threading.Timer(0.3, edited_again)
    timer.start()
    result = run(cli, edited, "wait", "web-1", "--for", "condition=Ready", "--timeout", "10")
    timer.join()
    assert result.exit_code == 0, result.output
    assert backend.asked >= 2


def test_wait_fails_at_once_on_an_invalid_manifest(cli: Cli,
                                                    edited: ThreadedServer) -> None:
    started = time.monotonic()
    result = run(cli, edited, "wait", "bad", "--for", "condition=Ready", "--timeout", "30")
    assert time.monotonic() - started < 5
    assert result.exit_code == 1
    assert result.stderr == "error: bad.yaml:3:3: spec.memory: 'lots' is not a size\n"


def test_wait_refuses_a_bad_for(cli: Cli, server: ThreadedServer) -> None:
    result = run(cli, server, "wait", "web-1", "--for", "running")
    assert result.exit_code == 2 and "state=STATE or condition=TYPE" in result.stderr


@pytest.mark.parametrize(("for_", "why"), [
    ("state=runing", "unknown state 'runing': one of nostate, running, blocked, paused"),
    ("condition=Redy", "unknown condition 'Redy': one of Ready, Synced, PendingRestart"),
    ("condition=Ready=maybe", "expected state=STATE or condition=TYPE[=True|False], or delete"),
    ("deleted", "or delete")])
def test_wait_refuses_an_unknown_state_or_condition_before_any_request(
        cli: Cli, sockdir: Path, for_: str, why: str) -> None:
    result = run(cli, sockdir / "domctl.sock", "wait", "web-1", "--for", for_)
    assert result.exit_code == 2 and why in result.stderr, result.output


def test_waits_known_states_and_conditions_are_the_controllers() -> None:
    """The CLI's lists (it imports neither the model nor the status module) are theirs."""
    assert tuple(state.value for state in State) == waiting.STATES
    assert {c.value for c in ConditionType} - {"RemovalBlocked"} == set(waiting.CONDITIONS)


def test_wait_for_delete(cli: Cli, server: ThreadedServer) -> None:
    player = later((0.3, lambda: server.backend.docs.pop("db")))
    result = run(cli, server, "wait", "db", "--for", "delete", "--timeout", "10")
    player.join()
    assert result.exit_code == 0 and result.stdout == "db: delete\n", result.output
    gone = run(cli, server, "wait", "never-was", "--for=delete", "--timeout", "10")
    assert gone.exit_code == 0 and gone.stdout == "never-was: delete\n", gone.output
    still = run(cli, server, "wait", "web-1", "--for", "delete", "--timeout", "0.3")
    assert still.exit_code == 3, still.output
    assert still.stderr == "error: timed out waiting for web-1: delete\n"


def test_wait_all_waits_for_every_domain(cli: Cli, server: ThreadedServer) -> None:
    docs = server.backend.docs
    player = later((0.3, lambda: docs.update(db=status("db"))))
    result = run(cli, server, "wait", "--all", "--for", "state=running", "--timeout", "10")
    player.join()
    assert result.exit_code == 0, result.output
    assert result.stdout == "web-1: state=running\ndb: state=running\n"


def test_wait_all_times_out_naming_those_that_did_not_make_it(cli: Cli,
                                                              server: ThreadedServer) -> None:
    result = run(cli, server, "wait", "--all", "--for", "condition=Ready", "--timeout", "0.5")
    assert result.exit_code == 3
    assert result.stdout == "web-1: condition=Ready\n"
    assert result.stderr == ("error: timed out waiting for db: condition=Ready; start failed: "
                             "could not open disk\n")


def test_wait_selector(cli: Cli, server: ThreadedServer) -> None:
    result = run(cli, server, "wait", "-l", "tier=db", "--for", "state=shutoff", "--timeout", "5")
    assert result.exit_code == 0 and result.stdout == "db: state=shutoff\n", result.output
    player = later((0.3, lambda: server.backend.docs.clear()))
    result = run(cli, server, "wait", "-l", "tier", "--for", "delete", "--timeout", "10")
    player.join()
    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.splitlines()) == ["db: delete", "web-1: delete"]
    none = run(cli, server, "wait", "-l", "tier", "--for", "delete", "--timeout", "10")
    assert none.exit_code == 1 and none.stderr == "error: no domain matches -l tier\n"


# --- actions -------------------------------------------------------------------------------

@pytest.mark.parametrize("action", ["start", "stop", "suspend", "resume", "restart", "save"])
def test_actions(cli: Cli, server: ThreadedServer, action: str) -> None:
    result = run(cli, server, action, "web-1")
    assert result.exit_code == 0 and result.stdout == f"web-1: {action} requested\n"
    assert server.backend.calls == [(action, "web-1", os.getuid())]


def test_an_action_on_each_domain_a_selector_picks(cli: Cli, server: ThreadedServer) -> None:
    result = run(cli, server, "suspend", "-l", "tier=web")
    assert result.exit_code == 0 and result.stdout == "web-1: suspend requested\n"
    assert server.backend.calls == [("suspend", "web-1", os.getuid())]
    both = run(cli, server, "stop", "-l", "tier")  # db refuses: the others go on, exit 1
    assert both.exit_code == 1
    assert both.stdout == "web-1: stop requested\n"
    assert both.stderr == ("error: db: db: busy running destroy since "
                           "2025-11-24T16:00:00.000Z\n")
    forced = run(cli, server, "start", "--force-boot", "-l", "env=prod")
    assert forced.exit_code == 0 and forced.stdout == "web-1: start requested\n"
    assert server.backend.calls[-1] == ("start --force-boot", "web-1", os.getuid())


def test_an_action_whose_selector_matches_nothing_says_so(cli: Cli,
                                                          server: ThreadedServer) -> None:
    result = run(cli, server, "destroy", "-l", "tier=cache")
    assert result.exit_code == 1 and result.stderr == "error: no domain matches -l tier=cache\n"
    assert server.backend.calls == []


def test_start_force_boot(cli: Cli, server: ThreadedServer) -> None:
    result = run(cli, server, "start", "--force-boot", "web-1")
    assert result.exit_code == 0 and result.stdout == "web-1: start requested\n"
    assert server.backend.calls == [("start --force-boot", "web-1", os.getuid())]


def test_host_shutdown_prints_each_domain_and_exits_1_when_one_was_not_clean(
        cli: Cli, server: ThreadedServer) -> None:
    result = run(cli, server, "host-shutdown", "--parallel", "2", "--timeout", "60")
    assert result.exit_code == 1, result.output
    header, web, db, summary = result.stdout.splitlines()
    assert header.split() == ["NAME", "MODE", "RESULT"]
    assert web.split() == ["web-1", "save", "saved"]
    assert db.split()[:3] == ["db", "shutdown", "save"]
    assert summary == "2 domain(s) held down; not cleanly: db"
    assert server.backend.calls == [("host-shutdown save 2 60", "", os.getuid())]
    refused = run(cli, server, "host-shutdown", "--mode", "hibernate")
    assert refused.exit_code == 2 and "invalid choice: 'hibernate'" in refused.stderr


SAVED = {"path": "/var/lib/domctl/save/web-1.save", "size": 300 * 2**20, "paused": True}


def test_a_saved_domain_shows_its_image(cli: Cli, server: ThreadedServer) -> None:
    """get's MESSAGE: the image's size and age; describe: the image in full."""
    server.backend.docs["web-1"] = status(
        "web-1", desired="shutoff", state="shutoff", reason="saved", pid=None, id=None,
        saved={**SAVED, "savedAt": rfc3339(time.time() - 300)})
    result = run(cli, server, "get", "web-1")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].endswith("saved image 300.0Mi, 5m old")
    described = run(cli, server, "describe", "web-1").stdout.splitlines()
    start = described.index("Saved image:")
    assert described[start + 1].split() == ["Path:", SAVED["path"]]
    assert described[start + 2].split() == ["Size:", "300.0Mi"]
    assert described[start + 3].endswith("(5m ago)")
    assert described[start + 4].split() == ["Restores:", "paused"]


def test_an_action_error_exits_1(cli: Cli, server: ThreadedServer) -> None:
    result = run(cli, server, "stop", "db")
    assert result.exit_code == 1
    assert result.stderr == "error: db: busy running destroy since 2025-11-24T16:00:00.000Z\n"


def test_the_read_only_socket_refuses_actions(cli: Cli, server: ThreadedServer) -> None:
    result = run(cli, server.ro, "stop", "web-1")
    assert result.exit_code == 1 and "read-only socket cannot run 'stop'" in result.stderr
    assert run(cli, server.ro, "get", "web-1").exit_code == 0


def test_prune(cli: Cli, server: ThreadedServer) -> None:
    refused = run(cli, server, "prune")
    assert refused.exit_code == 2 and "--confirm" in refused.stderr
    assert "prune needs --confirm" in refused.stderr and "disk images are kept" in refused.stderr
    assert server.backend.calls == []
    confirmed = run(cli, server, "prune", "--confirm")
    assert confirmed.exit_code == 0 and confirmed.stdout == "pruned 3 domains\n"


# --- sockets, global options ----------------------------------------------------------------

def test_missing_socket_says_the_daemon_is_not_running(cli: Cli, sockdir: Path) -> None:
    missing = sockdir / "domctl.sock"
    result = run(cli, missing, "get")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: no controller socket at {missing}: start the "
                                    "controller with `domctl run`")


def test_domctl_socket_environment_variable(cli: Cli, server: ThreadedServer,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOMCTL_SOCKET", str(server.ro))
    result = cli(["get", "web-1", "-o", "json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["name"] == "web-1"


@pytest.mark.parametrize("where", ["before", "after the command", "after the name"])
def test_global_options_go_before_or_after_the_command(cli: Cli, server: ThreadedServer,
                                                       where: str) -> None:
    socket = ["--socket", str(server.ro), "--log-level", "debug"]
    argv = {"before": [*socket, "get", "web-1"],
            "after the command": ["get", *socket, "web-1"],
            "after the name": ["get", "web-1", *socket]}[where]
    result = cli([*argv, "-o", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["name"] == "web-1"


def test_a_global_option_after_the_command_wins(cli: Cli, server: ThreadedServer,
                                                sockdir: Path) -> None:
    missing = str(sockdir / "nothing.sock")
    assert cli(["--socket", missing, "get", "--socket", str(server.ro)]).exit_code == 0
    wrong = cli(["--socket", str(server.ro), "get", "--socket", missing])
    assert wrong.exit_code == 1 and missing in wrong.stderr


# --- invalid manifests that stand for no domain ---------------------------------------------

NEW_VM = {"kind": "InvalidManifest", "name": "new-vm", "file": "/m/new-vm.yaml", "state": "-",
          "message": "/m/new-vm.yaml:4:3: spec.memroy: unknown field",
          "problems": [{"file": "/m/new-vm.yaml", "line": 4, "column": 3,
                        "field": "spec.memroy", "message": "unknown field"}]}


@pytest.fixture
def invalid(sockdir: Path, tmp_path: Path) -> Iterator[ThreadedServer]:
    backend = Backend(tmp_path)
    backend.docs["new-vm"] = NEW_VM
    with ThreadedServer(backend, sockdir, ApiSettings(log_poll=0.02)) as running:
        yield running


def test_get_lists_an_invalid_manifest_and_get_invalid_only_those(
        cli: Cli, invalid: ThreadedServer) -> None:
    listed = run(cli, invalid, "get")
    assert listed.exit_code == 0, listed.output
    [row] = [line for line in listed.stdout.splitlines() if line.startswith("new-vm")]
    assert row.split() == ["new-vm", "-", "-", "-", "-", "-", "-", "-",
                           "/m/new-vm.yaml:4:3:", "spec.memroy:", "unknown", "field"]
    only = run(cli, invalid, "get", "--invalid")
    assert [line.split()[0] for line in only.stdout.splitlines()] == ["NAME", "new-vm"]
    documents = json.loads(run(cli, invalid, "get", "--invalid", "-o", "json").stdout)
    assert documents == [NEW_VM]  # no disks: it is no domain


def test_describe_an_invalid_manifest_shows_its_problems(cli: Cli,
                                                         invalid: ThreadedServer) -> None:
    result = run(cli, invalid, "describe", "new-vm")
    assert result.exit_code == 0, result.output
    assert "File:                /m/new-vm.yaml" in result.stdout
    assert "Problems:\n  4:3: spec.memroy: unknown field" in result.stdout


def test_wait_for_an_invalid_manifest_fails_at_once(cli: Cli,
                                                    invalid: ThreadedServer) -> None:
    result = run(cli, invalid, "wait", "new-vm", "--for", "condition=Ready", "--timeout", "30")
    assert result.exit_code == 1
    assert result.stderr == "error: /m/new-vm.yaml:4:3: spec.memroy: unknown field\n"


# --- the parser: help, version, unknown commands -------------------------------------------

def test_version_names_the_installed_package(cli: Cli) -> None:
    from importlib.metadata import version

    for argv in (["--version"], ["get", "--version"]):
        result = cli(argv)
        assert result.exit_code == 0 and result.stdout == f"domctl {version('domctl')}\n"


COMMANDS = ["validate", "get", "describe", "events", "wait", "diff", "logs", "console", "start",
            "stop", "suspend", "resume", "restart", "destroy", "save", "prune", "host-shutdown",
            "run", "export", "import-libvirt", "explain"]


def test_help_lists_every_command_with_one_line(cli: Cli) -> None:
    result = cli(["--help"])
    assert result.exit_code == 0
    listed = result.stdout.split("\ncommands:\n")[1].splitlines()[1:]
    # the fleet's commands (docs/fleet.md, tests/fleet) are listed among them
    ours = [line for line in listed if line.split()[0] in COMMANDS]
    assert [line.split()[0] for line in ours] == COMMANDS
    for line in ours:  # a name and its help, on one line: the next line is another command
        following = listed[listed.index(line) + 1:listed.index(line) + 2]
        assert len(line.split()) > 2 and all(
            next_line.startswith("    ") and not next_line.startswith("     ")
            for next_line in following), line
    assert "(the controller) logs on stderr" in result.stdout  # what --log-level affects


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_its_help(cli: Cli, command: str) -> None:
    result = cli([command, "--help"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"usage: domctl {command} ")
    assert "--socket PATH" in result.stdout  # the global options, after the command too


@pytest.mark.parametrize("action", ["start", "stop", "suspend", "resume", "restart", "destroy",
                                    "save"])
def test_each_action_says_it_holds_until_the_manifest_changes(cli: Cli, action: str) -> None:
    text = " ".join(cli([action, "--help"]).stdout.split())
    assert "holds until NAME's manifest next changes" in text
    assert "Overridden condition" in text


def test_an_unknown_command_names_the_closest_and_exits_2(cli: Cli) -> None:
    result = cli(["gte", "web-1"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.endswith("domctl: error: unknown command 'gte'; did you mean 'get'?\n")
    far = cli(["xyzzy"])
    assert far.exit_code == 2 and "unknown command 'xyzzy' (see domctl --help)" in far.stderr
    alone = cli([])
    assert alone.exit_code == 2 and "commands:" in alone.stderr


def test_a_bad_option_value_is_a_usage_error(cli: Cli, server: ThreadedServer) -> None:
    result = run(cli, server, "wait", "web-1", "--for", "state=running", "--timeout", "-1")
    assert result.exit_code == 2 and "--timeout: -1 is not at least 0" in result.stderr
    result = run(cli, server, "logs", "web-1", "--lines", "many")
    assert result.exit_code == 2 and "'many' is not an integer" in result.stderr
