"""The desired store: last valid specs, invalid files and conflicts, removal grace, prune guard."""

from __future__ import annotations

from types import MappingProxyType

from controller.engine.desired import DesiredStore
from controller.manifests.errors import Problem
from controller.manifests.source import Snapshot
from controller.settings import PruneSettings
from reconcilers.model import Domain

from .domains import domain


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def snapshot(*domains: Domain, invalid: dict[str, frozenset[str]] | None = None,
             conflicts: tuple[str, ...] = (), readable: bool = True) -> Snapshot:
    invalid = invalid or {}
    problems = {path: [Problem(path, 4, 3, "spec.memory", "is not a size")] for path in invalid}
    return Snapshot(domains=MappingProxyType({d.name: d for d in domains}),
                    problems=MappingProxyType(problems),
                    names_by_file=MappingProxyType(invalid),
                    conflicts=MappingProxyType({
                        n: [Problem("/m/a.yaml", 3, 1, "metadata.name", f"{n} also in b")]
                        for n in conflicts}),
                    readable=readable)


def store(clock: Clock, grace: float = 3.0) -> DesiredStore:
    return DesiredStore(clock, PruneSettings(grace=grace))


def test_valid_documents_become_desired_and_changes_are_reported() -> None:
    clock = Clock()
    s = store(clock)
    assert s.apply(snapshot(domain("a"), domain("b"))) == {"a", "b"}
    assert s.desired("a") == domain("a")
    assert s.apply(snapshot(domain("a"), domain("b"))) == set()  # nothing changed
    assert s.apply(snapshot(domain("a", memory="128Mi"), domain("b"))) == {"a"}
    assert s.desired("a").spec.memory == 128 * 1024 * 1024  # type: ignore[union-attr]


def test_an_invalid_file_keeps_the_last_valid_spec_and_reports_the_problem() -> None:
    s = store(Clock())
    s.apply(snapshot(domain("a")))
    changed = s.apply(snapshot(invalid={"/m/a.yaml": frozenset({"a"})}))
    assert changed == {"a"}
    assert s.desired("a") == domain("a")
    entry = s.entry("a")
    assert entry is not None and entry.missing_since is None
    assert [str(p) for p in entry.problems] == ["/m/a.yaml:4:3: spec.memory: is not a size"]
    s.apply(snapshot(domain("a")))  # fixed
    assert s.entry("a").problems == []  # type: ignore[union-attr]


def test_a_name_conflict_keeps_the_last_valid_spec() -> None:
    s = store(Clock())
    s.apply(snapshot(domain("a")))
    s.apply(snapshot(conflicts=("a",)))
    assert s.desired("a") == domain("a")
    assert s.entry("a").conflicts  # type: ignore[union-attr]


def test_a_removed_manifest_is_kept_for_the_grace_period() -> None:
    clock = Clock()
    s = store(clock, grace=3.0)
    s.apply(snapshot(domain("a"), domain("b"), domain("c")))
    assert s.apply(snapshot(domain("b"), domain("c"))) == {"a"}
    assert s.desired("a") == domain("a") and s.removal_in("a") == 3.0
    clock.now += 2.9
    assert s.desired("a") is not None
    clock.now += 0.2
    assert s.desired("a") is None and s.removal_in("a") == 0.0


def test_a_manifest_back_within_the_grace_period_is_not_removed() -> None:
    clock = Clock()
    s = store(clock)
    s.apply(snapshot(domain("a"), domain("b"), domain("c")))
    s.apply(snapshot(domain("b"), domain("c")))  # git checkout: briefly gone
    clock.now += 1
    s.apply(snapshot(domain("a"), domain("b"), domain("c")))
    clock.now += 10
    assert s.desired("a") == domain("a") and s.removal_in("a") == float("inf")


def test_an_unreadable_directory_prunes_nothing() -> None:
    clock = Clock()
    s = store(clock)
    s.apply(snapshot(domain("a")))
    assert s.apply(snapshot(readable=False)) == set()
    clock.now += 100
    assert s.desired("a") == domain("a")


