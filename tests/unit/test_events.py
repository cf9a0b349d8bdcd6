"""EventBus and AuditLog on real files in tmp_path; live subscribers, rotation, read-back."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from controller.settings import EventSettings
from controller.state.events import AuditLog, EventBus
from reconcilers.model import Cause, EventDetail, EventType, Reason, State

WALL = 1764000000.0


def started(bus: EventBus, domain: str, message: str = "") -> dict[str, object]:
    return bus.emit(domain, EventType.STARTED, EventDetail.BOOTED, State.RUNNING, Reason.BOOTED,
                    Cause.MANIFEST, {"generation": "abc"}, message)


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_emit_appends_one_json_line_with_cause(tmp_path: Path) -> None:
    bus = EventBus(tmp_path, wall_clock=lambda: WALL)
    record = started(bus, "web-1")
    bus.emit("web-1", EventType.STOPPED, EventDetail.FAILED, State.SHUTOFF, Reason.CRASHED,
             Cause.EXTERNAL)
    bus.close()
    assert record == {"time": "2025-11-24T16:00:00.000Z", "domain": "web-1", "event": "started",
                      "detail": "booted", "state": "running", "reason": "booted",
                      "cause": "manifest", "causeDetail": {"generation": "abc"}, "message": ""}
    written = lines(tmp_path / "events.jsonl")
    assert written[0] == record
    assert written[1]["event"] == "stopped" and written[1]["causeDetail"] == {}


def test_emit_refuses_pairs_libvirt_does_not_have(tmp_path: Path) -> None:
    bus = EventBus(tmp_path)
    with pytest.raises(ValueError, match="no detail"):
        bus.emit("a", EventType.STARTED, EventDetail.PAUSED, State.RUNNING, Reason.BOOTED,
                 Cause.API)
    with pytest.raises(ValueError, match="no reason"):
        bus.emit("a", EventType.STARTED, EventDetail.BOOTED, State.RUNNING, Reason.USER,
                 Cause.API)
    bus.close()
    assert (tmp_path / "events.jsonl").read_text() == ""


def test_file_is_appended_across_restarts_and_read_back(tmp_path: Path) -> None:
    bus = EventBus(tmp_path)
    for i in range(5):
        started(bus, "web-1", f"first run {i}")
        started(bus, "db", "other")
    bus.close()
    bus = EventBus(tmp_path)  # a restarted controller keeps appending
    started(bus, "web-1", "second run")
    assert [r["message"] for r in bus.recent("web-1", 3)] == ["first run 3", "first run 4",
                                                              "second run"]
    assert bus.recent("nobody", 3) == []
    bus.close()


def test_rotation_keeps_one_old_file_and_recent_spans_both(tmp_path: Path) -> None:
    bus = EventBus(tmp_path, EventSettings(max_bytes=600))
    for i in range(12):
        started(bus, "web-1", str(i))
    bus.close()
    current, old = tmp_path / "events.jsonl", tmp_path / "events.jsonl.1"
    assert current.stat().st_size <= 600 and old.stat().st_size <= 600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.jsonl", "events.jsonl.1"]
    kept = [r["message"] for r in lines(old) + lines(current)]
    assert kept == [str(i) for i in range(12 - len(kept), 12)]
    bus = EventBus(tmp_path, EventSettings(max_bytes=600))
    assert [r["message"] for r in bus.recent("web-1", len(kept))] == kept
    bus.close()


def torn_after_one_record(tmp_path: Path) -> EventBus:
    """A bus reopened on an events.jsonl whose last line a crash cut short."""
    bus = EventBus(tmp_path)
    started(bus, "web-1", "whole")
    bus.close()
    with open(tmp_path / "events.jsonl", "a") as f:
        f.write('{"domain": "web-1", "ev')
    return EventBus(tmp_path)


def test_torn_last_line_is_skipped_by_recent(tmp_path: Path) -> None:
    bus = torn_after_one_record(tmp_path)
    assert [r["message"] for r in bus.recent("web-1")] == ["whole"]
    bus.close()


def test_records_after_a_torn_last_line_are_not_lost(tmp_path: Path) -> None:
    """Issue 11: the next record starts on a new line instead of gluing onto the torn one."""
    bus = torn_after_one_record(tmp_path)
    started(bus, "web-1", "after")
    started(bus, "web-1", "and after")
    bus.close()
    raw = (tmp_path / "events.jsonl").read_text().splitlines()
    assert raw[1] == '{"domain": "web-1", "ev'
    assert [json.loads(line)["message"] for line in (raw[0], *raw[2:])] == [
        "whole", "after", "and after"]
    assert [r["message"] for r in EventBus(tmp_path).recent("web-1")] == [
        "whole", "after", "and after"]


def test_garbage_lines_are_skipped_by_recent(tmp_path: Path) -> None:
    (tmp_path / "events.jsonl").write_bytes(
        b'\xff\xfe\x00garbage\n[1, 2]\n"text"\n' + b"[" * 100_000 + b"\n")
    bus = EventBus(tmp_path)
    started(bus, "web-1", "fine")
    assert [r["message"] for r in bus.recent(None)] == ["fine"]
    bus.close()


@pytest.mark.parametrize("plant", ["directory", "symlink", "fifo"])
def test_a_log_path_that_is_no_file_is_moved_aside(tmp_path: Path, plant: str) -> None:
    path = tmp_path / "events.jsonl"
    target = tmp_path / "elsewhere"
    target.write_text("keep me\n")
    if plant == "directory":
        path.mkdir()
    elif plant == "symlink":
        path.symlink_to(target)
    else:
        os.mkfifo(path)
    bus = EventBus(tmp_path)  # a FIFO must not block here
    started(bus, "web-1", "logged")
    bus.close()
    assert [r["message"] for r in lines(path)] == ["logged"]
    assert len(list(tmp_path.glob("events.jsonl.corrupt-*"))) == 1
    assert target.read_text() == "keep me\n"  # a symlink's target is never written


def test_a_log_that_cannot_be_opened_or_moved_only_loses_its_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "audit.jsonl"
    path.mkdir()
    monkeypatch.setattr("controller.state.events.quarantine", lambda *_: None)
    audit = AuditLog(tmp_path)
    record = audit.record("web-1", "start", Cause.MANIFEST)  # dropped, but no exception
    assert record["action"] == "start" and audit.recent("web-1") == []
    audit.close()


def test_a_huge_log_is_read_only_in_its_last_max_bytes_and_rotated(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with open(path, "wb") as f:
        f.truncate(64 * 1024 ** 3)  # sparse: reading it whole would take 64 GiB
    bus = EventBus(tmp_path, EventSettings(max_bytes=4096))
    assert bus.recent(None) == []
    started(bus, "web-1", "new")  # past max_bytes: the planted file is rotated away
    assert [r["message"] for r in bus.recent("web-1")] == ["new"]
    bus.close()
    assert path.stat().st_size < 4096


async def test_subscribers_get_live_records_filtered_by_name(tmp_path: Path) -> None:
    bus = EventBus(tmp_path)
    everything = bus.subscribe()
    only_db = bus.subscribe("db")
    started(bus, "web-1")
    started(bus, "db")
    bus.close()
    async with asyncio.timeout(5):
        assert [r["domain"] async for r in everything] == ["web-1", "db"]
        assert [r["domain"] async for r in only_db] == ["db"]


async def test_slow_subscriber_is_dropped_with_a_marker(tmp_path: Path) -> None:
    bus = EventBus(tmp_path, EventSettings(subscriber_queue=3))
    slow = bus.subscribe()
    fast = bus.subscribe()
    received: list[str] = []

    async def read_fast() -> None:
        async for record in fast:
            received.append(str(record["message"]))

    async with asyncio.timeout(5):
        reader = asyncio.create_task(read_fast())
        for i in range(5):
            started(bus, "web-1", str(i))
            await asyncio.sleep(0)
        got = [r async for r in slow]
        bus.close()
        await reader
    assert [r["message"] for r in got[:3]] == ["0", "1", "2"]
    assert got[3]["marker"] == "dropped" and len(got) == 4
    assert received == ["0", "1", "2", "3", "4"]  # the others are unaffected
    assert len(lines(tmp_path / "events.jsonl")) == 5


async def test_closed_subscription_ends_a_waiting_reader(tmp_path: Path) -> None:
    bus = EventBus(tmp_path)
    sub = bus.subscribe()
    async with asyncio.timeout(5):
        waiting = asyncio.create_task(anext(sub))
        await asyncio.sleep(0)
        sub.close()
        with pytest.raises(StopAsyncIteration):
            await waiting
    started(bus, "web-1")  # no longer delivered, no error
    bus.close()


def test_failed_rotation_keeps_appending(tmp_path: Path) -> None:
    bus = EventBus(tmp_path, EventSettings(max_bytes=1))
    started(bus, "web-1")
    (tmp_path / "events.jsonl.1").mkdir()  # the next rotation's rename fails
    record = started(bus, "web-1", "still returned")
    assert record["message"] == "still returned"
    bus.close()
    assert [r["message"] for r in lines(tmp_path / "events.jsonl")] == ["", "still returned"]


def test_audit_log_records_who_asked(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path, wall_clock=lambda: WALL)
    audit.record("web-1", "start", Cause.MANIFEST, {"generation": "abc"})
    audit.record("web-1", "suspend", Cause.API, {"uid": 1000}, "domctl suspend")
    audit.close()
    assert lines(tmp_path / "audit.jsonl") == [
        {"time": "2025-11-24T16:00:00.000Z", "domain": "web-1", "action": "start",
         "cause": "manifest", "causeDetail": {"generation": "abc"}, "message": ""},
        {"time": "2025-11-24T16:00:00.000Z", "domain": "web-1", "action": "suspend",
         "cause": "api", "causeDetail": {"uid": 1000}, "message": "domctl suspend"},
    ]
    audit = AuditLog(tmp_path)
    assert [r["action"] for r in audit.recent("web-1", 1)] == ["suspend"]
    audit.close()
