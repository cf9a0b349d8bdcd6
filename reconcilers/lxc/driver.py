"""LxcDriver: the Driver protocol for LXC containers, on a private lxcpath under the state dir.

Constructed once by the controller with a DriverContext; the reconciler calls its operations
under the domain's job lock. Containers run detached (`lxc-start -d`): their monitors are LXC's
own processes, so they outlive this driver and the controller. The containers it holds are kept
by tracking.py, which sees init's exit through a pidfd (identity.ExitWatch), classifies it from
what we asked and what LXC logged (exits.py), and reports it through DriverContext.on_event.
NICs are veth pairs LXC makes from the config at the start (config.py); nics.py checks their
bridges beforehand, adds, removes and switches them on a running container, and reads the
container's addresses. A container's own storage (an unpacked image, a busybox overlay's layer) is
made by storage.py before its first start, kept, and released by `release_storage` when the
domain is removed. Its figures (`stats`: cgroup v1 or v2, veths) are stats.py's. Containers
are unprivileged unless the spec says otherwise: their ids are mapped to the range idmap.py
finds.

It never touches a container it cannot prove it started (name, init pid, boot id and the
kernel start time must agree), never loads liblxc, and close() leaves every container running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

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
from reconcilers.errors import DriverError, HostValidationError, NotSupportedError
from reconcilers.identity import boot_id, proc_starttime, same_process, start_token
from reconcilers.lxc import changes, host, nics, stats, validation
from reconcilers.lxc.config import NAME_RE, UNLIMITED, ConfigValueError, HostFacts, cgroup_limits
from reconcilers.lxc.exits import Intent
from reconcilers.lxc.files import ContainerFiles
from reconcilers.lxc.halt import HALT, handler_within
from reconcilers.lxc.idmap import shadow_stand_ins
from reconcilers.lxc.storage import Prepared, Storage, StorageError
from reconcilers.lxc.tools import Info, LxcState, LxcTools, execute
from reconcilers.lxc.tracking import SETTLE_TIMEOUT, Tracked, Tracker
from reconcilers.model import REASONS_BY_STATE, Domain, DomainSpec, DriverName, Reason, State
from reconcilers.net.nics import check_ready
from reconcilers.stats import DomainStats

FREEZE_TIMEOUT = 10.0  # seconds a freeze may take before it is undone and reported
HALT_CHECK = 3.0  # seconds a new init has to install a handler for its halt signal
EXEC_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # domctl exec's
_LXC_STATE = {
    LxcState.RUNNING: State.RUNNING, LxcState.THAWED: State.RUNNING,
    LxcState.FROZEN: State.PAUSED, LxcState.FREEZING: State.PAUSED,
    LxcState.STARTING: State.RUNNING, LxcState.STOPPING: State.SHUTDOWN,
    LxcState.ABORTING: State.SHUTDOWN, LxcState.STOPPED: State.SHUTOFF,
}

log = structlog.get_logger(__name__)


class LxcDriver:
    """LXC containers driven with lxc-start/-info/-freeze/-unfreeze/-stop/-cgroup."""

    name = DriverName.LXC

    def __init__(self, context: DriverContext) -> None:
        self._files = ContainerFiles(context.state_dir, context.log_dir)
        self._lxcpath = self._files.lxcpath
        self._tools = LxcTools(self._lxcpath)
        self._storage = Storage(self._files)
        self._facts: HostFacts | None = None  # probed at first use
        self._caps: Capabilities | None = None
        self._tracked = Tracker(self._tools, self._files, context.on_event)

    # --- probing and validation -----------------------------------------------------------

    async def capabilities(self) -> Capabilities:
        if self._caps is None:
            self._caps = await self._probe()
        return self._caps

    async def _probe(self) -> Capabilities:
        missing = host.missing_tools()
        if missing:
            return Capabilities(DriverName.LXC, False, message="missing: " + ", ".join(missing))
        if os.geteuid() != 0:
            return Capabilities(DriverName.LXC, False, message="needs root")
        try:
            version = (await execute(["lxc-start", "--version"], "-")).stdout.strip()
        except DriverError as exc:
            return Capabilities(DriverName.LXC, False, message=exc.message)
        facts = self._host_facts()
        idmap = facts.idmap
        return Capabilities(DriverName.LXC, True, version=version,
                            details={"cgroup": facts.cgroup.value, "apparmor": facts.apparmor,
                                     "lxcpath": str(self._lxcpath), "cpus": len(facts.cpus),
                                     "idmap": f"{idmap.uid}:{idmap.gid}:{idmap.count}"
                                     if idmap else facts.idmap_problem})

    def _host_facts(self) -> HostFacts:
        if self._facts is None:
            self._facts = host.probe_facts()
        return self._facts

    async def validate(self, domain: Domain) -> None:
        facts = self._host_facts()
        validation.check(domain, facts, self._files)
        check_ready(domain)  # a network not up yet: the domain waits for it
        # the rootfs is made at the start; any path renders the same lines
        validation.render(domain, facts, self._files, str(self._files.rootfs(domain.name)))
        await nics.check_bridges(domain)

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, domain: Domain, paused: bool, token: str) -> Live:
        name = domain.name
        bound = log.bind(domain=name)
        await self.validate(domain)
        assert domain.spec.lxc is not None and domain.metadata.uuid is not None
        if (await self._tools.info(name)).state is not LxcState.STOPPED:
            raise DriverError(name, "start", "a container of this name is already running")
        previous = self._tracked.get(name)
        if previous is not None:
            await self._tracked.settled(previous)  # its exit classified before its log is emptied
        prepared = await self._write_config(domain)
        try:
            await self._tools.start(name, domain.spec.lxc.init, token, self._path_prefix(domain))
        except DriverError as exc:
            await asyncio.to_thread(host.remove_empty_cgroups, name)
            raise DriverError(name, "start",
                              f"{exc.message}; {self._files.lxc_errors(name)}") from exc
        tracked, info = await self._track_started(domain)
        tracked.warning = prepared.warning
        if prepared.warning:
            bound.warning("container rootfs kept from another source", why=prepared.warning)
        bound.info("container started", pid=tracked.record.pid, paused=paused)
        if not paused:
            return self._live(tracked, info)  # lxc-info just said so: no second look
        try:
            await self.suspend(name)
        except DriverError:
            await self.destroy(name)
            raise
        return await self.observe(name)

    async def _write_config(self, domain: Domain) -> Prepared:
        lxc = domain.spec.lxc
        assert lxc is not None
        facts = self._host_facts()  # (validate proved the map is there if one is needed)
        try:
            prepared = await asyncio.to_thread(self._storage.prepare, domain.name, lxc,
                                               None if lxc.privileged else facts.idmap)
        except StorageError as exc:
            raise DriverError(domain.name, "start", str(exc)) from exc
        text = validation.render(domain, facts, self._files, prepared.rootfs)
        self._files.write_config(domain.name, text, lxc.init)
        return prepared

    def _path_prefix(self, domain: Domain) -> Path | None:
        """The newuidmap stand-ins' directory when LXC must write the map itself (idmap.py)."""
        idmap = self._host_facts().idmap
        assert domain.spec.lxc is not None
        if domain.spec.lxc.privileged or idmap is None or not idmap.direct:
            return None
        return shadow_stand_ins(self._files.idmap_bin)

    async def _track_started(self, domain: Domain) -> tuple[Tracked, Info]:
        name = domain.name
        info = await self._tools.info(name)
        starttime = proc_starttime(info.pid) if info.pid else None
        if info.pid is None or starttime is None:
            raise DriverError(name, "start",
                              f"init exited at once; {self._files.lxc_errors(name)}")
        assert domain.metadata.uuid is not None
        record = RuntimeRecord(name=name, driver=DriverName.LXC, uuid=domain.metadata.uuid,
                               pid=info.pid, boot_id=boot_id(), starttime=starttime,
                               extra={"lxcpath": str(self._lxcpath)})
        self._tracked.last_stops.pop(name, None)
        tracked = self._tracked.watch(record, Reason.BOOTED)
        tracked.check_task = asyncio.get_running_loop().create_task(self._check_halt(tracked))
        return tracked, info

    async def _check_halt(self, tracked: Tracked) -> None:
        """Name, right after the start, a container whose init cannot receive its halt signal:
        PID 1 of a pid namespace gets only the signals it has a handler for, so a graceful
        stop of it could only end in a destroy (`exec sleep infinity` as init is the classic)."""
        pid, name = tracked.record.pid, tracked.record.name
        if await handler_within(pid, HALT_CHECK) is False and tracked.reason is not Reason.USER:
            # (a container started paused may have been frozen before its init got that far)
            tracked.warning = (f"warning: init (pid {pid}) has no handler for its halt signal "
                               f"{HALT.name}: a graceful stop cannot reach it and ends in a "
                               "destroy")
            log.warning("container init ignores its halt signal", domain=name, pid=pid,
                        signal=HALT.name)

    async def recover(self, domain: Domain, token: str) -> Live | None:
        """Adopt the container that start `token` launched (the controller died before
        recording it): its LXC monitor carries the token in its environment. None when no
        such container runs."""
        name = domain.name
        if not any(start_token(pid) == token for pid in self._tools.monitor_pids(name)):
            return None
        if (await self._tools.info(name)).state is LxcState.STOPPED:
            return None
        tracked, info = await self._track_started(domain)
        log.warning("unrecorded start recovered", domain=name, pid=tracked.record.pid)
        return self._live(tracked, info)

    async def strays(self, name: str) -> tuple[str, ...]:
        if name in self._tracked:
            return ()
        info = await self._tools.info(name)
        if info.state is LxcState.STOPPED:
            return ()
        return (f"lxc container {name} ({info.state.value.lower()}, init pid {info.pid})",)

    async def suspend(self, name: str) -> None:
        tracked = self._require(name, "suspend")
        try:
            await self._tools.freeze(name, FREEZE_TIMEOUT)
            frozen = (await self._tools.info(name)).state is LxcState.FROZEN
        except DriverError as exc:
            frozen, message = False, exc.message
        else:
            message = "the freezer did not report FROZEN"
        if not frozen:
            # a half-frozen cgroup wedges the container: thaw it and report (lxc/lxc#4346)
            with contextlib.suppress(DriverError):
                await self._tools.unfreeze(name)
            raise DriverError(name, "suspend", f"{message}; thawed again")
        tracked.reason = Reason.USER

    async def resume(self, name: str) -> None:
        tracked = self._require(name, "resume")
        await self._tools.unfreeze(name)
        tracked.reason = Reason.UNPAUSED

    async def shutdown(self, name: str, timeout: float) -> bool:
        tracked = self._tracked.get(name)
        if tracked is None:
            return await self._not_running(name, "shutdown")
        tracked.intent = Intent.SHUTDOWN
        if (await self._tools.info(name)).state is LxcState.FROZEN:
            await self._tools.unfreeze(name)  # a frozen init cannot act on its halt signal
        if await handler_within(tracked.record.pid, 1.0) is False:
            # the kernel drops the signal: waiting shutdownTimeout for it would be for nothing
            tracked.intent = Intent.NONE
            log.warning("container init cannot receive its halt signal; not waiting",
                        domain=name, signal=HALT.name)
            return False
        stopped = await self._tools.request_halt(name, timeout)
        if not stopped and (await self._tools.info(name)).state is not LxcState.STOPPED:
            tracked.intent = Intent.NONE  # still running: a later halt is the guest's own doing
            log.info("shutdown timed out; container still running", domain=name, timeout=timeout)
            return False
        await self._tracked.settled(tracked)
        return True

    async def destroy(self, name: str) -> None:
        tracked = self._tracked.get(name)
        if tracked is None:
            await self._not_running(name, "destroy")
            return
        tracked.intent = Intent.DESTROY
        try:
            await self._tools.kill(name)
        except DriverError:
            if (await self._tools.info(name)).state is not LxcState.STOPPED:
                raise
        if not await tracked.watch.wait(SETTLE_TIMEOUT):
            raise DriverError(name, "destroy", "init still alive after lxc-stop -k")
        await self._tracked.settled(tracked)

    async def _not_running(self, name: str, operation: str) -> bool:
        """True for a container that is not running; refuses one that is not ours."""
        if (await self._tools.info(name)).state is LxcState.STOPPED:
            return True
        raise DriverError(name, operation, "container runs but was not started or adopted by "
                                           "this controller; refusing to touch it")

    def _require(self, name: str, operation: str) -> Tracked:
        tracked = self._tracked.get(name)
        if tracked is None:
            raise DriverError(name, operation, "not running under this controller")
        return tracked

    # --- observation and adoption -----------------------------------------------------------

    async def observe(self, name: str) -> Live:
        info = await self._tools.info(name)
        tracked = self._tracked.get(name)
        gone = info.state is LxcState.STOPPED
        if tracked is not None and (gone or tracked.watch.exited.is_set()):
            # init is gone: report what became of it (stopped, or rebooted with a new init)
            await self._tracked.settled(tracked)
            info, tracked = await self._tools.info(name), self._tracked.get(name)
        if info.state is LxcState.STOPPED:
            return Live(State.SHUTOFF, self._tracked.last_stops.get(name, Reason.UNKNOWN))
        if tracked is None or tracked.record.pid != info.pid:
            return Live(State.NOSTATE, Reason.UNKNOWN, pid=info.pid,
                        message="an LXC container of this name runs, but this controller did "
                                "not start or adopt it; it is left alone")
        return self._live(tracked, info)

    def _live(self, tracked: Tracked, info: Info) -> Live:
        state = _LXC_STATE[info.state]
        halting = tracked.intent is Intent.SHUTDOWN
        if state is State.SHUTDOWN or (state is State.RUNNING and halting):
            state, reason = State.SHUTDOWN, Reason.USER if halting else Reason.UNKNOWN
        elif tracked.reason in REASONS_BY_STATE[state] and info.state is not LxcState.FREEZING:
            reason = tracked.reason
        else:
            reason = Reason.UNKNOWN  # frozen or thawed by someone else
        return Live(state, reason, pid=info.pid, record=tracked.record, message=tracked.warning)

    async def reattach(self, record: RuntimeRecord) -> Live | None:
        name = record.name
        if not NAME_RE.fullmatch(name):
            return Live(State.NOSTATE, Reason.UNKNOWN, message=f"invalid name {name!r} in record")
        info = await self._tools.info(name)
        ours = same_process(record.pid, record.boot_id, record.starttime)
        if info.state is LxcState.STOPPED and not ours:
            log.info("container gone since the last controller run", domain=name)
            return None
        problem = self._identity_problem(record, info, ours)
        if problem:
            log.warning("not adopting container", domain=name, why=problem)
            return Live(State.NOSTATE, Reason.UNKNOWN, pid=info.pid, message=problem)
        paused = info.state is LxcState.FROZEN
        tracked = self._tracked.watch(record, Reason.UNKNOWN if paused else Reason.BOOTED)
        log.info("container adopted", domain=name, pid=record.pid, paused=paused)
        return self._live(tracked, info)

    def _identity_problem(self, record: RuntimeRecord, info: Info, ours: bool) -> str:
        if record.driver is not DriverName.LXC:
            return f"the record belongs to the {record.driver.value} driver"
        if record.extra.get("lxcpath", str(self._lxcpath)) != str(self._lxcpath):
            return f"recorded under lxcpath {record.extra['lxcpath']}, not {self._lxcpath}"
        if not ours:
            return (f"recorded init pid {record.pid} is no longer the process domctl started "
                    f"(boot id or start time differ); LXC reports pid {info.pid}")
        if info.pid != record.pid:
            return f"pid {record.pid} is alive but LXC reports the container's init as {info.pid}"
        return ""

    # --- changes ----------------------------------------------------------------------------

    def classify(self, old: DomainSpec, new: DomainSpec) -> dict[str, ChangeKind]:
        return changes.classify(old, new)

    async def apply_live(self, name: str, old: DomainSpec, new: DomainSpec) -> list[str]:
        tracked = self._require(name, "apply_live")
        facts = self._host_facts()
        try:
            before = dict(cgroup_limits(old, facts.cgroup, facts.cpus))
            after = dict(cgroup_limits(new, facts.cgroup, facts.cpus))
        except ConfigValueError as exc:
            raise HostValidationError(name, exc.field, exc.message) from exc
        # a limit the new spec drops goes back to unlimited
        after.update({key: UNLIMITED[key] for key in before if key not in after})
        for key, value in after.items():
            if before.get(key) != value:
                await self._tools.set_cgroup(name, key, value)
                log.info("cgroup limit applied live", domain=name, key=key, value=value)
        await nics.apply_live(name, tracked.record.pid, old, new)
        return []  # NICs are logged by nics.py; nothing else is hot-plugged into a container

    async def disks(self, name: str, spec: DomainSpec) -> list[dict[str, Any]]:
        """The container's rootfs for `domctl describe` (storage.py's listing)."""
        if spec.lxc is None or not NAME_RE.fullmatch(name):
            return []
        return await asyncio.to_thread(self._storage.listing, name, spec.lxc)

    async def save(self, name: str) -> SavedImage:
        raise NotSupportedError("lxc", "managed save")

    def saved_image(self, name: str) -> SavedImage | None:
        return None  # a container is never saved (a checkpoint would need CRIU)

    async def discard_saved(self, name: str) -> None:
        return None

    async def restore(self, domain: Domain, token: str) -> Live:
        raise NotSupportedError("lxc", "restore from a managed save")

    async def release_storage(self, name: str, spec: DomainSpec) -> list[str]:
        """Apply spec.lxc's deletePolicy to the rootfs domctl made for the removed domain
        `name` (storage.py): the paths kept (Retain), none when deleted (Delete). Refused
        while its container runs."""
        if not NAME_RE.fullmatch(name):
            raise DriverError(name, "release_storage", "not a valid domain name")
        if name in self._tracked or (await self._tools.info(name)).state is not LxcState.STOPPED:
            raise DriverError(name, "release_storage", "the container still runs")
        return await asyncio.to_thread(self._storage.release, name, spec.lxc)

    def console(self, name: str, spec: DomainSpec) -> Console:
        """lxc-console on the container's /dev/console (tty 0); Ctrl-a q leaves it."""
        return Console(argv=("lxc-console", "-P", str(self._lxcpath), "-n", name, "-t", "0"))

    def exec_argv(self, name: str, command: Sequence[str]) -> tuple[str, ...]:
        """lxc-attach into the running container: a clean environment (TERM kept, PATH and
        HOME set as incus exec sets them, no host variables leak in), the command's own exit
        code, a pty of its own when the caller's stdin is a terminal."""
        self._require(name, "exec")
        return ("lxc-attach", "-P", str(self._lxcpath), "-n", name, "--clear-env",
                "--keep-var", "TERM", "--set-var", f"PATH={EXEC_PATH}", "--set-var",
                "HOME=/root", "--", *command)

    async def display(self, name: str) -> Display | None:
        """A container has no graphical console."""
        self._require(name, "display")
        return None

    async def interfaces(self, name: str) -> GuestInterfaces:
        """The addresses in the container's network namespace, by MAC (nics.addresses)."""
        tracked = self._tracked.get(name)
        if tracked is None or tracked.watch.exited.is_set():
            return GuestInterfaces()
        return await nics.addresses(name, tracked.record.pid)

    async def stats(self, name: str) -> DomainStats:
        """The container's cgroup figures and its veths' traffic (stats.py)."""
        tracked = self._require(name, "stats")
        if tracked.watch.exited.is_set():
            raise DriverError(name, "stats", "init has exited")
        try:
            return stats.read(name, tracked.record.pid, self._host_facts().cgroup)
        except (OSError, ValueError, KeyError) as exc:  # stopped meanwhile
            raise DriverError(name, "stats", f"cannot read its cgroup or veths: {exc}") from exc

    async def close(self) -> None:
        self._tracked.close()
