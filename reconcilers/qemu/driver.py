"""QemuDriver: the Driver protocol for qemu domains, one daemonized qemu and one QMP client each.

Constructed once by the controller with a DriverContext (and QemuSettings); the reconciler
calls its operations under the domain's job lock. qemu runs daemonized in its own session and
cgroup, so it outlives this driver and the controller; `close()` leaves it running and
`reattach()` adopts it again after proving its identity (pid, boot id, kernel start time,
name and uuid in its command line, and QMP's own query-name/query-uuid).

The domains it holds are kept by tracking.py, which also meets what they do on their own: QMP
events and the pidfd exit, classified by events.py and reported through DriverContext.on_event,
and restart- and destroy-type lifecycle actions. NICs on taps (checked, created before the
launch, hotplugged) are nics.py's; the guest agent is agent.py's; volumes, cloud-init seeds and
UEFI variables in the storage pool (checked, made before the launch, grown live, listed,
released when the domain is removed) are storage.py's; vCPUs, memory and disks plugged live are
hotplug.py's; the figures of `stats` (QMP block and balloon, /proc, the taps) are stats.py's.

Managed save (libvirt's managedsave): `save` stops the guest, writes its state to a file in the
state directory through a migration (migration.py) with the domain's live spec (livespec.py)
and its device layout (devices.py) beside it, committed atomically (savestate.py), then quits
qemu: the exit is reported as the save's, shutoff/saved. `restore` launches qemu as `start`
does, with the saved spec and layout and `-incoming defer`, loads the state, and continues (or
stays paused as saved); the image is deleted once the guest runs from it. A save the controller
did not see through is settled when the qemu is re-attached: finished (quit) if its image was
committed, else undone (the guest resumed if it was running).

It never kills a process it has not proven to be its own, and never blocks the event loop
for long (cgroup removal, which may wait for the kernel, runs in a thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
from collections.abc import Sequence
from typing import Any

import structlog

from reconcilers.diff import classify_changes, live_after_apply
from reconcilers.driver import (
    Capabilities,
    ChangeKind,
    Console,
    Display,
    DriverContext,
    GuestInterfaces,
    Live,
    RuntimeRecord,
    SavedImage,
)
from reconcilers.errors import DriverError, HostValidationError, NotSupportedError, TerminalError
from reconcilers.identity import boot_id, proc_starttime, start_token
from reconcilers.model import (
    Accel,
    Domain,
    DomainSpec,
    DriverName,
    LifecycleAction,
    Reason,
    SerialMode,
    State,
)
from reconcilers.qemu import (
    agent,
    changes,
    devices,
    hostcheck,
    hotplug,
    livespec,
    migration,
    nics,
    pinning,
    process,
    stats,
    storage,
)
from reconcilers.qemu.adopt import IdentityProblem, lifecycle_from_extra, prove, record_extra
from reconcilers.qemu.argv import build_argv
from reconcilers.qemu.bringup import Bringup
from reconcilers.qemu.capabilities import CapabilityCache, QemuCaps
from reconcilers.qemu.cgroups import (
    CgroupError,
    DomainCgroup,
    Unconfined,
    live_writes,
    tuning_fields,
)
from reconcilers.qemu.escape import ValueRefused
from reconcilers.qemu.events import GuestStop, Intent, RunState, from_status, missed_stop, settle
from reconcilers.qemu.layout import DomainFiles, QemuSettings, domain_files
from reconcilers.qemu.migration import MigrationError
from reconcilers.qemu.monitor import Monitor, MonitorError
from reconcilers.qemu.runtime import Running, confine, release_taps
from reconcilers.qemu.savestate import Pending, Saved, SaveStore
from reconcilers.qemu.tracking import Tracker
from reconcilers.statemachine import LIVE_STATES, Trigger, allowed, transition
from reconcilers.stats import DomainStats
from reconcilers.storage.pool import Pool
from reconcilers.storage.volumes import Action as VolumeAction

log = structlog.get_logger(__name__)


class QemuDriver:
    """qemu domains: launch, QMP control, pidfd exits, re-attach."""

    name = DriverName.QEMU

    def __init__(self, context: DriverContext, settings: QemuSettings | None = None) -> None:
        self._ctx = context
        self._settings = settings or QemuSettings()
        self._caps = CapabilityCache(context.state_dir / "qemu" / "capabilities.json")
        self._tracked = Tracker(self._settings, context.on_event)
        self._vhost: nics.Vhost | None = None
        self._pool = Pool(self._settings.pool_dir or context.state_dir / "pool")
        self._saves = SaveStore(context.state_dir / "qemu" / "saved")
        self._saving: set[str] = set()  # domains whose save is under way here

    @property
    def vhost(self) -> nics.Vhost:
        """Whether tap NICs get vhost-net: /dev/vhost-net probed once per driver."""
        if self._vhost is None:
            self._vhost = nics.probe_vhost()
        return self._vhost

    # --- probing and validation ------------------------------------------------------------

    async def _qemu_caps(self) -> QemuCaps:
        return await self._caps.get(self._settings.binary)

    async def capabilities(self) -> Capabilities:
        summary = (await self._qemu_caps()).summary()
        if not summary.available:
            return summary
        return dataclasses.replace(summary, message=f"{summary.message}; {self.vhost.note}",
                                   details={**summary.details, "vhost_net": self.vhost.usable})

    async def validate(self, domain: Domain) -> None:
        await self._checked(domain)

    async def _checked(self, domain: Domain) -> tuple[QemuCaps, Accel, str, storage.Plan]:
        """Host validation plus a dry run of the argv builder (refused values name the field);
        the plan of the domain's storage."""
        caps = await self._qemu_caps()
        accel, note = hostcheck.validate(domain, caps)
        await nics.check_host(domain)
        asked = tuning_fields(domain.spec)
        if asked and not DomainCgroup(domain.name, self._settings.cgroup_parent).creatable():
            raise HostValidationError(domain.name, asked[0], "needs a cgroup domctl may create: "
                                      "run domctl as root, or delegate a cgroup hierarchy")
        plan = await storage.check(domain, self._pool)
        try:
            build_argv(domain, caps.binary, accel, self._files(domain.name, plan),
                       self._settings.vnc_port_min)
        except ValueRefused as exc:
            raise HostValidationError(domain.name, exc.field, exc.message) from exc
        return caps, accel, note, plan

    def _files(self, name: str, plan: storage.Plan | None = None) -> DomainFiles:
        """The domain's files; with its storage `plan`, what its argv names in the storage
        pool and OVMF."""
        files = domain_files(self._ctx.runtime_dir, self._ctx.log_dir, name)
        if plan is None:
            return files
        return dataclasses.replace(files, pool=plan.pool, ovmf=plan.ovmf)

    # --- start -----------------------------------------------------------------------------

    async def start(self, domain: Domain, paused: bool, token: str) -> Live:
        return await self._bring_up(domain, token, paused)

    async def restore(self, domain: Domain, token: str) -> Live:
        """`start` from the managed-save image: qemu launched with the saved spec (the engine
        restores only when no restart-only field changed since) and the saved run's devices,
        waiting for the state; loaded, continued unless it was saved paused; the image then
        deleted. The domain's live spec is the image's (SavedImage.spec)."""
        name = domain.name
        saved = self._saves.load(name)
        if saved is None:
            raise DriverError(name, "restore", "no managed-save image")
        live = await self._bring_up(dataclasses.replace(domain, spec=saved.image.spec), token,
                                    saved.image.paused, saved)
        await asyncio.to_thread(self._saves.discard, name)  # the guest runs from it now
        return live

    async def _bring_up(self, domain: Domain, token: str, paused: bool,
                        saved: Saved | None = None) -> Live:
        """A start, or with `saved` a restore: qemu launched, the state loaded if restoring,
        the steps before `cont`, and `cont` unless `paused`."""
        name, spec = domain.name, domain.spec
        operation = "start" if saved is None else "restore"
        previous = self._tracked.get(name)
        if previous is not None:
            if not previous.gone:
                raise DriverError(name, operation, "already running")
            await previous.settled()  # its exit is reported before the new run begins
        strays = process.running_pids(self._files(name))
        if strays:  # before the host check: its image locks would name our own qemu's disks
            raise DriverError(name, operation, f"a qemu for this domain already runs as pid "
                                               f"{strays[0]} but is not adopted; not starting "
                                               "another")
        caps, accel, note, plan = await self._checked(domain)
        if saved is not None:
            _check_restorable(name, plan)
        if accel is Accel.KVM and caps.kvm_pvm and spec.cpu.model is None:
            # PVM's KVM refuses `-cpu host`'s MSRs (qemu aborts setting IA32_ARCH_CAPABILITIES):
            # an explicit `accel: kvm` there runs the model tcg would, qemu64
            domain = dataclasses.replace(domain, spec=dataclasses.replace(
                spec, cpu=dataclasses.replace(spec.cpu, model="qemu64")))
        assert spec.qemu is not None and domain.metadata.uuid is not None
        files = self._files(name, plan)
        done = await storage.prepare(name, plan)
        if done:
            files.prepare()
            for what in done:
                process.log_line(files, f"storage: {what}")
            log.info("storage prepared", domain=name, done=done)
        monitor = self._tracked.monitor(name)
        pid, bringup = await self._launch(domain, caps.binary, accel, files, token, monitor,
                                          saved.layout if saved is not None else None)
        tracked = self._new_tracked(domain, pid, files, note, bringup.cgroup, monitor)
        try:
            livespec.write(files, spec)  # the manifest's, not the PVM model above
            await bringup.ready(pid)
            if saved is not None:
                await _load(tracked, saved)
            await self._prepare(tracked, spec)
            started = transition(State.SHUTOFF, _TRIGGERS[saved is not None, paused])
            tracked.run.state, tracked.run.reason = started.target, started.reason
            if not paused:
                await tracked.qmp.cont()
        except (CgroupError, MonitorError, pinning.PinningError, OSError, MigrationError) as exc:
            message = process.qemu_error(files.stderr) or str(exc)
            await self._abort(tracked, message)
            raise DriverError(name, operation, message) from exc
        except BaseException as exc:  # a bug, a cancel: never leave a half-started qemu
            await asyncio.shield(self._abort(tracked, repr(exc)))
            raise
        what = "started" if saved is None else f"restored from {saved.image.path}:"
        process.log_line(files, f"{what} pid {pid} ({note}){' paused' if paused else ''}")
        log.info("domain started" if saved is None else "domain restored", domain=name,
                 pid=pid, paused=paused, accel=note)
        # what qemu said to `cont` (or is at -S): no query-status; a change since is an event
        return Live(tracked.run.state, tracked.run.reason, pid=pid, record=tracked.record,
                    message=tracked.message)

    async def _launch(self, domain: Domain, binary: str, accel: Accel, files: DomainFiles,
                      token: str, monitor: Monitor, restore: devices.Layout | None = None
                      ) -> tuple[int, Bringup]:
        """Taps, cgroup (limits written), then qemu, its cgroup move and QMP connect begun as
        it initialises; the daemon's pid. On a failure nothing of the start is left, and
        DriverError says why. `restore`: see argv.py."""
        name = domain.name
        bringup: Bringup | None = None
        try:
            await nics.plug(domain, self.vhost.usable)
            bringup = Bringup(confine(name, domain.spec, self._settings.cgroup_parent), monitor,
                              files.qmp)
            pid = await process.launch_domain(domain, binary, accel, files, self._settings,
                                              token, self.vhost.usable,
                                              spawned=bringup.spawned, restore=restore)
        except BaseException as exc:
            if bringup is not None:
                await asyncio.shield(bringup.abandon())
            if not isinstance(exc, process.LaunchError | CgroupError):
                raise
            message = exc.message if isinstance(exc, process.LaunchError) else str(exc)
            await release_taps(name)  # qemu is not running: nothing holds them
            log.warning("qemu failed to start", domain=name, error=message)
            self._tracked.last_stops[name] = Reason.FAILED
            raise DriverError(name, "start", message) from exc
        return pid, bringup

    def _new_tracked(self, domain: Domain, pid: int, files: DomainFiles, note: str,
                     cgroup: DomainCgroup | None = None, monitor: Monitor | None = None
                     ) -> Running:
        name = domain.name
        assert domain.metadata.uuid is not None
        extra = record_extra(str(files.qmp), note, self._settings.cgroup_parent,
                             domain.spec.lifecycle)
        record = RuntimeRecord(name=name, driver=DriverName.QEMU, uuid=domain.metadata.uuid,
                               pid=pid, boot_id=boot_id(), starttime=proc_starttime(pid) or 0,
                               extra=extra)
        self._tracked.last_stops.pop(name, None)
        tracked = self._tracked.track(record, domain.spec.lifecycle,
                                      monitor or self._tracked.monitor(name),
                                      RunState(State.PAUSED, Reason.STARTING_UP), files, cgroup)
        tracked.taps = nics.has_taps(domain.spec.qemu.nics if domain.spec.qemu else ())
        return tracked

    async def _prepare(self, tracked: Running, spec: DomainSpec) -> None:
        """Steps between bring-up and `cont`: pinning, link states, balloon."""
        await pinning.apply(tracked.qmp, tracked.record.pid, spec.cputune)
        await nics.set_links(tracked.qmp, spec.qemu.nics if spec.qemu else ())
        if spec.current_memory is not None and spec.current_memory != spec.memory:
            await tracked.qmp.balloon(spec.current_memory)

    async def _abort(self, tracked: Running, message: str) -> None:
        """Undo a half-done start: kill the process we just launched, drop its cgroup."""
        tracked.run.intent = Intent.ABORT
        with contextlib.suppress(ProcessLookupError):
            os.kill(tracked.record.pid, signal.SIGKILL)
        await tracked.settled()
        self._tracked.last_stops[tracked.record.name] = Reason.FAILED
        log.warning("start aborted", domain=tracked.record.name, error=message)

    # --- control ----------------------------------------------------------------------------

    def _require(self, name: str, operation: str) -> Running:
        tracked = self._tracked.get(name)
        if tracked is None or tracked.gone:
            raise DriverError(name, operation, "not running under this controller")
        return tracked

    async def suspend(self, name: str) -> None:
        tracked = self._require(name, "suspend")
        tracked.run.intent = Intent.SUSPEND
        with tracked.failing_as("suspend"):
            await tracked.qmp.stop()
        settle(tracked.run, Trigger.SUSPEND)

    async def resume(self, name: str) -> None:
        tracked = self._require(name, "resume")
        tracked.run.intent = Intent.RESUME
        with tracked.failing_as("resume"):
            await tracked.qmp.cont()
        settle(tracked.run, Trigger.RESUME)

    def _untracked(self, name: str, operation: str) -> None:
        """Nothing to do for a domain that is not running; refuse one that runs unadopted."""
        strays = process.running_pids(self._files(name))
        if strays:
            stray = strays[0]
            raise DriverError(name, operation, f"qemu pid {stray} was not started or adopted by "
                                               "this controller; refusing to touch it")

    async def shutdown(self, name: str, timeout: float) -> bool:
        tracked = self._tracked.get(name)
        if tracked is None:
            self._untracked(name, "shutdown")
            return True
        tracked.run.intent = Intent.SHUTDOWN
        try:
            if tracked.run.guest_stop is not GuestStop.NONE:
                await tracked.qmp.quit()  # already powered off and preserved
            else:
                with tracked.failing_as("shutdown"):
                    await tracked.qmp.system_powerdown()
        except DriverError:
            if not tracked.gone:
                raise
        if not await tracked.watch.wait(timeout):
            tracked.run.intent = Intent.NONE  # a later power-off is the guest's own doing
            log.info("shutdown timed out; domain still running", domain=name, timeout=timeout)
            return False
        await tracked.settled()
        return True

    async def destroy(self, name: str) -> None:
        tracked = self._tracked.get(name)
        if tracked is None:
            self._untracked(name, "destroy")
            return
        tracked.run.intent = Intent.DESTROY
        await self._tracked.end(tracked, "destroy")

    # --- observation and adoption -----------------------------------------------------------

    async def observe(self, name: str) -> Live:
        tracked = self._tracked.get(name)
        if tracked is not None and tracked.gone:
            await tracked.settled()
            tracked = self._tracked.get(name)
        if tracked is None:
            strays = process.running_pids(self._files(name))
            if strays:
                stray = strays[0]
                return Live(State.NOSTATE, Reason.UNKNOWN, pid=stray,
                            message=f"qemu pid {stray} runs for this domain but was not started "
                                    "or adopted by this controller; it is left alone")
            return Live(State.SHUTOFF, self._tracked.last_stops.get(name, Reason.UNKNOWN))
        try:
            status = await tracked.qmp.query_status()
        except MonitorError as exc:
            return Live(tracked.run.state, tracked.run.reason, pid=tracked.record.pid,
                        record=tracked.record, message=f"monitor: {exc.message}")
        state, reason = from_status(status.status, tracked.run)
        return Live(state, reason, pid=tracked.record.pid, record=tracked.record,
                    message=tracked.message)

    async def reattach(self, record: RuntimeRecord) -> Live | None:
        name = record.name
        monitor = self._tracked.monitor(name)
        try:
            await prove(record, monitor)
        except IdentityProblem as problem:
            await monitor.close()
            if problem.gone:
                log.info("domain gone since the last controller run", domain=name)
                await release_taps(name)
                return None
            log.warning("not adopting process", domain=name, pid=record.pid, why=problem.message)
            return Live(State.NOSTATE, Reason.UNKNOWN, pid=record.pid, message=problem.message)
        tracked = self._tracked.track(record, lifecycle_from_extra(record.extra), monitor,
                                      RunState(State.RUNNING, Reason.UNKNOWN), self._files(name))
        try:
            await self._settle_save(tracked)
        except MonitorError as exc:
            log.warning("cannot settle a save cut short", domain=name, error=exc.message)
        live = await self.observe(name)
        missed = missed_stop(live.state, live.reason)
        if missed is not None:  # replayed on the running state it had: its action applies now
            self._tracked.on_qmp(name, *missed)
        elif live.state in LIVE_STATES:
            tracked.run.state, tracked.run.reason = live.state, live.reason
        process.log_line(tracked.files, f"re-attached to pid {record.pid}")
        log.info("domain adopted", domain=name, pid=record.pid, state=live.state.value)
        return live

    async def recover(self, domain: Domain, token: str) -> Live | None:
        """Adopt the qemu that start `token` spawned, found by its argv and proven by the
        token in its environment (the controller died before recording it). One that cannot
        be adopted (its monitor does not answer) is killed: provably this start's, never
        recorded, so no guest of anyone else's. None when there is none."""
        name, files = domain.name, self._files(domain.name)
        for pid in process.running_pids(files):
            if start_token(pid) != token:
                continue
            tracked = self._new_tracked(domain, pid, files, "recovered after a controller crash")
            try:
                livespec.write(files, domain.spec)
                tracked.confine(domain.spec, self._settings.cgroup_parent)
                await Bringup(tracked.cgroup, tracked.monitor, files.qmp).ready(pid)
                await self._prepare(tracked, domain.spec)
            except (CgroupError, MonitorError, pinning.PinningError, OSError) as exc:
                await self._abort(tracked, f"recovered start not adoptable: {exc}")
                return None
            process.log_line(files, f"recovered pid {pid} of an unrecorded start")
            log.warning("unrecorded start recovered", domain=name, pid=pid)
            return await self.observe(name)
        return None

    async def strays(self, name: str) -> tuple[str, ...]:
        tracked = self._tracked.get(name)
        mine = tracked.record.pid if tracked is not None and not tracked.gone else None
        return tuple(f"qemu pid {pid}" for pid in process.running_pids(self._files(name))
                     if pid != mine)

    # --- changes ----------------------------------------------------------------------------

    def classify(self, old: DomainSpec, new: DomainSpec) -> dict[str, ChangeKind]:
        return changes.classify(old, new)

    async def apply_live(self, name: str, old: DomainSpec, new: DomainSpec) -> list[str]:
        """The live changes of classify(old, new); hotplug first (all or nothing, hotplug.py),
        each device added or removed logged as `device-added: ...`/`device-removed: ...`.
        Once all are applied the domain's recorded live spec takes them (livespec.py)."""
        tracked = self._require(name, "apply_live")
        classification = changes.classify(old, new)
        changed = {k for k, v in classification.items() if v is ChangeKind.LIVE}
        untuned = [f for f in tuning_fields(new) if f.removeprefix("spec.") in changed]
        if untuned and isinstance(tracked.cgroup, Unconfined):  # said, not silently dropped
            raise HostValidationError(name, untuned[0], "needs a cgroup domctl may create: run "
                                      "domctl as root, or delegate a cgroup hierarchy")
        if any(path.startswith(changes.DISKS) for path in changed):
            assert new.qemu is not None
            with tracked.failing_as("apply_live"):
                await storage.grow(name, tracked.qmp, self._pool.of(name), new.qemu, changed)
        try:
            # the memory limit follows hot-added memory (first: the DIMM needs the room); a
            # size that waits for a restart leaves it as it is
            writes = live_writes(old, dataclasses.replace(
                new, memory=new.memory if "memory" in changed else old.memory),
                tracked.cgroup.version)
            await asyncio.to_thread(tracked.cgroup.write, writes)
        except CgroupError as exc:
            raise DriverError(name, "apply_live", str(exc)) from exc
        with tracked.failing_as("apply_live"):
            plugged = await hotplug.apply(tracked, old, new, changed, self._pool)
        try:
            if changed & {"cputune.vcpupin", "cputune.emulatorpin", "vcpus"}:
                await pinning.apply(tracked.qmp, tracked.record.pid, new.cputune)
        except (pinning.PinningError, MonitorError) as exc:
            raise DriverError(name, "apply_live", str(exc)) from exc
        with tracked.failing_as("apply_live"):
            if "current_memory" in changed:
                await tracked.qmp.balloon(new.current_memory or new.memory)
            if "lifecycle.on_reboot" in changed:
                await tracked.qmp.set_action(
                    "reset" if new.lifecycle.on_reboot is LifecycleAction.RESTART else "shutdown")
        tracked.lifecycle = new.lifecycle
        await nics.apply_live(tracked, old, new, changed, self.vhost.usable)  # may wait longest
        livespec.write(tracked.files, live_after_apply(old, new, classify_changes(
            old, new, classification)))
        log.info("live changes applied", domain=name, fields=sorted(changed), devices=plugged)
        return plugged

    def console(self, name: str, spec: DomainSpec) -> Console:
        serial = spec.qemu.serial if spec.qemu is not None else SerialMode.LOG
        if serial is not SerialMode.SOCKET:
            raise TerminalError(
                f"{name}: spec.qemu.serial is {serial.value}: "
                + ("its output is in the domain log (`domctl logs -f`)"
                   if serial is SerialMode.LOG else "use the pty qemu reports in the domain log")
                + "; set `serial: socket` for an interactive console")
        return Console(socket=str(self._files(name).serial))

    async def interfaces(self, name: str) -> GuestInterfaces:
        """The guest agent's view (agent None without `guestAgent`, whose socket qemu makes)."""
        tracked = self._tracked.get(name)
        if tracked is None or tracked.gone or not tracked.files.agent.exists():
            return GuestInterfaces()
        async with tracked.agent_lock:  # qemu serves one client on the channel at a time
            return await agent.guest_interfaces(tracked.files.agent)

    async def stats(self, name: str) -> DomainStats:
        """QMP's block and balloon figures, the process's CPU and RSS, the taps' traffic."""
        tracked = self._require(name, "stats")
        with tracked.failing_as("stats"):
            try:
                return await stats.read(tracked)
            except (OSError, ValueError) as exc:  # qemu or a tap gone meanwhile
                raise DriverError(name, "stats", str(exc)) from exc

    def exec_argv(self, name: str, command: Sequence[str]) -> tuple[str, ...]:
        raise NotSupportedError("qemu", "exec (a VM has no way in from the host: use ssh, or "
                                "`domctl console` with `serial: socket`)")

    async def display(self, name: str) -> Display | None:
        """qemu's own answer (QMP query-vnc), so an automatic port is the one it took."""
        tracked = self._require(name, "display")
        with tracked.failing_as("display"):
            listening = await tracked.qmp.query_vnc()
        return Display(*listening) if listening is not None else None

    # --- managed save ---------------------------------------------------------------------

    async def save(self, name: str) -> SavedImage:
        """libvirt's managedsave of a running or paused guest (anything else: DriverError):
        stopped, its state written, the image committed with the live spec and device layout,
        qemu quit; the exit is reported as shutoff/saved (suspended/paused first for a running
        guest) before this returns. A failure before the commit leaves no image and the guest
        as it was (resumed if it ran); a qemu killed meanwhile is an ordinary exit."""
        tracked = self._require(name, "save")
        spec = livespec.read(tracked.files)
        if spec is None:
            raise DriverError(name, "save", "the spec of this run is not recorded (started "
                                            "by an older domctl): not saved")
        run = tracked.run
        if run.intent is not Intent.NONE or not allowed(run.state, Trigger.SAVE):
            raise DriverError(name, "save", f"the domain is {run.state.value}/"
                                            f"{run.reason.value}: only a running or paused "
                                            "guest is saved")
        with tracked.failing_as("save"):
            status = await tracked.qmp.query_status()
        # prelaunch: started paused and never run; qemu migrates it out like a paused guest
        if status.status not in ("running", "paused", "prelaunch"):
            raise DriverError(name, "save", f"qemu is in state {status.status}: only a running "
                                            "or paused guest is saved")
        self._saving.add(name)
        try:
            pending = await asyncio.to_thread(self._saves.begin, name, not status.running)
            saved = await self._save(tracked, pending, spec, not status.running)
        finally:
            self._saving.discard(name)
        process.log_line(tracked.files, f"saved to {saved.image.path} "
                                        f"({saved.image.size} bytes)")
        log.info("domain saved", domain=name, image=saved.image.path, size=saved.image.size,
                 paused=saved.image.paused)
        await self._tracked.quit(tracked)
        await tracked.settled()
        return saved.image

    async def _save(self, tracked: Running, pending: Pending, spec: DomainSpec,
                    paused: bool) -> Saved:
        name, qmp, run = tracked.record.name, tracked.qmp, tracked.run
        run.intent = Intent.SAVE
        try:
            if not paused:
                await qmp.stop()
            layout = await devices.read(qmp)
            await migration.save(qmp, pending.fd, migration.timeout_for(spec.memory))
            saved = await asyncio.to_thread(self._saves.commit, name, pending, spec, layout,
                                            paused)
        except BaseException as exc:
            await asyncio.shield(asyncio.to_thread(self._saves.abandon, pending))
            run.intent = Intent.NONE
            if not tracked.gone and not paused:
                with contextlib.suppress(MonitorError):
                    await qmp.cont()  # not saved: the guest runs on
            if isinstance(exc, MonitorError | MigrationError | OSError):
                message = getattr(exc, "message", None) or str(exc)
                raise DriverError(name, "save", message) from exc
            raise
        run.intent = Intent.SAVED
        return saved

    def saved_image(self, name: str) -> SavedImage | None:
        """The committed image, if any (a damaged one is discarded, logged); a save cut short
        by a crash leaves files that go here."""
        try:
            saved = self._saves.load(name)
            if saved is None and name not in self._saving:
                self._saves.sweep(name)
        except OSError as exc:
            log.warning("managed-save directory unreadable", domain=name, error=str(exc))
            return None
        return saved.image if saved is not None else None

    async def discard_saved(self, name: str) -> None:
        await asyncio.to_thread(self._saves.discard, name)

    async def _settle_save(self, tracked: Running) -> None:
        """A qemu re-attached in the middle of a save the controller died in (qemu's own
        state says an outgoing migration: postmigrate once it completed, or one under way or
        failed while the save's marker is on disk): finished if its image was committed (quit:
        the exit is the save's), else undone (the migration cancelled, the partial files
        removed, the guest resumed if it ran)."""
        name, qmp = tracked.record.name, tracked.qmp
        status = (await qmp.query_status()).status
        if status == "postmigrate" and self._saves.load(name) is not None:
            tracked.run.intent = Intent.SAVED  # found paused: its exit is stopped/saved
            log.warning("finishing a save found committed", domain=name)
            tracked.spawn(self._tracked.quit(tracked))
            return
        was_paused = self._saves.interrupted(name)
        migration_status = (await qmp.query_migrate()).status
        if was_paused is None or (status != "postmigrate" and migration_status in (
                "none", "completed", "cancelled")):
            return
        with contextlib.suppress(MonitorError):
            await qmp.migrate_cancel()
        await asyncio.to_thread(self._saves.sweep, name)  # an older committed save stays
        if not was_paused:
            await qmp.cont()
        log.warning("undid a save cut short", domain=name, resumed=not was_paused)

    # --- storage ----------------------------------------------------------------------------

    async def disks(self, name: str, spec: DomainSpec) -> list[dict[str, Any]]:
        """The domain's block devices for its status (virsh domblklist + domblkinfo): each
        disk's file (its source, or its volume in the pool), base image, format, virtual and
        allocated size from `qemu-img info -U` (one run per device, in parallel; a volume not
        made yet says so), the cdrom and the cloud-init seed."""
        return await storage.listing(spec, self._pool.of(name))

    async def release_storage(self, name: str, spec: DomainSpec) -> list[str]:
        """For a domain being removed (stopped): delete its volumes whose deletePolicy is
        Delete, its seed, and its UEFI variables unless a volume is kept; the paths kept."""
        tracked = self._tracked.get(name)
        if (tracked is not None and not tracked.gone) or process.running_pids(self._files(name)):
            raise DriverError(name, "release_storage", "the domain is running")
        return await storage.release(name, spec, self._pool.of(name))

    async def close(self) -> None:
        await self._tracked.close()


_TRIGGERS = {(False, False): Trigger.START, (False, True): Trigger.START_PAUSED,
             (True, False): Trigger.RESTORE, (True, True): Trigger.RESTORE_PAUSED}


def _check_restorable(name: str, plan: storage.Plan) -> None:
    """A saved guest's disks must be the ones it was saved with: a volume that would be made
    now (gone since) refuses the restore."""
    made = [volume for volume in plan.volumes if volume.action is VolumeAction.CREATE]
    if made:
        raise DriverError(name, "restore", f"volume {made[0].path} is gone since the save: "
                                           "its state cannot be restored (a boot discards it)")


async def _load(tracked: Running, saved: Saved) -> None:
    """The saved state into the qemu just launched with `-incoming defer`."""
    fd = os.open(saved.image.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        await migration.load(tracked.qmp, fd, migration.timeout_for(saved.image.spec.memory))
    finally:
        os.close(fd)
