"""Start-up: adopt every domain an earlier controller recorded, restart none (libvirt's reconnect).

Called once by the engine loop (controller/engine/controller.py `reattach_all`) before any
pass. Each recorded process is proven (Driver.reattach) and adopted; a process gone meanwhile
is recorded as a crash nobody saw; a start whose intent was recorded but not its outcome is
recovered by its token (Driver.recover) or forgotten; a pause that happened while no
controller ran is emitted. Domains are adopted in parallel, a bounded number at a time (each
proof is a QMP handshake or an lxc-info run). Never starts or stops a domain.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from controller.engine.ledger import Ledger
from controller.state.events import EventBus
from controller.state.registry import DomainRecord
from reconcilers.domain import DomainReconciler
from reconcilers.driver import Live
from reconcilers.model import Cause, EventDetail, EventType, Reason, State
from reconcilers.statemachine import UP_STATES, Trigger, transition

log = structlog.get_logger(__name__)

PARALLEL = 8  # proofs at once: QMP handshakes, lxc-info runs


@dataclass
class Reattach:
    ledger: Ledger
    reconciler: DomainReconciler
    events: EventBus
    record_stop: Callable[[str, Reason, Cause, bool], None]
    reconnected: Callable[[str, DomainRecord], None]

    async def all(self, records: Mapping[str, DomainRecord]) -> None:
        bound = asyncio.Semaphore(PARALLEL)

        async def one(record: DomainRecord) -> None:
            async with bound:
                await self._one(record)
        await asyncio.gather(*(one(record) for _, record in sorted(records.items())))

    async def _one(self, record: DomainRecord) -> None:
        name = record.name
        if record.starting is not None and record.runtime is None:
            await self._recover(record)
            return
        runtime = record.runtime
        if runtime is None:
            return
        live = await self.reconciler.reattach(name, runtime)
        if live is None:  # libvirt's reconnect: a qemu gone meanwhile is shutoff/crashed
            log.warning("domain stopped while the controller was away", domain=name)
            lost = transition(State.RUNNING, Trigger.PROCESS_LOST)
            for event_type, event_detail in lost.events:
                self.events.emit(name, event_type, event_detail, lost.target, lost.reason,
                                 Cause.EXTERNAL, {}, "found stopped when the controller "
                                 "started")
            self.record_stop(name, lost.reason, Cause.EXTERNAL, False)
        elif live.state is not State.NOSTATE:
            self._found_paused(name, record, live)
            if record.state is live.state and record.reason is not None:
                self.ledger.adopted[name] = (live.state, record.reason)
            self.reconnected(name, record)
            log.info("re-attached", domain=name, pid=live.pid, state=live.state.value)

    def _found_paused(self, name: str, record: DomainRecord, live: Live) -> None:
        """A domain recorded up but found paused by someone else while the controller was
        away: the pause nobody reported is emitted now (suspended/paused, cause external),
        and the pass resumes it as drift (cause controller)."""
        if (live.state is State.PAUSED and live.reason is Reason.UNKNOWN
                and record.state in UP_STATES):
            pause = transition(record.state, Trigger.EXTERNAL_PAUSE)
            for event_type, event_detail in pause.events:
                self.events.emit(name, event_type, event_detail, live.state, live.reason,
                                 Cause.EXTERNAL, {}, "found paused when the controller started")

    async def _recover(self, record: DomainRecord) -> None:
        """A start whose intent was recorded but not its outcome (the controller died in
        between): adopt what it spawned, proven by its token, or forget the intent."""
        name, intent = record.name, record.starting
        assert intent is not None
        domain = record.desired
        live = None
        if domain is not None:
            domain = dataclasses.replace(
                domain, metadata=dataclasses.replace(domain.metadata, uuid=record.uuid))
            live = await self.reconciler.recover(intent.driver, domain, intent.token)
        if live is None or live.record is None:
            log.info("unfinished start left nothing running", domain=name)
            self.ledger.end_start(name)
            return
        assert domain is not None
        self.ledger.record_start(name, intent.driver, live.record, domain.spec, restart=False)
        self.events.emit(name, EventType.STARTED, EventDetail.BOOTED, live.state, live.reason,
                         Cause.CONTROLLER, {}, "recovered after the controller died mid-start")
        log.warning("unfinished start recovered", domain=name, pid=live.pid)
