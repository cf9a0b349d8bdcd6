"""The wire format both sides of the API share: socket names, the routes, label selectors, error
types and their HTTP status codes, and status wording.

The API is HTTP/1.1 over two Unix sockets (docs/api.md). The daemon's server
(controller/api/server.py) registers `ROUTES`, the CLI's client (controller/cli/client.py) maps an
op (`get`, `start`, `events`, ...) to its route through the same table, and a test checks that
the OpenAPI document the daemon serves lists exactly these routes. Both sides import this module
and nothing of each other, so `domctl get` never loads engine code. Plain data and pure
functions only: no I/O, no imports from the rest of domctl.

Every CLI command loads it, so it loads only what it must (issue 12: the CLI's start-up): plain
classes rather than typing's NamedTuple (typing costs 3 ms of imports; `TYPE_CHECKING = False`
is its constant, which mypy honours, without the import), datetime only when a time stamp is
written or read, the selector's patterns compiled when a selector is parsed.
"""

from __future__ import annotations

import re
from types import MappingProxyType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

_NONE: Mapping[str, Any] = MappingProxyType({})

RW_SOCKET = "domctl.sock"
"""The read-write socket's file name in the runtime dir (mode 0600)."""
RO_SOCKET = "domctl-ro.sock"
"""The read-only socket's file name in the runtime dir (mode 0666): GET only."""

ACTIONS = ("start", "stop", "suspend", "resume", "restart", "destroy", "save")
# host-shutdown's defaults (libvirt-guests': ON_SHUTDOWN=suspend, SHUTDOWN_TIMEOUT=300)
HOST_SHUTDOWN_MODES = ("save", "shutdown")
HOST_SHUTDOWN_MODE = "save"
HOST_SHUTDOWN_PARALLEL = 4
HOST_SHUTDOWN_TIMEOUT = 300  # seconds, for the graceful shutdowns in all

NDJSON = "application/x-ndjson"
"""The content type of a stream: one JSON document per line."""

ERROR_STATUS: Mapping[str, int] = {
    "BadRequest": 400, "PermissionDenied": 403, "NotFound": 404, "MethodNotAllowed": 405,
    "TooLarge": 413, "Busy": 409, "NotRunning": 409, "Invalid": 422, "Failed": 500,
    "Internal": 500,
    "NotSupported": 501,
}
"""Every error type the daemon answers with, and its HTTP status; the body is
`{"error": {"type": TYPE, "message": TEXT}}` (a stream whose source fails ends with that line)."""


class Route:
    """One resource of the API: the op the client calls it by, its method and path (aiohttp's
    and OpenAPI's `{name}` form), its parameters (the query string of a GET, the JSON body of a
    POST) with their types (`list`: an array of strings), and `select`: query parameters that
    pick this op on a path another op shares (`watch=1`). A POST changes something and is
    refused on the read-only socket, unless it `reads` (a preview of a manifest file)."""

    __slots__ = ("method", "op", "params", "path", "path_params", "reads", "required",
                 "select", "stream", "summary")

    def __init__(self, op: str, method: str, path: str, params: Mapping[str, type] = _NONE,
                 summary: str = "", stream: bool = False, select: Mapping[str, str] = _NONE,
                 required: frozenset[str] = frozenset(), reads: bool = False) -> None:
        self.op, self.method, self.path, self.params = op, method, path, params
        self.summary, self.stream, self.select, self.required = summary, stream, select, required
        self.reads = reads  # a POST that changes nothing (its body is too big for a query)
        # the names of the path's {name} segments
        self.path_params = tuple(part[1:-1] for part in path.split("/")
                                 if part.startswith("{"))

    @property
    def write(self) -> bool:
        return self.method != "GET" and not self.reads


