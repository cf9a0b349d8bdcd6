"""The qemu command line of a domain: a pure function of the spec, tested with golden files.

Called by process.py at launch (and by the golden tests). Every manifest string goes through
escape.py (commas doubled, control characters and option-like values refused, and commas and
blanks refused in -initrd, which qemu splits into multiboot modules), so nothing in a manifest
can add an option or another file. Devices get libvirt-style ids (`virtio-disk0`, `serial0`, ...)
and explicit PCI slots, so a guest sees the same hardware on every start. A NIC in mode network
or bridge is `-netdev tap,ifname=<the tap the driver made>,script=no,downscript=no` (qemu runs no
script and creates nothing); its ids (`hostnet<i>`, `net<i>`) are the ones hotplug uses too.

Storage (reconcilers/storage): a disk with `source` opens that file in its format; a disk with
`image` or `size` opens its qcow2 volume in the domain's pool directory (`files.pool`; the
overlay's base is opened by qemu from the format recorded in it), under node names
(`libvirt-<i>-format`) that a live block_resize names too. A cloud-init seed is a read-only
IDE/AHCI CD-ROM after the cdrom, never given a boot index. `firmware: uefi` is two pflash
drives, OVMF's code read-only (`files.ovmf`, found by the host check) and the domain's own
variables; `bios` (or none) is qemu's SeaBIOS; any other value is a `-bios` image.

Lifecycle mapping (libvirt's on_poweroff/on_reboot/on_crash, notes A.5), in qemu terms:
- `-no-shutdown` always: a guest power-off stops the vCPUs and qemu stays, so the driver reads
  the SHUTDOWN reason and then acts (quit for destroy, reset+cont for restart, nothing for
  preserve). events.py and driver.py carry that out.
- on_reboot restart → `-action reboot=reset` (qemu resets in-process; the domain stays
  running); destroy or preserve → `reboot=shutdown` (a reboot becomes a SHUTDOWN with reason
  guest-reset, then the driver quits or keeps the stopped domain).
- on_crash → `panic=pause` always (with `panic: true`, a pvpanic device): the guest stops at
  GUEST_PANICKED and the driver destroys, resets or preserves it.
- a watchdog's action → `-action watchdog=<action>` (dump is refused by hostcheck).

It never touches the file system or the network: ports and paths come in as arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reconcilers.driver import VNC_BASE_PORT
from reconcilers.model import (
    FIRMWARE_BIOS,
    FIRMWARE_UEFI,
    Accel,
    Disk,
    DiskBus,
    DiskCache,
    DiskFormat,
    Domain,
    LifecycleAction,
    Nic,
    NicMode,
    SerialMode,
    WatchdogModel,
)
from reconcilers.net.names import tap_name
from reconcilers.qemu import escape
from reconcilers.qemu.devices import Layout
from reconcilers.qemu.escape import ValueRefused
from reconcilers.qemu.layout import DomainFiles
from reconcilers.storage.pool import DomainPool

MiB = 1024 * 1024
FIRST_SLOT = 2  # slot 0: host bridge; slot 1: the chipset's ISA/IDE function on pc
MEMORY_SLOTS = 16  # DIMM slots of a domain with maxMemory (libvirt's usual count)
_CACHE = {  # cache mode → (cache.direct, cache.no-flush), as libvirt spells it
    DiskCache.NONE: (True, False), DiskCache.WRITEBACK: (False, False),
    DiskCache.WRITETHROUGH: (False, False), DiskCache.DIRECTSYNC: (True, False),
    DiskCache.UNSAFE: (False, True),
}
_WRITE_CACHE = {DiskCache.WRITETHROUGH: "off", DiskCache.DIRECTSYNC: "off"}


@dataclass
class _Bus:
    """Allocates PCI slots and storage bus positions in the order devices are added; a
    restore's devices keep the slots and queue counts they had (`restore`)."""

    q35: bool
    restore: Layout | None = None
    slot: int = FIRST_SLOT
    virtio: int = 0
    ide: int = 0  # next IDE unit (pc) or AHCI port (q35)
    sata: int = 0
    scsi: int = 0
    boot_order: tuple[str, ...] = ("disk", "cdrom", "network")
    booted: set[str] = field(default_factory=set)  # device kinds that have their bootindex
    extra: list[str] = field(default_factory=list)  # controllers added on demand

    @property
    def pci(self) -> str:
        return "pcie.0" if self.q35 else "pci.0"

    def pci_addr(self, device: str) -> str:
        """Device `device`'s address: its slot in the run being restored, else the next slot
        (none of a restore's)."""
        pinned = self.restore.slots if self.restore is not None else {}
        slot = pinned.get(device)
        if slot is None:
            while self.slot in pinned.values():
                self.slot += 1
            slot, self.slot = self.slot, self.slot + 1
        return f"bus={self.pci},addr={slot:#x}"

    def queues(self, device: str) -> str:
        """`,num-queues=N` for a restored virtio device whose queues followed the boot vCPUs."""
        count = self.restore.queues.get(device) if self.restore is not None else None
        return "" if count is None else f",num-queues={count}"

    def bootindex(self, kind: str) -> str:
        """`,bootindex=N` for the first device of each kind listed in spec.qemu.boot."""
        if kind not in self.boot_order or kind in self.booted:
            return ""
        self.booted.add(kind)
        return f",bootindex={self.boot_order.index(kind) + 1}"


