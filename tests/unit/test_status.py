"""Status documents on real files, conditions' transition times, and `get` of unknown names."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from pathlib import Path

import pytest

from controller.protocol import rfc3339
from controller.state.status import (
    Condition,
    ConditionStatus,
    ConditionType,
    DomainStatus,
    NoSuchDomain,
    PendingChange,
    StatusStore,
    set_condition,
)
from reconcilers.diff import Apply, Change
from reconcilers.model import DesiredState, DriverName, Reason, State

T0 = 1764000000.0
TRUE, FALSE = ConditionStatus.TRUE, ConditionStatus.FALSE
KEYS = ["name", "uuid", "driver", "desired", "state", "reason", "pid", "id", "generation",
        "observedGeneration", "restarts", "since", "backoffUntil", "conditions", "pending",
        "interfaces", "saved", "management", "display"]  # interfaces: issue 13 (virsh
# domifaddr); saved: issue 15 (the managed-save image); management: issue 16 (Enforce or
# Observe); display: issue 17 (virsh vncdisplay, for get -o wide)


def cond(type_: ConditionType, status: ConditionStatus, reason: str = "Converged",
         message: str = "") -> Condition:
    return Condition(type_, status, reason, message)


def sample_status() -> DomainStatus:
    conditions = set_condition((), cond(ConditionType.READY, TRUE), T0)
    conditions = set_condition(conditions, cond(ConditionType.PENDING_RESTART, TRUE,
                                                "RestartRequired", "qemu.machine"), T0)
    change = Change(path="qemu.machine", old="pc", new="q35", apply=Apply.RESTART)
    return DomainStatus(
        name="web-1", uuid="5b6c1f3e-1d2a-4c3b-9e8f-0a1b2c3d4e5f", driver=DriverName.QEMU,
        desired=DesiredState.RUNNING, state=State.RUNNING, reason=Reason.BOOTED, pid=4242, id=1,
        generation="abc", observedGeneration="abc", restarts=1, since=rfc3339(T0),
        conditions=conditions, pending=(PendingChange.from_change(change),))


def test_a_new_condition_gets_now_and_is_appended() -> None:
    conditions = set_condition((), cond(ConditionType.READY, FALSE), T0)
    conditions = set_condition(conditions, cond(ConditionType.SYNCED, TRUE), T0 + 1)
    assert [(c.type, c.lastTransitionTime) for c in conditions] == [
        (ConditionType.READY, rfc3339(T0)), (ConditionType.SYNCED, rfc3339(T0 + 1))]


def test_same_status_keeps_the_transition_time_but_takes_the_new_message() -> None:
    first = set_condition((), cond(ConditionType.STALLED, TRUE, "BackingOff", "try 1"), T0)
    later = set_condition(first, cond(ConditionType.STALLED, TRUE, "StartFailed", "try 2"), T0 + 9)
    assert later == (Condition(ConditionType.STALLED, TRUE, "StartFailed", "try 2", rfc3339(T0)),)


def test_a_status_change_moves_the_transition_time_in_place() -> None:
    conditions = set_condition((), cond(ConditionType.READY, TRUE), T0)
    conditions = set_condition(conditions, cond(ConditionType.SYNCED, TRUE), T0)
    conditions = set_condition(conditions, cond(ConditionType.READY, FALSE, "Stopped"), T0 + 5)
    assert [c.type for c in conditions] == [ConditionType.READY, ConditionType.SYNCED]
    assert conditions[0].lastTransitionTime == rfc3339(T0 + 5)
    assert conditions[1].lastTransitionTime == rfc3339(T0)


@pytest.mark.parametrize("reason", ["", "not camel", "lower", "Two Words", "Dash-ed"])
def test_condition_reason_is_one_camelcase_word(reason: str) -> None:
    with pytest.raises(ValueError):
        cond(ConditionType.READY, TRUE, reason)


def test_document_has_exactly_the_design_keys() -> None:
    doc = sample_status().to_dict()
    assert list(doc) == KEYS
    assert doc["driver"] == "qemu" and doc["state"] == "running" and doc["reason"] == "booted"
    assert doc["conditions"][1] == {"type": "PendingRestart", "status": "True",
                                    "reason": "RestartRequired", "message": "qemu.machine",
                                    "lastTransitionTime": "2025-11-24T16:00:00.000Z"}
    assert doc["pending"] == [{"field": "qemu.machine", "old": "pc", "new": "q35",
                               "apply": "restart"}]


def test_write_read_round_trip_on_real_files(tmp_path: Path) -> None:
    store = StatusStore(tmp_path)
    status = sample_status()
    store.write(status)
    path = tmp_path / "status" / "web-1.json"
    assert json.loads(path.read_text()) == status.to_dict()
    assert StatusStore(tmp_path).read("web-1") == status
    assert store.get_document("web-1") == status.to_dict()
    assert store.names() == ["web-1"]
    assert [p.name for p in (tmp_path / "status").iterdir()] == ["web-1.json"]  # no temp left


def test_a_minimal_status_round_trips(tmp_path: Path) -> None:
    status = DomainStatus(name="c1", uuid="u", driver=DriverName.LXC, desired=None,
                          state=State.SHUTOFF, reason=Reason.SHUTDOWN)
    StatusStore(tmp_path).write(status)
    assert StatusStore(tmp_path).read("c1") == status


def test_unknown_name_raises_no_such_domain_with_the_exact_message(tmp_path: Path) -> None:
    store = StatusStore(tmp_path)
    for name in ("ghost", "../etc/passwd"):
        with pytest.raises(NoSuchDomain) as info:
            store.get_document(name)
        assert str(info.value) == f"no domain named {name}"
    assert store.read("ghost") is None and store.names() == []


def test_remove_makes_the_domain_unknown(tmp_path: Path) -> None:
    store = StatusStore(tmp_path)
    store.write(sample_status())
    store.remove("web-1")
    store.remove("web-1")
    with pytest.raises(NoSuchDomain):
        store.get_document("web-1")


def test_corrupt_status_file_is_skipped(tmp_path: Path) -> None:
    store = StatusStore(tmp_path)
    store.write(sample_status())
    (tmp_path / "status" / "torn.json").write_text('{"name": "to')
    (tmp_path / "status" / "odd.json").write_text('{"name": "odd", "state": "melting"}')
    assert store.read("torn") is None and store.read("odd") is None
    with pytest.raises(NoSuchDomain):
        store.get_document("torn")
    assert store.read("web-1") == sample_status()


def test_an_unchanged_status_is_not_rewritten(tmp_path: Path) -> None:
    store = StatusStore(tmp_path)
    status = sample_status()
    store.write(status)
    path = tmp_path / "status" / "web-1.json"
    first = path.stat().st_ino
    store.write(sample_status())  # equal: no new file (no fsync on every resync)
    assert path.stat().st_ino == first
    store.write(replace(status, restarts=2))
    assert path.stat().st_ino != first
    assert json.loads(path.read_text())["restarts"] == 2
    assert StatusStore(tmp_path).read("web-1") == replace(status, restarts=2)


@pytest.mark.parametrize("change", [
    {"since": "not a time"}, {"since": "2025-13-45T99:00:00Z"}, {"backoffUntil": "soon"},
    {"name": "other"}, {"pid": -1}, {"id": 0}, {"restarts": -3}, {"state": "melting"},
    {"conditions": [{"type": "Ready", "status": "True", "reason": "Ok",
                     "lastTransitionTime": "yesterday"}]}])
def test_an_impossible_status_is_moved_aside_and_rewritten(tmp_path: Path,
                                                          change: dict[str, object]) -> None:
    """Issue 11: a malformed `since` is reported and quarantined, never raised."""
    document = {**sample_status().to_dict(), **change}
    directory = tmp_path / "status"
    directory.mkdir()
    (directory / "web-1.json").write_text(json.dumps(document))
    store = StatusStore(tmp_path)
    assert store.check_all() == []
    assert store.read("web-1") is None
    assert len(list(directory.glob("web-1.json.corrupt-*"))) == 1
    with pytest.raises(NoSuchDomain):
        store.get_document("web-1")
    store.write(sample_status())  # the next pass writes it afresh
    assert StatusStore(tmp_path).read("web-1") == sample_status()


def test_a_directory_or_binary_status_is_moved_aside(tmp_path: Path) -> None:
    directory = tmp_path / "status"
    (directory / "dir.json").mkdir(parents=True)
    (directory / "bin.json").write_bytes(bytes(range(256)))
    store = StatusStore(tmp_path)
    assert store.check_all() == []
    assert sorted(p.name.split(".corrupt-")[0] for p in directory.iterdir()) == [
        "bin.json", "dir.json"]
    store.write(replace(sample_status(), name="dir"))
    assert store.names() == ["dir"]


def test_watchers_hear_every_change_of_their_domain_and_nothing_else(tmp_path: Path) -> None:
    """What lets `domctl start` return when the status changes, with no polling."""
    store, heard = StatusStore(tmp_path), []
    status = sample_status()
    with store.watch("web-1", lambda: heard.append("web-1")):
        store.write(status)
        store.write(status)  # unchanged: not rewritten, nobody told
        store.write(dataclasses.replace(status, state=State.PAUSED, reason=Reason.USER))
        store.write(dataclasses.replace(status, name="web-2"))  # another domain
    store.write(status)  # after the block: no longer watched
    assert heard == ["web-1", "web-1"]


def test_an_unknown_name_suggests_a_close_one(tmp_path: Path) -> None:
    store = StatusStore(tmp_path)
    store.write(sample_status())  # web-1
    with pytest.raises(NoSuchDomain, match=r"^no domain named web-l; did you mean web-1\?$"):
        store.get_document("web-l")
    with pytest.raises(NoSuchDomain, match=r"^no domain named database$"):
        store.get_document("database")  # nothing close: no guess
