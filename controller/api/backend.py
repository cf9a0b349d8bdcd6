"""The API's view of a running controller: the Backend the HTTP server
(controller/api/server.py) calls.

Reads come from the status documents, the event log and the controller's in-memory books;
the documents of `get` and of a watch carry the domain's `labels` from its manifest (the
desired store), which the server's label selectors match; a watch is pushed by the status
store (StatusStore.watch: every write and removal, of one name or of all) and says
`{"name", "deleted": true}` for a domain without a status document;
in fleet mode (`fleet`, given by the daemon) `get` answers with every domain of the fleet,
each with its `host` (controller/fleet/fleetview.py), whichever host is asked;
`get` and `describe` also show the invalid manifests that stand for no domain
(controller/engine/invalid.py), named after their files;
writes (`act`, `prune`) go through `Controller.request` / `Controller.prune_confirm`, so an
imperative action is carried out by the same reconcile pass as everything else, under the
domain's job lock, and recorded with cause `api` and the caller's uid. `destroy` and `save`
also act at once (Controller.destroy, Controller.save: a save's error, such as a container's
NotSupported, is the reply), and `host_shutdown` takes every running domain down
(Controller.host_shutdown) and answers with each one's result. `export` renders the live spec
as a manifest (controller/manifests/render.py) with the fields the manifest on disk differs in.

`act` waits (30 s plus the domain's shutdownTimeout) until the status shows the result, like `virsh
start` returns once the domain runs; a request that cannot finish in time still stands, and its
progress is visible with `domctl get` / `domctl wait`.

`wait` makes `domctl wait` exact (kstatus's observedGeneration): it has the manifests directory
re-read now (the daemon passes ManifestSource.rescan) and answers with the generation the
desired store then holds for the name, computed with the uuid the ledger gives the domain, so
it is the generation the status will show; the CLI waits for observedGeneration to reach it
before it looks at the state or a condition. An invalid manifest is refused at once: the file
declaring the name, or, for a name no valid manifest ever declared, a file named `NAME.yaml`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from controller.api.parsing import Refused
from controller.api.server import Caller
from controller.engine import candidate, stats
from controller.engine.controller import Controller
from controller.engine.invalid import InvalidManifest
from controller.manifests import render
from controller.manifests.source import Snapshot
from controller.paths import Paths
from controller.protocol import HOST_SHUTDOWN_MODES, headline
from controller.state.events import Subscription
from controller.state.networks import NoSuchNetwork
from controller.state.status import STATES_MEETING, NoSuchDomain
from reconcilers.diff import Apply, classify_changes, field_diff
from reconcilers.driver import Driver
from reconcilers.history import API_STATES, ApiAction
from reconcilers.model import (
    Cause,
    DesiredState,
    Domain,
    Metadata,
    SourceRef,
    StopMode,
    spec_generation,
)

log = structlog.get_logger(__name__)
_UNSEEN = object()  # a watched name's status before the first look

class ControllerBackend:
    def __init__(self, controller: Controller, paths: Paths, act_timeout: float,
                 rescan: Callable[[], Awaitable[Snapshot]] | None = None,
                 fleet: Callable[[str | None], list[dict[str, Any]]] | None = None) -> None:
        self._controller = controller
        self._paths = paths
        self._act_timeout = act_timeout
        self._rescan = rescan
        self._fleet = fleet

    # --- reads ---------------------------------------------------------------------------------

    async def get(self, name: str | None, disks: bool = False,
                  invalid: bool = False) -> list[dict[str, Any]]:
        """Status documents (in fleet mode: the fleet's, each with its `host`), then the
        invalid manifests that stand for no domain (controller/engine/invalid.py); `invalid`:
        those only."""
        statuses = self._controller.statuses
        if invalid:
            documents = []
        elif self._fleet is not None:
            documents = self._fleet(name)
        elif name is not None:
            try:
                documents = [self._labelled(statuses.get_document(name))]
            except NoSuchDomain:
                documents = []
        else:
            documents = [self._labelled(status.to_dict()) for n in statuses.names()
                         if (status := statuses.read(n)) is not None]
        if disks:
            listed = await asyncio.gather(*(self._disks(doc["name"]) for doc in documents))
            documents = [{**doc, "disks": found} for doc, found in zip(documents, listed,
                                                                      strict=True)]
        documents += [m.to_dict() for m in self._invalid(name)]
        if name is not None and not documents:
            raise NoSuchDomain(name)
        return documents

    def _labelled(self, document: dict[str, Any]) -> dict[str, Any]:
        """A status document with the domain's labels, from its manifest ({} without one)."""
        return {**document, "labels": self.labels(document["name"])}

    def labels(self, name: str) -> dict[str, str]:
        desired = self._controller.store.desired(name)
        return dict(desired.metadata.labels) if desired else {}

    async def stats(self, name: str | None) -> list[dict[str, Any]]:
        return [stats.to_json(figures) for figures in await self._controller.stats(name)]

    async def display(self, name: str) -> dict[str, Any]:
        """qemu's own answer (an automatic VNC port is the one it took): virsh vncdisplay."""
        driver = self._running_driver(name, "it has no display")
        display = await driver.display(name)
        if display is None:
            return {"vnc": None}
        return {"vnc": display.vnc, "host": display.host, "port": display.port}

    def exec(self, name: str, command: list[str]) -> dict[str, Any]:
        driver = self._running_driver(name, "there is nothing to exec into")
        return {"argv": list(driver.exec_argv(name, command))}

    def preview(self, text: str, file: str) -> list[dict[str, Any]]:
        return candidate.preview(self._controller, text, file)

    def _running_driver(self, name: str, consequence: str) -> Driver:
        """The driver of the running domain `name`; NoSuchDomain, or NotRunning when off."""
        self._controller.statuses.get_document(name)  # NoSuchDomain for an unknown name
        record = self._controller.registry.get(name)
        if record is None or record.runtime is None or record.driver is None:
            raise stats.NotRunning(name, consequence)
        return self._controller.drivers[record.driver]

    def _invalid(self, name: str | None) -> list[InvalidManifest]:
        view = self._controller.invalid
        return view.all() if name is None else view.named(name)

    async def _disks(self, name: str) -> list[dict[str, Any]]:
        """The domain's storage, read now from its driver (qemu-img info for qemu)."""
        record = self._controller.registry.get(name)
        desired = self._controller.store.desired(name)
        spec = (record.live_spec if record is not None and record.live_spec is not None
                else desired.spec if desired is not None else None)
        driver = record.driver if record is not None else None
        if spec is None or driver is None:
            return []
        return [dict(disk) for disk in await self._controller.drivers[driver].disks(name, spec)]

    def networks(self, name: str | None) -> list[dict[str, Any]]:
        store = self._controller.networks.store if self._controller.networks else None
        if store is None:
            raise NoSuchNetwork(name or "")
        if name is not None:
            return [store.get_document(name)]
        return [status.to_dict() for status in sorted(store.statuses(), key=lambda s: s.name)]

    async def describe(self, name: str) -> dict[str, Any]:
        """NAME's status in detail; for a name only an invalid manifest goes by,
        {"invalid": [documents], "message": its first problem}."""
        invalid = self._invalid(name)
        if invalid and self._controller.statuses.read(name) is None:
            return {"invalid": [m.to_dict() for m in invalid], "message": invalid[0].message}
        status = self._controller.statuses.get_document(name)
        job = self._controller.jobs.current(name)
        return {"status": status, "disks": await self._disks(name),
                "events": self._controller.events.recent(name, 10),
                "job": job.to_dict() if job is not None else None,
                "message": headline(status)}

    def diff(self, name: str | None) -> list[dict[str, Any]]:
        names = [name] if name is not None else self._controller.statuses.names()
        return [self._diff_one(n) for n in names]

    def _diff_one(self, name: str) -> dict[str, Any]:
        self._controller.statuses.get_document(name)  # NoSuchDomain for an unknown name
        desired = self._controller.desired_resolved(name)  # NICs as the pass sees them
        record = self._controller.registry.get(name)
        live_spec = record.live_spec if record is not None else None
        if desired is None or live_spec is None or record is None or record.driver is None:
            return {"name": name, "changes": []}
        classify = self._controller.drivers[record.driver].classify
        changes = classify_changes(live_spec, desired.spec, classify(live_spec, desired.spec))
        return {"name": name, "changes": [
            {"field": c.path, "old": c.old, "new": c.new,
             "apply": "restart" if c.apply is Apply.RESTART else "live"} for c in changes]}

    def export(self, name: str, defaults: bool = False) -> dict[str, Any]:
        """NAME's live configuration as a manifest (`domctl export`): the spec it runs with,
        else the last valid manifest's; with each field where the manifest on disk differs."""
        self._controller.statuses.get_document(name)  # NoSuchDomain for an unknown name
        desired = self._controller.desired_resolved(name)  # NICs as the live spec has them
        record = self._controller.registry.get(name)
        running = (record is not None and record.runtime is not None
                   and record.live_spec is not None)
        live_spec = record.live_spec if running and record is not None else None
        spec = live_spec or (desired.spec if desired is not None else None)
        if spec is None:
            raise NoSuchDomain(name)
        metadata = desired.metadata if desired is not None else Metadata(name)
        uuid = metadata.uuid or (record.uuid if record is not None else None)
        live = Domain(dataclasses.replace(metadata, uuid=uuid), spec,
                      desired.source if desired is not None else SourceRef("-", 0))
        document = render.document(live, defaults)
        differences = []
        if desired is not None and live_spec is not None:
            on_disk = render.document(desired)
            for change in field_diff(desired.spec, live_spec):
                path = render.manifest_path(change.path)
                differences.append({"field": change.path, "path": list(path),
                                    "manifest": render.lookup(on_disk, path),
                                    "live": render.lookup(document, path)})
        source = desired.source if desired is not None else None
        return {"name": name, "running": running, "manifest": document,
                "source": f"{source.file}:{source.line}" if source is not None else None,
                "differences": differences}

    def recent_events(self, name: str | None, n: int) -> list[dict[str, Any]]:
        return self._controller.events.recent(name, n)

    def subscribe(self, name: str | None) -> Subscription:
        return self._controller.events.subscribe(name)

    async def watch_status(self, name: str | None) -> AsyncGenerator[dict[str, Any], None]:
        """`name`'s status document (None: every domain's) now, then at every change, and
        {"name", "deleted": true} for one that has none (a single name: at once too): pushed by
        the status store (StatusStore.watch), so `domctl wait` reacts at once and never polls."""
        statuses = self._controller.statuses
        changed = asyncio.Event()
        sent: dict[str, object] = {} if name is None else {name: _UNSEEN}
        with statuses.watch(name, changed.set):
            while True:
                names = [name] if name is not None else sorted({*statuses.names(), *sent})
                for subject in names:
                    status = statuses.read(subject)
                    if status is not None and status != sent.get(subject):
                        yield self._labelled(status.to_dict())
                    elif status is None and subject in sent and sent[subject] is not None:
                        yield {"name": subject, "deleted": True}
                    if status is not None or name is not None:
                        sent[subject] = status
                    else:
                        sent.pop(subject, None)
                await changed.wait()
                changed.clear()

    def log_path(self, name: str) -> Path:
        self._controller.statuses.get_document(name)
        return self._paths.log_dir / f"{name}.log"

    def console(self, name: str) -> dict[str, Any]:
        """Where NAME's console is: {"socket": path} to relay, or {"argv": [...]} to run."""
        self._controller.statuses.get_document(name)
        desired = self._controller.store.desired(name)
        record = self._controller.registry.get(name)
        spec = desired.spec if desired is not None else (record.live_spec if record else None)
        if spec is None:
            raise NoSuchDomain(name)
        console = self._controller.drivers[spec.driver].console(name, spec)
        return {"socket": console.socket, "argv": list(console.argv)}

    async def wait(self, name: str) -> dict[str, Any]:
        """The generation `domctl wait` waits for: the manifest as it is on disk now."""
        if self._rescan is not None:
            await self._rescan()
        entry = self._controller.store.entry(name)
        problems = [*entry.problems, *entry.conflicts] if entry is not None else []
        if entry is None:  # a file never valid, named after NAME
            problems = [p for m in self._invalid(name) for p in m.problems]
        if problems:
            raise Refused("Invalid", "; ".join(str(p) for p in problems))
        if entry is not None and entry.missing_since is not None:
            raise Refused("NotFound", f"no manifest declares {name} any more: it is being "
                          "removed")
        domain = entry.domain if entry is not None else None
        record = self._controller.registry.get(name)
        uuid = (domain.metadata.uuid if domain is not None and domain.metadata.uuid
                else record.uuid if record is not None else None)
        if domain is None or uuid is None:
            # not declared yet, or never reconciled (its uuid is made by its first pass, which
            # sees this manifest or a later one): the first generation it shows will do
            return {"name": name, "generation": None}
        return {"name": name, "generation": spec_generation(domain.spec, uuid)}

    # --- writes --------------------------------------------------------------------------------

    async def act(self, name: str, action: str, caller: Caller,
                  force_boot: bool = False) -> dict[str, Any]:
        controller = self._controller
        before = controller.statuses.read(name)
        image: dict[str, Any] = {}
        if action == "destroy":
            await controller.destroy(name, caller.uid)
        elif action == "save":
            saved = await controller.save(name, caller.uid)
            image = {"image": {"path": saved.path, "size": saved.size}}
        else:
            controller.request(name, action, caller.uid, force_boot)
        target = (DesiredState.RUNNING if action == ApiAction.RESTART.value
                  else API_STATES[ApiAction(action)])
        done = await self._wait(name, target, before.pid if before else None,
                                restart=action == "restart",
                                timeout=self._act_timeout + self._shutdown_timeout(name))
        status = controller.statuses.read(name)
        if status is None:
            raise NoSuchDomain(name)
        state = f"{status.state.value} ({status.reason.value})"
        message = (f"{name}: {action} done: {state}" if done else
                   f"{name}: {action} requested, not finished yet: {state}; "
                   f"follow it with `domctl wait {name} --for state={target.value}`")
        return {"name": name, "action": action, "done": done, "state": status.state.value,
                "reason": status.reason.value, "message": message, **image}

    def _shutdown_timeout(self, name: str) -> float:
        """A stop may take the domain's shutdownTimeout before the destroy: wait for it too."""
        desired = self._controller.store.desired(name)
        return desired.spec.shutdown_timeout if desired is not None else 0.0

    async def _wait(self, name: str, target: DesiredState, old_pid: int | None,
                    restart: bool, timeout: float) -> bool:
        """Until the status shows `target` (a new pid for a restart): woken by every write
        of the status document, never polled."""
        try:
            async with (asyncio.timeout(timeout),
                        contextlib.aclosing(self._controller.statuses.changes(name)) as changes):
                async for status in changes:
                    if status is None:
                        return False  # undefined meanwhile
                    if status.state in STATES_MEETING[target] and (
                            not restart or (status.pid is not None and status.pid != old_pid)):
                        return True
        except TimeoutError:
            pass
        return False

    async def host_shutdown(self, mode: str, parallel: int, timeout: int,
                            caller: Caller) -> dict[str, Any]:
        if mode not in HOST_SHUTDOWN_MODES:
            raise Refused("BadRequest", f"host-shutdown: mode {mode!r} is not one of "
                          f"{', '.join(HOST_SHUTDOWN_MODES)}")
        if parallel < 1:
            raise Refused("BadRequest", "host-shutdown: parallel must be at least 1")
        record = await self._controller.host_shutdown(StopMode(mode), parallel, float(timeout),
                                                      caller.uid)
        domains = [{"name": d.name, "mode": d.mode.value, "result": d.result, "ok": d.ok}
                   for d in record.domains]
        failed = [d.name for d in record.domains if not d.ok]
        message = (f"host-shutdown --mode {mode}: {len(domains)} domain(s) held down until the "
                   f"controller restarts" + (f"; not cleanly: {', '.join(failed)}"
                                             if failed else ""))
        return {"mode": mode, "domains": domains, "ok": not failed, "message": message}

    def prune(self, caller: Caller) -> dict[str, Any]:
        released = self._controller.prune_confirm()
        self._controller.audit.record("-", "prune-confirm", Cause.API, {"uid": caller.uid},
                                      f"released {len(released)} held removal(s)")
        message = (f"released {len(released)} held removal(s): {', '.join(released)}"
                   if released else "no removal was held")
        return {"released": released, "message": message}

