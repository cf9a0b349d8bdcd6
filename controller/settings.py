"""The controller's one settings tree: every tunable, its unit, its default and why it is there.

kopf's OperatorSettings is the model: nested frozen dataclasses, a docstring on every field.
`domctl run` (controller/service/command.py) builds one `Settings` from its flags and hands it
to the daemon, which passes each branch down to the part that uses it (`engine` to the
Controller, `source` to the ManifestSource, ...); no module keeps settings of its own or reads
them from anywhere else. Each default is written here once: the flags of `domctl run` take
their defaults from these classes, and a setting two parts share (the resync period) is passed
to both from that one flag.

Times are in seconds, sizes in bytes. The tree:

    Settings
        paths: Paths                        controller/paths.py
        engine: EngineSettings              workers, stop_timeout, resync
            prune: PruneSettings            grace, guard_min
            crash_loop: CrashLoopSettings   min_interval, cap, stable_after
            errors: BackoffSettings         base, cap
            jobs: JobSettings               wait_limit
        source: SourceSettings              debounce, resync, recheck, max_manifest_bytes
        hooks: HookSettings                 timeout
        events: EventSettings               max_bytes, subscriber_queue
        api: ApiSettings                    max_request, request_timeout, log_poll,
                                            close_timeout, act_timeout
        metrics: MetricsSettings            address, snapshot_timeout
        networks: NetworkSettings           resync, removal_recheck, dnsmasq_user/group
        qemu: QemuSettings                  reconcilers/qemu/layout.py (the driver's own)
        fleet: FleetSettings | None         endpoints, prefix, host, labels, ttl, scheduler (None: a
                                            manifests directory, not etcd)

A leaf: it imports the standard library and `controller.paths`, and the qemu driver's settings
class only when a `Settings` is built: that package imports the whole driver, which a module
using one branch, or `domctl get` (whose entry point imports this tree), must not load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from controller.paths import Paths

if TYPE_CHECKING:
    from reconcilers.qemu.layout import QemuSettings


@dataclass(frozen=True)
class PruneSettings:
    """When a domain whose manifest is gone is stopped and undefined (engine/desired.py)."""

    grace: float = 3.0
    """Seconds a domain whose manifest vanished is kept before it is shut down and undefined:
    rides out an editor's save or a `git checkout` that briefly removes the file."""
    guard_min: int = 2
    """Removals of more than half of the domains hold pruning (until `domctl prune
    --confirm`) only when they are more than this many: losing 2 of 3 is not a disaster."""
    window: float = 60.0
    """Seconds over which removals are counted for that guard: manifests deleted one a second
    (an Ansible loop) are held like manifests deleted by one rescan."""


@dataclass(frozen=True)
class CrashLoopSettings:
    """KubeVirt's crash-loop backoff for a domain that keeps stopping (engine/backoff.py)."""

    min_interval: float = 10.0
    """The base interval S, in seconds (KubeVirt: 10): the n-th failure waits S × n² plus up
    to half of that again (`--restart-backoff`; 0: no delay at all)."""
    cap: float = 300.0
    """The longest delay, in seconds (KubeVirt: 300)."""
    stable_after: float = 60.0
    """Seconds of continuous running after which the failure count resets: a domain that ran
    this long was healthy, and its next crash starts the backoff over."""


@dataclass(frozen=True)
class BackoffSettings:
    """client-go's per-item exponential backoff after a failed pass (engine/backoff.py)."""

    base: float = 0.5
    """Seconds before the first retry after an error; doubles with every further error."""
    cap: float = 300.0
    """The longest delay, in seconds, so a long-failing domain is still retried regularly."""


@dataclass(frozen=True)
class JobSettings:
    """libvirt's per-domain jobs (engine/jobs.py)."""

    wait_limit: float = 30.0
    """Seconds a job may wait for the domain's lock before failing with "busy running <job>
    since <time>" (libvirt's 30 s "cannot acquire state change lock")."""


