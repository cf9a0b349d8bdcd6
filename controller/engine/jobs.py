"""Per-domain jobs (libvirt's "state change lock"): one state-changing operation at a time.

The reconciler wraps every driver call that changes a domain in a job:

    async with jobs.acquire(name, JobKind.MODIFY, owner="reconcile"):
        await driver.start(domain, paused=False)

- `QUERY` (observe, status) takes no lock and never waits.
- `MODIFY`, `SUSPEND` and `DESTROY` are exclusive per domain, granted in arrival order (a
  destroy does not jump the queue of waiting jobs). Not re-entrant: a task that holds a job
  and asks for another on the same domain waits out the limit and gets BusyError.
- A holder that registered `interruptible=True` (a graceful shutdown waiting for the guest) is
  cancelled when a `DESTROY` arrives; its `async with` then raises JobInterrupted (a
  TransientError) instead of CancelledError, so its worker survives and requeues, and the
  destroy proceeds as soon as the holder has released.
- Waiting longer than `JobSettings.wait_limit` raises BusyError: "<name>: busy running <job>
  since <time>" (libvirt: 30 s, "cannot acquire state change lock").

Public surface:
    JobKind, JobInfo(kind, owner, since, interruptible)
    Jobs(settings, wall_clock=time.time).acquire(name, kind, owner, interruptible=False)
    Jobs.current(name) -> JobInfo | None          # for status and `describe`
    JobInterrupted(domain, kind)

Jobs are in-memory only: a controller restart starts with none. Never hold a job across a
wait for another domain's job (no lock ordering exists), and never run hooks or emit events
while expecting the job to protect them from a destroy: a destroy may cut an interruptible job.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import structlog

from controller.protocol import rfc3339
from controller.settings import JobSettings
from reconcilers.errors import BusyError, TransientError
from reconcilers.ports import JobKind

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class JobInfo:
    kind: JobKind
    owner: str  # who runs it, for logs and `describe`: "reconcile", "api:uid=1000", ...
    since: float  # wall-clock seconds
    interruptible: bool

    def to_dict(self) -> dict[str, object]:
        return {"job": self.kind.value, "owner": self.owner, "since": rfc3339(self.since),
                "interruptible": self.interruptible}


class JobInterrupted(TransientError):
    """An interruptible job was cut short by a destroy of the same domain."""

    def __init__(self, domain: str, kind: JobKind) -> None:
        self.domain = domain
        self.kind = kind
        super().__init__(f"{domain}: {kind.value} interrupted by destroy")


@dataclass
class _Holder:
    info: JobInfo
    task: asyncio.Task[object] | None
    interrupted: bool = False


@dataclass
class _Slot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holder plus waiters; the slot is dropped when it reaches 0
    holder: _Holder | None = None


class Jobs:
    def __init__(self, settings: JobSettings = JobSettings(),
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._wall_clock = wall_clock
        self._slots: dict[str, _Slot] = {}

    def current(self, name: str) -> JobInfo | None:
        slot = self._slots.get(name)
        return slot.holder.info if slot and slot.holder else None

    @contextlib.asynccontextmanager
    async def acquire(self, name: str, kind: JobKind, owner: str,
                      interruptible: bool = False) -> AsyncIterator[None]:
        if kind is JobKind.QUERY:
            yield
            return
        slot = self._slots.setdefault(name, _Slot())
        slot.users += 1
        try:
            if kind is JobKind.DESTROY:
                self._interrupt(name, slot)
            await self._wait(name, slot, kind, owner)
            holder = _Holder(JobInfo(kind, owner, self._wall_clock(), interruptible),
                             asyncio.current_task())
            slot.holder = holder
            try:
                yield
            except asyncio.CancelledError:
                if holder.interrupted and _uncancel(holder) == 0:
                    raise JobInterrupted(name, kind) from None
                raise
            finally:
                if holder.interrupted and holder.task is not None and holder.task.cancelling():
                    _uncancel(holder)  # the body swallowed our cancel: do not leak it
                slot.holder = None
                slot.lock.release()
        finally:
            slot.users -= 1
            if slot.users == 0:
                del self._slots[name]

    def _interrupt(self, name: str, slot: _Slot) -> None:
        holder = slot.holder
        if (holder is None or holder.task is None or not holder.info.interruptible
                or holder.interrupted):
            return
        holder.interrupted = True
        holder.task.cancel()
        log.info("destroy interrupts job", domain=name, job=holder.info.kind.value,
                 owner=holder.info.owner)

    async def _wait(self, name: str, slot: _Slot, kind: JobKind, owner: str) -> None:
        try:
            async with asyncio.timeout(self._settings.wait_limit):
                await slot.lock.acquire()
        except TimeoutError:
            holder = slot.holder
            job = holder.info.kind.value if holder else "a job"
            since = rfc3339(holder.info.since) if holder else "unknown"
            log.warning("job gave up waiting for the domain's lock; will retry", domain=name,
                        job=kind.value, owner=owner, held_by=holder.info.owner if holder else None)
            raise BusyError(name, job, since) from None


def _uncancel(holder: _Holder) -> int:
    """Withdraw the cancel request `_interrupt` made; the task's remaining request count."""
    holder.interrupted = False
    assert holder.task is not None
    return holder.task.uncancel()
