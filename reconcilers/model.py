"""What a domain is: libvirt's state/reason/event vocabulary and the normalised spec.

Everything here is plain data. The manifest loader (controller/manifests/loader.py) builds these
objects from YAML; the reconciler and both drivers only ever read them. Sizes are bytes,
durations are seconds, every default is filled in, so two manifests that mean the same thing
compare equal and hash to the same generation.

Never import from `controller` here: `reconcilers` is the lower layer.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class State(str, enum.Enum):
    """virDomainState, in libvirt's string form."""

    NOSTATE = "nostate"
    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"  # being shut down
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    PMSUSPENDED = "pmsuspended"


class Reason(str, enum.Enum):
    """The union of libvirt's per-state reason strings (see REASONS_BY_STATE)."""

    UNKNOWN = "unknown"
    # running
    BOOTED = "booted"
    MIGRATED = "migrated"
    RESTORED = "restored"
    UNPAUSED = "unpaused"
    WAKEUP = "wakeup"
    CRASHED = "crashed"
    # paused
    USER = "user"
    MIGRATION = "migration"
    SAVE = "save"
    DUMP = "dump"
    IOERROR = "ioerror"
    WATCHDOG = "watchdog"
    SHUTDOWN = "shutdown"  # shutoff/shutdown; libvirt prints PAUSED/SHUTTING_DOWN the same way
    SHUTTING_DOWN = "shutdown"  # an alias of SHUTDOWN (same string), named for the paused case
    STARTING_UP = "starting up"
    PANICKED = "panicked"  # PAUSED/CRASHED and CRASHED/PANICKED both print "panicked"
    # shutoff
    DESTROYED = "destroyed"
    SAVED = "saved"
    FAILED = "failed"
    DAEMON = "daemon"


REASONS_BY_STATE: Mapping[State, frozenset[Reason]] = {
    State.NOSTATE: frozenset({Reason.UNKNOWN}),
    State.RUNNING: frozenset({Reason.UNKNOWN, Reason.BOOTED, Reason.MIGRATED, Reason.RESTORED,
                              Reason.UNPAUSED, Reason.WAKEUP, Reason.CRASHED}),
    State.BLOCKED: frozenset({Reason.UNKNOWN}),
    State.PAUSED: frozenset({Reason.UNKNOWN, Reason.USER, Reason.MIGRATION, Reason.SAVE,
                             Reason.DUMP, Reason.IOERROR, Reason.WATCHDOG, Reason.SHUTTING_DOWN,
                             Reason.STARTING_UP, Reason.PANICKED}),
    State.SHUTDOWN: frozenset({Reason.UNKNOWN, Reason.USER}),
    State.SHUTOFF: frozenset({Reason.UNKNOWN, Reason.SHUTDOWN, Reason.DESTROYED, Reason.CRASHED,
                              Reason.SAVED, Reason.FAILED, Reason.DAEMON}),
    State.CRASHED: frozenset({Reason.UNKNOWN, Reason.PANICKED}),
    State.PMSUSPENDED: frozenset({Reason.UNKNOWN}),
}


class EventType(str, enum.Enum):
    """virDomainEventType, lower-case."""

    DEFINED = "defined"
    UNDEFINED = "undefined"
    STARTED = "started"
    SUSPENDED = "suspended"
    RESUMED = "resumed"
    STOPPED = "stopped"
    SHUTDOWN = "shutdown"
    PMSUSPENDED = "pmsuspended"
    CRASHED = "crashed"


class EventDetail(str, enum.Enum):
    """The detail strings of the event types above (see DETAILS_BY_EVENT)."""

    ADDED = "added"
    UPDATED = "updated"
    REMOVED = "removed"
    BOOTED = "booted"
    RESTORED = "restored"
    PAUSED = "paused"
    IOERROR = "ioerror"
    WATCHDOG = "watchdog"
    UNPAUSED = "unpaused"
    SHUTDOWN = "shutdown"
    DESTROYED = "destroyed"
    CRASHED = "crashed"
    SAVED = "saved"
    FAILED = "failed"
    FINISHED = "finished"
    GUEST = "guest"
    HOST = "host"
    PANICKED = "panicked"
    FROM_SNAPSHOT = "from_snapshot"  # resumed: running again from a saved image (a restore)


