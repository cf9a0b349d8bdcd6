"""The one fake behind the API: DocsBackend, a daemon serving a dict of status documents, and
ThreadedServer, a real ApiServer run on its own event loop in a thread (for the synchronous
client and the CLI called in-process). Used by tests/unit's API, client and command tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any, ClassVar

from controller.api.parsing import Refused
from controller.api.server import ApiServer, Caller
from controller.engine.stats import NotRunning as StatsNotRunning
from controller.manifests import render
from controller.manifests.loader import load_documents
from controller.protocol import INVALID_KIND
from controller.settings import ApiSettings
from controller.state.events import EventBus
from controller.state.networks import NoSuchNetwork
from controller.state.status import NoSuchDomain
from reconcilers.errors import NotSupportedError
from tests.support.domains import domain


class DocsBackend:
    """The daemon over `docs` (status documents by name): events from a real EventBus, logs as
    <name>.log in `directory`; `subscribed` is set at the first subscription. Changes succeed
    and do nothing; test files override act/prune/diff as they need."""

    JOB: ClassVar[dict[str, Any] | None] = None
    MESSAGE: ClassVar[str] = ""
    DISKS: ClassVar[list[dict[str, Any]]] = []
    DIFFERENCES: ClassVar[list[dict[str, Any]]] = []  # export's

    def __init__(self, directory: Path, docs: dict[str, dict[str, Any]],
                 network_docs: dict[str, dict[str, Any]] | None = None) -> None:
        self.bus = EventBus(directory)
        self.directory = directory
        self.docs = docs
        self.network_docs = network_docs or {}
        self.subscribed = threading.Event()

    def _known(self, name: str) -> None:
        if name not in self.docs:
            raise NoSuchDomain(name)

    async def get(self, name: str | None, disks: bool = False,
                  invalid: bool = False) -> list[dict[str, Any]]:
        """`docs` may hold invalid manifests' documents (`kind: InvalidManifest`) too."""
        if name is None:
            found = [self.docs[n] for n in sorted(self.docs)]
        else:
            self._known(name)
            found = [self.docs[name]]
        if invalid:
            found = [doc for doc in found if doc.get("kind") == INVALID_KIND]
        return ([doc if doc.get("kind") == INVALID_KIND else {**doc, "disks": self.DISKS}
                 for doc in found] if disks else found)

    def networks(self, name: str | None) -> list[dict[str, Any]]:
        if name is None:
            return [self.network_docs[n] for n in sorted(self.network_docs)]
        if name not in self.network_docs:
            raise NoSuchNetwork(name)
        return [self.network_docs[name]]

    async def describe(self, name: str) -> dict[str, Any]:
        self._known(name)
        if self.docs[name].get("kind") == INVALID_KIND:
            return {"invalid": [self.docs[name]], "message": self.docs[name]["message"]}
        return {"status": self.docs[name], "disks": self.DISKS, "events": self.bus.recent(name),
                "job": self.JOB, "message": self.MESSAGE}

    def recent_events(self, name: str | None, n: int) -> list[dict[str, Any]]:
        return self.bus.recent(name or "web-1", n)

    def subscribe(self, name: str | None) -> Any:
        self.subscribed.set()
        return self.bus.subscribe(name)

    def log_path(self, name: str) -> Path:
        self._known(name)
        return self.directory / f"{name}.log"

    def export(self, name: str, defaults: bool = False) -> dict[str, Any]:
        """The manifest of `domain(name)` (tests/support/domains.py) with DIFFERENCES."""
        self._known(name)
        document = render.document(domain(name, self.docs[name].get("driver", "qemu")),
                                   defaults)
        return {"name": name, "running": self.docs[name].get("state") == "running",
                "source": f"/manifests/{name}.yaml:1", "manifest": document,
                "differences": self.DIFFERENCES}

    def diff(self, name: str | None) -> list[dict[str, Any]]:
        if name is not None:
            self._known(name)
        return [{"name": n, "changes": []} for n in sorted(self.docs) if name in (None, n)]

    async def act(self, name: str, action: str, caller: Caller,
                  force_boot: bool = False) -> dict[str, Any]:
        self._known(name)
        return {"message": f"{name}: {action}{' --force-boot' if force_boot else ''} requested"}

    async def host_shutdown(self, mode: str, parallel: int, timeout: int,
                            caller: Caller) -> dict[str, Any]:
        return {"mode": mode, "domains": [], "ok": True,
                "message": f"host-shutdown --mode {mode} --parallel {parallel} "
                           f"--timeout {timeout}: nothing runs"}

    def console(self, name: str) -> dict[str, Any]:
        raise NotSupportedError("fake", "console")

    def labels(self, name: str) -> dict[str, str]:
        return dict(self.docs.get(name, {}).get("labels") or {})

    async def stats(self, name: str | None) -> list[dict[str, Any]]:
        """One CPU second each for the running documents (NotRunning for another named)."""
        if name is not None:
            self._known(name)
            if self.docs[name].get("state") != "running":
                raise StatsNotRunning(name)
        return [{"name": n, "cpu": {"seconds": 1.0, "percent": None}}
                for n in sorted(self.docs) if name in (None, n)
                and self.docs[n].get("state") == "running"]

    async def display(self, name: str) -> dict[str, Any]:
        self._known(name)
        return {"vnc": "127.0.0.1:1", "host": "127.0.0.1", "port": 5901}

    def exec(self, name: str, command: list[str]) -> dict[str, Any]:
        self._known(name)
        return {"argv": ["exec-in", name, *command]}

    def preview(self, text: str, file: str) -> list[dict[str, Any]]:
        """Every domain of the file is a create (ManifestError when it is invalid)."""
        return [{"name": d.name, "action": "create", "changes": []}
                for d in load_documents(text, file).domains]

    def prune(self, caller: Caller) -> dict[str, Any]:
        return {"message": "nothing to prune"}

    async def watch_status(self, name: str | None) -> AsyncGenerator[dict[str, Any], None]:
        """The document now, then whenever a test replaces it in `docs` (looked at every
        20 ms: the real backend is told by the status store); {"name", "deleted": true} while
        there is none. None: every document, and a deleted one for each that goes."""
        sent: dict[str, object] = {} if name is None else {name: True}
        while True:
            for subject in [name] if name is not None else sorted({*self.docs, *sent}):
                document = self.docs.get(subject)
                if document is not None and document is not sent.get(subject):
                    yield document
                elif document is None and sent.get(subject) is not None:
                    yield {"name": subject, "deleted": True}
                sent[subject] = document
            await asyncio.sleep(0.02)

    async def wait(self, name: str) -> dict[str, Any]:
        """The generation of the document as it is now (None: no such document yet)."""
        document = self.docs.get(name)
        if document is not None and document.get("kind") == INVALID_KIND:
            raise Refused("Invalid", document["message"])
        return {"name": name, "generation": document.get("generation") if document else None}


class ThreadedServer:
    """An ApiServer on its own event loop in a thread, as the daemon runs it; a context manager
    that starts it, and at the end closes the server and the backend's bus. `backend` is a
    DocsBackend of the test's own kind (Any: tests read their subclass's attributes)."""

    def __init__(self, backend: Any, directory: Path, settings: ApiSettings) -> None:
        self.backend = backend
        self.rw, self.ro = directory / "domctl.sock", directory / "domctl-ro.sock"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = ApiServer(backend, self.rw, self.ro, settings)

    def run(self, function: Callable[[], Any]) -> Any:
        """Call `function` on the server's loop; its result."""
        async def call() -> Any:
            return function()
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(5)

    def close(self) -> None:
        """Close the server (its streams end); the loop keeps running until __exit__."""
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(5)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self.run(self.backend.bus.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
