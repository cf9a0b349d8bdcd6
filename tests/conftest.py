"""Fixtures shared by every test tier: the qemu/lxc skips and the leak guard.

Real-process tests are marked `qemu` or `lxc`; they are skipped, with the reason, only when the
tool is missing from the machine (CI installs both, so there they always run).

The leak guard (autouse) fails a test that leaves behind, once its fixtures are torn down, an
asyncio task still pending on its loop, a qemu process, an LXC container or a child process
started during the test (tests/support/leaks.py says how each is recognised), then kills what it
found, by pid, so that later tests start clean.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator

import pytest
from pytest_asyncio import is_async_test

from tests.support import cleanup, leaks

HAVE_QEMU = shutil.which("qemu-system-x86_64") is not None
HAVE_LXC = shutil.which("lxc-start") is not None and os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "qemu" in item.keywords and not HAVE_QEMU:
            item.add_marker(pytest.mark.skip(reason="qemu-system-x86_64 is not installed"))
        if "lxc" in item.keywords and not HAVE_LXC:
            item.add_marker(pytest.mark.skip(reason="LXC tools missing or not root"))


@pytest.fixture
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """On the test's own loop: the tasks there before it, against those pending after it."""
    before = asyncio.all_tasks()
    yield
    leaked = await leaks.pending_tasks(before)
    if leaked:
        what = "\n  ".join(map(leaks.describe_task, leaked))  # before cancelling ends them
        for task in leaked:
            task.cancel()
        await asyncio.wait(leaked, timeout=1.0)
        raise AssertionError(f"asyncio tasks still pending after the test (cancelled now):\n  "
                             f"{what}")


@pytest.fixture(autouse=True)
def _no_leaks(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    if is_async_test(request.node):
        request.getfixturevalue("_no_leaked_tasks")  # torn down before the process check
    guard = leaks.ProcessGuard((f"{tmp_path_factory.getbasetemp()}/", cleanup.SCRATCH_PREFIX))
    yield
    found = guard.leaks()
    for leak in found:
        cleanup.kill(leak.pids)
    if found:
        pytest.fail("left running by this test (killed now):\n  "
                    + "\n  ".join(leak.what for leak in found), pytrace=False)


pytest_plugins = ["tests.support.guest"]  # the session fixture `guest_build`
