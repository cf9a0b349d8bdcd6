"""The host view's rules (controller/fleet/hostview.py) and the status publisher's epochs
(statuspub.py), as tables: what a host does with each domain, given the placements, the hosts
holding a lease and the status documents; and that a move is never a removal for the engine's
desired store (a drain must not trip the mass-prune guard)."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from controller.engine.desired import DesiredStore
from controller.fleet.hostview import Fleet, Role, StatusMark, host_view, role
from controller.fleet.keys import Placement
from controller.fleet.statuspub import document_epoch
from controller.manifests.source import Snapshot
from controller.settings import PruneSettings
from reconcilers.model import DesiredState, Domain

from .domains import domain

ME, OTHER = "a", "b"
SHUTOFF_A = StatusMark(OTHER, 2, "shutoff")


def fleet(placement: Placement | None, hosts: tuple[str, ...] = (ME, OTHER),
          mark: StatusMark | None = None) -> Fleet:
    return Fleet(placements={"d": placement} if placement else {}, hosts=frozenset(hosts),
                 statuses={"d": mark} if mark else {})


@pytest.mark.parametrize(("placement", "hosts", "mark", "known", "failover", "expected"), [
    # placed here, nobody to wait for
    (Placement(ME, 1), (ME,), None, False, False, Role.RUN),
    (Placement(ME, 3, previous=ME), (ME,), None, True, False, Role.RUN),
    # moved here from a live host: wait for its release...
    (Placement(ME, 2, previous=OTHER), (ME, OTHER), None, False, False, Role.ABSENT),
    (Placement(ME, 2, previous=OTHER), (ME, OTHER), None, True, False, Role.WAIT),
    (Placement(ME, 2, previous=OTHER), (ME, OTHER), StatusMark(OTHER, 2, "running"), True,
     False, Role.WAIT),
    (Placement(ME, 2, previous=OTHER), (ME, OTHER), StatusMark(OTHER, 1, "shutoff"), True,
     False, Role.WAIT),  # shut off for an earlier epoch: no proof it saw this move
    # ...which its status document for this epoch proves
    (Placement(ME, 2, previous=OTHER), (ME, OTHER), SHUTOFF_A, False, False, Role.RUN),
    (Placement(ME, 2, previous=OTHER), (ME, OTHER), StatusMark(OTHER, 3, "shutoff"), False,
     False, Role.RUN),
    # this host's own document for this epoch: taken over before a restart
    (Placement(ME, 2, previous=OTHER), (ME, OTHER), StatusMark(ME, 2, "running"), True,
     False, Role.RUN),
    # the previous host's lease is gone: a failover domain starts at once (it was fenced)...
    (Placement(ME, 2, previous=OTHER), (ME,), None, False, True, Role.RUN),
    # ...one without failover waits for its release whatever happened to the host
    (Placement(ME, 2, previous=OTHER), (ME,), None, True, False, Role.WAIT),
    # placed elsewhere or unplaced: stopped here when known, else nothing
    (Placement(OTHER, 2, previous=ME), (ME, OTHER), None, True, False, Role.RELEASE),
    (Placement(OTHER, 2), (ME, OTHER), None, False, True, Role.ABSENT),
    (None, (ME, OTHER), None, True, False, Role.RELEASE),
    (None, (ME, OTHER), None, False, False, Role.ABSENT),
])
def test_the_role_of_a_domain(placement: Placement | None, hosts: tuple[str, ...],
                              mark: StatusMark | None, known: bool, failover: bool,
                              expected: Role) -> None:
    assert role("d", ME, fleet(placement, hosts, mark), {"d"} if known else set(),
                failover=failover) is expected


def test_a_fenced_domain_placed_here_is_fenced_and_a_release_stays_granted() -> None:
    moved = fleet(Placement(ME, 2, previous=OTHER), (ME, OTHER), None)
    assert role("d", ME, fleet(Placement(ME, 1)), {"d"}, fenced={"d"}) is Role.FENCED
    # the previous host registered again after the domain started here: it stays here
    assert role("d", ME, moved, {"d"}, granted={("d", 2)}) is Role.RUN
    assert role("d", ME, moved, {"d"}, granted={("d", 1)}) is Role.WAIT


def test_unread_hosts_never_count_as_lost() -> None:
    unread = Fleet(placements={"d": Placement(ME, 2, previous=OTHER)})
    assert not unread.read
    assert role("d", ME, unread, {"d"}, failover=True) is Role.WAIT


def snapshot(*domains: Domain) -> Snapshot:
    return Snapshot(domains=MappingProxyType({d.name: d for d in domains}),
                    names_by_file={"/m/x.yaml": frozenset({"gone", "run"})})


def test_the_view_keeps_runs_stops_releases_and_drops_the_rest() -> None:
    run, release, wait, absent = (domain(n) for n in ("run", "release", "wait", "absent"))
    view = host_view(snapshot(run, release, wait, absent),
                     {"run": Role.RUN, "release": Role.RELEASE, "wait": Role.WAIT})
    assert view.domains["run"] == run
    assert {n: d.spec.state for n, d in view.domains.items()} == {
        "run": DesiredState.RUNNING, "release": DesiredState.SHUTOFF,
        "wait": DesiredState.SHUTOFF}
    assert view.domains["release"].spec.memory == release.spec.memory
    assert view.names_by_file == {"/m/x.yaml": frozenset({"run"})}


def test_a_drain_is_no_removal_for_the_desired_store() -> None:
    """Every domain of this host moved elsewhere at once: the desired store sees state
    changes, nothing missing, nothing held by the mass-prune guard."""
    names = [f"d{i}" for i in range(6)]
    domains = [domain(n) for n in names]
    store = DesiredStore(lambda: 100.0, PruneSettings(grace=0.0, guard_min=2))
    store.apply(host_view(snapshot(*domains), dict.fromkeys(names, Role.RUN)))
    changed = store.apply(host_view(snapshot(*domains), dict.fromkeys(names, Role.RELEASE)))
    assert changed == set(names)
    assert store.held() == []
    for name in names:
        entry = store.entry(name)
        assert entry is not None and entry.missing_since is None
        desired = store.desired(name)
        assert desired is not None and desired.spec.state is DesiredState.SHUTOFF


@pytest.mark.parametrize(("given", "placement", "mark", "settled", "expected"), [
    (Role.RUN, Placement(ME, 4), StatusMark(OTHER, 4, "shutoff"), False, 4),
    (Role.FENCED, Placement(ME, 4), None, False, 4),
    (Role.WAIT, Placement(ME, 4, previous=OTHER), None, False, None),
    (Role.ABSENT, Placement(OTHER, 4), None, False, None),
    # releasing: the new epoch only once a pass over the shutoff spec saw it off
    (Role.RELEASE, Placement(OTHER, 4, previous=ME), StatusMark(ME, 3, "running"), False, 3),
    (Role.RELEASE, Placement(OTHER, 4, previous=ME), StatusMark(ME, 3, "shutoff"), True, 4),
    (Role.RELEASE, Placement(OTHER, 4, previous=ME), None, False, 0),
    (Role.RELEASE, None, StatusMark(ME, 3, "shutoff"), True, 3),
    # never over another host's document
    (Role.RELEASE, Placement(OTHER, 4, previous=ME), StatusMark(OTHER, 4, "running"), True,
     None),
])
def test_the_epoch_a_status_document_is_published_with(
        given: Role, placement: Placement | None, mark: StatusMark | None, settled: bool,
        expected: int | None) -> None:
    assert document_epoch(given, placement, mark, ME, settled) == expected


def test_a_status_mark_that_is_not_ours_does_not_decode() -> None:
    assert StatusMark.decode("k", b'{"host": "a", "epoch": 2, "state": "running", "x": 1}') \
        == StatusMark("a", 2, "running")
    with pytest.raises(ValueError, match="k: not a fleet status document"):
        StatusMark.decode("k", b'{"state": "running"}')
