"""What this host's qemu binary can do, probed over QMP and cached by binary path and mtime.

Called by QemuDriver.capabilities() (and so by validate and start). The probe runs
`<binary> -machine none` with QMP and asks for the version, machine types (with their vCPU
limits), device types and accelerators; a second short process checks that KVM really
initialises (`-accel kvm`, `query-kvm`). The result is kept in memory and in
`<state_dir>/qemu/capabilities.json`; a changed binary (path or mtime) is probed again.

KVM is called usable only when /dev/kvm opens read-write, qemu initialises it, and the kernel's
KVM is not the nested PVM flavour (module `kvm_pvm`): under PVM qemu and firmware start, but a
real guest kernel does not boot (notes/test-guests.md), so `accel: auto` must not pick it. When
qemu does initialise KVM there, `kvm_pvm` is set: an explicit `accel: kvm` runs (libvirt and
qemu run firmware-only guests under PVM), with PVM_WARNING in its note (Live.message, and so the
Ready condition's message and the `started` event's).

It never starts a guest and never raises from `probe`: a broken binary yields a QemuCaps with
`error` set, so the driver is disabled with a message instead of crashing the controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import structlog

from reconcilers.driver import Capabilities
from reconcilers.model import Accel, DriverName
from reconcilers.qemu.commands import QmpCommands
from reconcilers.qemu.monitor import Monitor, MonitorError

KVM_DEVICE = Path("/dev/kvm")
PVM_MODULE = Path("/sys/module/kvm_pvm")
PVM_WARNING = ("warning: host kvm is the nested PVM flavour (kvm_pvm): guest kernels may not "
               "boot here; firmware runs")
PROBE_TIMEOUT = 10.0

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class QemuCaps:
    binary: str
    mtime_ns: int
    version: str = ""
    machines: dict[str, int] = field(default_factory=dict)  # name or alias -> max vCPUs
    default_machine: str = ""
    devices: frozenset[str] = frozenset()
    accels: frozenset[str] = frozenset()  # compiled in: "kvm", "tcg"
    kvm_usable: bool = False
    kvm_message: str = ""  # why KVM is not usable
    kvm_pvm: bool | None = None  # KVM initialises but is nested PVM (None: an older cache)
    error: str = ""  # why the binary cannot be used at all

    def summary(self) -> Capabilities:
        """The Driver protocol's view: usable or not, and what `accel: auto` picks here."""
        if self.error:
            return Capabilities(DriverName.QEMU, False, message=self.error)
        _, note = choose_accel(Accel.AUTO, self)
        return Capabilities(DriverName.QEMU, True, version=self.version, message=note,
                            details={"binary": self.binary, "kvm": self.kvm_usable,
                                     "accels": sorted(self.accels),
                                     "default_machine": self.default_machine})

    def to_json(self) -> str:
        plain = asdict(self)
        plain["devices"], plain["accels"] = sorted(self.devices), sorted(self.accels)
        return json.dumps(plain, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> QemuCaps:
        plain = json.loads(text)
        plain["devices"], plain["accels"] = frozenset(plain["devices"]), frozenset(plain["accels"])
        return cls(**plain)


class AccelError(Exception):
    """The requested accelerator cannot be used here; the message says why."""


def choose_accel(requested: Accel, caps: QemuCaps) -> tuple[Accel, str]:
    """The accelerator to run with and a note for Live.message (`accel tcg (kvm unusable: ...)`)."""
    if requested is Accel.KVM:
        if caps.kvm_pvm:
            return Accel.KVM, f"accel kvm; {PVM_WARNING}"
        if not caps.kvm_usable:
            raise AccelError(f"kvm is not usable on this host: {caps.kvm_message}")
        return Accel.KVM, "accel kvm"
    if requested is Accel.TCG or not caps.kvm_usable:
        if "tcg" not in caps.accels:
            raise AccelError("this qemu has no tcg accelerator")
        note = "" if requested is Accel.TCG else f" (kvm unusable: {caps.kvm_message})"
        return Accel.TCG, f"accel tcg{note}"
    return Accel.KVM, "accel kvm (auto)"


class CapabilityCache:
    """One probe per binary path and mtime, remembered in memory and on disk."""

    def __init__(self, cache_file: Path) -> None:
        self._file = cache_file
        self._memory: dict[tuple[str, int], QemuCaps] = {}

    async def get(self, binary: str) -> QemuCaps:
        path = shutil.which(binary)
        if path is None:
            return QemuCaps(binary=binary, mtime_ns=0, error=f"{binary} not found")
        key = (path, os.stat(path).st_mtime_ns)
        caps = self._memory.get(key) or self._load(key)
        if caps is None:
            caps = await probe(path, key[1])
            if caps.error:
                return caps  # not remembered: the next call probes again
            self._store(caps)
        self._memory[key] = caps
        return caps

    def _load(self, key: tuple[str, int]) -> QemuCaps | None:
        try:
            caps = QemuCaps.from_json(self._file.read_text())
        except (OSError, ValueError, TypeError, KeyError):
            return None
        fresh = caps.kvm_pvm is not None  # probed before kvm_pvm existed: probe again
        return caps if (caps.binary, caps.mtime_ns) == key and fresh else None

    def _store(self, caps: QemuCaps) -> None:
        self._file.parent.mkdir(parents=True, exist_ok=True)
        temp = self._file.with_suffix(".tmp")
        temp.write_text(caps.to_json())
        temp.replace(self._file)


async def probe(binary: str, mtime_ns: int) -> QemuCaps:
    """Ask `binary` what it supports; never raises."""
    try:
        base = await _probe_base(binary, mtime_ns)
    except (MonitorError, OSError, TimeoutError) as exc:
        log.warning("qemu probe failed; qemu driver disabled", binary=binary, error=str(exc))
        return QemuCaps(binary=binary, mtime_ns=mtime_ns, error=f"probe failed: {exc}")
    usable, message, pvm = await _kvm_usable(binary, base.accels)
    log.info("qemu probed", binary=binary, version=base.version, kvm=usable, pvm=pvm,
             why=message)
    return QemuCaps(**{**asdict(base), "kvm_usable": usable, "kvm_message": message,
                       "kvm_pvm": pvm})


async def _probe_base(binary: str, mtime_ns: int) -> QemuCaps:
    async with _probe_process(binary, "tcg") as qmp:
        version = await qmp.query_version()
        machines: dict[str, int] = {}
        default = ""
        for machine in await qmp.query_machines():
            for alias in (machine.name, machine.alias):
                if alias:
                    machines[alias] = machine.cpu_max
            if machine.is_default:
                default = machine.name
        devices = await qmp.qom_list_types("device")
        accels = await qmp.qom_list_types("accel")
    return QemuCaps(
        binary=binary, mtime_ns=mtime_ns, version=str(version),
        machines=machines, default_machine=default, devices=frozenset(devices),
        accels=frozenset(a.removesuffix("-accel") for a in accels if a.endswith("-accel")))


async def _kvm_usable(binary: str, accels: frozenset[str]) -> tuple[bool, str, bool]:
    """(usable for `accel: auto`, why not, KVM initialises but is the nested PVM flavour)."""
    if "kvm" not in accels:
        return False, "this qemu was built without kvm", False
    if not os.access(KVM_DEVICE, os.R_OK | os.W_OK):
        return False, f"{KVM_DEVICE} missing or not read-write for this user", False
    try:
        async with _probe_process(binary, "kvm") as qmp:
            kvm = await qmp.query_kvm()
    except (MonitorError, OSError, TimeoutError) as exc:
        return False, f"qemu could not initialise kvm: {exc}", False
    if not kvm.enabled:
        return False, "qemu started but reports kvm disabled", False
    if PVM_MODULE.exists():
        return False, ("host kvm is the nested PVM flavour (kvm_pvm): guest kernels do not "
                       "boot (`accel: kvm` runs with a warning)"), True
    return True, "", False


@contextlib.asynccontextmanager
async def _probe_process(binary: str, accel: str) -> AsyncIterator[QmpCommands]:
    """A `-machine none` qemu with a QMP socket, killed when the block ends."""
    with tempfile.TemporaryDirectory(prefix="domctl-probe-") as tmp:
        socket = Path(tmp) / "qmp"
        process = await asyncio.create_subprocess_exec(
            binary, "-machine", "none", "-accel", accel, "-nodefaults", "-no-user-config",
            "-display", "none", "-S", "-qmp", f"unix:{socket},server=on,wait=off",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        monitor = Monitor("probe", timeout=PROBE_TIMEOUT)
        try:
            await _connect_when_ready(monitor, socket, process)
            yield QmpCommands(monitor)
        finally:
            await monitor.close()
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


async def _connect_when_ready(monitor: Monitor, socket: Path,
                              process: asyncio.subprocess.Process) -> None:
    """Connect once qemu listens: the socket file appears just before qemu calls listen()."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PROBE_TIMEOUT
    while True:
        if process.returncode is not None:
            raw = await process.stderr.read() if process.stderr else b""
            lines = raw.decode(errors="replace").strip().splitlines()
            raise MonitorError("probe", lines[-1] if lines
                               else "qemu exited before opening its QMP socket")
        if socket.exists():
            try:
                await monitor.connect(socket)
                return
            except MonitorError:
                if loop.time() > deadline:
                    raise
        elif loop.time() > deadline:
            raise MonitorError("probe", f"no QMP socket within {PROBE_TIMEOUT} s")
        await asyncio.sleep(0.02)
