"""Every `domctl` command through the real console script against a real `domctl run` with real
domains (issue E point 5): get/describe/events/wait/diff/logs, the imperative actions and their
override, the read-only socket's refusals (also for an unprivileged uid), prune, the Prometheus
metrics over HTTP, and the hint when no controller runs.

One controller for the module (`--metrics 127.0.0.1:0`: the listener picks a free port and the
controller logs its URL, so no port is guessed). A shared VM serves the read-only checks; every
test that changes a domain uses its own VM and removes its manifest at the end, so at most a
couple of tcg guests spin at once on a 2-core host. Guests are diskless tcg `pc` VMs that
ignore ACPI: every stop ends with the destroy after `shutdownTimeout` (2 s).
"""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import socket
import stat
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from reconcilers.model import CpuTune
from tests.support.domains import domain

from .conftest import (
    DOMCTL,
    NOBODY,
    Controller,
    alive,
    condition,
    controller_on,
    is_condition,
    nobody_command,
    proc_cmdline,
)

qemu = pytest.mark.qemu

GET_HEADER = ["NAME", "DRIVER", "DESIRED", "STATE", "REASON", "ID", "PID", "AGE", "MESSAGE"]
STATUS_KEYS = {"name", "uuid", "driver", "desired", "state", "reason", "pid", "id", "generation",
               "observedGeneration", "restarts", "since", "backoffUntil", "conditions", "pending",
               "interfaces", "saved", "management", "labels", "display"}
EVENT_KEYS = {"time", "domain", "event", "detail", "state", "reason", "cause"}


# --- helpers ------------------------------------------------------------------------------------

class Lines:
    """The stdout lines of a running `domctl ... --follow`, read by a thread so that a test can
    wait for a line with a timeout."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, predicate: Callable[[str], bool], what: str,
                 timeout: float = 30.0) -> str:
        """The next line satisfying `predicate` (lines before it are consumed)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no line with {what} within {timeout} s; seen: {self.seen}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"stream ended (exit {self.proc.poll()}) before {what}; "
                            f"seen: {self.seen}; stderr: {self._stderr()}")
            self.seen.append(line)
            if predicate(line):
                return line

    def _stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(still running)"
        return self.proc.stderr.read()

    def interrupt(self) -> tuple[int, str]:
        """End the follower the way a user does, with ^C: (exit code, stderr)."""
        assert self.proc.poll() is None, "the follower ended by itself"
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(10)
        self._thread.join(5)
        return self.proc.returncode, self._stderr()


