"""The one-line status systemd shows (`systemctl status domctl`: sd_notify STATUS=), kept current.

"12 domains, 11 ready" after every change of any status document: the status store's watch
wakes the loop (never a poll), changes that come together collapse into one recount, and a
line is sent only when its text differs from the last one sent.

Public surface: summary(statuses) -> str; keep_current(statuses, send=sdnotify.status)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from controller.service import sdnotify
from controller.state.status import ConditionStatus, ConditionType, StatusStore


def summary(statuses: StatusStore) -> str:
    """How many domains have a status, and how many of them are Ready."""
    documents = [status for name in statuses.names() if (status := statuses.read(name))]
    ready = sum(1 for status in documents
                if (condition := status.condition(ConditionType.READY)) is not None
                and condition.status is ConditionStatus.TRUE)
    return f"{len(documents)} domain{'' if len(documents) == 1 else 's'}, {ready} ready"


async def keep_current(statuses: StatusStore,
                       send: Callable[[str], object] = sdnotify.status) -> None:
    """Send `summary` now and after every change, until cancelled."""
    changed = asyncio.Event()
    last = None
    with statuses.watch(None, changed.set):
        while True:
            line = summary(statuses)
            if line != last:
                send(line)
                last = line
            await changed.wait()
            changed.clear()
