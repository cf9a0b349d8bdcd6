"""tests/support itself: the builder is the loader run backwards, waits fail saying what they
waited for, and the leak guard fails a test that leaks (and passes one that does not)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from controller.manifests.loader import load_file, load_text
from reconcilers.model import CpuTune, Domain, Lifecycle, LifecycleAction, LxcSpec, Mount, VcpuPin
from tests.support.domains import domain, manifest
from tests.support.waiting import wait_until

pytest_plugins = ["pytester"]


@pytest.mark.parametrize("built", [
    domain(),
    domain("web-1", state="paused", memory="128Mi", shutdown_timeout="2s", vcpus=2, uuid=None,
           cputune=CpuTune(shares=512, vcpupin=(VcpuPin(0, "0"),)),
           lifecycle=Lifecycle(on_poweroff=LifecycleAction.PRESERVE)),
    domain("ct", "lxc", shutdown_timeout=0.5, lxc=LxcSpec(
        init=("/bin/sh", "-c", "exec sleep infinity"), env=(("A", "b=c"),),
        mounts=(Mount("/srv", "/mnt", readonly=True),))),
], ids=["default", "qemu", "lxc"])
def test_the_loader_reads_a_manifest_back_as_its_domain(built: Domain) -> None:
    assert load_text(manifest(built), f"{built.name}.yaml") == [built]


ROOT = Path(__file__).parent.parent
MANIFESTS = sorted([*ROOT.glob("tests/golden/*/*.yaml"), *ROOT.glob("manifests/examples/*.yaml")])


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_golden_and_example_manifest_survives_the_round_trip(path: Path) -> None:
    for loaded in load_file(path):
        [again] = load_text(manifest(loaded), "m.yaml")
        assert (again.metadata, again.spec) == (loaded.metadata, loaded.spec)


def test_a_wait_that_times_out_says_what_it_waited_for() -> None:
    with pytest.raises(AssertionError) as failure:
        wait_until(lambda: [], "the answer", timeout=0.1, explain=lambda: "status: lost")
    assert str(failure.value) == ("timed out after 0.1 s waiting for the answer; last check "
                                  "returned []\nstatus: lost")
    with pytest.raises(AssertionError, match=r"^daemon exited waiting for"):
        wait_until(lambda: None, "the answer", abort=lambda: "daemon exited")
    assert wait_until(iter([0, "", 42]).__next__, "the answer", interval=0) == 42


GUARDED = '''
    import asyncio, subprocess

    async def test_clean() -> None:
        await asyncio.sleep(0)

    async def test_leaks_a_task() -> None:
        asyncio.get_running_loop().create_task(asyncio.sleep(60), name="forgotten")

    def test_leaks_a_child() -> None:
        subprocess.Popen(["sleep", "60"])
'''


def test_the_guard_fails_a_leaking_test_and_kills_what_it_left(pytester: pytest.Pytester
                                                                ) -> None:
    pytester.makeconftest("from tests.conftest import _no_leaked_tasks, _no_leaks")
    pytester.makeini("[pytest]\nasyncio_mode = auto\n"
                     "asyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(textwrap.dedent(GUARDED))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines([
        "*asyncio tasks still pending after the test (cancelled now):*",
        "*forgotten: sleep at *",
        "*left running by this test (killed now):*",
        "*process pid * sleep 60*",
    ])