DETAILS_BY_EVENT: Mapping[EventType, frozenset[EventDetail]] = {
    EventType.DEFINED: frozenset({EventDetail.ADDED, EventDetail.UPDATED}),
    EventType.UNDEFINED: frozenset({EventDetail.REMOVED}),
    EventType.STARTED: frozenset({EventDetail.BOOTED, EventDetail.RESTORED}),
    EventType.SUSPENDED: frozenset({EventDetail.PAUSED, EventDetail.IOERROR, EventDetail.WATCHDOG,
                                    EventDetail.RESTORED}),
    EventType.RESUMED: frozenset({EventDetail.UNPAUSED, EventDetail.FROM_SNAPSHOT}),
    EventType.STOPPED: frozenset({EventDetail.SHUTDOWN, EventDetail.DESTROYED, EventDetail.CRASHED,
                                  EventDetail.SAVED, EventDetail.FAILED}),
    EventType.SHUTDOWN: frozenset({EventDetail.FINISHED, EventDetail.GUEST, EventDetail.HOST}),
    EventType.PMSUSPENDED: frozenset(),
    EventType.CRASHED: frozenset({EventDetail.PANICKED}),
}


class Cause(str, enum.Enum):
    """Who caused a state change: recorded on every event so intent is never lost."""

    MANIFEST = "manifest"
    API = "api"
    GUEST = "guest"
    CONTROLLER = "controller"
    EXTERNAL = "external"


# --- manifest vocabulary -------------------------------------------------------------------

class DriverName(str, enum.Enum):
    QEMU = "qemu"
    LXC = "lxc"


