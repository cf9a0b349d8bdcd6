"""What a steady-state reconcile pass costs over the one state write it cannot avoid.

    .venv/bin/python bench/bench_pass.py [--rounds N] [--domains N]

A converged domain is re-checked on every resync and every driver hint: observe, decide "nothing",
rebuild its status document and write it if it changed. The subject is `Controller.reconcile` for N
converged domains (a driver that answers `observe` from memory, so only the controller's own work is
measured); the baseline is `atomic_write_json` of the same status documents (temp file, fsync,
rename, fsync dir), what every pass cost when each rewrote its status. Both run interleaved in one
process, best of several rounds, and the ratio is printed: below 1 means a converged pass is cheaper
than one state write (nothing is rewritten); it grows if a pass starts doing work it should not.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from types import MappingProxyType

from controller.engine.controller import Controller
from controller.engine.hooks import HookRunner
from controller.manifests.loader import load_text
from controller.manifests.source import Snapshot
from controller.service import logconfig
from controller.settings import EngineSettings, HookSettings
from controller.state.events import AuditLog, EventBus
from controller.state.fsutil import atomic_write_json
from controller.state.registry import Registry
from controller.state.status import StatusStore
from reconcilers.driver import Capabilities, ChangeKind, Live, RuntimeRecord
from reconcilers.model import Domain, DomainSpec, DriverName, Reason, State

MANIFEST = """apiVersion: domctl/v1
kind: Domain
metadata: {{name: {name}}}
spec:
  driver: qemu
  memory: 64Mi
  qemu: {{machine: pc, accel: tcg}}
"""


class Started:
    """A driver whose domains start instantly and then just run."""

    name = DriverName.QEMU

    def __init__(self) -> None:
        self.live: dict[str, Live] = {}

    async def capabilities(self) -> Capabilities:
        return Capabilities(DriverName.QEMU, True)

    async def validate(self, domain: Domain) -> None:
        pass

    async def start(self, domain: Domain, paused: bool) -> Live:
        record = RuntimeRecord(domain.name, DriverName.QEMU, domain.metadata.uuid or "", 1,
                               "boot", 1)
        self.live[domain.name] = Live(State.RUNNING, Reason.BOOTED, pid=1, record=record)
        return self.live[domain.name]

    async def observe(self, name: str) -> Live:
        return self.live.get(name, Live(State.SHUTOFF, Reason.UNKNOWN))

    def classify(self, old: DomainSpec, new: DomainSpec) -> dict[str, ChangeKind]:
        return {}


async def converged(state_dir: Path, count: int) -> tuple[Controller, list[str]]:
    state_dir.mkdir()
    controller = Controller(
        drivers={DriverName.QEMU: Started()},  # type: ignore[dict-item]
        registry=Registry(state_dir), statuses=StatusStore(state_dir),
        events=EventBus(state_dir), audit=AuditLog(state_dir),
        hooks=HookRunner(None, HookSettings()), settings=EngineSettings(workers=1))
    names = [f"vm-{i}" for i in range(count)]
    domains = {n: d for n in names for d in load_text(MANIFEST.format(name=n), f"{n}.yaml")}
    controller.on_snapshot(Snapshot(domains=MappingProxyType(domains)))
    for name in names:
        await controller.reconcile(name)
    return controller, names


async def passes(controller: Controller, names: list[str]) -> float:
    start = time.perf_counter()
    for name in names:
        await controller.reconcile(name)
    return time.perf_counter() - start


def writes(directory: Path, documents: dict[str, dict[str, object]]) -> float:
    start = time.perf_counter()
    for name, document in documents.items():
        atomic_write_json(directory / f"{name}.json", document)
    return time.perf_counter() - start


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--domains", type=int, default=50)
    args = parser.parse_args()
    logconfig.configure("warning")
    with tempfile.TemporaryDirectory(prefix="bench-pass-") as base:
        controller, names = await converged(Path(base) / "state", args.domains)
        documents = {n: controller.statuses.get_document(n) for n in names}
        floor_dir = Path(base) / "floor"
        floor_dir.mkdir()
        best_pass, best_write = float("inf"), float("inf")
        for _ in range(args.rounds):
            best_write = min(best_write, writes(floor_dir, documents))
            best_pass = min(best_pass, await passes(controller, names))
    per_pass, per_write = best_pass / len(names) * 1e6, best_write / len(names) * 1e6
    print(f"steady-state pass / atomic status write = {best_pass / best_write:.2f}x "
          f"({per_pass:.0f} us vs {per_write:.0f} us per domain, {len(names)} domains)")


if __name__ == "__main__":
    asyncio.run(main())
