"""CPU pinning of a qemu process per cputune: emulator threads, then each vCPU thread.

Called by QemuDriver at start (before `cont`) and by apply_live. vCPU thread ids come from
QMP `query-cpus-fast`; every other thread of the process is an emulator thread. Without any
pinning in the spec it does nothing (threads keep the affinity they inherited). It never
touches a process other than the domain's own.
"""

from __future__ import annotations

import os

import psutil

from reconcilers.model import CpuTune
from reconcilers.qemu.commands import QmpCommands
from reconcilers.qemu.hostcheck import parse_cpuset


class PinningError(Exception):
    """A thread's affinity could not be set; the message names the thread."""


async def vcpu_threads(qmp: QmpCommands) -> dict[int, int]:
    """vCPU index → host thread id."""
    return {cpu.index: cpu.thread_id for cpu in await qmp.query_cpus_fast()}


async def apply(qmp: QmpCommands, pid: int, tune: CpuTune) -> None:
    if not tune.vcpupin and tune.emulatorpin is None:
        return
    vcpus = await vcpu_threads(qmp)
    all_cpus = set(range(os.cpu_count() or 1))
    emulator = parse_cpuset(tune.emulatorpin) if tune.emulatorpin else all_cpus
    try:
        threads = [t.id for t in psutil.Process(pid).threads()]
    except psutil.Error as exc:
        raise PinningError(f"cannot list the threads of pid {pid}: {exc}") from exc
    pins = {tid: emulator for tid in threads if tid not in vcpus.values()}
    pins.update({tid: all_cpus for tid in vcpus.values()})  # an unpinned vCPU may run anywhere
    for pin in tune.vcpupin:
        if pin.vcpu in vcpus:
            pins[vcpus[pin.vcpu]] = parse_cpuset(pin.cpuset)
    for tid, cpus in pins.items():
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:
            continue  # a short-lived worker thread ended
        except OSError as exc:
            raise PinningError(f"cannot pin thread {tid} to {sorted(cpus)}: {exc}") from exc