_SELECTOR = {"labelSelector": str}
_WATCH = {"watch": "1"}
ROUTES: tuple[Route, ...] = (
    Route("ping", "GET", "/v1/version", summary="The daemon's version, and whether this is the "
          "read-only socket: {\"version\", \"readOnly\"}."),
    Route("openapi", "GET", "/v1/openapi.json", summary="This API as an OpenAPI 3.1 document."),
    Route("get", "GET", "/v1/domains", {**_SELECTOR, "disks": bool, "invalid": bool},
          "Every domain's status document (with its labels), sorted by name, then the invalid "
          "manifests that stand for no domain (kind InvalidManifest); invalid=1: only those."),
    Route("watch", "GET", "/v1/domains", _SELECTOR, "Every domain's status document "
          "now and at every change; {\"name\", \"deleted\": true} when one goes.", stream=True,
          select=_WATCH),
    Route("get", "GET", "/v1/domains/{name}", {"disks": bool, "invalid": bool},
          "[the domain's status document], or the invalid manifests going by the name."),
    Route("watch", "GET", "/v1/domains/{name}", {}, "The status document now and at "
          "every change; {\"name\", \"deleted\": true} while there is none.", stream=True,
          select=_WATCH),
    Route("describe", "GET", "/v1/domains/{name}/description",
          summary="The status in detail, with disks, recent events and the running job."),
    Route("export", "GET", "/v1/domains/{name}/export", {"defaults": bool},
          "The live configuration as a manifest, with where the manifest on disk differs; "
          "defaults=1: every field written, at its default too (the effective configuration)."),
    Route("stats", "GET", "/v1/stats", _SELECTOR, "Every running domain's figures now: CPU "
          "seconds and percent, memory, disks' and NICs' traffic ({\"name\", \"error\"} for "
          "one whose figures could not be read)."),
    Route("stats", "GET", "/v1/domains/{name}/stats", summary="[the running domain's figures]."),
    Route("display", "GET", "/v1/domains/{name}/display", summary="Where its graphical console "
          "listens now: {\"vnc\": \"HOST:DISPLAY\", \"host\", \"port\"}, or {\"vnc\": null}."),
    Route("preview", "POST", "/v1/previews", {"file": str, "text": str},
          "What a candidate manifest file would change, nothing stored: per domain declared "
          "(or deleted), its action (create, update, unchanged, delete) and each change with "
          "how it would apply; 422 with the file's problems when it is invalid.",
          required=frozenset({"file", "text"}), reads=True),
    Route("diff", "GET", "/v1/diff", summary="Every domain's manifest changes not yet in effect, "
          "and how each applies (live or restart)."),
    Route("diff", "GET", "/v1/domains/{name}/diff", summary="The domain's changes not yet in "
          "effect."),
    Route("wait", "GET", "/v1/domains/{name}/generation", summary="Re-read the manifests now; "
          "the generation the status must show as observedGeneration ({\"name\", "
          "\"generation\"}); 422 for an invalid manifest."),
    Route("logs", "GET", "/v1/domains/{name}/log", {"follow": bool, "lines": int},
          "The last `lines` (100) lines of the domain's log, {\"line\": TEXT} each; follow=1: "
          "then every appended line.", stream=True),
    Route("events", "GET", "/v1/events", {"name": str, "follow": bool, "since": str,
                                          "limit": int, "type": str, **_SELECTOR},
          "The last `limit` lifecycle events (20; with follow=1: 0; with since: all since then) "
          "of one domain or all, filtered by since (RFC 3339), type (comma-separated event "
          "types) and labelSelector; follow=1: then every new one.", stream=True),
    Route("networks", "GET", "/v1/networks", summary="Every managed network's status."),
    Route("networks", "GET", "/v1/networks/{name}", summary="[the network's status]."),
    *(Route(action, "POST", f"/v1/domains/{{name}}/actions/{action}",
            {"forceBoot": bool} if action == "start" else {},
            f"Ask the controller to {action} the domain now; answers once it is done or "
            "30 s (plus the domain's shutdownTimeout) have passed."
            + (" forceBoot: discard a saved image and boot afresh." if action == "start"
               else ""))
      for action in ACTIONS),
    Route("console", "POST", "/v1/domains/{name}/console", summary="Where the domain's console "
          "is: {\"socket\": PATH} to relay, or {\"argv\": [...]} to run (interactive access)."),
    Route("exec", "POST", "/v1/domains/{name}/exec", {"command": list},
          "The host command that runs `command` inside the running container on the caller's "
          "terminal: {\"argv\": [...]} (interactive access; a VM: 501).",
          required=frozenset({"command"})),
    Route("prune", "POST", "/v1/prune", {"confirm": bool}, "Release the removals held by the "
          "mass-removal guard; needs {\"confirm\": true}.", required=frozenset({"confirm"})),
    Route("host-shutdown", "POST", "/v1/host-shutdown",
          {"mode": str, "parallel": int, "timeout": int},
          f"Save (mode save, the default) or shut down every running domain, `parallel` "
          f"({HOST_SHUTDOWN_PARALLEL}) at a time, graceful shutdowns bounded by `timeout` "
          f"({HOST_SHUTDOWN_TIMEOUT} s)."),
)