def build_argv(domain: Domain, binary: str, accel: Accel, files: DomainFiles,
               vnc_port: int | None = None, vhost: bool = False,
               qmp_fd: int | None = None, restore: Layout | None = None) -> list[str]:
    """The full argv; raises ValueRefused (with the manifest field) for an unsafe value.
    `vhost`: tap NICs use vhost-net (the driver probed /dev/vhost-net). `qmp_fd`: the QMP
    socket, bound at `files.qmp` and listening, inherited by qemu (the driver's launch);
    without it qemu binds `files.qmp` itself (a plain qemu, as the benchmark's baseline).
    `restore`: the hardware of the run a managed save was taken of (devices.py); qemu then
    waits for the saved state (`-incoming defer`, QMP migrate-incoming) instead of booting."""
    qemu = domain.spec.qemu
    if qemu is None:
        raise ValueRefused("spec.qemu", "a qemu domain needs a qemu section")
    if domain.metadata.uuid is None:
        raise ValueRefused("metadata.uuid", "must be set before a start")
    bus = _Bus(q35="q35" in qemu.machine, restore=restore,
               boot_order=qemu.boot or _Bus.boot_order)
    argv = [binary, "-name", f"guest={escape.opt(domain.name, 'metadata.name')},debug-threads=on",
            "-uuid", escape.uuid(domain.metadata.uuid, "metadata.uuid"),
            "-machine", f"type={escape.token(qemu.machine, 'spec.qemu.machine')}",
            "-accel", accel.value]
    argv += _cpu_memory(domain, accel, restore)
    argv += ["-no-user-config", "-nodefaults",
             "-chardev", "socket,id=charmonitor," + (
                 f"fd={qmp_fd}" if qmp_fd is not None else
                 f"path={escape.opt(str(files.qmp), 'qmp')}") + ",server=on,wait=off",
             "-mon", "chardev=charmonitor,id=monitor,mode=control",
             "-msg", "timestamp=on",
             # a daemonized qemu sends stderr to /dev/null unless a -D log is open; `-d plugin`
             # opens it and logs nothing without plugins, so only qemu's own errors land there
             "-D", str(files.stderr), "-d", "plugin",
             "-no-shutdown", "-action", _actions(domain),
             "-boot", "strict=on"]
    argv += _firmware(domain, files)
    devices = _disks(domain, bus, files) + _nics(domain, bus, vhost) + _serial(domain, files)
    devices += _agent(domain, files, bus) + _misc(domain, bus)
    argv += bus.extra + devices + (_hotplugged(restore) if restore is not None else [])
    argv += ["-display", "none"] + _vnc(domain, files, bus, vnc_port)
    argv += ["-daemonize", "-pidfile", str(files.pidfile), "-S"]
    return argv + (["-incoming", "defer"] if restore is not None else [])


