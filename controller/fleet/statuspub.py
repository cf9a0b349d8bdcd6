"""Status documents to etcd: `status/<domain>` = this host's status document of the domain plus
`{"host": NAME, "epoch": E}`, so `domctl get` against the fleet and the other hosts see it.

Written after every change of a status document (StatusStore.watch(None): changes that come
together collapse into one round) and of the host view (a placement's new epoch changes the
document to write), and only when the document to write differs from what etcd holds. Which
domains, with which epoch (`document_epoch`, pure):

- placed here and released (the host view's RUN or FENCED): the placement's epoch; this host
  owns the key, whoever wrote it before (the previous host's release, read already);
- placed elsewhere or unplaced but still known here (RELEASE): only while the key is this
  host's own or absent, never over another host's; with the new placement's epoch once the
  release is proven (`settled_off`: a pass over the shutoff spec the view gave observed the
  domain shut off; the previous host's document with that epoch and `state: shutoff` is what
  the new host waits for), with the epoch it had until then;
- waiting for a release (WAIT) or absent: nothing (the previous host's document must stay);
  a document of this host's of a domain it no longer knows at all (undefined here once its
  manifest went) is deleted, so etcd keeps no status of a domain nobody runs.

Every write is a compare-and-swap on the key's mod revision as the host view's mirror of
`status/` last saw it, so a document another host wrote meanwhile is never overwritten by a
stale decision: the mirror's watch brings it, and the next round decides again. etcd
unreachable: retried every `retry` seconds until it answers.

Public surface: document_epoch(role, placement, mark, me, settled_off),
    StatusPublisher(store, keys, view, statuses, settled_off).start, stop, sync
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import structlog

from controller.fleet import background
from controller.fleet.hostview import HostView, Role, StatusMark
from controller.fleet.keys import Keys, Placement
from controller.fleet.store import Compare, Delete, EtcdStore, Put
from controller.state.status import DomainStatus, StatusStore

log = structlog.get_logger(__name__)


def document_epoch(role: Role, placement: Placement | None, mark: StatusMark | None, me: str,
                   settled_off: bool) -> int | None:
    """The epoch this host publishes the domain's status with; None: it writes nothing."""
    if role in (Role.RUN, Role.FENCED) and placement is not None:
        return placement.epoch
    if role is not Role.RELEASE or (mark is not None and mark.host != me):
        return None
    if settled_off and placement is not None:
        return placement.epoch
    return mark.epoch if mark is not None else 0


class StatusPublisher:
    def __init__(self, store: EtcdStore, keys: Keys, view: HostView, statuses: StatusStore,
                 settled_off: Callable[[str], bool], *, retry: float = 1.0) -> None:
        self._store = store
        self._keys = keys
        self._view = view
        self._statuses = statuses
        self._settled_off = settled_off
        self._retry = retry
        self._changed = asyncio.Event()
        self._documents: dict[str, tuple[DomainStatus, int, bytes]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._view.listeners.append(self._changed.set)
        self._changed.set()
        self._task = asyncio.create_task(self._run(), name="status-publisher")

    async def stop(self) -> None:
        if self._changed.set in self._view.listeners:
            self._view.listeners.remove(self._changed.set)
        await background.cancel(self._task)
        self._task = None

    async def _run(self) -> None:
        failing = False
        with self._statuses.watch(None, self._changed.set):
            while True:
                await self._changed.wait()
                self._changed.clear()
                try:
                    await self.sync()
                    failing = False
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # EtcdError above all: retry until etcd answers
                    if not failing:
                        log.warning("cannot publish status documents to etcd; retrying",
                                    host=self._view.me, error=str(err))
                    failing = True
                    await asyncio.sleep(self._retry)
                    self._changed.set()

    async def sync(self) -> None:
        """Write every document that differs from etcd's (EtcdError when etcd is away)."""
        for name, role in sorted(self._view.roles.items()):
            key = self._keys.status(name)
            kv = self._view.statuses.kvs.get(key)
            mark = self._view.fleet.statuses.get(name) if self._view.fleet.statuses else None
            epoch = document_epoch(role, self._view.placement(name), mark, self._view.me,
                                   role is Role.RELEASE and self._settled_off(name))
            status = self._statuses.read(name)
            if epoch is None or status is None:
                continue
            value = self._encoded(name, status, epoch)
            if kv is not None and kv.value == value:
                continue
            answer = await self._store.txn(
                [Compare.mod_revision(key, kv.mod_revision if kv is not None else 0)],
                [Put(key, value)])
            log.debug("status published" if answer.succeeded else
                      "status not published: etcd's document changed meanwhile",
                      domain=name, epoch=epoch, state=status.state.value)
        await self._delete_forgotten()

    def _encoded(self, name: str, status: DomainStatus, epoch: int) -> bytes:
        """The document to write, encoded once per status and epoch (a round looks at every
        domain, and the status store hands out the same object until it changes)."""
        cached = self._documents.get(name)
        if cached is not None and cached[0] is status and cached[1] == epoch:
            return cached[2]
        value = json.dumps({**status.to_dict(), "host": self._view.me, "epoch": epoch},
                           sort_keys=True, separators=(",", ":")).encode()
        self._documents[name] = (status, epoch, value)
        return value

    async def _delete_forgotten(self) -> None:
        """This host's documents of domains it no longer knows (undefined here: the manifest
        went), so etcd keeps no status of a domain nobody runs."""
        for name, mark in sorted((self._view.fleet.statuses or {}).items()):
            if mark.host != self._view.me or self._statuses.read(name) is not None \
                    or self._view.roles.get(name, Role.ABSENT) is not Role.ABSENT:
                continue
            key = self._keys.status(name)
            kv = self._view.statuses.kvs.get(key)
            if kv is None:
                continue
            answer = await self._store.txn([Compare.mod_revision(key, kv.mod_revision)],
                                           [Delete(key)])
            if answer.succeeded:
                self._documents.pop(name, None)
                log.info("status withdrawn from etcd: the domain is gone from this host",
                         domain=name)

