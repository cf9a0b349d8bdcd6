"""The fleet view: what `domctl get` shows through any host's API in fleet mode.

A host's own status files hold only the domains it runs or ran; a user asking any host of the
fleet wants every domain, and where it is (issue 18: "`domctl get` against the fleet shows a
HOST column"). So in fleet mode the API's `get` (controller/api/backend.py) answers from etcd,
as this host already mirrors it (hostview.py's mirrors of the published manifests, the
placements, the hosts holding a lease and the status documents; plus one more here, of the
scheduler's records under `scheduling/`, which nothing else watches). For each domain the
manifests declare or a placement names:

- placed on a live host that published its status for it → that status document (it carries
  `host` and `epoch`, statuspub.py);
- placed on a host whose lease is gone → its last status document from that host, if any (else
  state "-"), with reason `HostUnreachable` and a `Ready` condition saying so (the scheduler's
  message when it wrote one): the domain may still run there, nobody can tell;
- placed on a live host that has not published it yet (starting, or waiting for the previous
  host's release) → state "-", reason `Pending`;
- unplaced → state "-" (or the last state a status document gave), `host` null, reason
  `Unschedulable` with the scheduler's message, else `Unplaced`.

Reads only memory (the mirrors): `get` costs no etcd round trip, and shows what this host
X

Public surface: fleet_documents(published, fleet, statuses, schedulings, name),
    FleetView(view, store, keys, resync).start/stop/documents(name)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.fleet.hostview import Fleet, HostView, decoded
from controller.fleet.keys import Keys, Placement, Scheduling, json_object
from controller.fleet.mirror import PrefixMirror
from controller.fleet.scheduling import Kind
from controller.fleet.store import EtcdStore, KeyValue
from controller.manifests.source import Snapshot

UNREACHABLE = "HostUnreachable"


def fleet_documents(published: Snapshot | None, fleet: Fleet,
                    statuses: Mapping[str, dict[str, Any]],
                    schedulings: Mapping[str, Scheduling],
                    name: str | None = None) -> list[dict[str, Any]]:
    """The fleet's documents, by name (`name`: that domain's only; [] when the fleet knows
    none of that name)."""
    declared = published.domains if published is not None else {}
    names = sorted(declared.keys() | fleet.placements.keys())
    documents = []
    for each in names if name is None else [name] if name in names else []:
        domain = declared.get(each)
        labels = dict(domain.metadata.labels) if domain is not None else {}
        base = {"name": each, "labels": labels}
        if domain is not None:
            base |= {"driver": domain.spec.driver.value, "desired": domain.spec.state.value}
        documents.append(_document(each, base, fleet, statuses.get(each), schedulings.get(each)))
    return documents


def _document(name: str, base: dict[str, Any], fleet: Fleet, status: dict[str, Any] | None,
              record: Scheduling | None) -> dict[str, Any]:
    placement = fleet.placements.get(name)
    lost = placement is not None and fleet.hosts is not None and placement.host not in fleet.hosts
    if placement is None:
        if record is not None and record.kind == Kind.UNSCHEDULABLE.value:
            return _stub(base, status, None, "Unschedulable", record.message)
        return _stub(base, status, None, "Unplaced", "not placed on any host yet")
    theirs = status if status is not None and status.get("host") == placement.host else None
    if lost:
        message = (record.message if record is not None else
                   f"host {placement.host} is unreachable (its lease expired)")
        return _stub(base, theirs, placement, UNREACHABLE, f"{UNREACHABLE}: {message}")
    if theirs is not None:
        return {**theirs, **base, "host": placement.host, "epoch": placement.epoch}
    waiting = (f"; waiting for {placement.previous} to release it"
               if placement.previous not in (None, placement.host) else "")
    return _stub(base, None, placement, "Pending",
                 f"placed on {placement.host} (epoch {placement.epoch}), not started there "
                 f"yet{waiting}")


def _stub(base: dict[str, Any], status: dict[str, Any] | None, placement: Placement | None,
          reason: str, message: str) -> dict[str, Any]:
    """`status` (or a bare document, state "-") with `reason` and a Ready=False condition
    saying `message` (what `get`'s MESSAGE shows)."""
    ready = {"type": "Ready", "status": "False", "reason": reason, "message": message,
             "lastTransitionTime": ""}
    found = status or {"state": "-", "conditions": []}
    conditions = [c for c in found.get("conditions") or () if c.get("type") != "Ready"]
    return {**found, **base, "reason": reason, "conditions": [ready, *conditions],
            "host": placement.host if placement is not None else None,
            "epoch": placement.epoch if placement is not None else None}


class FleetView:
    """The fleet's documents from this host's mirrors (the host view's, and `scheduling/`)."""

    def __init__(self, view: HostView, store: EtcdStore, keys: Keys, *,
                 resync: float = 30.0) -> None:
        self._view = view
        self._schedulings: dict[str, Scheduling] = {}
        self._mirror = PrefixMirror(store, keys.schedulings, self._changed, resync=resync)

    def start(self) -> None:
        self._mirror.follow()  # reads first; until then, no scheduler's message shows

    async def stop(self) -> None:
        await self._mirror.stop()

    async def _changed(self, kvs: Mapping[str, KeyValue]) -> None:
        self._schedulings = decoded(kvs, Scheduling.decode)

    def documents(self, name: str | None = None) -> list[dict[str, Any]]:
        statuses = decoded(self._view.statuses.kvs, json_object)
        return fleet_documents(self._view.published, self._view.fleet, statuses,
                               self._schedulings, name)