@dataclass(frozen=True)
class SourceSettings:
    """The manifests-directory watcher (manifests/source.py)."""

    debounce: float = 0.3
    """Seconds of quiet after an event of a write still open (created, modified) before a
    rescan, for writers that never close the file. A complete write (closed, moved into
    place, deleted) is rescanned at once; a file that vanished is kept until re-checked
    (`recheck`), so an editor's save or a `git checkout` is never seen half done."""
    resync: float = 30.0
    """Seconds between full rescans, events or not: covers lost events, a dead observer
    thread and a replaced directory (`domctl run --resync`)."""
    recheck: float = 1.0
    """Seconds after which a manifest file that vanished or became empty (holds no document)
    is read again before its domains count as removed: an in-place rewrite (truncate, then
    write) caught half-done is never taken as a removal."""
    max_manifest_bytes: int = 1024 * 1024
    """Bytes one manifest file may have (`domctl run --max-manifest-bytes`, also the limit of
    `domctl validate`): a bigger file is refused unread, as invalid, so one huge or hostile
    file cannot stall the loading of the others (a 1 MiB file of 7000 domains loads in ~3 s)."""


@dataclass(frozen=True)
class EngineSettings:
    """The controller loop: workers, the desired store, backoffs and jobs (engine/)."""

    workers: int = 4
    """Domains reconciled in parallel; never two passes on one domain (`--workers`)."""
    max_parallel_starts: int | None = None
    """Starts in flight at once across workers (`--max-parallel-starts`: bounds a boot storm;
    higher spec.startPriority first when several wait); None: only the workers bound them."""
    prune: PruneSettings = PruneSettings()
    """Removal of domains whose manifests are gone."""
    crash_loop: CrashLoopSettings = CrashLoopSettings()
    """Restarts of domains that keep stopping or failing to start."""
    errors: BackoffSettings = BackoffSettings()
    """Retries of passes that raised a transient error."""
    jobs: JobSettings = JobSettings()
    """The per-domain job lock."""
    stop_timeout: float = 20.0
    """Seconds SIGTERM waits for passes in progress before cancelling them (domains keep
    running either way; a cancelled pass is redone by the next controller)."""
    resync: float = SourceSettings.resync
    """Seconds after which a domain nothing happened to is reconciled again: a converged
    domain is re-observed (drift that raises no event, such as a container frozen by someone
    else, is corrected) and a domain stalled by host validation (a missing image, unusable
    kvm) is re-checked, so fixing the host needs no manifest edit. `domctl run` sets it and
    the directory rescan from --resync."""


@dataclass(frozen=True)
class NetworkSettings:
    """Managed networks (engine/networks.py, reconcilers/net/)."""

    resync: float = SourceSettings.resync
    """Seconds after which a network nothing happened to is checked again: a bridge deleted
    or a table flushed by hand raises no event, so this bounds how long such drift lasts (a
    killed dnsmasq is seen at once, by its exit). `domctl run --resync` sets it."""
    removal_recheck: float = 5.0
    """Seconds between checks of a removed network still used by running domains: its
    removal waits for them (RemovalBlocked), and each of their stops also brings it back."""
    dnsmasq_user: str = "nobody"
    """The account dnsmasq drops to after binding its ports and opening its files."""
    dnsmasq_group: str = "nogroup"
    """And its group."""


@dataclass(frozen=True)
class HookSettings:
    """Hook scripts with libvirt's contract (engine/hooks.py)."""

    timeout: float = 30.0
    """Seconds each script may run before its process group is killed (counts as a failure,
    which for `prepare`/`start` aborts the start)."""