class DesiredState(str, enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"
    SHUTOFF = "shutoff"


class RestartPolicy(str, enum.Enum):
    ALWAYS = "Always"
    ON_FAILURE = "OnFailure"
    NEVER = "Never"


class UpdatePolicy(str, enum.Enum):
    LIVE = "Live"
    RESTART = "Restart"


class LifecycleAction(str, enum.Enum):
    """libvirt's <on_poweroff>/<on_reboot>/<on_crash> values (rename-restart is libxl only)."""

    DESTROY = "destroy"
    RESTART = "restart"
    PRESERVE = "preserve"
    COREDUMP_DESTROY = "coredump-destroy"  # on_crash only
    COREDUMP_RESTART = "coredump-restart"  # on_crash only


class Accel(str, enum.Enum):
    KVM = "kvm"
    TCG = "tcg"
    AUTO = "auto"


class SerialMode(str, enum.Enum):
    LOG = "log"  # guest serial output appended to the domain log
    PTY = "pty"  # a host pty, for `domctl console`
    SOCKET = "socket"  # a unix socket in the runtime dir, for `domctl console`


class DiskFormat(str, enum.Enum):
    RAW = "raw"
    QCOW2 = "qcow2"


class DiskBus(str, enum.Enum):
    VIRTIO = "virtio"
    SATA = "sata"
    IDE = "ide"
    SCSI = "scsi"


class StopMode(str, enum.Enum):
    """What a desired `shutoff` does to a running domain."""

    SHUTDOWN = "shutdown"  # graceful shutdown, then destroy after shutdownTimeout
    SAVE = "save"  # managed save: the guest's state to an image, restored at the next start


class Management(str, enum.Enum):
    """Whether the controller acts on the domain (Enforce) or only observes and reports what
    differs from the manifest (Observe: to adopt a domain and watch it first, like Argo CD's
    manual sync)."""

    ENFORCE = "Enforce"
    OBSERVE = "Observe"


class DeletePolicy(str, enum.Enum):
    """What happens to a volume domctl made (an overlay, an empty disk, an unpacked rootfs)
    when its domain is removed: kept (the default, like libvirt's volumes) or deleted."""

    RETAIN = "Retain"
    DELETE = "Delete"


class DiskCache(str, enum.Enum):
    NONE = "none"
    WRITEBACK = "writeback"
    WRITETHROUGH = "writethrough"
    DIRECTSYNC = "directsync"
    UNSAFE = "unsafe"


class NicMode(str, enum.Enum):
    USER = "user"  # qemu's user-mode (slirp) network (qemu only)
    NETWORK = "network"  # a tap/veth on the bridge of a managed `kind: Network`
    BRIDGE = "bridge"  # a tap/veth on an existing bridge domctl does not manage


class LinkState(str, enum.Enum):
    UP = "up"
    DOWN = "down"  # the guest sees no carrier (QMP set_link; applied live)


class WatchdogModel(str, enum.Enum):
    I6300ESB = "i6300esb"
    IB700 = "ib700"


class WatchdogAction(str, enum.Enum):
    """libvirt's <watchdog action=...> values that qemu can carry out."""

    RESET = "reset"
    SHUTDOWN = "shutdown"
    POWEROFF = "poweroff"
    PAUSE = "pause"
    NONE = "none"
    DUMP = "dump"
    INJECT_NMI = "inject-nmi"


# --- the normalised spec -------------------------------------------------------------------

@dataclass(frozen=True)
class CpuTopology:
    model: str | None = None  # None: the accelerator's default (host for kvm, qemu64 for tcg)
    sockets: int | None = None  # None: derived from vcpus
    cores: int | None = None
    threads: int | None = None


@dataclass(frozen=True)
class VcpuPin:
    vcpu: int
    cpuset: str  # a host cpu list such as "0-2,4"


@dataclass(frozen=True)
class CpuTune:
    shares: int | None = None  # relative weight (cgroup v1 cpu.shares; mapped to v2 cpu.weight)
    period: int | None = None  # microseconds, with quota: the CFS bandwidth limit
    quota: int | None = None  # microseconds per period; -1 = unlimited
    vcpupin: tuple[VcpuPin, ...] = ()
    emulatorpin: str | None = None  # host cpu list for the emulator's own threads


@dataclass(frozen=True)
class Lifecycle:
    on_poweroff: LifecycleAction = LifecycleAction.DESTROY
    on_reboot: LifecycleAction = LifecycleAction.RESTART
    on_crash: LifecycleAction = LifecycleAction.DESTROY


@dataclass(frozen=True)
class Disk:
    """A disk is exactly one of: `source` (an existing file or block device, used as it is),
    `image` (a base image: domctl makes the domain's own qcow2 overlay on it, in its pool) or
    `size` alone (an empty qcow2 volume domctl makes). `size` with `image` grows the overlay."""

    name: str  # the guest-visible id, also the blockdev node name's suffix
    source: str | None = None  # absolute path of the image or block device
    format: DiskFormat = DiskFormat.RAW  # of `source`; a volume domctl makes is qcow2
    bus: DiskBus = DiskBus.VIRTIO
    readonly: bool = False
    cache: DiskCache = DiskCache.NONE
    image: str | None = None  # absolute path of a base image (qcow2 or raw, read-only to us)
    size: int | None = None  # bytes: the volume's virtual size (grown, never shrunk)
    delete_policy: DeletePolicy = DeletePolicy.RETAIN  # of a volume domctl made


@dataclass(frozen=True)
class Vnc:
    listen: str = "127.0.0.1"
    port: int | None = None  # None: the first free port of the controller's range ("auto")
    password: str | None = None


@dataclass(frozen=True)
class Watchdog:
    model: WatchdogModel = WatchdogModel.I6300ESB
    action: WatchdogAction = WatchdogAction.RESET


@dataclass(frozen=True)
class Nic:
    """A NIC as declared; the engine resolves `bridge` (of a network) and `mac` before a start
    (reconcilers/net/nics.py), so drivers see both set for network and bridge NICs."""

    mode: NicMode = NicMode.USER
    model: str = "virtio-net-pci"
    mac: str | None = None  # None: derived from the domain's uuid and the index (stable)
    network: str | None = None  # mode network: the managed network's name
    bridge: str | None = None  # mode bridge: the bridge; mode network: filled by resolution
    ip: str | None = None  # mode network: a static DHCP reservation for this NIC's MAC
    link_state: LinkState = LinkState.UP


@dataclass(frozen=True)
class CloudInit:
    """A NoCloud seed (an ISO labelled `cidata`) attached as a read-only CD-ROM. Each document
    is given inline or as a file (read when the seed is built, at start)."""

    user_data: str | None = None  # `#cloud-config` YAML or a script
    user_data_file: str | None = None
    meta_data: tuple[tuple[str, str], ...] = ()  # sorted; instance-id and local-hostname
    # default to the domain's uuid and name
    network_config: str | None = None  # YAML (network config v1 or v2)
    network_config_file: str | None = None


FIRMWARE_BIOS = "bios"  # qemu's SeaBIOS (the default)
FIRMWARE_UEFI = "uefi"  # OVMF: code as read-only pflash, a per-domain NVRAM vars file


@dataclass(frozen=True)
class QemuSpec:
    machine: str = "pc"
    accel: Accel = Accel.AUTO
    firmware: str | None = None  # "bios", "uefi" or the absolute path of a BIOS image;
    # None: qemu's default (SeaBIOS)
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    boot: tuple[str, ...] = ()  # order of "disk", "cdrom", "network"
    disks: tuple[Disk, ...] = ()
    cdrom: str | None = None
    serial: SerialMode = SerialMode.LOG
    vnc: Vnc | None = None
    guest_agent: bool = False
    panic: bool = False
    watchdog: Watchdog | None = None
    nics: tuple[Nic, ...] = ()
    cloud_init: CloudInit | None = None


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    readonly: bool = False


BUSYBOX_ROOTFS = "busybox"


@dataclass(frozen=True)
class LxcSpec:
    rootfs: str = BUSYBOX_ROOTFS  # an absolute directory, or "busybox" for the built-in rootfs
    init: tuple[str, ...] = ("/sbin/init",)
    env: tuple[tuple[str, str], ...] = ()  # sorted (name, value) pairs
    mounts: tuple[Mount, ...] = ()
    nics: tuple[Nic, ...] = ()  # mode network or bridge only (a veth pair each)
    image: str | None = None  # a rootfs tarball (tar, tar.gz, tar.xz) unpacked once into the
    # domain's own rootfs; `rootfs` is then unused
    delete_policy: DeletePolicy = DeletePolicy.RETAIN  # of that unpacked rootfs
    privileged: bool = False  # False: an unprivileged container (ids mapped from /etc/subuid)
    pids_limit: int | None = None  # the pids cgroup's limit; None: no limit


@dataclass(frozen=True)
class Placement:
    """Fleet mode: where the scheduler may place the domain (controller/fleet/)."""

    hosts: tuple[str, ...] = ()  # allowed host names, sorted; empty: any
    selector: tuple[tuple[str, str], ...] = ()  # host labels required, sorted pairs
    spread_group: str | None = None  # domains of one group go to different hosts
    failover: bool = False  # placed elsewhere when its host is lost


@dataclass(frozen=True)
class DomainSpec:
    driver: DriverName
    state: DesiredState = DesiredState.RUNNING
    restart_policy: RestartPolicy = RestartPolicy.ALWAYS
    update_policy: UpdatePolicy = UpdatePolicy.LIVE
    shutdown_timeout: float = 60.0  # seconds
    stop_mode: StopMode = StopMode.SHUTDOWN
    management: Management = Management.ENFORCE
    depends_on: tuple[str, ...] = ()  # domains started (Ready) before this one, sorted
    start_priority: int = 0  # higher first when several wait to start
    placement: Placement = field(default_factory=Placement)  # fleet mode only
    memory: int = 512 * 1024 * 1024  # bytes
    max_memory: int | None = None  # bytes; set: memory can be hot-added up to it (qemu)
    current_memory: int | None = None  # bytes; None: equal to memory (no balloon target)
    vcpus: int = 1
    max_vcpus: int | None = None  # None: equal to vcpus
    cpu: CpuTopology = field(default_factory=CpuTopology)
    cputune: CpuTune = field(default_factory=CpuTune)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    qemu: QemuSpec | None = None  # set exactly when driver is qemu
    lxc: LxcSpec | None = None  # set exactly when driver is lxc


@dataclass(frozen=True)
class Metadata:
    name: str
    uuid: str | None = None  # None: the controller generates one once and keeps it
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SourceRef:
    """Where a manifest document came from, for error messages and status."""

    file: str
    line: int  # 1-based line of the document's first key
    document: int = 0  # 0-based index of the document within the file


@dataclass(frozen=True)
class Domain:
    """One validated, normalised manifest document."""

    metadata: Metadata
    spec: DomainSpec
    source: SourceRef

    @property
    def name(self) -> str:
        return self.metadata.name

    @functools.cached_property
    def generation(self) -> str:
        """Hashed once per object (it is immutable); every pass asks for it several times."""
        return spec_generation(self.spec, self.metadata.uuid)

    def with_resolved_spec(self, spec: DomainSpec) -> Domain:
        """This domain with host-resolved values in its spec (a NIC's bridge and MAC,
        reconcilers/net/nics.py): the same manifest, so the same generation."""
        resolved = dataclasses.replace(self, spec=spec)
        resolved.__dict__["generation"] = self.generation  # the cached_property's slot
        return resolved


def to_plain(value: Any) -> Any:
    """A JSON-ready form of any model object: enums become their strings, tuples lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [to_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    return value


def spec_generation(spec: DomainSpec, uuid: str | None = None) -> str:
    """A content hash of the normalised spec: reformatting a manifest is not a new generation.
    Hashed in its sparse form (fields at their default left out), so a domctl release that adds
    a field with a default gives every existing manifest the generation it had: a new
    generation is a new epoch, which would lift the API requests in force (a `domctl stop`)."""
    return content_hash({"spec": sparse_plain(spec), "uuid": uuid})


def sparse_plain(value: Any, default: Any = None) -> Any:
    """to_plain of `value` with every dataclass field equal to its default left out (the
    default of a nested dataclass is `default`'s field, else a blank instance of its type)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        base = default if type(default) is type(value) else _blank(type(value))
        return {f.name: sparse_plain(mine, getattr(base, f.name))
                for f in dataclasses.fields(value)
                if (mine := getattr(value, f.name)) != getattr(base, f.name)}
    if isinstance(value, (tuple, list)):
        return [sparse_plain(v) for v in value]
    return to_plain(value)


def _blank(kind: type[Any]) -> Any:
    """An instance of a model dataclass with its defaults; required fields are None (and so
    always differ from a real value)."""
    required = {f.name: None for f in dataclasses.fields(kind)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    return kind(**required)


def content_hash(plain: Any) -> str:
    """16 hex digits of SHA-256 over the canonical JSON of `plain` (a generation)."""
    canonical = json.dumps(plain, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
