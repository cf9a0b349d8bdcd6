"""WorkQueue: dedup, no two workers on one name, once-more after a re-add, delayed requeue."""

from __future__ import annotations

import asyncio

import pytest

from controller.engine.clock import ManualClock
from controller.engine.workqueue import ShutDown, WorkQueue
from controller.protocol import rfc3339


async def drain(queue: WorkQueue) -> list[str]:
    """Every name ready now, each marked done straight away."""
    names = []
    while len(queue):
        name = await queue.get()
        names.append(name)
        queue.done(name)
    return names


async def test_adds_are_deduplicated_and_fifo() -> None:
    queue = WorkQueue(ManualClock())
    for name in ["a", "b", "a", "c", "b"]:
        queue.add(name)
    assert len(queue) == 3
    assert await drain(queue) == ["a", "b", "c"]


async def test_readded_while_processing_runs_exactly_once_more_afterwards() -> None:
    queue = WorkQueue(ManualClock())
    queue.add("a")
    name = await queue.get()
    queue.add("a")
    queue.add("a")
    assert len(queue) == 0  # held back: never handed to a second worker
    assert queue.is_processing("a")
    queue.done(name)
    assert len(queue) == 1
    assert await drain(queue) == ["a"]
    assert len(queue) == 0


async def test_two_workers_never_hold_one_name() -> None:
    queue = WorkQueue(ManualClock())
    active: set[str] = set()
    seen: list[str] = []

    async def worker() -> None:
        while True:
            try:
                name = await queue.get()
            except ShutDown:
                return
            assert name not in active
            active.add(name)
            seen.append(name)
            await asyncio.sleep(0)
            if seen.count(name) < 3:
                queue.add(name)  # re-added while processing
            await asyncio.sleep(0)
            active.discard(name)
            queue.done(name)

    async with asyncio.timeout(5):
        workers = [asyncio.create_task(worker()) for _ in range(4)]
        for name in ["a", "b", "a", "b"]:
            queue.add(name)
        while seen.count("a") < 3 or seen.count("b") < 3 or len(queue) or active:
            await asyncio.sleep(0)
        queue.shutdown()
        await asyncio.gather(*workers)
    assert sorted(seen) == ["a", "a", "a", "b", "b", "b"]


async def test_get_waits_for_an_add() -> None:
    queue = WorkQueue(ManualClock())
    async with asyncio.timeout(5):
        getter = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        assert not getter.done()
        queue.add("a")
        assert await getter == "a"


async def test_add_after_fires_on_the_injected_clock() -> None:
    clock = ManualClock()
    queue = WorkQueue(clock)
    queue.add_after("a", 10)
    clock.advance(9.9)
    assert len(queue) == 0
    clock.advance(0.1)
    assert await drain(queue) == ["a"]
    clock.advance(100)
    assert len(queue) == 0  # fired once only


async def test_add_after_twice_keeps_the_earliest() -> None:
    clock = ManualClock()
    queue = WorkQueue(clock)
    queue.add_after("a", 30)
    queue.add_after("a", 5)
    queue.add_after("a", 20)
    clock.advance(5)
    assert await drain(queue) == ["a"]
    clock.advance(60)
    assert len(queue) == 0


async def test_add_after_zero_is_immediate_and_forget_cancels() -> None:
    clock = ManualClock()
    queue = WorkQueue(clock)
    queue.add_after("a", 0)
    assert len(queue) == 1
    queue.add_after("b", 5)
    queue.forget("b")
    clock.advance(10)
    assert await drain(queue) == ["a"]


async def test_delayed_add_of_a_processing_name_is_held_until_done() -> None:
    clock = ManualClock()
    queue = WorkQueue(clock)
    queue.add("a")
    name = await queue.get()
    queue.add_after("a", 1)
    clock.advance(1)
    assert len(queue) == 0
    queue.done(name)
    assert await drain(queue) == ["a"]


async def test_shutdown_wakes_getters_and_ignores_later_adds() -> None:
    clock = ManualClock()
    queue = WorkQueue(clock)
    async with asyncio.timeout(5):
        getters = [asyncio.create_task(queue.get()) for _ in range(2)]
        await asyncio.sleep(0)
        queue.add_after("late", 1)
        queue.shutdown()
        for getter in getters:
            with pytest.raises(ShutDown):
                await getter
    queue.add("a")
    clock.advance(5)
    assert len(queue) == 0
    with pytest.raises(ShutDown):
        await queue.get()


async def test_cancelled_getter_does_not_strand_an_item() -> None:
    queue = WorkQueue(ManualClock())
    async with asyncio.timeout(5):
        first = asyncio.create_task(queue.get())
        second = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        queue.add("a")
        first.cancel()
        results = await asyncio.gather(first, second, return_exceptions=True)
    assert "a" in results


def test_rfc3339_is_utc_with_z() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1764000000.5) == "2025-11-24T16:00:00.500Z"


async def test_default_clock_is_the_running_loop() -> None:
    queue = WorkQueue()
    queue.add_after("a", 0.01)
    async with asyncio.timeout(5):
        assert await queue.get() == "a"


async def test_wait_idle_returns_when_the_last_pass_is_done_and_not_before() -> None:
    """READY=1 comes from this: woken by done(), including a name re-added meanwhile."""
    q = WorkQueue(ManualClock())
    q.add("a")
    idle = asyncio.create_task(q.wait_idle())
    name = await q.get()
    q.add("a")  # changed again while being reconciled: one more pass before idle
    q.done(name)
    await asyncio.sleep(0)
    assert not idle.done()
    q.done(await q.get())
    await asyncio.wait_for(idle, 5)
    assert q.idle()