def test_removing_most_domains_at_once_is_held_until_confirmed() -> None:
    clock = Clock()
    s = store(clock)
    s.apply(snapshot(*(domain(n) for n in "abcd")))
    s.apply(snapshot(domain("d")))  # 3 of 4 vanish at once
    clock.now += 100
    assert s.held() == ["a", "b", "c"]
    assert all(s.desired(n) is not None for n in "abc")
    assert s.confirm_prune() == ["a", "b", "c"]
    assert all(s.desired(n) is None for n in "abc") and s.desired("d") is not None


def test_two_removals_are_never_held_and_half_is_not_more_than_half() -> None:
    clock = Clock()
    s = store(clock, grace=0)
    s.apply(snapshot(*(domain(n) for n in "ab")))
    s.apply(snapshot())  # all of 2: not more than guard_min
    assert s.held() == [] and s.desired("a") is None
    s2 = store(clock, grace=0)
    s2.apply(snapshot(*(domain(n) for n in "abcdef")))
    s2.apply(snapshot(*(domain(n) for n in "def")))  # 3 of 6: exactly half
    assert s2.held() == []


def test_held_removals_are_released_when_the_manifests_come_back() -> None:
    clock = Clock()
    s = store(clock)
    s.apply(snapshot(*(domain(n) for n in "abcd")))
    s.apply(snapshot())
    assert s.held() == ["a", "b", "c", "d"]
    s.apply(snapshot(*(domain(n) for n in "abcd")))
    assert s.held() == [] and all(s.removal_in(n) == float("inf") for n in "abcd")


def test_seeded_names_without_a_manifest_are_removed_after_the_grace_period() -> None:
    clock = Clock()
    s = store(clock, grace=3.0)
    s.seed({"old": None})
    assert s.apply(snapshot(domain("a"))) == {"old", "a"}
    assert s.removal_in("old") == 3.0
    s.forget("old")
    assert s.names() == ["a"]


def test_after_a_restart_an_invalid_manifest_keeps_its_domain_on_the_last_valid_spec() -> None:
    """The source has never seen the file valid (it just started): the seeded last valid spec
    names its file, which is still there but invalid, so the domain is not removed."""
    clock, web = Clock(), domain("web-1")
    s = store(clock)
    s.seed({"web-1": web})
    changed = s.apply(snapshot(invalid={web.source.file: frozenset()}))
    assert changed == {"web-1"}
    clock.now += 60
    assert s.desired("web-1") == web
    entry = s.entry("web-1")
    assert entry is not None and entry.missing_since is None
    assert [p.field for p in entry.problems] == ["spec.memory"]


def test_after_a_restart_a_file_that_is_gone_still_removes_its_domain() -> None:
    clock, web = Clock(), domain("web-1")
    s = store(clock)
    s.seed({"web-1": web})
    s.apply(snapshot(invalid={"/m/other.yaml": frozenset()}))
    clock.now += 3
    assert s.desired("web-1") is None


def test_removals_one_a_second_are_held_like_one_rescan() -> None:
    """An Ansible loop deleting one manifest a second: the guard counts the window."""
    clock = Clock()
    names = [f"web-{i}" for i in range(5)]
    s = DesiredStore(clock, PruneSettings(grace=3.0, window=60.0))
    s.apply(snapshot(*(domain(n) for n in names)))
    for gone in range(1, 4):  # removes web-0, then web-1, then web-2, a second apart
        s.apply(snapshot(*(domain(n) for n in names[gone:])))
        clock.now += 1
    assert s.held() == ["web-0", "web-1", "web-2"]
    clock.now += 600
    assert all(s.desired(n) is not None for n in names[:3])
    assert s.confirm_prune() == ["web-0", "web-1", "web-2"]
    assert all(s.desired(n) is None for n in names[:3])


def test_removals_spread_wider_than_the_window_are_not_held() -> None:
    clock = Clock()
    names = [f"web-{i}" for i in range(5)]
    s = DesiredStore(clock, PruneSettings(grace=3.0, window=10.0))
    s.apply(snapshot(*(domain(n) for n in names)))
    for gone in range(1, 4):
        s.apply(snapshot(*(domain(n) for n in names[gone:])))
        clock.now += 11
        s.forget(names[gone - 1])  # undefined after its grace period
    assert s.held() == []
