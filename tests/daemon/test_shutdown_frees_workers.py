"""A graceful shutdown waits for its guest without holding a worker: with one worker and a
guest that ignores ACPI for its whole shutdownTimeout, another domain's drift is still
corrected at once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.support.domains import domain

from .conftest import controller_on

pytestmark = pytest.mark.qemu


def test_a_slow_graceful_shutdown_does_not_stall_other_domains(tmp_path: Path) -> None:
    with controller_on(tmp_path, ("--workers", "1")) as ctl:
        slow, victim = ctl.name("deaf"), ctl.name("victim")
        ctl.apply(domain(slow, shutdown_timeout="300s"))  # the firmware ignores ACPI
        ctl.apply(domain(victim))
        ctl.wait_state(slow, "running")
        pid = ctl.wait_state(victim, "running")["pid"]
        ctl.apply(domain(slow, state="shutoff", shutdown_timeout="300s"))
        ctl.wait_for(lambda: any(a["action"] == "shutdown" for a in ctl.audit(slow)),
                     "the graceful shutdown to begin", slow)
        before = len(ctl.events(victim))
        os.kill(pid, signal.SIGKILL)
        ctl.wait_restarted(victim, pid, before)  # well inside the slow guest's 300 s
        status = ctl.status(slow)
        assert status is not None and status["state"] in ("running", "shutdown"), status
        assert ctl.domctl("destroy", slow).returncode == 0  # a destroy still cuts it short
        ctl.wait_state(slow, "shutoff", "destroyed")
