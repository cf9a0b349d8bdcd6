"""controller/service/statusline.py: systemd's STATUS= line follows the status documents."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path

from controller.service.statusline import keep_current, summary
from controller.state.status import (
    Condition,
    ConditionStatus,
    ConditionType,
    DomainStatus,
    StatusStore,
)
from reconcilers.model import DesiredState, DriverName, Reason, State
from tests.support.waiting import async_wait_until


def status(name: str, ready: bool) -> DomainStatus:
    verdict = ConditionStatus.TRUE if ready else ConditionStatus.FALSE
    return DomainStatus(name=name, uuid="u", driver=DriverName.QEMU,
                        desired=DesiredState.RUNNING, state=State.RUNNING, reason=Reason.BOOTED,
                        conditions=(Condition(ConditionType.READY, verdict, "Converged"),))


async def test_the_line_is_sent_at_once_and_again_only_when_its_text_changes(
        tmp_path: Path) -> None:
    statuses = StatusStore(tmp_path)
    statuses.write(status("a", ready=True))
    sent: list[str] = []
    task = asyncio.create_task(keep_current(statuses, sent.append))
    try:
        await async_wait_until(lambda: sent == ["1 domain, 1 ready"], "the first line")
        statuses.write(status("b", ready=False))
        await async_wait_until(lambda: sent[-1:] == ["2 domains, 1 ready"], "b counted")
        statuses.write(dataclasses.replace(status("b", ready=False), pid=7))  # same counts
        statuses.write(status("b", ready=True))
        await async_wait_until(lambda: sent[-1:] == ["2 domains, 2 ready"], "b ready")
        statuses.remove("a")
        await async_wait_until(lambda: sent[-1:] == ["1 domain, 1 ready"], "a gone")
        assert sent == ["1 domain, 1 ready", "2 domains, 1 ready", "2 domains, 2 ready",
                        "1 domain, 1 ready"]  # the pid change alone sent nothing
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_an_empty_host_says_so(tmp_path: Path) -> None:
    assert summary(StatusStore(tmp_path)) == "0 domains, 0 ready"
