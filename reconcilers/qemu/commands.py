"""The QMP commands domctl sends, one typed method each (Incus' `qmp/commands.go` is the model).

Used by QemuDriver, capabilities.py, adopt.py and pinning.py instead of command strings: each
command's name and arguments are spelt once, here, and each reply is parsed into a small
frozen dataclass, so a misspelt command or a reply of another shape fails in one place that
tests drive against a scripted fake QMP server.

It wraps a Monitor (the only importer of qemu.qmp) and adds nothing else: no state, no
decisions, no retries. Every failure is the Monitor's MonitorError, also a reply that does not
have the shape QMP documents.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from reconcilers.qemu.monitor import Monitor, MonitorError

T = TypeVar("T")
RebootAction = Literal["reset", "shutdown"]  # `set-action reboot=...`


@dataclass(frozen=True)
class VmStatus:
    """`query-status`: qemu's run state (running, paused, shutdown, guest-panicked, ...)."""

    status: str
    running: bool


@dataclass(frozen=True)
class CpuInfo:
    """One vCPU of `query-cpus-fast`: its index and the host thread that runs it."""

    index: int
    thread_id: int


@dataclass(frozen=True)
class MachineInfo:
    """One machine type of `query-machines`."""

    name: str
    alias: str | None
    cpu_max: int
    is_default: bool


@dataclass(frozen=True)
class QemuVersion:
    """`query-version`; `str()` gives "7.2.0"."""

    major: int
    minor: int
    micro: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.micro}"


@dataclass(frozen=True)
class KvmInfo:
    """`query-kvm`: whether KVM is compiled in (present) and in use (enabled)."""

    enabled: bool
    present: bool


@dataclass(frozen=True)
class Migration:
    """`query-migrate`: the state of the last migration (none, setup, active, completed,
    failed, cancelled, ...) and qemu's error when it failed."""

    status: str
    error: str = ""


@dataclass(frozen=True)
class CpuSlot:
    """One position of `query-hotpluggable-cpus`: the CPU type to plug there and its
    topology properties; plugged when it has a QOM path."""

    driver: str
    props: Mapping[str, int]  # socket-id, core-id, thread-id (node-id, die-id, ...)
    qom_path: str | None


@dataclass(frozen=True)
class Dimm:
    """A pc-dimm of `query-memory-devices`: its id, its backend's id, size, slot and address."""

    id: str
    memdev: str
    size: int
    slot: int
    addr: int


@dataclass(frozen=True)
class PciDevice:
    """A device of `query-pci` on the root bus: its id (empty for built-ins) and address."""

    qdev_id: str
    slot: int
    function: int


@dataclass(frozen=True)
class BlockStats:
    """One device of `query-blockstats`: its format node and qdev id (either may be empty),
    and the guest's I/O on it since qemu started."""

    node: str
    qdev: str
    read_bytes: int
    write_bytes: int
    read_ops: int
    write_ops: int


def _block_stats(entry: Any) -> BlockStats:
    stats = entry["stats"]
    return BlockStats(str(entry.get("node-name", "")), str(entry.get("qdev", "")),
                      int(stats["rd_bytes"]), int(stats["wr_bytes"]),
                      int(stats["rd_operations"]), int(stats["wr_operations"]))


def _optional_name(reply: Any) -> str | None:
    name = reply.get("name")
    return None if name is None else str(name)