def route_for(op: str, args: Mapping[str, Any]) -> Route:
    """The route the client sends `op` to: the one whose path parameters `args` give (`get`
    with a name is /v1/domains/{name}, without one /v1/domains). KeyError for an unknown op."""
    candidates = [route for route in ROUTES if route.op == op]
    if not candidates:
        raise KeyError(op)
    given = [route for route in candidates
             if all(args.get(p) is not None for p in route.path_params)]
    return max(given or candidates, key=lambda route: len(route.path_params))


# --- label selectors ---------------------------------------------------------------------------

class SelectorError(ValueError):
    """A label selector that cannot be parsed; its message says what is wrong."""


class Requirement:
    """One term of a label selector: `key=value` / `key==value` (op "="), `key!=value` ("!="),
    `key` ("exists"), `!key` ("!exists")."""

    __slots__ = ("key", "op", "value")

    def __init__(self, key: str, op: str, value: str = "") -> None:
        self.key, self.op, self.value = key, op, value

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "=":
            return labels.get(self.key) == self.value
        if self.op == "!=":
            return labels.get(self.key) != self.value  # kubectl: an absent key matches too
        return (self.key in labels) == (self.op == "exists")


# patterns, compiled (and cached by re) when a selector is first parsed, not at every import
_KEY = r"[A-Za-z0-9]([A-Za-z0-9_./-]*[A-Za-z0-9])?"
_VALUE = r"[A-Za-z0-9_./-]*"


def parse_selector(text: str) -> tuple[Requirement, ...]:
    """kubectl's equality-based selector: terms `k=v`, `k==v`, `k!=v`, `k`, `!k`, joined by
    commas (all must hold). SelectorError names the term that is wrong."""
    requirements = []
    for raw in text.split(","):
        term = raw.strip()
        for sign in ("!=", "==", "="):
            key, found, value = term.partition(sign)
            if found:
                op, key, value = ("!=" if sign == "!=" else "="), key.strip(), value.strip()
                break
        else:
            op, key, value = ("!exists", term[1:].strip(), "") if term.startswith("!") \
                else ("exists", term, "")
        if not re.fullmatch(_KEY, key):
            raise SelectorError(f"label selector {text!r}: {term!r} has no valid label key "
                                "(expected key=value, key==value, key!=value, key or !key, "
                                "joined by commas)")
        if not re.fullmatch(_VALUE, value):
            raise SelectorError(f"label selector {text!r}: {value!r} in {term!r} is not a "
                                "label value (letters, digits, '-', '_', '.', '/')")
        requirements.append(Requirement(key, op, value))
    return tuple(requirements)


def selects(selector: tuple[Requirement, ...], labels: Mapping[str, str]) -> bool:
    """Whether every term of `selector` holds for `labels`."""
    return all(requirement.matches(labels) for requirement in selector)


# --- wording -----------------------------------------------------------------------------------

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
    import datetime  # here: a CLI command that formats no time does not load it

    stamp = datetime.datetime.fromtimestamp(wall_seconds, tz=datetime.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(stamp: str) -> float:
    """The inverse of rfc3339, also for an offset instead of `Z`: wall-clock seconds;
    ValueError for a malformed stamp. Read here rather than by datetime, which would cost every
    `domctl get` (its AGE column) a millisecond of imports (issue 12's CLI start-up); tested
    against datetime (tests/unit/test_protocol_time.py)."""
    match = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(\.\d+)?"
                         r"([Zz]|[+-]\d\d:\d\d)", stamp)
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {stamp!r}")
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not (1 <= month <= 12 and 1 <= day <= _MONTH_DAYS[month - 1] + (month == 2 and leap)
            and hour < 24 and minute < 60 and second < 60):
        raise ValueError(f"not an RFC 3339 time: {stamp!r}")
    zone = match[8]
    offset = 0 if zone in "Zz" else (-1 if zone[0] == "-" else 1) * (
        int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return (_days_since_epoch(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
            + float(match[7] or 0) - offset)


_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _days_since_epoch(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to the date (proleptic Gregorian): the days-from-civil count on
    400-year eras starting in March, so February's leap day falls at an era year's end."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def installed_version() -> str:
    """The installed domctl's version ("unknown" when it runs from a tree never installed): for
    `--version`, the API's /v1/version and domctl_build_info. importlib.metadata loads only
    when it is asked, not with the CLI."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("domctl")
    except PackageNotFoundError:
        return "unknown"