def _cpu_memory(domain: Domain, accel: Accel, restore: Layout | None) -> list[str]:
    """-cpu, -m (with DIMM slots up to maxMemory) and -smp; a restore's boot memory and vCPUs
    are the saved run's, its hotplugged ones come as devices (`_hotplugged`)."""
    spec = domain.spec
    if spec.memory % MiB:
        raise ValueRefused("spec.memory", "must be a whole number of MiB")
    model = spec.cpu.model or ("host" if accel is Accel.KVM else "qemu64")
    boot = restore.boot_vcpus if restore is not None else spec.vcpus
    smp = [str(boot), f"maxcpus={spec.max_vcpus or spec.vcpus}"]
    for key in ("sockets", "cores", "threads"):
        value = getattr(spec.cpu, key)
        if value is not None:
            smp.append(f"{key}={value}")
    size = restore.base_memory if restore is not None else spec.memory
    memory = f"size={size // MiB}M"
    if spec.max_memory is not None and spec.max_memory != spec.memory:
        if spec.max_memory % MiB or spec.max_memory < spec.memory:
            raise ValueRefused("spec.maxMemory", "must be a whole number of MiB, at least "
                                                 "spec.memory")
        memory += f",slots={MEMORY_SLOTS},maxmem={spec.max_memory // MiB}M"
    return ["-cpu", escape.token(model, "spec.cpu.model"), "-m", memory, "-smp", ",".join(smp)]


def _hotplugged(restore: Layout) -> list[str]:
    """The vCPUs and DIMMs the saved run had hotplugged, as it had them."""
    argv: list[str] = []
    for cpu in restore.cpus:
        argv += ["-device", keyval({"driver": escape.token(cpu.driver, "cpu"),
                                    "id": escape.token(cpu.id, "cpu"), **cpu.props})]
    for dimm in restore.dimms:
        memdev = escape.token(dimm.memdev, "dimm")
        argv += ["-object", keyval(dimm_backend(memdev, dimm.size)),
                 "-device", keyval({**dimm_props(escape.token(dimm.id, "dimm"), memdev),
                                    "slot": dimm.slot, "addr": f"{dimm.addr:#x}"})]
    return argv


def keyval(props: Mapping[str, Any], prefix: str = "") -> str:
    """QMP-shaped properties as qemu's command line spells them: nested keys dotted, booleans
    on/off (values must already be escaped)."""
    parts = []
    for key, value in props.items():
        if isinstance(value, Mapping):
            parts.append(keyval(value, f"{prefix}{key}."))
        elif isinstance(value, bool):
            parts.append(f"{prefix}{key}={'on' if value else 'off'}")
        else:
            parts.append(f"{prefix}{key}={value}")
    return ",".join(parts)


def dimm_backend(memdev: str, size: int) -> dict[str, Any]:
    """The RAM behind a DIMM (object-add, -object)."""
    return {"qom-type": "memory-backend-ram", "id": memdev, "size": size}


def dimm_props(device: str, memdev: str) -> dict[str, Any]:
    """A DIMM on its backend (device_add, -device; qemu picks slot and address)."""
    return {"driver": "pc-dimm", "id": device, "memdev": memdev}


def _actions(domain: Domain) -> str:
    spec, qemu = domain.spec, domain.spec.qemu
    assert qemu is not None
    reboot = "reset" if spec.lifecycle.on_reboot is LifecycleAction.RESTART else "shutdown"
    actions = f"reboot={reboot},panic=pause"
    if qemu.watchdog is not None:
        actions += f",watchdog={qemu.watchdog.action.value}"
    return actions