class QmpCommands:
    """The typed commands, over one connected Monitor."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    async def _run(self, command: str, arguments: Mapping[str, object] | None = None) -> None:
        await self.monitor.execute(command, arguments)

    async def _query(self, command: str, parse: Callable[[Any], T],
                     arguments: Mapping[str, object] | None = None) -> T:
        reply = await self.monitor.execute(command, arguments)
        try:
            return parse(reply)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MonitorError(command, f"unexpected reply {reply!r}") from exc

    # --- run control -------------------------------------------------------------------------

    async def cont(self) -> None:
        await self._run("cont")

    async def stop(self) -> None:
        await self._run("stop")

    async def system_powerdown(self) -> None:
        """Press the ACPI power button; the guest decides what to do."""
        await self._run("system_powerdown")

    async def system_reset(self) -> None:
        await self._run("system_reset")

    async def quit(self) -> None:
        """Ask qemu to exit; a connection lost during `quit` means it did (libraries.md §2)."""
        with contextlib.suppress(MonitorError):
            await self._run("quit")

    async def query_status(self) -> VmStatus:
        return await self._query("query-status", lambda r: VmStatus(str(r["status"]),
                                                                   bool(r["running"])))

    # --- live changes ------------------------------------------------------------------------

    async def balloon(self, value: int) -> None:
        """Ask the guest's balloon driver for a memory size of `value` bytes."""
        await self._run("balloon", {"value": value})

    async def set_action(self, reboot: RebootAction) -> None:
        """What a guest reboot does from now on: reset in place, or stop the guest."""
        await self._run("set-action", {"reboot": reboot})

    async def block_resize(self, node: str, size: int) -> None:
        """Grow the image under block node `node` to `size` bytes; the guest's disk sees the
        new capacity (virtio-blk reports it at once)."""
        await self._run("block_resize", {"node-name": node, "size": size})

    # --- devices -----------------------------------------------------------------------------

    async def set_link(self, name: str, up: bool) -> None:
        """The carrier the guest sees on NIC `name` (its device id)."""
        await self._run("set_link", {"name": name, "up": up})

    async def netdev_add(self, props: Mapping[str, object]) -> None:
        """A network backend: `type`, `id` and the type's options (a tap by ifname, ...)."""
        await self._run("netdev_add", props)

    async def netdev_del(self, netdev: str) -> None:
        await self._run("netdev_del", {"id": netdev})

    async def device_add(self, props: Mapping[str, object]) -> None:
        """A device: `driver`, `id` and its properties."""
        await self._run("device_add", props)

    async def device_del(self, device: str) -> None:
        """Ask for an unplug; the guest acknowledges it later (the DEVICE_DELETED event)."""
        await self._run("device_del", {"id": device})

    async def peripherals(self) -> set[str]:
        """The ids of the devices given one (-device id=..., device_add id=...)."""
        return await self._query("qom-list", lambda r: {str(p["name"]) for p in r
                                                        if str(p["type"]).startswith("child<")},
                                 {"path": "/machine/peripheral"})

    async def query_pci(self) -> list[PciDevice]:
        """The devices on the root PCI bus (bus 0)."""
        return await self._query("query-pci", lambda r: [
            PciDevice(str(d.get("qdev_id", "")), int(d["slot"]), int(d["function"]))
            for bus in r if int(bus["bus"]) == 0 for d in bus["devices"]])

    # --- hotplug -----------------------------------------------------------------------------

    async def object_add(self, props: Mapping[str, object]) -> None:
        """A backend object (`qom-type`, `id`, its properties), e.g. a memory backend."""
        await self._run("object-add", props)

    async def object_del(self, object_id: str) -> None:
        await self._run("object-del", {"id": object_id})

    async def blockdev_add(self, props: Mapping[str, object]) -> None:
        """A block node (`driver`, `node-name`, its options, nested as QMP takes them)."""
        await self._run("blockdev-add", props)

    async def blockdev_del(self, node: str) -> None:
        await self._run("blockdev-del", {"node-name": node})

    async def query_hotpluggable_cpus(self) -> list[CpuSlot]:
        return await self._query("query-hotpluggable-cpus", lambda r: [
            CpuSlot(str(c["type"]), {str(k): int(v) for k, v in c["props"].items()},
                    None if c.get("qom-path") is None else str(c["qom-path"])) for c in r])

    async def query_memory_devices(self) -> list[Dimm]:
        """The pc-dimms plugged (other memory devices are not domctl's)."""
        return await self._query("query-memory-devices", lambda r: [
            Dimm(str(d["data"]["id"]), str(d["data"]["memdev"]).rsplit("/", 1)[-1],
                 int(d["data"]["size"]), int(d["data"]["slot"]), int(d["data"]["addr"]))
            for d in r if d["type"] == "dimm"])

    async def base_memory(self) -> int:
        """The boot memory in bytes (`-m size=`), without hotplugged DIMMs."""
        return await self._query("query-memory-size-summary", lambda r: int(r["base-memory"]))

    # --- migration (managed save and restore) ------------------------------------------------

    async def getfd(self, name: str, fd: int) -> None:
        """Hand qemu a dup of `fd` under `name` (a migration URI `fd:NAME` takes it)."""
        await self.monitor.execute_with_fd("getfd", {"fdname": name}, fd)

    async def closefd(self, name: str) -> None:
        await self._run("closefd", {"fdname": name})

    async def migrate_set_parameters(self, params: Mapping[str, object]) -> None:
        await self._run("migrate-set-parameters", params)

    async def migrate(self, uri: str) -> None:
        """Start an outgoing migration to `uri`; query_migrate says how it goes."""
        await self._run("migrate", {"uri": uri})

    async def migrate_incoming(self, uri: str) -> None:
        """Start the incoming migration of a qemu launched with `-incoming defer`."""
        await self._run("migrate-incoming", {"uri": uri})

    async def migrate_cancel(self) -> None:
        await self._run("migrate_cancel")

    async def query_migrate(self) -> Migration:
        return await self._query("query-migrate", lambda r: Migration(
            str(r.get("status", "none")), str(r.get("error-desc", ""))))

    async def num_queues(self, device: str) -> int:
        """The queue count of virtio device `device` (by its id): qemu sizes it by the boot
        vCPUs when the command line does not say."""
        return await self._query("qom-get", int, {"path": f"/machine/peripheral/{device}",
                                                  "property": "num-queues"})

    async def query_cpus_fast(self) -> list[CpuInfo]:
        return await self._query("query-cpus-fast", lambda r: [
            CpuInfo(int(cpu["cpu-index"]), int(cpu["thread-id"])) for cpu in r])

    # --- statistics --------------------------------------------------------------------------

    async def query_blockstats(self) -> list[BlockStats]:
        return await self._query("query-blockstats", lambda r: [_block_stats(e) for e in r])

    async def query_balloon(self) -> int | None:
        """The balloon's actual size in bytes; None when the machine has no balloon."""
        try:
            return await self._query("query-balloon", lambda r: int(r["actual"]))
        except MonitorError as exc:
            if "No balloon device" in exc.message:  # qemu's DeviceNotActive
                return None
            raise

    async def query_vnc(self) -> tuple[str, int] | None:
        """The VNC server's (host, port) as it listens now; None when the VM has none."""
        return await self._query("query-vnc", lambda r: (str(r["host"]), int(r["service"]))
                                 if r["enabled"] else None)

    # --- identity and capabilities -----------------------------------------------------------

    async def query_name(self) -> str | None:
        """The `-name guest=` of the process; None when it has none."""
        return await self._query("query-name", _optional_name)

    async def query_uuid(self) -> str:
        return await self._query("query-uuid", lambda r: str(r["UUID"]))

    async def query_version(self) -> QemuVersion:
        return await self._query("query-version", lambda r: QemuVersion(
            int(r["qemu"]["major"]), int(r["qemu"]["minor"]), int(r["qemu"]["micro"])))

    async def query_machines(self) -> list[MachineInfo]:
        return await self._query("query-machines", lambda r: [
            MachineInfo(str(m["name"]), m.get("alias"), int(m.get("cpu-max", 1)),
                        bool(m.get("is-default", False))) for m in r])

    async def qom_list_types(self, implements: str, abstract: bool = False) -> list[str]:
        """The names of the QOM types implementing `implements` (abstract ones if asked)."""
        return await self._query("qom-list-types", lambda r: [str(t["name"]) for t in r],
                                 {"implements": implements, "abstract": abstract})

    async def query_kvm(self) -> KvmInfo:
        return await self._query("query-kvm", lambda r: KvmInfo(bool(r["enabled"]),
                                                               bool(r["present"])))
