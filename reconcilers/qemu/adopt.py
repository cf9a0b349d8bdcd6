"""What a qemu RuntimeRecord holds, and the proof that a process is the domain it names.

Used by QemuDriver: `record_extra` when it starts a domain, `prove` when it re-attaches after
a controller restart. A process is ours only when the boot id, the kernel's start time of the
pid, `guest=NAME` and `-uuid UUID` in its command line, and QMP's own query-name/query-uuid
on the recorded socket all agree. It never kills or signals anything: a process that fails
the proof is reported and left alone.
"""

from __future__ import annotations

from collections.abc import Mapping

from reconcilers.driver import RuntimeRecord
from reconcilers.identity import boot_id, cmdline, is_alive, proc_starttime
from reconcilers.model import DriverName, Lifecycle, LifecycleAction
from reconcilers.qemu.commands import QmpCommands
from reconcilers.qemu.monitor import Monitor, MonitorError

_LIFECYCLE_KEYS = ("on_poweroff", "on_reboot", "on_crash")


class IdentityProblem(Exception):
    """The record does not lead to a process we can adopt; `gone` when there is none at all."""

    def __init__(self, message: str, gone: bool = False) -> None:
        self.message = message
        self.gone = gone
        super().__init__(message)


def record_extra(qmp: str, note: str, cgroup_parent: str,
                 lifecycle: Lifecycle) -> dict[str, str]:
    extra = {"qmp": qmp, "accel": note, "cgroup_parent": cgroup_parent}
    extra.update({key: getattr(lifecycle, key).value for key in _LIFECYCLE_KEYS})
    return extra


def lifecycle_from_extra(extra: Mapping[str, str]) -> Lifecycle:
    default = Lifecycle()
    return Lifecycle(*(LifecycleAction(extra.get(key, getattr(default, key).value))
                       for key in _LIFECYCLE_KEYS))


def _process_problem(record: RuntimeRecord) -> str:
    if record.driver is not DriverName.QEMU:
        return f"the record belongs to the {record.driver.value} driver"
    if record.boot_id != boot_id():
        return "recorded before the host rebooted (boot id differs)"
    if proc_starttime(record.pid) != record.starttime:
        return (f"pid {record.pid} is another process now (kernel start time "
                f"{proc_starttime(record.pid)}, recorded {record.starttime})")
    argv = cmdline(record.pid) or []
    names = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-name"]
    uuids = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-uuid"]
    guest = f"guest={record.name.replace(',', ',,')}"
    if not any(n == guest or n.startswith(guest + ",") for n in names):
        return f"pid {record.pid} is not qemu for guest {record.name} ({' '.join(argv[:3])} ...)"
    if uuids != [record.uuid]:
        return f"pid {record.pid} runs with uuid {uuids or 'none'}, recorded {record.uuid}"
    return ""


async def prove(record: RuntimeRecord, monitor: Monitor) -> None:
    """Connect `monitor` and raise IdentityProblem unless the process is the recorded domain."""
    if not is_alive(record.pid):
        raise IdentityProblem(f"pid {record.pid} is gone", gone=True)
    problem = _process_problem(record)
    if problem:
        raise IdentityProblem(problem)
    try:
        await monitor.connect_path(record.extra.get("qmp", ""))
        qmp = QmpCommands(monitor)
        name, uuid = await qmp.query_name(), await qmp.query_uuid()
    except MonitorError as exc:
        raise IdentityProblem(f"no QMP handshake on the recorded socket: {exc}") from exc
    if (name, uuid) != (record.name, record.uuid):
        raise IdentityProblem(f"QMP answers as {name!r} / {uuid!r}, not {record.name!r} / "
                              f"{record.uuid!r}")