def _firmware(domain: Domain, files: DomainFiles) -> list[str]:
    qemu = domain.spec.qemu
    assert qemu is not None
    argv: list[str] = []
    if qemu.firmware == FIRMWARE_UEFI:
        if files.ovmf is None or files.pool is None:
            raise ValueRefused("spec.qemu.firmware", "uefi needs OVMF and the storage pool")
        code = escape.opt(str(files.ovmf.code), "OVMF code")
        nvram = escape.opt(str(files.pool.nvram), "UEFI variables")
        argv += ["-drive", f"if=pflash,format=raw,unit=0,file={code},readonly=on",
                 "-drive", f"if=pflash,format=raw,unit=1,file={nvram}"]
    firmware = None if qemu.firmware in (FIRMWARE_BIOS, FIRMWARE_UEFI) else qemu.firmware
    for option, value, name in (("-bios", firmware, "firmware"),
                                ("-kernel", qemu.kernel, "kernel"),
                                ("-initrd", qemu.initrd, "initrd"),
                                ("-append", qemu.cmdline, "cmdline")):
        if value is not None:
            # -initrd is split by qemu itself (multiboot modules); the others are taken whole
            check = escape.module_list if option == "-initrd" else escape.lone
            argv += [option, check(value, f"spec.qemu.{name}")]
    return argv


def _disk_nodes(index: int) -> str:
    return f"libvirt-{index + 1}"


def disk_node(index: int) -> str:
    """The format node of disk `index`: the guest's view of it (block_resize names it)."""
    return f"{_disk_nodes(index)}-format"


def disk_file(disk: Disk, index: int, pool: DomainPool | None) -> tuple[str, DiskFormat]:
    """The file qemu opens for disk `index` and its format: its source, or its volume."""
    if disk.source is not None:
        return disk.source, disk.format
    if pool is None:
        raise ValueRefused(f"spec.qemu.disks[{index}]", "a volume needs the storage pool")
    return str(pool.volume(disk.name)), DiskFormat.QCOW2


def blockdev_props(node: str, path: str, fmt: DiskFormat, readonly: bool,
                   cache: DiskCache | None = None) -> list[dict[str, Any]]:
    """A file node and the format node on it, named `<node>-storage` / `<node>-format`, as
    QMP's blockdev-add takes them (-blockdev: `keyval`)."""
    storage: dict[str, Any] = {"driver": "file", "filename": path,
                               "node-name": f"{node}-storage", "read-only": readonly}
    if cache is not None:
        direct, no_flush = _CACHE[cache]
        storage["cache"] = {"direct": direct, "no-flush": no_flush}
    return [storage, {"node-name": f"{node}-format", "read-only": readonly,
                      "driver": fmt.value, "file": f"{node}-storage"}]


def _blockdevs(node: str, path: str, fmt: DiskFormat, readonly: bool,
               cache: DiskCache | None = None) -> list[str]:
    return [arg for props in blockdev_props(node, path, fmt, readonly, cache)
            for arg in ("-blockdev", keyval(props))]


def disk_nodes(index: int, disk: Disk, pool: DomainPool | None,
               quote: bool = True) -> list[dict[str, Any]]:
    """The block nodes of disk `index` (blockdev_props); its path escaped for the command line
    unless `quote` is False (QMP), refused naming the field either way if unsafe."""
    path, fmt = disk_file(disk, index, pool)
    field = f"spec.qemu.disks[{index}].{'source' if disk.source is not None else 'name'}"
    escaped = escape.opt(path, field)
    return blockdev_props(_disk_nodes(index), escaped if quote else path, fmt, disk.readonly,
                          disk.cache)


def disk_props(index: int, disk: Disk, quote: bool = True) -> dict[str, str]:
    """What every disk device of disk `index` has: its format node, its serial (the disk's
    name, escaped unless `quote` is False) and its write cache. For -device and device_add."""
    serial = escape.opt(disk.name, f"spec.qemu.disks[{index}].name")
    return {"drive": disk_node(index), "serial": serial if quote else disk.name,
            "write-cache": _WRITE_CACHE.get(disk.cache, "on")}


def virtio_disk_id(disks: tuple[Disk, ...], index: int) -> str:
    """The device id of virtio disk `index`: `virtio-disk<n>`, n counting virtio disks."""
    return f"virtio-disk{sum(1 for disk in disks[:index] if disk.bus is DiskBus.VIRTIO)}"


