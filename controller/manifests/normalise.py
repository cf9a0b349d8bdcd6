"""Turn one schema-valid manifest document into the typed, defaulted model of reconcilers/model.py.

Called by controller/manifests/loader.py only after JSON Schema validation passed, so every value
here already has the right type and shape. Defaults are filled here, not by the schema, so the
stored (normalised) spec is what gets diffed and hashed: `memory: 1Gi` and `memory: 1024` are the
same generation, and so are `firmware: bios` and no firmware, `deletePolicy: Retain` and none.
A NIC's mode follows from what it names (`network:` or `bridge:`, else user); a container's
`rootfs: {image: PATH}` is LxcSpec.image, its rootfs left at the default the driver ignores.
A `kind: Network` document is normalised by network.py, with the helpers here. Never raises for
schema-valid input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from reconcilers.model import (
    FIRMWARE_BIOS,
    Accel,
    CloudInit,
    CpuTopology,
    CpuTune,
    DeletePolicy,
    DesiredState,
    Disk,
    DiskBus,
    DiskCache,
    DiskFormat,
    DomainSpec,
    DriverName,
    Lifecycle,
    LifecycleAction,
    LinkState,
    LxcSpec,
    Management,
    Metadata,
    Mount,
    Nic,
    NicMode,
    Placement,
    QemuSpec,
    RestartPolicy,
    SerialMode,
    StopMode,
    UpdatePolicy,
    VcpuPin,
    Vnc,
    Watchdog,
    WatchdogAction,
    WatchdogModel,
)

MIB = 1024 * 1024
_SIZE_UNITS = {"Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB, "Ti": 1024 * 1024 * MIB}
_SIZE = re.compile(r"^([1-9][0-9]*)(Ki|Mi|Gi|Ti)$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")

Raw = Mapping[str, Any]


def parse_size(value: int | str) -> int:
    """Bytes from `512Mi`, `2Gi` or an integer number of MiB."""
    if isinstance(value, int):
        return value * MIB
    match = _SIZE.match(value)
    if match is None:
        raise ValueError(f"not a size: {value!r}")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def parse_duration(value: float | int | str) -> float:
    """Seconds from a number of seconds or `500ms`, `30s`, `5m`, `1h30m`."""
    if isinstance(value, (int, float)):
        return float(value)
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"not a duration: {value!r}")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def _pairs(raw: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((raw or {}).items()))


def metadata(raw: Raw) -> Metadata:
    uuid = raw.get("uuid")
    return Metadata(name=raw["name"], uuid=uuid.lower() if uuid else None,
                    labels=_pairs(raw.get("labels")), annotations=_pairs(raw.get("annotations")))


def spec(raw: Raw) -> DomainSpec:
    driver = DriverName(raw["driver"])
    defaults = DomainSpec(driver=driver)
    memory = parse_size(raw["memory"]) if "memory" in raw else defaults.memory
    current = parse_size(raw["currentMemory"]) if "currentMemory" in raw else None
    maximum = parse_size(raw["maxMemory"]) if "maxMemory" in raw else None
    vcpus = raw.get("vcpus", defaults.vcpus)
    max_vcpus = raw.get("maxVcpus")
    return DomainSpec(
        driver=driver,
        state=DesiredState(raw.get("state", defaults.state.value)),
        restart_policy=RestartPolicy(raw.get("restartPolicy", defaults.restart_policy.value)),
        update_policy=UpdatePolicy(raw.get("updatePolicy", defaults.update_policy.value)),
        shutdown_timeout=parse_duration(raw.get("shutdownTimeout", defaults.shutdown_timeout)),
        stop_mode=StopMode(raw.get("stopMode", defaults.stop_mode.value)),
        management=Management(raw.get("management", defaults.management.value)),
        depends_on=tuple(sorted(set(raw.get("dependsOn", ())))),
        start_priority=raw.get("startPriority", defaults.start_priority),
        placement=_placement(raw.get("placement", {})),
        memory=memory,
        max_memory=maximum,
        # "equal to memory" and "not set" mean the same, so they must hash the same
        current_memory=None if current == memory else current,
        vcpus=vcpus,
        max_vcpus=None if max_vcpus == vcpus else max_vcpus,
        cpu=CpuTopology(**{k: v for k, v in raw.get("cpu", {}).items()}),
        cputune=_cputune(raw.get("cputune", {})),
        lifecycle=_lifecycle(raw.get("lifecycle", {})),
        qemu=_qemu(raw.get("qemu", {})) if driver is DriverName.QEMU else None,
        lxc=_lxc(raw.get("lxc", {})) if driver is DriverName.LXC else None,
    )


def _placement(raw: Raw) -> Placement:
    return Placement(hosts=tuple(sorted(raw.get("hosts", ()))),
                     selector=_pairs(raw.get("selector")),
                     spread_group=raw.get("spreadGroup"), failover=raw.get("failover", False))


def _cputune(raw: Raw) -> CpuTune:
    pins = sorted((VcpuPin(p["vcpu"], p["cpuset"]) for p in raw.get("vcpupin", [])),
                  key=lambda p: p.vcpu)
    return CpuTune(shares=raw.get("shares"), period=raw.get("period"), quota=raw.get("quota"),
                   vcpupin=tuple(pins), emulatorpin=raw.get("emulatorpin"))


def _lifecycle(raw: Raw) -> Lifecycle:
    d = Lifecycle()
    return Lifecycle(
        on_poweroff=LifecycleAction(raw.get("onPoweroff", d.on_poweroff.value)),
        on_reboot=LifecycleAction(raw.get("onReboot", d.on_reboot.value)),
        on_crash=LifecycleAction(raw.get("onCrash", d.on_crash.value)),
    )


def _qemu(raw: Raw) -> QemuSpec:
    d = QemuSpec()
    vnc_raw = raw.get("graphics", {}).get("vnc")
    watchdog_raw = raw.get("watchdog")
    return QemuSpec(
        machine=raw.get("machine", d.machine),
        accel=Accel(raw.get("accel", d.accel.value)),
        firmware=None if raw.get("firmware") == FIRMWARE_BIOS else raw.get("firmware"),
        kernel=raw.get("kernel"),
        initrd=raw.get("initrd"),
        cmdline=raw.get("cmdline"),
        boot=tuple(raw.get("boot", ())),
        disks=tuple(_disk(x) for x in raw.get("disks", ())),
        cdrom=raw.get("cdrom"),
        serial=SerialMode(raw.get("serial", d.serial.value)),
        vnc=_vnc(vnc_raw) if vnc_raw is not None else None,
        guest_agent=raw.get("guestAgent", d.guest_agent),
        panic=raw.get("panic", d.panic),
        watchdog=_watchdog(watchdog_raw) if watchdog_raw is not None else None,
        nics=tuple(_nic(x) for x in raw.get("nics", ())),
        cloud_init=_cloud_init(raw["cloudInit"]) if "cloudInit" in raw else None,
    )


def _disk(raw: Raw) -> Disk:
    d = Disk(name="")
    return Disk(name=raw["name"], source=raw.get("source"),
                format=DiskFormat(raw.get("format", d.format.value)),
                bus=DiskBus(raw.get("bus", d.bus.value)),
                readonly=raw.get("readonly", d.readonly),
                cache=DiskCache(raw.get("cache", d.cache.value)),
                image=raw.get("image"),
                size=parse_size(raw["size"]) if "size" in raw else None,
                delete_policy=DeletePolicy(raw.get("deletePolicy", d.delete_policy.value)))


def _cloud_init(raw: Raw) -> CloudInit:
    return CloudInit(user_data=raw.get("userData"), user_data_file=raw.get("userDataFile"),
                     meta_data=_pairs(raw.get("metaData")),
                     network_config=raw.get("networkConfig"),
                     network_config_file=raw.get("networkConfigFile"))


def _vnc(raw: Raw) -> Vnc:
    port = raw.get("port", "auto")
    return Vnc(listen=raw.get("listen", Vnc().listen), port=None if port == "auto" else port,
               password=raw.get("password"))


def _watchdog(raw: Raw) -> Watchdog:
    d = Watchdog()
    return Watchdog(model=WatchdogModel(raw.get("model", d.model.value)),
                    action=WatchdogAction(raw.get("action", d.action.value)))


def nic_mode(raw: Raw) -> NicMode:
    """The mode a NIC item means: network with `network:`, bridge with `bridge:`, else its
    `mode` (user when left out). semantic.py refuses an explicit mode that disagrees."""
    if "network" in raw:
        return NicMode.NETWORK
    if "bridge" in raw:
        return NicMode.BRIDGE
    return NicMode(raw.get("mode", NicMode.USER.value))


def _nic(raw: Raw) -> Nic:
    d = Nic()
    return Nic(mode=nic_mode(raw), model=raw.get("model", d.model),
               mac=raw["mac"].lower() if "mac" in raw else None,
               network=raw.get("network"), bridge=raw.get("bridge"), ip=raw.get("ip"),
               link_state=LinkState(raw.get("linkState", d.link_state.value)))


def _lxc(raw: Raw) -> LxcSpec:
    d = LxcSpec()
    rootfs = raw.get("rootfs", d.rootfs)
    image: Raw = rootfs if isinstance(rootfs, Mapping) else {}
    return LxcSpec(
        rootfs=d.rootfs if image else rootfs,
        init=tuple(raw.get("init", d.init)),
        env=_pairs(raw.get("env")),
        mounts=tuple(Mount(m["source"], m["target"], m.get("readonly", False))
                     for m in raw.get("mounts", ())),
        nics=tuple(_nic(x) for x in raw.get("nics", ())),
        image=image.get("image"),
        delete_policy=DeletePolicy(image.get("deletePolicy", d.delete_policy.value)),
        privileged=raw.get("privileged", d.privileged),
        pids_limit=raw.get("pidsLimit"),
    )
