"""InvalidManifests: which invalid files stand for no domain, their names and problem counts."""

from __future__ import annotations

from types import MappingProxyType

from controller.engine.invalid import InvalidManifests
from controller.manifests.errors import Problem
from controller.manifests.source import Snapshot
from controller.protocol import INVALID_KIND, headline

from .domains import domain

TYPO = Problem("/m/new-vm.yml", 4, 3, "spec.memroy", "unknown field")
SIZE = Problem("/m/new-vm.yml", 6, 5, "spec.memory", "is not a size")
KEPT = Problem("/m/web.yaml", 2, 1, "spec.cpus", "must be at least 1")


def snapshot(names_by_file: dict[str, frozenset[str]], readable: bool = True) -> Snapshot:
    web = domain("web")
    problems = {"/m/new-vm.yml": [TYPO, SIZE], "/m/web.yaml": [KEPT],
                "/m/old.yaml": [Problem("/m/old.yaml", 1, 1, "kind", "unknown kind")]}
    return Snapshot(domains=MappingProxyType({"web": web}), problems=MappingProxyType(problems),
                    names_by_file=MappingProxyType(names_by_file), readable=readable)


def test_only_files_that_stand_for_no_domain_are_listed_named_after_the_file() -> None:
    view = InvalidManifests()
    # web.yaml declared web when last valid; old.yaml gave a domain its spec before a restart
    view.apply(snapshot({"/m/new-vm.yml": frozenset(), "/m/web.yaml": frozenset({"web"}),
                         "/m/old.yaml": frozenset()}), kept_files={"/m/old.yaml"})
    assert [m.name for m in view.all()] == ["new-vm"]
    [manifest] = view.named("new-vm")
    assert view.named("web") == []
    document = manifest.to_dict()
    assert document["kind"] == INVALID_KIND and document["state"] == "-"
    assert document["message"] == ("/m/new-vm.yml:4:3: spec.memroy: unknown field "
                                   "(and 1 more)")
    assert headline(document) == document["message"]
    assert [p["field"] for p in document["problems"]] == ["spec.memroy", "spec.memory"]


def test_problem_counts_cover_valid_and_invalid_files() -> None:
    view = InvalidManifests()
    view.apply(snapshot({"/m/new-vm.yml": frozenset()}), kept_files=set())
    counts = view.problem_counts()
    assert counts["/m/new-vm.yml"] == 2 and counts["/m/web.yaml"] == 1
    assert counts[domain("web").source.file] == 0  # the valid web's file


def test_an_unreadable_directory_changes_nothing() -> None:
    view = InvalidManifests()
    view.apply(snapshot({}), kept_files=set())
    view.apply(Snapshot(readable=False), kept_files=set())
    assert [m.name for m in view.all()] == ["new-vm", "old", "web"]
    view.apply(Snapshot(), kept_files=set())  # fixed (or removed)
    assert view.all() == [] and view.problem_counts() == {}
