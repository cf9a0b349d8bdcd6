"""Checks across fields that JSON Schema cannot express.

Called by controller/manifests/loader.py on a schema-valid document, before normalisation. Works on
the raw document (not the normalised spec) so that list indexes in the reported paths are the
ones in the file. Each check yields (path, message); the caller locates the path in the YAML.
A VM's cloud-init documents are checked by cloudinit.py, whose findings also say where inside
the value (a YAML document in a string) the problem is.
A Network document's checks are in network.py (they run every value through
reconcilers/net/names.py, the gate of the commands); a domain's NICs are checked here with the
same gate. Host facts (does the disk exist, is there enough memory, is the bridge there) are not
checked here: they belong to each driver's validate(), which runs on the host that will start
the domain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from controller.manifests import cloudinit, network
from controller.manifests.errors import Finding, quote, shorten
from controller.manifests.normalise import MIB, nic_mode, parse_size
from controller.manifests.schema import NETWORK
from reconcilers.model import NicMode
from reconcilers.net import names

Path = tuple[str | int, ...]
Pair = tuple[Path, str]
Raw = Mapping[str, Any]

_QEMU_ONLY_FIELDS = ("currentMemory", "maxMemory", "maxVcpus", "cpu")
_QEMU_ONLY_CPUTUNE = ("vcpupin", "emulatorpin")


def check(doc: Raw) -> list[Finding]:
    if doc["kind"] == NETWORK:
        return [Finding(path, message) for path, message in network.check(doc)]
    spec = doc["spec"]
    checks: list[Callable[[Raw], Iterator[Pair]]] = [_memory, _vcpus, _vcpupin, _nics]
    checks += [_qemu_lifecycle, _qemu_devices, _disks] if spec["driver"] == "qemu" \
        else [_lxc_fields]
    found = [Finding(path, message) for c in checks for path, message in c(spec)]
    if "cloudInit" in spec.get("qemu", {}):
        found += cloudinit.check(spec["qemu"]["cloudInit"], ("spec", "qemu", "cloudInit"))
    return found


def _memory(spec: Raw) -> Iterator[Pair]:
    memory = parse_size(spec.get("memory", 512))
    if spec["driver"] == "qemu" and memory % MIB:
        yield ("spec", "memory"), "qemu needs a whole number of MiB"
    if "currentMemory" in spec and parse_size(spec["currentMemory"]) > memory:
        yield (("spec", "currentMemory"),
               f"currentMemory ({shorten(str(spec['currentMemory']))}) must not exceed memory "
               f"({shorten(str(spec.get('memory', 512)))})")
    if "maxMemory" in spec:
        maximum = parse_size(spec["maxMemory"])
        if maximum < memory:
            yield (("spec", "maxMemory"),
                   f"maxMemory ({shorten(str(spec['maxMemory']))}) must be at least memory "
                   f"({shorten(str(spec.get('memory', 512)))})")
        elif spec["driver"] == "qemu" and maximum % MIB:
            yield ("spec", "maxMemory"), "qemu needs a whole number of MiB"


def _max_vcpus(spec: Raw) -> int:
    return int(spec.get("maxVcpus", spec.get("vcpus", 1)))


def _vcpus(spec: Raw) -> Iterator[Pair]:
    vcpus = spec.get("vcpus", 1)
    if _max_vcpus(spec) < vcpus:
        yield (("spec", "maxVcpus"),
               f"maxVcpus ({spec['maxVcpus']}) must be at least vcpus ({vcpus})")
    cpu = spec.get("cpu", {})
    if all(k in cpu for k in ("sockets", "cores", "threads")):
        product = cpu["sockets"] * cpu["cores"] * cpu["threads"]
        if product != _max_vcpus(spec):
            yield (("spec", "cpu"),
                   f"sockets × cores × threads = {product}, but the domain has "
                   f"{_max_vcpus(spec)} vCPUs (maxVcpus, or vcpus when maxVcpus is not set)")


def _vcpupin(spec: Raw) -> Iterator[Pair]:
    limit = _max_vcpus(spec)
    seen: set[int] = set()
    for i, pin in enumerate(spec.get("cputune", {}).get("vcpupin", [])):
        path: Path = ("spec", "cputune", "vcpupin", i, "vcpu")
        if pin["vcpu"] >= limit:
            yield path, f"vCPU {pin['vcpu']} does not exist: the domain has vCPUs 0 to {limit - 1}"
        elif pin["vcpu"] in seen:
            yield path, f"vCPU {pin['vcpu']} is pinned twice"
        seen.add(pin["vcpu"])


def _qemu_lifecycle(spec: Raw) -> Iterator[Pair]:
    lifecycle = spec.get("lifecycle", {})
    if (lifecycle.get("onPoweroff") == "restart"
            and lifecycle.get("onReboot", "restart") == "destroy"):
        yield (("spec", "lifecycle", "onPoweroff"),
               "qemu cannot combine onPoweroff: restart with onReboot: destroy (as in libvirt)")


def _qemu_devices(spec: Raw) -> Iterator[Pair]:
    qemu = spec.get("qemu", {})
    for key in ("initrd", "cmdline"):
        if key in qemu and "kernel" not in qemu:
            yield ("spec", "qemu", key), f"{key} needs a kernel (spec.qemu.kernel)"
    if "cdrom" in qemu.get("boot", []) and "cdrom" not in qemu:
        yield ("spec", "qemu", "boot"), "boot from cdrom needs spec.qemu.cdrom"
    if "disk" in qemu.get("boot", []) and not qemu.get("disks"):
        yield ("spec", "qemu", "boot"), "boot from disk needs at least one entry in spec.qemu.disks"


DISK_FORMS = "a disk is source, image (optionally with size), or size alone"
MIN_DISK_SIZE = MIB


def _disks(spec: Raw) -> Iterator[Pair]:
    """Each disk is one of the three forms, with only the fields of its form; names and
    sources are distinct."""
    disks = spec.get("qemu", {}).get("disks", [])
    for i, disk in enumerate(disks):
        path: Path = ("spec", "qemu", "disks", i)
        if "source" in disk and ("image" in disk or "size" in disk):
            yield path + ("image" if "image" in disk else "size",), DISK_FORMS
        elif not any(key in disk for key in ("source", "image", "size")):
            yield path, f"{DISK_FORMS}: give one"
        elif "source" in disk and "deletePolicy" in disk:
            yield path + ("deletePolicy",), ("deletePolicy applies to a volume domctl makes "
                                             "(image or size); a source is never deleted")
        elif "source" not in disk and "format" in disk:
            yield path + ("format",), ("format applies to a source only: the volume domctl "
                                       "makes is a qcow2 overlay, and the format of a base "
                                       "image is detected")
        if "size" in disk and parse_size(disk["size"]) < MIN_DISK_SIZE:
            yield path + ("size",), f"a disk is at least 1Mi (got {shorten(str(disk['size']))})"
    yield from _unique(disks, "name", ("spec", "qemu", "disks"), "disk name")
    yield from _unique(disks, "source", ("spec", "qemu", "disks"), "disk source")


def _lxc_fields(spec: Raw) -> Iterator[Pair]:
    for key in _QEMU_ONLY_FIELDS:
        if key in spec:
            yield ("spec", key), f"{key} applies to qemu domains only; remove it for driver lxc"
    for key in _QEMU_ONLY_CPUTUNE:
        if key in spec.get("cputune", {}):
            yield (("spec", "cputune", key),
                   f"cputune.{key} applies to qemu domains only; remove it for driver lxc")
    if spec.get("stopMode") == "save":
        yield (("spec", "stopMode"),
               "stopMode save needs the guest's memory saved to an image (a managed save), "
               "which the lxc driver cannot do; use shutdown")
    on_crash = spec.get("lifecycle", {}).get("onCrash", "")
    if on_crash.startswith("coredump-"):
        yield (("spec", "lifecycle", "onCrash"),
               f"{on_crash} needs a guest memory dump, which the lxc driver cannot take")
    lxc = spec.get("lxc", {})
    yield from _unique(lxc.get("mounts", []), "target", ("spec", "lxc", "mounts"), "mount target")


def _nics(spec: Raw) -> Iterator[Pair]:
    """Each NIC names one attachment that fits its mode and driver; MACs are unicast and
    distinct within the domain."""
    driver = spec["driver"]
    nics = spec.get(driver, {}).get("nics", [])
    for i, nic in enumerate(nics):
        yield from _nic(driver, nic, ("spec", driver, "nics", i))
    yield from _unique(nics, "mac", ("spec", driver, "nics"), "MAC", str.lower)


def _nic(driver: str, nic: Raw, path: Path) -> Iterator[Pair]:
    mode = nic_mode(nic)
    if "network" in nic and "bridge" in nic:
        yield path + ("bridge",), ("give network (a managed network) or bridge (an existing "
                                   "bridge), not both")
    elif "mode" in nic and mode.value != nic["mode"]:
        yield path + ("mode",), (f"mode {nic['mode']} does not fit "
                                 f"{'network' if 'network' in nic else 'bridge'}: write "
                                 f"mode: {mode.value}, or leave mode out")
    elif mode is not NicMode.USER and mode.value not in nic:
        yield path + ("mode",), f"mode {mode.value} needs {mode.value}: (which one to join)"
    elif mode is NicMode.USER and driver == "lxc":
        yield path, ("containers have no user-mode network: give network: NAME (a managed "
                     "network) or bridge: IFNAME (an existing bridge)")
    if driver == "lxc" and "model" in nic:
        yield path + ("model",), "model applies to qemu NICs only; remove it for driver lxc"
    if "ip" in nic and "network" not in nic:
        yield path + ("ip",), ("ip is a static address reserved on a managed network: it needs "
                               "network: NAME")
    gates = {"bridge": names.check_ifname, "mac": names.check_mac, "ip": names.parse_host}
    for key, check_value in gates.items():
        if key in nic:
            yield from network.gate(path + (key,), check_value, nic[key])


def _unique(items: list[Raw], key: str, path: Path, what: str,
            normal: Callable[[Any], object] = lambda value: value) -> Iterator[Pair]:
    """Entries whose `key` repeats an earlier entry's (compared in `normal` form); an entry
    without the key repeats nothing."""
    first: dict[object, int] = {}
    for i, item in enumerate(items):
        if key not in item:
            continue
        value = normal(item[key])
        if value in first:
            yield (path + (i, key),
                   f"{what} {quote(item[key])} is already used by entry {first[value]}")
        else:
            first[value] = i
