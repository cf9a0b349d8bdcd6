"""Per-domain jobs: exclusion, query without a lock, busy timeout, destroy interrupting."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from controller.engine.jobs import JobInfo, JobInterrupted, Jobs
from controller.settings import JobSettings
from reconcilers.errors import BusyError, TransientError
from reconcilers.ports import JobKind

WALL = 1764000000.0  # 2025-11-24T16:00:00Z


def make_jobs(wait_limit: float = 5.0) -> Jobs:
    return Jobs(JobSettings(wait_limit=wait_limit), wall_clock=lambda: WALL)


async def test_modify_jobs_on_one_domain_run_one_at_a_time() -> None:
    jobs = make_jobs()
    order: list[str] = []
    release_first = asyncio.Event()

    async def first() -> None:
        async with jobs.acquire("web", JobKind.MODIFY, owner="first"):
            order.append("first in")
            await release_first.wait()
            order.append("first out")

    async def second() -> None:
        async with jobs.acquire("web", JobKind.SUSPEND, owner="second"):
            order.append("second in")

    async with asyncio.timeout(5):
        tasks = [asyncio.create_task(first())]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(second()))
        for _ in range(10):  # every ready callback runs: second is parked on the lock
            await asyncio.sleep(0)
        assert order == ["first in"]
        assert jobs.current("web") == JobInfo(JobKind.MODIFY, "first", WALL, False)
        release_first.set()
        await asyncio.gather(*tasks)
    assert order == ["first in", "first out", "second in"]
    assert jobs.current("web") is None


async def test_other_domains_and_queries_do_not_wait() -> None:
    jobs = make_jobs(wait_limit=0.05)
    async with asyncio.timeout(5), jobs.acquire("web", JobKind.MODIFY, owner="a"):
        async with jobs.acquire("db", JobKind.MODIFY, owner="b"):
            pass
        async with jobs.acquire("web", JobKind.QUERY, owner="status"):
            info = jobs.current("web")
            assert info is not None and info.owner == "a"  # a query never becomes the holder


async def test_waiting_past_the_limit_raises_busy() -> None:
    jobs = make_jobs(wait_limit=0.05)
    async with asyncio.timeout(5), jobs.acquire("web", JobKind.MODIFY, owner="reconcile"):
        with pytest.raises(BusyError) as caught:
            async with jobs.acquire("web", JobKind.SUSPEND, owner="api"):
                pytest.fail("must not get the lock")
    err = caught.value
    assert isinstance(err, TransientError)
    assert (err.domain, err.job, err.since) == ("web", "modify", "2025-11-24T16:00:00.000Z")
    assert str(err) == "web: busy running modify since 2025-11-24T16:00:00.000Z"
    async with jobs.acquire("web", JobKind.MODIFY, owner="later"):
        pass  # the failed waiter left nothing behind


async def test_destroy_interrupts_an_interruptible_shutdown() -> None:
    jobs = make_jobs()
    entered = asyncio.Event()
    outcome: list[str] = []

    async def graceful_shutdown() -> None:
        try:
            async with jobs.acquire("web", JobKind.MODIFY, owner="shutdown", interruptible=True):
                entered.set()
                await asyncio.sleep(3600)  # the guest ignores ACPI
        except JobInterrupted as err:
            outcome.append(str(err))
        await asyncio.sleep(0)  # the worker task lives on, not cancelled
        outcome.append("worker alive")

    async with asyncio.timeout(5):
        shutdown = asyncio.create_task(graceful_shutdown())
        await entered.wait()
        async with jobs.acquire("web", JobKind.DESTROY, owner="reconcile"):
            assert jobs.current("web").kind is JobKind.DESTROY  # type: ignore[union-attr]
            outcome.append("destroy")
        await shutdown
    assert outcome == ["web: modify interrupted by destroy", "destroy", "worker alive"]
    assert shutdown.cancelling() == 0


async def test_destroy_waits_for_a_job_that_is_not_interruptible() -> None:
    jobs = make_jobs(wait_limit=0.05)
    async with asyncio.timeout(5), jobs.acquire("web", JobKind.MODIFY, owner="start"):
        with pytest.raises(BusyError, match="busy running modify since"):
            async with jobs.acquire("web", JobKind.DESTROY, owner="reconcile"):
                pass


async def test_outside_cancellation_of_an_interruptible_job_stays_a_cancel() -> None:
    jobs = make_jobs()
    entered = asyncio.Event()

    async def holder() -> None:
        async with jobs.acquire("web", JobKind.MODIFY, owner="shutdown", interruptible=True):
            entered.set()
            await asyncio.sleep(3600)

    async with asyncio.timeout(5):
        task = asyncio.create_task(holder())
        await entered.wait()
        task.cancel()  # e.g. the controller shutting down
        with pytest.raises(asyncio.CancelledError):
            await task
    assert jobs.current("web") is None


async def test_holder_that_swallows_the_interrupt_leaks_no_cancel() -> None:
    jobs = make_jobs()
    entered = asyncio.Event()

    async def stubborn() -> int:
        async with jobs.acquire("web", JobKind.MODIFY, owner="shutdown", interruptible=True):
            entered.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)  # e.g. a driver cleaning up and returning normally
        await asyncio.sleep(0)  # would raise if our cancel were still pending
        return asyncio.current_task().cancelling()  # type: ignore[union-attr]

    async with asyncio.timeout(5):
        task = asyncio.create_task(stubborn())
        await entered.wait()
        async with jobs.acquire("web", JobKind.DESTROY, owner="reconcile"):
            pass
        assert await task == 0


async def test_job_info_for_status() -> None:
    info = JobInfo(JobKind.SUSPEND, "api:uid=0", WALL, False)
    assert info.to_dict() == {"job": "suspend", "owner": "api:uid=0",
                              "since": "2025-11-24T16:00:00.000Z", "interruptible": False}
