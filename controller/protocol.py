"""The wire format both sides of the API share: socket names, operations, and status wording.

The daemon's server (controller/api/server.py) and the CLI's client (controller/cli/client.py)
both import this module and nothing of each other, so `domctl get` never loads engine code.
Requests are one JSON line `{"op": OP, "args": {...}}`; replies are described in the server's
docstring. Plain data and pure functions only: no I/O, no imports from the rest of domctl.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

RW_SOCKET = "domctl.sock"
"""The read-write socket's file name in the runtime dir (mode 0600)."""
RO_SOCKET = "domctl-ro.sock"
"""The read-only socket's file name in the runtime dir (mode 0666): reads only."""

ACTIONS = ("start", "stop", "suspend", "resume", "restart", "destroy", "save")
# `wait` rescans the manifests directory (a read of the disk, no change) and answers with the
# generation the controller now holds for the name; the client then polls `get`.
READ_OPS = frozenset({"ping", "get", "networks", "describe", "events", "diff", "logs", "wait",
                      "watch", "export"})
WRITE_OPS = frozenset({*ACTIONS, "prune", "console", "host-shutdown"})  # a console is
# interactive access; host-shutdown saves or shuts down every running domain
STREAM_OPS = frozenset({"events", "logs", "watch"})  # watch: a status document per change
# host-shutdown's defaults (libvirt-guests': ON_SHUTDOWN=suspend, SHUTDOWN_TIMEOUT=300)
HOST_SHUTDOWN_MODES = ("save", "shutdown")
HOST_SHUTDOWN_MODE = "save"
HOST_SHUTDOWN_PARALLEL = 4
HOST_SHUTDOWN_TIMEOUT = 300  # seconds, for the graceful shutdowns in all

INVALID_KIND = "InvalidManifest"
"""`kind` of a `get` document that is an invalid manifest naming no domain (no status)."""

# The condition whose message explains a domain best, first match wins.
_HEADLINE_CONDITIONS = (("Stalled", "True"), ("ManifestValid", "False"),
                        ("PendingRestart", "True"), ("Ready", "False"), ("Overridden", "True"))


def headline(document: Mapping[str, Any]) -> str:
    """The most telling condition message of a status document (plain form), on one line;
    "" when every condition is as it should be. For `get`'s MESSAGE and `describe`.
    An invalid manifest's document has its first problem as its message."""
    if document.get("kind") == INVALID_KIND:
        return str(document.get("message", ""))
    conditions = {c.get("type"): c for c in document.get("conditions") or ()}
    for type_, status in _HEADLINE_CONDITIONS:
        condition = conditions.get(type_)
        if condition and condition.get("status") == status and condition.get("message"):
            return " ".join(str(condition["message"]).split())
    return ""


def rfc3339(wall_seconds: float) -> str:
    """`1764000000.5` → `2025-11-24T16:00:00.500Z`: the form of every time stamp domctl writes."""
    stamp = datetime.datetime.fromtimestamp(wall_seconds, tz=datetime.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(stamp: str) -> float:
    """The inverse of rfc3339: wall-clock seconds; ValueError for a malformed stamp."""
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
