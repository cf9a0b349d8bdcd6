"""The fleet view (controller/fleet/fleetview.py) as a table: which document `get` shows for a
domain, given its placement, the hosts holding a lease, the status documents in etcd and the
scheduler's records. No etcd: the function is pure (test_three_hosts.py shows it through a real
host's API)."""

from __future__ import annotations

from typing import Any

import pytest

from controller.fleet.fleetview import fleet_documents
from controller.fleet.hostview import Fleet
from controller.fleet.keys import Placement, Scheduling
from controller.manifests.source import Snapshot
from tests.support import domains

WEB = domains.domain("web", uuid=None)
RUNNING = {"name": "web", "state": "running", "host": "a", "epoch": 1, "conditions": []}
NO_ROOM = Scheduling("unschedulable", "0/2 hosts fit: 2 without 64 MiB free", "t")
LOST = Scheduling("unreachable", "host a is unreachable (its lease expired)", "t")


def one(placement: Placement | None, status: dict[str, Any] | None = None,
        record: Scheduling | None = None, hosts: tuple[str, ...] = ("a", "b")) -> dict[str, Any]:
    fleet = Fleet(placements={"web": placement} if placement else {}, hosts=frozenset(hosts),
                  statuses={})
    [document] = fleet_documents(Snapshot(domains={"web": WEB}), fleet,
                                 {"web": status} if status else {},
                                 {"web": record} if record else {})
    return document


def ready(document: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in document["conditions"] if c["type"] == "Ready")


def test_a_domain_running_on_its_host_shows_that_host_s_document() -> None:
    shown = one(Placement("a", 1), RUNNING)
    assert (shown["state"], shown["host"], shown["epoch"]) == ("running", "a", 1)
    assert shown["driver"] == "qemu" and shown["desired"] == "running"


@pytest.mark.parametrize(("placement", "status", "record", "reason", "state", "host", "says"), [
    (None, None, None, "Unplaced", "-", None, "not placed"),
    (None, None, NO_ROOM, "Unschedulable", "-", None, "0/2 hosts fit"),
    (Placement("b", 1), None, None, "Pending", "-", "b", "not started there yet"),
    # moving: the previous host's document is no answer for where it is now
    (Placement("b", 2, "a"), RUNNING, None, "Pending", "-", "b", "waiting for a"),
    # its host's lease is gone: its last state, and why nobody knows better
    (Placement("a", 1), RUNNING, LOST, "HostUnreachable", "running", "a", "HostUnreachable"),
    (Placement("a", 1), None, None, "HostUnreachable", "-", "a", "lease expired"),
])
def test_a_domain_without_a_live_host_s_document(
        placement: Placement | None, status: dict[str, Any] | None, record: Scheduling | None,
        reason: str, state: str, host: str | None, says: str) -> None:
    shown = one(placement, status, record, hosts=("b",) if reason == "HostUnreachable"
                else ("a", "b"))
    assert (shown["reason"], shown["state"], shown["host"]) == (reason, state, host)
    assert says in ready(shown)["message"] and ready(shown)["status"] == "False"


def test_names_come_from_the_manifests_and_the_placements() -> None:
    fleet = Fleet(placements={"gone": Placement("a", 3)}, hosts=frozenset({"a"}), statuses={})
    shown = fleet_documents(Snapshot(domains={"web": WEB}), fleet, {}, {})
    assert [d["name"] for d in shown] == ["gone", "web"]
    assert fleet_documents(None, fleet, {}, {}, "web") == []
    assert [d["host"] for d in fleet_documents(None, fleet, {}, {}, "gone")] == ["a"]
