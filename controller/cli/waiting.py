"""`domctl wait`: until NAME (or every domain of `--all` / `-l`) reaches a state or condition,
or is gone (`--for=delete`).

Exact (docs/architecture.md, "domctl wait is exact"): for a state or condition, each domain's
target generation is asked for first (the daemon re-reads the manifests and names the generation
its status must show as observedGeneration, or refuses at once with an invalid manifest's
problems), then the watch stream is followed until the status shows it and the condition holds.
For `delete`, until the stream says the domain has no status (`{"name", "deleted": true}`; a
domain that never existed is gone at once, as in kubectl). Several domains are followed on one
stream (the watch of every domain, under the selector).

--for is checked against the known states and condition types before any request: an unknown
one is a usage error (exit 2). A timeout exits TIMED_OUT (3), so that a script tells it from an
error (1: an API error, an invalid manifest, no domain matching). kubectl exits 1 for both; 3
is ours, next to argparse's 2.

STATES and CONDITIONS repeat reconcilers.model.State and the domain's condition types of
controller.state.status (the CLI imports neither: start-up and layering);
tests/unit/test_commands.py checks that they are the same.

Public surface:
    run(args, client) -> int, condition(text) -> Condition, TIMED_OUT, STATES, CONDITIONS
"""

from __future__ import annotations

import argparse
import sys
import time

from controller.cli.client import ApiError, Client
from controller.protocol import headline

TYPE_CHECKING = False  # typing's constant without typing's import (cli/__init__.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Document = dict[str, Any]

TIMED_OUT = 3
WAIT_REFRESH = 1.0  # at least this long between two `wait` requests for one domain
DELETE = "delete"
STATES = ("nostate", "running", "blocked", "paused", "shutdown", "shutoff", "crashed",
          "pmsuspended")
CONDITIONS = ("Ready", "Synced", "PendingRestart", "ManifestValid", "Stalled", "Overridden",
              "GuestAgent")
EXPECTED = "expected state=STATE or condition=TYPE[=True|False], or delete"


class Condition:
    """A parsed --for: its text, and the test of a status document (None: delete)."""

    __slots__ = ("met", "text")

    def __init__(self, text: str, met: Callable[[Document], bool] | None) -> None:
        self.text, self.met = text, met


def condition(value: str) -> Condition:
    """--for's type."""
    if value == DELETE:
        return Condition(value, None)
    kind, _, wanted = value.partition("=")
    if kind == "state" and wanted:
        if wanted not in STATES:
            raise argparse.ArgumentTypeError(
                f"unknown state {wanted!r}: one of {', '.join(STATES)}")
        return Condition(value, lambda doc: doc.get("state") == wanted)
    type_, _, status = wanted.partition("=")
    status = status or "True"
    if kind == "condition" and type_ and status.lower() in ("true", "false"):
        if type_.lower() not in (known.lower() for known in CONDITIONS):
            raise argparse.ArgumentTypeError(
                f"unknown condition {type_!r}: one of {', '.join(CONDITIONS)}")
        return Condition(value, lambda doc: any(
            str(c.get("type", "")).lower() == type_.lower()
            and str(c.get("status", "")).lower() == status.lower()
            for c in doc.get("conditions") or ()))
    raise argparse.ArgumentTypeError(EXPECTED)


def run(args: argparse.Namespace, names: list[str], client: Callable[[float], Client]) -> int:
    """Wait for `names` (args.name alone, or those args.selector / --all picked) to meet
    args.condition within args.timeout; `client(timeout)` opens the API. The exit code."""
    wanted: Condition = args.condition
    timeout: float = args.timeout
    deadline = time.monotonic() + timeout
    targets = {} if wanted.met is None else {
        name: _Target(name, client(max(timeout, 1.0))) for name in names}
    pending: dict[str, Document | None] = dict.fromkeys(names)  # name → its last document
    single = args.name
    while (remaining := deadline - time.monotonic()) > 0:
        # the controller pushes each status at every change; a quiet second reopens the
        # stream, which sends them again, so a target that moved is asked for again
        try:
            for document in client(max(remaining, 1.0)).stream(
                    "watch", idle=min(WAIT_REFRESH, remaining), name=single,
                    labelSelector=None if single else args.selector):
                name = str(document.get("name"))
                if name not in pending:
                    continue
                pending[name] = document
                if _done(wanted, targets.get(name), document):
                    print(f"{name}: {wanted.text}", flush=True)
                    del pending[name]
                    if not pending:
                        return 0
                if time.monotonic() >= deadline:
                    break
        except ApiError as err:
            if err.type != "Timeout":
                raise
    for name, last in pending.items():
        why = targets[name].why(last) if name in targets else ""
        print(f"error: timed out waiting for {name}: {wanted.text}{why}", file=sys.stderr)
    return TIMED_OUT


def _done(wanted: Condition, target: _Target | None, document: Document) -> bool:
    if document.get("deleted"):
        return wanted.met is None
    return (wanted.met is not None and target is not None and target.observed(document)
            and wanted.met(document))


class _Target:
    """The generation `wait` waits for: the controller re-reads the manifests for the request
    and names the generation it then holds (None: no manifest declares NAME yet, so the first
    generation its status shows). Generations are content hashes, not counters: when the
    status settles on another generation than the target, the manifest may have changed
    again since, so the target is asked for again (at most every WAIT_REFRESH seconds)."""

    def __init__(self, name: str, client: Client) -> None:
        self._name, self._client = name, client
        self._asked = 0.0
        self.generation = self._ask()

    def _ask(self) -> str | None:
        self._asked = time.monotonic()
        generation = self._client.call("wait", name=self._name).get("generation")
        return str(generation) if generation is not None else None

    def observed(self, document: Document) -> bool:
        if self._matches(document):
            return True
        settled = document.get("observedGeneration") == document.get("generation")
        if settled and time.monotonic() - self._asked >= WAIT_REFRESH:
            self.generation = self._ask()
        return False

    def _matches(self, document: Document) -> bool:
        observed, current = document.get("observedGeneration"), document.get("generation")
        if observed is None or current is None:
            return False
        return bool(observed == (self.generation or current))

    def why(self, document: Document | None) -> str:
        if document is None or document.get("deleted"):
            return "; no such domain yet"
        if not self._matches(document):
            wanted = self.generation or document.get("generation")
            return (f"; generation {wanted} not observed yet (observedGeneration "
                    f"{document.get('observedGeneration')})")
        message = headline(document)
        return f"; {message}" if message else ""
