"""Fixtures shared by every test tier.

Real-process tests are marked `qemu` or `lxc`; they are skipped, with the reason, only when the
tool is missing from the machine (CI installs both, so there they always run).
"""

from __future__ import annotations

import os
import shutil

import pytest

HAVE_QEMU = shutil.which("qemu-system-x86_64") is not None
HAVE_LXC = shutil.which("lxc-start") is not None and os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "qemu" in item.keywords and not HAVE_QEMU:
            item.add_marker(pytest.mark.skip(reason="qemu-system-x86_64 is not installed"))
        if "lxc" in item.keywords and not HAVE_LXC:
            item.add_marker(pytest.mark.skip(reason="LXC tools missing or not root"))