@contextlib.contextmanager
def follow(ctl: Controller, *args: str, socket_path: Path | None = None) -> Iterator[Lines]:
    """`domctl --socket <rw socket, or socket_path> ARGS...` running, its stdout as Lines."""
    proc = subprocess.Popen([str(DOMCTL), "--socket", str(socket_path or ctl.socket), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = Lines(proc)
    try:
        yield lines
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (result.args, result.returncode, result.stdout, result.stderr)
    return result


def get_json(ctl: Controller, name: str, *socket_args: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        ok(ctl.domctl(*socket_args, "get", name, "-o", "json")).stdout)
    return document


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def boot(ctl: Controller, prefix: str, **fields: Any) -> tuple[str, str, dict[str, Any]]:
    """Drop a VM's manifest, wait until it runs: (name, manifest file name, status)."""
    name = ctl.name(prefix)
    filename = ctl.apply(domain(name, **fields)).name
    return name, filename, ctl.wait_state(name, "running", "booted")


@contextlib.contextmanager
def own_vm(ctl: Controller, prefix: str,
           **fields: Any) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """A VM for one test; its manifest is removed afterwards (the controller undefines it)."""
    name, filename, status = boot(ctl, prefix, **fields)
    try:
        yield name, filename, status
    finally:
        with contextlib.suppress(FileNotFoundError):
            ctl.remove_manifest(filename)


def scrape(url: str) -> dict[str, Any]:
    """The metric families of one scrape, by name."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples_of(families: dict[str, Any], family: str, sample: str | None = None,
               **labels: str) -> list[Any]:
    """The samples of `family` (named `sample` only, if given) that have `labels`."""
    return [s for s in families[family].samples if (sample is None or s.name == sample)
            and all(s.labels.get(k) == v for k, v in labels.items())]


def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    """The domctl console script run as uid/gid 65534 with no supplementary groups."""
    argv, env = nobody_command(*args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                          cwd="/", env=env, user=NOBODY, group=NOBODY, extra_groups=[])


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    """The module's controller, with its metrics URL as `ctl.metrics_url`."""
    with controller_on(tmp_path_factory.mktemp("cli"), ("--metrics", "127.0.0.1:0")) as ctl:
        url = next((line["url"] for line in ctl.log_lines()
                    if line.get("event") == "metrics listening"), None)
        assert url is not None, ctl.stderr_tail()
        ctl.metrics_url = url  # type: ignore[attr-defined]
        yield ctl


@pytest.fixture(scope="module")
def vm(ctl: Controller) -> str:
    """A VM that runs for the whole module and that no test changes."""
    name, _, _ = boot(ctl, "cli")
    return name


# --- reads --------------------------------------------------------------------------------------

@qemu
def test_get_table_json_yaml_and_an_unknown_name(ctl: Controller, vm: str) -> None:
    def table_and_documents() -> tuple[list[str], list[dict[str, Any]]] | None:
        table = ok(ctl.domctl("get")).stdout.splitlines()
        documents = json.loads(ok(ctl.domctl("get", "-o", "json")).stdout)
        names = [line.split()[0] for line in table[1:]]
        # a row per domain, in the API's order (retried should another test's domain be
        # undefined between the two calls)
        return (table, documents) if names == [d["name"] for d in documents] else None

    table, documents = ctl.wait_for(table_and_documents, "a row per domain", vm)
    assert table[0].split() == GET_HEADER, table
    assert vm in [d["name"] for d in documents], documents
    row = next(line.split() for line in table[1:] if line.split()[0] == vm)
    status = ctl.status(vm)
    assert status is not None
    assert row[:7] == [vm, "qemu", "running", "running", "booted", str(status["id"]),
                       str(status["pid"])], row
    assert row[8:] == ["-"], row  # nothing to explain

    document = get_json(ctl, vm)
    assert set(document) == STATUS_KEYS | {"disks"}, sorted(document)  # -o json: disks too
    assert document["disks"] == [], document["disks"]  # a diskless VM
    assert document["name"] == vm and document["driver"] == "qemu"
    assert (document["desired"], document["state"], document["reason"]) == (
        "running", "running", "booted")
    assert document["pid"] == status["pid"] and alive(document["pid"])
    assert document["uuid"] == status["uuid"] and document["pending"] == []
    assert is_condition(document, "Ready", "True"), document["conditions"]

    as_yaml = yaml.safe_load(ok(ctl.domctl("get", vm, "-o", "yaml")).stdout)
    assert list(as_yaml) == list(document)  # same keys, same order
    for key in ("name", "uuid", "driver", "desired", "state", "reason", "pid", "id",
                "generation", "restarts", "since", "pending"):
        assert as_yaml[key] == document[key], key
    assert {c["type"]: c["status"] for c in as_yaml["conditions"]} == {
        c["type"]: c["status"] for c in document["conditions"]}

    missing = f"{vm}-nope"
    for output in ("table", "json", "yaml"):
        got = ctl.domctl("get", missing, "-o", output)
        assert got.returncode == 1, got
        assert f"no domain named {missing}" in got.stderr, got
        assert got.stdout == "", got


@qemu
def test_describe_shows_conditions_and_recent_events(ctl: Controller, vm: str) -> None:
    lines = ok(ctl.domctl("describe", vm)).stdout.splitlines()
    fields = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in lines
              if not line.startswith(" ") and ":" in line}
    assert fields["Name"] == vm and fields["State"] == "running (booted)", lines
    conditions = lines[lines.index("Conditions:") + 1:lines.index("Pending changes:")]
    assert conditions[0].split()[:3] == ["TYPE", "STATUS", "REASON"], conditions
    by_type = {line.split()[0]: line.split()[1] for line in conditions[1:]}
    assert by_type["Ready"] == "True" and by_type["Overridden"] == "False", conditions
    assert {"Synced", "PendingRestart", "ManifestValid", "Stalled"} <= set(by_type), conditions
    events = lines[lines.index("Events:") + 1:]
    assert events[0].split()[:3] == ["TIME", "EVENT", "DETAIL"], events
    assert [line.split()[1:7] for line in events[1:3]] == [
        ["defined", "added", "shutoff", "unknown", "manifest", "-"],
        ["started", "booted", "running", "booted", "manifest", "accel"]], events
    got = ctl.domctl("describe", f"{vm}-nope")
    assert got.returncode == 1 and f"no domain named {vm}-nope" in got.stderr, got


@qemu
def test_events_as_json_lines(ctl: Controller, vm: str) -> None:
    every = json_lines(ok(ctl.domctl("events", "-o", "json")).stdout)
    assert every, "no events at all"
    for record in every:
        assert set(record) >= EVENT_KEYS, record
    mine = json_lines(ok(ctl.domctl("events", "--name", vm, "-o", "json")).stdout)
    assert {r["domain"] for r in mine} == {vm}, mine
    assert [(r["event"], r["detail"], r["cause"]) for r in mine[:2]] == [
        ("defined", "added", "manifest"), ("started", "booted", "manifest")], mine
    text = ok(ctl.domctl("events", "--name", vm)).stdout.splitlines()
    assert len(text) == len(mine) and "started/booted" in text[1], text


@qemu
def test_wait_exit_codes(ctl: Controller, vm: str) -> None:
    got = ok(ctl.domctl("wait", vm, "--for", "state=running"))
    assert got.stdout.strip() == f"{vm}: state=running", got
    ok(ctl.domctl("wait", vm, "--for", "condition=Ready"))
    ok(ctl.domctl("wait", vm, "--for", "condition=Stalled=False"))
    started = time.monotonic()
    got = ctl.domctl("wait", vm, "--for", "state=paused", "--timeout", "1")
    assert got.returncode == 3, got  # timed out (1 is an error)
    assert f"timed out waiting for {vm}: state=paused" in got.stderr, got
    assert time.monotonic() - started < 20, "wait --timeout 1 took far longer"
    got = ctl.domctl("wait", vm, "--for", "running")
    assert got.returncode == 2 and "state=STATE or condition=TYPE" in got.stderr, got


@qemu
def test_diff_lists_restart_only_changes_until_reverted(ctl: Controller) -> None:
    with own_vm(ctl, "diff") as (name, _, running):
        unchanged = ok(ctl.domctl("diff", name)).stdout
        assert unchanged.strip() == f"{name}: no changes", unchanged
        audit_before = len(ctl.audit(name))
        # vcpus is restart-only; cputune.shares is applied live (reconcilers/qemu/changes.py)
        ctl.apply(domain(name, vcpus=2, cputune=CpuTune(shares=512)))
        pending = ctl.wait_status(name, "PendingRestart True",
                                  lambda s: is_condition(s, "PendingRestart", "True"))
        assert pending["pid"] == running["pid"] and pending["state"] == "running", pending

        diff = ok(ctl.domctl("diff", name)).stdout.splitlines()
        assert diff[0] == f"{name}:", diff
        assert "  vcpus: 1 -> 2 (restart required)" in diff, diff
        assert not any("shares" in line and "restart" in line for line in diff), diff
        assert "  vcpus: 1 -> 2 (restart required)" in ok(ctl.domctl("diff")).stdout

        document = get_json(ctl, name)
        assert document["pending"] == [
            {"field": "vcpus", "old": 1, "new": 2, "apply": "restart"}], document["pending"]
        assert is_condition(document, "PendingRestart", "True", "RestartRequired")
        assert "vcpus" in condition(document, "PendingRestart")["message"]
        table = ok(ctl.domctl("get")).stdout
        assert "restart-only changes wait for the next start: vcpus" in table, table
        described = ok(ctl.domctl("describe", name)).stdout
        assert "Pending changes:\n  vcpus: 1 -> 2 (restart required)" in described, described
        applied = [a for a in ctl.audit(name)[audit_before:] if a["action"] == "apply-live"]
        assert applied and "cputune.shares" in applied[0]["message"], ctl.audit(name)

        ctl.apply(domain(name))
        cleared = ctl.wait_status(name, "PendingRestart False",
                                  lambda s: is_condition(s, "PendingRestart", "False"))
        assert cleared["pending"] == [] and cleared["pid"] == running["pid"], cleared
        ctl.wait_for(lambda: ok(ctl.domctl("diff", name)).stdout.strip()
                     == f"{name}: no changes", "diff empty after the revert", name)
        document = get_json(ctl, name)
        assert document["pending"] == [], document
        assert is_condition(document, "PendingRestart", "False"), document["conditions"]


@qemu
def test_logs_and_logs_follow_across_a_stop_and_start(ctl: Controller) -> None:
    with own_vm(ctl, "logs") as (name, _, running):
        pid = running["pid"]
        lines = ok(ctl.domctl("logs", name)).stdout.splitlines()
        starting = [line for line in lines if " domctl: starting: " in line]
        assert starting and "qemu-system-x86_64" in starting[-1], lines
        assert f"guest={name}," in starting[-1], starting
        assert any(f"domctl: started pid {pid} " in line for line in lines), lines
        assert ok(ctl.domctl("logs", name, "--lines", "1")).stdout.count("\n") == 1

        # a stream through the read-only socket, which serves every read
        with follow(ctl, "logs", name, "-f",
                    socket_path=ctl.runtime / "domctl-ro.sock") as tail:
            tail.wait_for(lambda line: f"started pid {pid} " in line, "the current start")
            assert "stop done: shutoff" in ok(ctl.domctl("stop", name)).stdout
            tail.wait_for(lambda line: "domctl: stopped: " in line, "the stop")
            started = ok(ctl.domctl("start", name)).stdout
            assert "start done: running" in started, started
            again = get_json(ctl, name)
            assert again["pid"] not in (None, pid), again
            tail.wait_for(lambda line: f"started pid {again['pid']} " in line, "the new start")
            code, stderr = tail.interrupt()
            assert code == 130 and stderr == "", (code, stderr)
        got = ctl.domctl("logs", f"{name}-nope")
        assert got.returncode == 1 and f"no domain named {name}-nope" in got.stderr, got


# --- actions ------------------------------------------------------------------------------------

@qemu
def test_stop_holds_until_the_manifest_changes(ctl: Controller) -> None:
    with own_vm(ctl, "stop") as (name, _, running):
        events_before, audit_before = len(ctl.events(name)), len(ctl.audit(name))
        got = ok(ctl.domctl("stop", name))
        assert got.stdout.strip() == f"{name}: stop done: shutoff (destroyed)", got
        ctl.wait_for(lambda: not alive(running["pid"]), "qemu gone", name)

        document = get_json(ctl, name)
        assert (document["desired"], document["state"]) == ("shutoff", "shutoff"), document
        assert document["pid"] is None and document["id"] is None, document
        assert is_condition(document, "Overridden", "True", "ApiRequest"), document
        assert "stop through the API by uid 0" in condition(document, "Overridden")["message"]
        row = next(line for line in ok(ctl.domctl("get")).stdout.splitlines()
                   if line.startswith(f"{name} "))
        assert "stop through the API by uid 0; honoured until the manifest changes" in row, row

        stopped = ctl.wait_event(name, "stopped", "destroyed", after=events_before)
        assert stopped["cause"] == "api" and stopped["causeDetail"] == {"uid": 0}, stopped
        cli_events = json_lines(ok(ctl.domctl("events", "--name", name, "-o", "json")).stdout)
        assert cli_events[-1]["event"] == "stopped" and cli_events[-1]["cause"] == "api"
        audit = ctl.audit(name)[audit_before:]
        assert [a["action"] for a in audit] == ["request-stop", "shutdown", "destroy"], audit
        for line in audit:
            assert line["cause"] == "api" and line["causeDetail"] == {"uid": 0}, line

        # drift correction leaves it off: the pass after the stop and two rescans did nothing
        ctl.wait_left_alone([name], after=ctl.last_acted(name))
        status = ctl.status(name)
        assert status is not None and status["state"] == "shutoff", status
        assert not any(e["event"] == "started" for e in ctl.events(name)[events_before:])

        # an edit of the manifest lifts the override: the manifest's `running` applies again
        ctl.apply(domain(name, memory="80Mi"))
        back = ctl.wait_status(name, "running again after the edit",
                               lambda s: s["state"] == "running" and s["pid"] is not None)
        assert "size=80M" in " ".join(proc_cmdline(back["pid"])), proc_cmdline(back["pid"])
        document = ctl.wait_status(name, "Overridden False",
                                   lambda s: is_condition(s, "Overridden", "False"))
        assert document["desired"] == "running", document
        started = ctl.wait_event(name, "started", "booted", after=events_before)
        assert started["cause"] == "manifest", started


@qemu
def test_suspend_resume_restart_start_with_a_live_event_stream(ctl: Controller) -> None:
    with own_vm(ctl, "act") as (name, _, running):
        pid = running["pid"]
        with follow(ctl, "events", "--follow", "--name", name, "-o", "json") as stream:
            # subscribed once the controller logged the request (no await in between)
            ctl.wait_for(lambda: any(
                line.get("event") == "api request" and line.get("op") == "events"
                and line.get("domain") == name for line in ctl.log_lines()),
                "the events request", name)

            def next_event(event: str, detail: str) -> dict[str, Any]:
                line = stream.wait_for(
                    lambda text: (json.loads(text)["event"], json.loads(text)["detail"])
                    == (event, detail), f"{event}/{detail}")
                record: dict[str, Any] = json.loads(line)
                return record

            got = ok(ctl.domctl("suspend", name))
            assert got.stdout.strip() == f"{name}: suspend done: paused (user)", got
            suspended = next_event("suspended", "paused")
            assert set(suspended) >= EVENT_KEYS, suspended
            assert (suspended["domain"], suspended["state"], suspended["reason"],
                    suspended["cause"]) == (name, "paused", "user", "api"), suspended
            assert stream.seen and json.loads(stream.seen[0]) == suspended, stream.seen
            document = get_json(ctl, name)
            assert (document["state"], document["pid"]) == ("paused", pid), document
            assert is_condition(document, "Overridden", "True"), document["conditions"]
            assert is_condition(document, "Ready", "True"), document["conditions"]
            ok(ctl.domctl("wait", name, "--for", "state=paused", "--timeout", "5"))

            got = ok(ctl.domctl("resume", name))
            assert got.stdout.strip() == f"{name}: resume done: running (unpaused)", got
            resumed = next_event("resumed", "unpaused")
            assert resumed["cause"] == "api", resumed
            assert get_json(ctl, name)["pid"] == pid

            restarts = get_json(ctl, name)["restarts"]
            got = ok(ctl.domctl("restart", name))
            assert got.stdout.strip() == f"{name}: restart done: running (booted)", got
            stopped = next_event("stopped", "destroyed")
            assert stopped["cause"] == "api", stopped
            started = next_event("started", "booted")
            assert started["cause"] == "controller", started
            document = get_json(ctl, name)
            assert document["pid"] not in (None, pid) and alive(document["pid"]), document
            assert not alive(pid)
            assert document["restarts"] == restarts + 1, document
            code, stderr = stream.interrupt()  # ^C ends a followed stream quietly
            assert code == 130 and stderr == "", (code, stderr)

        got = ok(ctl.domctl("start", name))  # already running: done at once
        assert got.stdout.strip() == f"{name}: start done: running (booted)", got
        assert get_json(ctl, name)["pid"] == document["pid"]
        actions = [(a["action"], a["cause"], a["causeDetail"].get("uid"))
                   for a in ctl.audit(name) if a["action"].startswith("request-")]
        assert actions == [(f"request-{a}", "api", 0)
                           for a in ("suspend", "resume", "restart", "start")], actions
        got = ctl.domctl("stop", f"{name}-nope")
        assert got.returncode == 1 and f"no domain named {name}-nope" in got.stderr, got


@qemu
def test_resume_of_a_domain_stopped_through_the_api_is_refused(ctl: Controller) -> None:
    """Like `virsh resume` of a shut-off domain: refused at once, pointing at `start`."""
    with own_vm(ctl, "resume") as (name, _, _):
        ok(ctl.domctl("stop", name))
        for action in ("resume", "suspend"):
            got = ctl.domctl(action, name, timeout=8)
            assert got.returncode == 1, got
            assert f"{name} is not running" in got.stderr and "domctl start" in got.stderr, got
        assert get_json(ctl, name)["state"] == "shutoff"


@qemu
def test_prune(ctl: Controller) -> None:
    got = ok(ctl.domctl("prune", "--confirm"))
    assert got.stdout.strip() == "no removal was held", got
    assert any(a["action"] == "prune-confirm" and a["causeDetail"] == {"uid": 0}
               for a in ctl.audit("-")), ctl.audit("-")
    got = ctl.domctl("prune")
    assert got.returncode == 2, got
    assert "prune needs --confirm" in got.stderr, got


# --- the sockets --------------------------------------------------------------------------------

@qemu
def test_read_only_socket_reads_and_refuses_changes(ctl: Controller, vm: str) -> None:
    rw, ro = ctl.socket, ctl.runtime / "domctl-ro.sock"
    assert stat.S_ISSOCK(rw.stat().st_mode) and stat.S_ISSOCK(ro.stat().st_mode)
    assert stat.S_IMODE(rw.stat().st_mode) == 0o600
    assert stat.S_IMODE(ro.stat().st_mode) == 0o666
    before = ctl.status(vm) or {}
    audit_before = len(ctl.audit())

    table = ok(ctl.domctl("--socket", str(ro), "get")).stdout.splitlines()
    assert table[0].split() == GET_HEADER and any(row.split()[0] == vm for row in table[1:])
    assert get_json(ctl, vm, "--socket", str(ro))["pid"] == before["pid"]
    assert "Conditions:" in ok(ctl.domctl("--socket", str(ro), "describe", vm)).stdout
    ok(ctl.domctl("--socket", str(ro), "wait", vm, "--for", "condition=Ready"))

    for args in (("stop", vm), ("suspend", vm), ("restart", vm), ("prune", "--confirm")):
        got = ctl.domctl("--socket", str(ro), *args)
        assert got.returncode == 1, got
        assert "read-only" in got.stderr and str(rw) in got.stderr, got
    after = ctl.status(vm) or {}
    assert (after.get("state"), after.get("pid")) == ("running", before["pid"]), after
    # (other domains of this module may still be going away meanwhile)
    refused = [a for a in ctl.audit()[audit_before:] if a["domain"] in (vm, "-")]
    assert refused == [], refused


@qemu
def test_unprivileged_uid_reads_through_the_read_only_socket_only(ctl: Controller,
                                                                   vm: str) -> None:
    # mkdtemp made the runtime dir 0700; /run/domctl is 0755, like this
    ctl.runtime.chmod(0o755)
    ro = ctl.runtime / "domctl-ro.sock"
    got = as_nobody("--socket", str(ro), "get")
    assert got.returncode == 0, got
    assert got.stdout.splitlines()[0].split() == GET_HEADER, got
    assert any(line.split()[0] == vm for line in got.stdout.splitlines()[1:]), got
    assert any(line.get("event") == "api request" and line.get("uid") == NOBODY
               and line.get("socket") == "ro" for line in ctl.log_lines()), ctl.stderr_tail()

    got = as_nobody("--socket", str(ro), "stop", vm)
    assert got.returncode == 1 and "read-only" in got.stderr, got

    got = as_nobody("--socket", str(ctl.socket), "get")
    assert got.returncode == 1, got
    assert f"permission denied opening {ctl.socket}" in got.stderr, got
    assert f"use the read-only socket {ro}" in got.stderr, got
    assert "Traceback" not in got.stderr, got
    assert (ctl.status(vm) or {}).get("state") == "running"


def test_no_controller_running(tmp_path: Path) -> None:
    got = subprocess.run([str(DOMCTL), "--socket", "/nonexistent/x.sock", "get"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert got.returncode == 1, got
    assert "no controller socket at /nonexistent/x.sock" in got.stderr, got
    assert "start the controller with `domctl run`" in got.stderr, got
    assert "Traceback" not in got.stderr, got

    stale = tmp_path / "stale.sock"  # a socket file nobody listens on
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(stale))
    got = subprocess.run([str(DOMCTL), "--socket", str(stale), "get"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert got.returncode == 1, got
    assert "a stale socket" in got.stderr and "`domctl run`" in got.stderr, got


# --- metrics ------------------------------------------------------------------------------------

@qemu
def test_metrics_show_a_domain_until_it_is_undefined(ctl: Controller) -> None:
    url = ctl.metrics_url  # type: ignore[attr-defined]
    name = ctl.name("metrics")
    filename = f"{name}.yaml"
    # `wait` for a domain that does not exist yet waits for it: it watches the status the
    # controller will push once the domain exists
    mark = len(ctl.log_lines())
    waiter = subprocess.Popen([str(DOMCTL), "--socket", str(ctl.socket), "wait", name,
                               "--for", "state=running", "--timeout", "60"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ctl.wait_for(lambda: ctl.logged("api request", mark, op="watch", domain=name,
                                        pid=waiter.pid),
                     "the waiter to watch the missing domain")
        assert waiter.poll() is None, waiter.communicate()
        ctl.apply(domain(name))
        out, err = waiter.communicate(timeout=60)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert waiter.returncode == 0, (out, err)
    assert out.strip() == f"{name}: state=running", out
    try:
        families = scrape(url)
        current = samples_of(families, "domctl_domain_state", domain=name)
        assert [(s.labels, s.value) for s in current] == [
            ({"domain": name, "driver": "qemu", "state": "running", "reason": "booted"}, 1.0)]
        running = samples_of(families, "domctl_domains", driver="qemu", state="running")
        assert len(running) == 1 and running[0].value >= 1, running
        restarts = samples_of(families, "domctl_domain_restarts",
                              "domctl_domain_restarts_total", domain=name)
        assert [s.value for s in restarts] == [0.0], restarts
        assert samples_of(families, "domctl_workqueue_depth")
        started = samples_of(families, "domctl_events", "domctl_events_total",
                             event="started", detail="booted")
        assert len(started) == 1 and started[0].value >= 1, started
    finally:
        ctl.remove_manifest(filename)
    ctl.wait_for(lambda: ctl.status(name) is None, "undefined", name)
    gone = ctl.domctl("get", name)
    assert gone.returncode == 1 and f"no domain named {name}" in gone.stderr, gone
    families = scrape(url)
    left = [s for family in families.values() for s in family.samples
            if s.labels.get("domain") == name]
    assert left == [], left
