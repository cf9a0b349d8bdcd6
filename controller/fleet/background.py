"""The fleet's background tasks (watches, keep-alives, the fence, the scheduler) end the same
way: cancelled, then awaited, so that a stop returns only once the task has let go."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` (None: nothing) and wait until it has ended."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
