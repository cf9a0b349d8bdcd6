"""The daily `get`/`wait`/`events` surface (issue #17 points 2 and 6) through the real console
script against a real `domctl run`: label selectors on `get`, `wait`, `events` and an action,
`get -o name` and `-o jsonpath`, `get -w` printing a change as it happens, `wait --all`,
`wait --for=delete` on a removed manifest, the timeout's own exit code, and the events filters.

One controller for the module, with three labelled LXC containers (busybox, an init that only
sleeps: cheap on a 2-core host), `tier=web` twice and `tier=db`; a test that changes them puts
them back. The test of `--for=delete` has a fourth container of its own.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Iterator

import pytest

from reconcilers.model import Domain
from tests.support.domains import domain

from .conftest import SLEEPER, Controller, controller_on
from .test_cli_live import follow, json_lines, ok

pytestmark = pytest.mark.lxc

TIMED_OUT = 3  # `wait`'s exit code for a timeout (controller/cli/waiting.py)


def container(name: str, tier: str) -> Domain:
    """A sleeping busybox container labelled tier=TIER."""
    plain = domain(name, "lxc", lxc=SLEEPER)
    return dataclasses.replace(plain, metadata=dataclasses.replace(
        plain.metadata, labels=(("tier", tier),)))


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    with controller_on(tmp_path_factory.mktemp("daily")) as ctl:
        yield ctl


@pytest.fixture(scope="module")
def tiers(ctl: Controller) -> dict[str, list[str]]:
    """The module's containers by tier, each Ready: `wait --all` proves it, once the controller
    has seen them (it lists the domains the controller knows: it does not rescan first)."""
    found = {"web": sorted([ctl.name("web"), ctl.name("web")]), "db": [ctl.name("db")]}
    for tier, names in found.items():
        for name in names:
            ctl.apply(container(name, tier))
    for names in found.values():
        for name in names:
            ctl.wait_for(functools.partial(ctl.status, name), f"{name}'s status", name)
    waited = ok(ctl.domctl("wait", "--all", "--for", "condition=Ready", "--timeout", "120",
                           timeout=150))
    assert sorted(waited.stdout.splitlines()) == sorted(
        f"{name}: condition=Ready" for names in found.values() for name in names), waited
    return found


def row_is(name: str, state: str) -> Callable[[str], bool]:
    """A `get` row of NAME, an lxc domain, in STATE (DESIRED is the action's while it holds)."""
    return lambda line: line.split()[:2] == [name, "lxc"] and line.split()[3] == state


def test_get_selects_by_label_and_prints_names_and_jsonpath(ctl: Controller,
                                                            tiers: dict[str, list[str]]) -> None:
    web, [db] = tiers["web"], tiers["db"]
    assert ok(ctl.domctl("get", "-l", "tier=web", "-o", "name")).stdout.splitlines() == [
        f"domain/{name}" for name in web]
    assert ok(ctl.domctl("get", "-l", "tier!=web", "-o", "name")).stdout == f"domain/{db}\n"
    template = 'jsonpath={range .items[*]}{.name} {.state} {.labels.tier}{"\\n"}{end}'
    assert ok(ctl.domctl("get", "-l", "tier", "-o", template)).stdout.splitlines() == sorted(
        f"{name} running {tier}" for tier, names in tiers.items() for name in names)
    assert ok(ctl.domctl("get", db, "-o", "jsonpath={.driver}/{.state}")).stdout == \
        "lxc/running"
    header, row = ok(ctl.domctl("get", "--show-labels", "-l", "tier=db")).stdout.splitlines()
    assert header.split()[-1] == "LABELS" and row.split()[0] == db, (header, row)
    assert row.split()[-1] == "tier=db", row
    nothing = ctl.domctl("get", "-l", "tier=cache")
    assert nothing.returncode == 0 and nothing.stdout == "" and "no domains" in nothing.stderr


def test_an_action_on_a_selector_seen_by_get_watch(ctl: Controller,
                                                   tiers: dict[str, list[str]]) -> None:
    """`suspend -l tier=web` pauses both web containers, one line each; `get -w` (started
    before) prints each one's new row as it happens, and ^C ends it with 130."""
    web, [db] = tiers["web"], tiers["db"]
    with follow(ctl, "get", "-w", "-l", "tier=web") as watched:
        for name in web:  # the listing first
            watched.wait_for(row_is(name, "running"), f"{name}'s running row")
        suspended = ok(ctl.domctl("suspend", "-l", "tier=web"))
        assert sorted(suspended.stdout.splitlines()) == [
            f"{name}: suspend done: paused (user)" for name in web], suspended.stdout
        for name in web:
            watched.wait_for(row_is(name, "paused"), f"{name}'s paused row")
        code, _ = watched.interrupt()
    assert code == 130
    assert (ctl.status(db) or {}).get("state") == "running"  # -l picked the web tier only
    ok(ctl.domctl("resume", "-l", "tier=web"))
    ok(ctl.domctl("wait", "-l", "tier=web", "--for", "state=running", "--timeout", "60"))
    empty = ctl.domctl("stop", "-l", "tier=cache")
    assert empty.returncode == 1 and empty.stderr == "error: no domain matches -l tier=cache\n"
    both = ctl.domctl("stop", web[0], "-l", "tier=web")
    assert both.returncode == 2 and "a NAME and -l do not go together" in both.stderr


def test_wait_for_delete_and_a_timeout(ctl: Controller, tiers: dict[str, list[str]]) -> None:
    name = ctl.name("gone")
    filename = ctl.apply(container(name, "tmp")).name
    ok(ctl.domctl("wait", name, "--for", "state=running", "--timeout", "60"))
    late = ctl.domctl("wait", name, "--for", "state=paused", "--timeout", "1")
    assert late.returncode == TIMED_OUT, late
    assert late.stderr.startswith(f"error: timed out waiting for {name}: state=paused"), late
    unknown = ctl.domctl("wait", name, "--for", "state=asleep")
    assert unknown.returncode == 2 and "unknown state 'asleep'" in unknown.stderr, unknown
    ctl.remove_manifest(filename)
    gone = ok(ctl.domctl("wait", name, "--for=delete", "--timeout", "60", timeout=90))
    assert gone.stdout == f"{name}: delete\n"
    assert ctl.domctl("get", name).returncode == 1
    assert ok(ctl.domctl("wait", name, "--for", "delete", "--timeout", "5")).stdout == \
        f"{name}: delete\n"  # gone already: at once


def test_events_filters(ctl: Controller, tiers: dict[str, list[str]]) -> None:
    web, [db] = tiers["web"], tiers["db"]
    started = json_lines(ok(ctl.domctl("events", "-o", "json", "--type", "started",
                                       "-l", "tier=web", "--since", "1h")).stdout)
    assert {r["domain"] for r in started} == set(web), started
    assert {r["event"] for r in started} == {"started"}, started
    [last] = json_lines(ok(ctl.domctl("events", "-o", "json", "--type", "defined",
                                      "--limit", "1")).stdout)
    assert last["event"] == "defined", last
    defined = json_lines(ok(ctl.domctl("events", "-o", "json", "--type", "defined,started",
                                       "--name", db)).stdout)
    assert [(r["event"], r["detail"]) for r in defined] == [
        ("defined", "added"), ("started", "booted")], defined
    assert ok(ctl.domctl("events", "--since", "2999-01-01T00:00:00Z")).stdout == ""
    assert json.loads(ok(ctl.domctl("get", db, "-o", "json")).stdout)["labels"] == {
        "tier": "db"}