@dataclass(frozen=True)
class ApiSettings:
    """The API's Unix sockets (api/server.py) and what they wait for (api/backend.py)."""

    max_request: int = 65536
    """Bytes an HTTP request's line, each of its headers and its body may have; a longer
    body is refused with 413 TooLarge, a longer line or header with 400."""
    request_timeout: float = 10.0
    """Seconds a connection may stay without a complete request (or idle after one) before the
    server closes it, so a stuck client cannot hold a connection open."""
    log_poll: float = 0.25
    """Seconds between polls of a followed log file (`domctl logs -f`)."""
    close_timeout: float = 5.0
    """Seconds `close()` lets unfinished requests run at shutdown before cancelling them."""
    act_timeout: float = 30.0
    """Seconds an imperative action (`domctl stop NAME`, ...) waits, plus the domain's
    shutdownTimeout, for the domain to reach its state before answering "still under way"."""


@dataclass(frozen=True)
class MetricsSettings:
    """The Prometheus listener (service/metrics.py)."""

    address: str | None = None
    """HOST:PORT to serve /metrics on; None: no listener (`--metrics`; off by default)."""
    snapshot_timeout: float = 5.0
    """Seconds a scrape waits for the event loop to hand over the domains; longer fails the
    scrape (Prometheus records `up == 0`) instead of blocking the HTTP thread."""


@dataclass(frozen=True)
class EventSettings:
    """The event log and the audit log (state/events.py)."""

    max_bytes: int = 10 * 1024 * 1024
    """Size in bytes past which events.jsonl / audit.jsonl is rotated to `.1` (one old file
    is kept): bounded disk use on a host that runs for years."""
    subscriber_queue: int = 1000
    """Records a live subscriber (`domctl events --follow`) may fall behind before it is
    dropped: a stuck client must not grow the daemon's memory."""


@dataclass(frozen=True)
class FleetSettings:
    """Fleet mode (`domctl run --etcd`, controller/fleet/): the desired state from etcd, this
    host registered under a lease, the domains placed here reconciled (docs/fleet.md)."""

    endpoints: tuple[str, ...]
    """etcd client URLs or HOST:PORTs (`--etcd a:2379,b:2379`); a call fails over between them."""
    host: str
    """This host's name in the fleet (`--host`): `hosts/<host>`, and what placements name."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Labels a placement.selector matches (`--host-labels k=v,...`)."""
    prefix: str = "/domctl/v1/"
    """The keys' prefix (`--prefix`): one fleet per prefix."""
    ttl: int = 10
    """Seconds of the host's lease (`--host-ttl`): a host gone for this long is NotReady and its
    failover domains move; it fences itself at max(2, ttl/5) seconds before (fencing.py)."""
    scheduler: bool = True
    """Whether this host stands in the scheduler's election (`--no-scheduler`: never; one
    host leads at a time, any of those standing takes over when it goes)."""


def _qemu_settings() -> QemuSettings:
    from reconcilers.qemu.layout import QemuSettings  # imports the driver: only for a Settings
    return QemuSettings()


@dataclass(frozen=True)
class Settings:
    """Everything `domctl run` is told, built once from its flags."""

    paths: Paths
    """The directories: manifests, state, runtime, logs, hooks (per-user defaults)."""
    engine: EngineSettings = EngineSettings()
    """The controller loop."""
    source: SourceSettings = SourceSettings()
    """The manifests-directory watcher."""
    hooks: HookSettings = HookSettings()
    """Hook scripts (their directory is `paths.hooks_dir`)."""
    events: EventSettings = EventSettings()
    """The event and audit logs."""
    api: ApiSettings = ApiSettings()
    """The API sockets."""
    metrics: MetricsSettings = MetricsSettings()
    """The Prometheus listener."""
    networks: NetworkSettings = NetworkSettings()
    """Managed networks: their re-check period and dnsmasq's account."""
    qemu: QemuSettings = field(default_factory=_qemu_settings)
    """How the qemu driver runs qemu: binary, cgroup parent, VNC ports, QMP timeouts."""
    fleet: FleetSettings | None = None
    """Fleet mode: the desired state from etcd; None: from the manifests directory."""