def _disks(domain: Domain, bus: _Bus, files: DomainFiles) -> list[str]:
    qemu = domain.spec.qemu
    assert qemu is not None
    argv: list[str] = []
    for index, disk in enumerate(qemu.disks):
        for props in disk_nodes(index, disk, files.pool):
            argv += ["-blockdev", keyval(props)]
        argv += ["-device", _disk_device(qemu.disks, index, bus) + ","
                 + keyval(disk_props(index, disk)) + bus.bootindex("disk")]
    if qemu.cdrom is not None:
        argv += _blockdevs("libvirt-cdrom", escape.opt(qemu.cdrom, "spec.qemu.cdrom"),
                           DiskFormat.RAW, True)
        argv += ["-device", _ide_slot(bus, "ide-cd") + ",drive=libvirt-cdrom-format"
                            + bus.bootindex("cdrom")]
    if qemu.cloud_init is not None:
        if files.pool is None:
            raise ValueRefused("spec.qemu.cloudInit", "a seed needs the storage pool")
        argv += _blockdevs("libvirt-cidata", escape.opt(str(files.pool.seed), "seed"),
                           DiskFormat.RAW, True)
        argv += ["-device", _ide_slot(bus, "ide-cd") + ",drive=libvirt-cidata-format"]
    return argv


def _disk_device(disks: tuple[Disk, ...], index: int, bus: _Bus) -> str:
    disk = disks[index]
    if disk.bus is DiskBus.VIRTIO:
        alias = virtio_disk_id(disks, index)
        return f"virtio-blk-pci,{bus.pci_addr(alias)},id={alias}{bus.queues(alias)}"
    if disk.bus is DiskBus.SCSI:
        if bus.scsi == 0:
            bus.extra += ["-device", f"virtio-scsi-pci,id=scsi0,{bus.pci_addr('scsi0')}"
                                     + bus.queues("scsi0")]
        lun, bus.scsi = bus.scsi, bus.scsi + 1
        return f"scsi-hd,bus=scsi0.0,channel=0,scsi-id=0,lun={lun},id=scsi0-0-0-{lun}"
    if disk.bus is DiskBus.SATA and not bus.q35:
        if bus.sata == 0:
            bus.extra += ["-device", f"ich9-ahci,id=sata0,{bus.pci_addr('sata0')}"]
        port, bus.sata = bus.sata, bus.sata + 1
        return f"ide-hd,bus=sata0.{port},id=sata0-0-{port}"
    return _ide_slot(bus, "ide-hd")


def _ide_slot(bus: _Bus, driver: str) -> str:
    """pc: IDE buses ide.0/ide.1 with units 0/1; q35: the built-in AHCI's ports ide.0-5."""
    position, bus.ide = bus.ide, bus.ide + 1
    if bus.q35:
        return f"{driver},bus=ide.{position},id=sata0-0-{position}"
    return (f"{driver},bus=ide.{position // 2},unit={position % 2},"
            f"id=ide0-{position // 2}-{position % 2}")


def nic_ids(index: int) -> tuple[str, str]:
    """(netdev id, device id) of NIC `index`: the same at start and in a hotplug, so set_link
    and device_del can name a NIC by its index."""
    return f"hostnet{index}", f"net{index}"


def netdev_props(domain: str, index: int, nic: Nic, vhost: bool) -> dict[str, str | bool]:
    """The backend of NIC `index`: qemu's user network, or the tap the driver made (by name,
    qemu runs no script); `vhost` when /dev/vhost-net opens. For -netdev and netdev_add."""
    netdev, _ = nic_ids(index)
    if nic.mode is NicMode.USER:
        return {"type": "user", "id": netdev}
    props: dict[str, str | bool] = {"type": "tap", "id": netdev,
                                    "ifname": tap_name(domain, index),
                                    "script": "no", "downscript": "no"}
    if vhost:
        props["vhost"] = True
    return props


