"""The host-shutdown record: which domains `domctl host-shutdown` took down, and how.

`<state_dir>/host-shutdown.json`, written atomically by the engine's host shutdown
(controller/engine/hostshutdown.py) before it touches a domain (every running domain and the
mode it is taken down by) and again with each domain's result; read and removed by the next
controller at start-up, which logs and audits what comes back (the domains themselves come
back by their own records: a stop by a host shutdown is `LastStop.host`). A second host
shutdown before a controller restart adds its domains to the record. A damaged record is
quarantined (jsondir) and treated as absent: nothing depends on it but the report.

Public surface:
    HeldDomain(name, mode, result), HostShutdownRecord(mode, uid, at, domains)
    HostShutdownBook(state_dir): read(), write(record), remove()
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from controller.state.jsondir import Damaged, JsonDir
from reconcilers.model import StopMode, to_plain

_NAME = "host-shutdown"
PENDING = "pending"


@dataclass(frozen=True)
class HeldDomain:
    name: str
    mode: StopMode  # how it is taken down (a failed save falls back to a shutdown)
    result: str = PENDING  # "saved", "shutoff (shutdown)", "destroyed at the timeout", ...
    ok: bool = False  # down as asked: saved, or shut down without a fallback or a destroy


@dataclass(frozen=True)
class HostShutdownRecord:
    mode: StopMode  # the mode asked for (a failed save falls back to a shutdown)
    uid: int  # who asked
    at: float  # wall-clock seconds of the (first) host shutdown
    domains: tuple[HeldDomain, ...] = ()


class HostShutdownBook:
    def __init__(self, state_dir: Path) -> None:
        self._files = JsonDir(state_dir)

    def read(self) -> HostShutdownRecord | None:
        """The record; None when there is none or it is damaged (quarantined, logged)."""
        try:
            return self._files.read_as(HostShutdownRecord, _NAME)
        except Damaged:
            return None

    def write(self, record: HostShutdownRecord) -> None:
        self._files.write(_NAME, to_plain(record))

    def remove(self) -> None:
        self._files.remove(_NAME)