def device_props(index: int, nic: Nic) -> dict[str, str]:
    """The guest's NIC `index` (without its bus address). For -device and device_add."""
    netdev, device = nic_ids(index)
    model = escape.token(nic.model, f"spec.qemu.nics[{index}].model")
    props = {"driver": model, "netdev": netdev, "id": device}
    if nic.mac is not None:
        props["mac"] = escape.mac(nic.mac, f"spec.qemu.nics[{index}].mac")
    return props


def _nics(domain: Domain, bus: _Bus, vhost: bool) -> list[str]:
    qemu = domain.spec.qemu
    assert qemu is not None
    argv: list[str] = []
    for index, nic in enumerate(qemu.nics):
        netdev = netdev_props(domain.name, index, nic, vhost)
        kind = netdev.pop("type")
        device = device_props(index, nic)
        argv += ["-netdev", ",".join([str(kind), *(f"{key}={_value(value)}"
                                                   for key, value in netdev.items())]),
                 "-device", keyval(device) + f",{bus.pci_addr(device['id'])}"
                            + bus.bootindex("network")]
    return argv


def _value(value: str | bool) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return escape.opt(value, "netdev")


def _serial(domain: Domain, files: DomainFiles) -> list[str]:
    qemu = domain.spec.qemu
    assert qemu is not None
    if qemu.serial is SerialMode.LOG:
        backend = f"file,id=charserial0,path={escape.opt(str(files.log), 'log')},append=on"
    elif qemu.serial is SerialMode.PTY:
        backend = "pty,id=charserial0"
    else:
        backend = (f"socket,id=charserial0,path={escape.opt(str(files.serial), 'serial')},"
                   "server=on,wait=off")
    return ["-chardev", backend, "-device", "isa-serial,chardev=charserial0,id=serial0"]


def _agent(domain: Domain, files: DomainFiles, bus: _Bus) -> list[str]:
    qemu = domain.spec.qemu
    assert qemu is not None
    if not qemu.guest_agent:
        return []
    path = escape.opt(str(files.agent), "agent")
    return ["-chardev", f"socket,id=charchannel0,path={path},server=on,wait=off",
            "-device", f"virtio-serial-pci,id=virtio-serial0,{bus.pci_addr('virtio-serial0')}",
            "-device", "virtserialport,bus=virtio-serial0.0,nr=1,chardev=charchannel0,"
                       "id=channel0,name=org.qemu.guest_agent.0"]


def _misc(domain: Domain, bus: _Bus) -> list[str]:
    qemu = domain.spec.qemu
    assert qemu is not None
    argv = ["-device", f"virtio-balloon-pci,id=balloon0,{bus.pci_addr('balloon0')}"]
    if qemu.panic:
        argv += ["-device", "pvpanic,id=panic0"]
    if qemu.watchdog is not None:
        if qemu.watchdog.model is WatchdogModel.I6300ESB:
            argv += ["-device", f"i6300esb,id=watchdog0,{bus.pci_addr('watchdog0')}"]
        else:
            argv += ["-device", "ib700,id=watchdog0"]
    return argv


def _vnc(domain: Domain, files: DomainFiles, bus: _Bus, port: int | None) -> list[str]:
    qemu = domain.spec.qemu
    assert qemu is not None
    if qemu.vnc is None:
        return []
    port = qemu.vnc.port if qemu.vnc.port is not None else port
    if port is None or port < VNC_BASE_PORT:
        raise ValueRefused("spec.qemu.vnc.port", f"must be {VNC_BASE_PORT} or above")
    listen = escape.host(qemu.vnc.listen, "spec.qemu.vnc.listen")
    if ":" in listen:
        listen = f"[{listen}]"
    argv = ["-device", f"VGA,id=video0,{bus.pci_addr('video0')}"]
    display = f"{listen}:{port - VNC_BASE_PORT}"
    if qemu.vnc.password is not None:
        escape.opt(qemu.vnc.password, "spec.qemu.vnc.password")  # refused if unsafe
        secret = escape.opt(str(files.vnc_secret), "vnc secret")
        argv += ["-object", f"secret,id=vnc0-secret,file={secret},format=raw"]
        display += ",password-secret=vnc0-secret"
    return argv + ["-vnc", display]
