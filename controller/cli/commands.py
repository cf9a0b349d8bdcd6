"""The `domctl` commands that talk to a running controller over its API socket (DESIGN §8).

`cli/main.py` calls `register(commands)` once, with its parser's Commands (cli/parser.py). The
global `--socket PATH` option (envvar DOMCTL_SOCKET) is main's, accepted before or after the
command (`domctl --socket /run/domctl/domctl-ro.sock get`, `domctl get --socket ...`); commands
read it as `args.socket`. Without it, `client.socket_path` picks the read-write socket of the
default runtime dir when the caller may open it, else the read-only one; a non-root user with
no controller of their own also finds the root controller's read-only socket.

Every command's ApiError (DaemonNotRunning included) is printed by cli/main.py as
`error: <message>` on stderr, exit 1. Shell completion is gone with click (issue 12: start-up).

Public surface:
    register(commands)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from controller.cli.client import ApiError, Client, socket_path
from controller.cli.netview import (
    NETWORK_COLUMNS,
    addresses,
    disk_rows,
    interface_rows,
    network_row,
    size,
    split_kind,
)
from controller.cli.parser import Commands, Failed, Parser, UsageError, bounded
from controller.cli.render import age, cell, table
from controller.paths import default_paths
from controller.protocol import (
    HOST_SHUTDOWN_MODE,
    HOST_SHUTDOWN_MODES,
    HOST_SHUTDOWN_PARALLEL,
    HOST_SHUTDOWN_TIMEOUT,
    headline,
)

Document = dict[str, Any]
Condition = tuple[str, Callable[[Document], bool]]

WAIT_REFRESH = 1.0  # at least this long between two `wait` requests of one `domctl wait`
ACTION_REPLY_TIMEOUT = 3600.0  # a safety net only: the controller answers within its own bound
GET_COLUMNS = ["NAME", "DRIVER", "DESIRED", "STATE", "REASON", "ID", "PID", "AGE", "MESSAGE"]
EVENT_KEYS = ("time", "domain", "event", "detail", "state", "reason", "cause", "message")
PRUNE_REFUSED = ("prune needs --confirm: it lets the controller go on with removing the domains "
                 "whose manifests are gone, which it holds back when one rescan would remove "
                 "more than half of them; they are shut down and forgotten (disk images are "
                 "kept)")


def register(commands: Commands) -> None:
    """Add the commands that talk to the controller (each parser is built when it is used)."""
    commands.add("get", get, _get_arguments)
    commands.add("describe", describe, _name)
    commands.add("events", events, _events_arguments)
    commands.add("wait", wait, _wait_arguments)
    commands.add("diff", diff, _diff_arguments)
    commands.add("logs", logs, _logs_arguments)
    commands.add("console", console, _name)
    commands.add("start", start, _start_arguments, ACTION_DOCS["start"])
    for action in ("stop", "suspend", "resume", "restart", "destroy", "save"):
        commands.add(action, _action_handler(action), _name, ACTION_DOCS[action])
    commands.add("prune", prune, _prune_arguments)
    commands.add("host-shutdown", host_shutdown, _host_shutdown_arguments)


def _name(parser: Parser) -> None:
    parser.add_argument("name", metavar="NAME")


def _get_arguments(parser: Parser) -> None:
    parser.add_argument("words", nargs="*", metavar="KIND|NAME",
                        help="NAME, networks [NAME], or domain|network NAME.")
    parser.add_argument("-o", "--output", choices=["table", "wide", "json", "yaml"],
                        default="table", help="[default: %(default)s]")
    parser.add_argument("--invalid", action="store_true",
                        help="Only the invalid manifests that stand for no domain yet.")


def _events_arguments(parser: Parser) -> None:
    parser.add_argument("-f", "--follow", action="store_true", help="Keep printing new events.")
    parser.add_argument("--name", help="Only this domain's events.")
    parser.add_argument("-o", "--output", choices=["text", "json"], default="text",
                        help="json: one object per line [default: %(default)s].")


def _wait_arguments(parser: Parser) -> None:
    _name(parser)
    parser.add_argument("--for", dest="condition", required=True, type=_wait_condition,
                        metavar="state=STATE|condition=TYPE[=True|False]",
                        help="What to wait for.")
    parser.add_argument("--timeout", type=bounded(float, 0), default=30.0, metavar="SECONDS",
                        help="Exit 1 when they pass first [default: %(default)s].")


def _diff_arguments(parser: Parser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME")


def _logs_arguments(parser: Parser) -> None:
    _name(parser)
    parser.add_argument("-f", "--follow", action="store_true",
                        help="Keep printing appended lines.")
    parser.add_argument("--lines", type=bounded(int, 0),
                        help="How many last lines [default: 100].")


def _start_arguments(parser: Parser) -> None:
    _name(parser)
    parser.add_argument("--force-boot", action="store_true",
                        help="Discard NAME's saved image (if any) and boot it afresh.")


def _prune_arguments(parser: Parser) -> None:
    parser.add_argument("--confirm", action="store_true",
                        help="Really release the held removals.")


def _host_shutdown_arguments(parser: Parser) -> None:
    parser.add_argument("--mode", choices=HOST_SHUTDOWN_MODES, default=HOST_SHUTDOWN_MODE,
                        help="save: each domain's memory to its image (restored at the next "
                             "start); shutdown: graceful shutdowns [default: %(default)s].")
    parser.add_argument("--parallel", type=bounded(int, 1), default=HOST_SHUTDOWN_PARALLEL,
                        metavar="N", help="Domains taken down at once [default: %(default)s].")
    parser.add_argument("--timeout", type=bounded(int, 0), default=HOST_SHUTDOWN_TIMEOUT,
                        metavar="SECONDS",
                        help="How long the graceful shutdowns may take in all; those still up "
                             "then are destroyed (saves are never cut short) "
                             "[default: %(default)s].")


def _socket(args: argparse.Namespace) -> Path:
    euid = os.geteuid()
    fallback = [default_paths(0, os.environ).runtime_dir] if euid != 0 else []
    return socket_path(args.socket, os.environ, default_paths(euid, os.environ).runtime_dir,
                       fallback)


def _client(args: argparse.Namespace, timeout: float = 60.0) -> Client:
    return Client(_socket(args), timeout)


def _fail(message: str) -> NoReturn:
    raise Failed(message)


def get(args: argparse.Namespace) -> None:
    """Show the status of domains (or of networks).

    Every domain, or NAME; `get networks [NAME]` shows networks. An invalid manifest that
    stands for no domain yet (a new file with an error) is listed after the domains, named
    after its file, with STATE `-` and its first problem as MESSAGE; `--invalid` shows only
    those. `-o wide` adds each domain's management (MODE: Enforce, or Observe) and addresses."""
    output, invalid = args.output, args.invalid
    try:
        kind, name = split_kind(tuple(args.words))
    except ValueError as err:
        raise UsageError(str(err)) from None
    if kind == "network":
        documents = _client(args).call("networks", name=name)
    elif output in ("json", "yaml"):  # the documents whole: with the disks, read now
        documents = _client(args).call("get", name=name, disks=True, invalid=invalid)
    else:
        documents = _client(args).call("get", name=name, invalid=invalid)
    if output in ("table", "wide"):
        if not documents:
            print(f"no {kind}s", file=sys.stderr)
        now = time.time()
        if kind == "network":
            columns, rows = NETWORK_COLUMNS, [network_row(doc, now) for doc in documents]
        elif output == "wide":
            columns = [*GET_COLUMNS[:3], "MODE", *GET_COLUMNS[3:-1], "ADDRESSES",
                       GET_COLUMNS[-1]]
            rows = [[*row[:3], cell(doc.get("management")), *row[3:-1], addresses(doc), row[-1]]
                    for doc, row in ((doc, _get_row(doc, now)) for doc in documents)]
        else:
            columns, rows = GET_COLUMNS, [_get_row(doc, now) for doc in documents]
        for line in table(columns, rows) if rows else ():
            print(line)
        return
    chosen = documents[0] if name else documents
    if output == "json":
        print(json.dumps(chosen, indent=2))
    else:
        import yaml  # only for -o yaml: every command pays for what it imports at start

        print(yaml.safe_dump(chosen, sort_keys=False), end="")


def _get_row(doc: Document, now: float) -> list[str]:
    return [cell(doc.get("name")), cell(doc.get("driver")), cell(doc.get("desired")),
            cell(doc.get("state")), cell(doc.get("reason")), cell(doc.get("id")),
            cell(doc.get("pid")), age(doc.get("since"), now), _message(doc, now)]


def _message(doc: Document, now: float) -> str:
    """get's MESSAGE: a saved domain's image (size, age), then the most telling condition."""
    image = doc.get("saved")
    note = (f"saved image {size(image.get('size'))}, {age(image.get('savedAt'), now)} old"
            if isinstance(image, dict) else "")
    return "; ".join(m for m in (note, headline(doc)) if m) or "-"


def describe(args: argparse.Namespace) -> None:
    """Show NAME in detail.

    Its status, conditions, pending changes, interfaces, disks, job and last events."""
    for line in _describe_lines(_client(args).call("describe", name=args.name), time.time()):
        print(line)


def _describe_lines(doc: Document, now: float) -> list[str]:
    if doc.get("invalid"):
        return _invalid_lines(doc["invalid"])
    status = doc.get("status") or {}
    since = status.get("since")
    fields = [("Name", status.get("name")), ("UUID", status.get("uuid")),
              ("Driver", status.get("driver")), ("Desired", status.get("desired")),
              ("Management", status.get("management")),
              ("State", f"{status.get('state')} ({status.get('reason')})"),
              ("Since", f"{since} ({age(since, now)} ago)" if since else None),
              ("ID", status.get("id")), ("PID", status.get("pid")),
              ("Generation", status.get("generation")),
              ("Observed generation", status.get("observedGeneration")),
              ("Restarts", status.get("restarts")), ("Backoff until", status.get("backoffUntil")),
              ("Message", doc.get("message"))]
    lines = [f"{label + ':':<21}{cell(value)}" for label, value in fields]
    conditions = [[cell(c.get(k)) for k in ("type", "status", "reason", "message",
                                              "lastTransitionTime")]
                  for c in status.get("conditions") or ()]
    lines += _section("Conditions", table(["TYPE", "STATUS", "REASON", "MESSAGE", "SINCE"],
                                           conditions) if conditions else [])
    lines += _section("Pending changes", [_change_line(c) for c in status.get("pending") or ()])
    image = status.get("saved")
    if isinstance(image, dict):
        saved_at = image.get("savedAt")
        lines += _section("Saved image", [
            f"{'Path:':<11}{cell(image.get('path'))}", f"{'Size:':<11}{size(image.get('size'))}",
            f"{'Saved at:':<11}{cell(saved_at)} ({age(saved_at, now)} ago)",
            f"{'Restores:':<11}{'paused' if image.get('paused') else 'running'}"])
    nics = interface_rows(status)
    if nics:
        lines += _section("Interfaces", table(["DEVICE", "MAC", "NETWORK", "ADDRESSES"], nics))
    disks = disk_rows(doc.get("disks") or [])
    if disks:
        lines += _section("Disks", table(["NAME", "DEVICE", "SOURCE", "IMAGE", "FORMAT",
                                          "VIRTUAL", "ALLOCATED"], disks))
    job = doc.get("job")
    lines += _section("Job", [f"{job.get('job')} by {job.get('owner')} since {job.get('since')}"]
                      if job else [])
    events = [[cell(e.get(k)) for k in ("time", "event", "detail", "state", "reason", "cause",
                                         "message")] for e in doc.get("events") or ()]
    lines += _section("Events", table(["TIME", "EVENT", "DETAIL", "STATE", "REASON", "CAUSE",
                                        "MESSAGE"], events) if events else [])
    return lines


def _invalid_lines(manifests: list[Document]) -> list[str]:
    """describe of a name only invalid manifests go by: no domain yet, their problems."""
    lines = []
    for manifest in manifests:
        fields = [("Name", manifest.get("name")), ("File", manifest.get("file")),
                  ("State", "- (invalid manifest: no domain until it is fixed)")]
        lines += [f"{label + ':':<21}{cell(value)}" for label, value in fields]
        lines += _section("Problems", [
            f"{p.get('line')}:{p.get('column')}: {p.get('field')}: {p.get('message')}"
            for p in manifest.get("problems") or ()])
    return lines


def _section(title: str, lines: list[str]) -> list[str]:
    return [f"{title}:", *(f"  {line}" for line in lines or ["<none>"])]


def _change_line(change: Document) -> str:
    apply = "live" if change.get("apply") == "live" else "restart required"
    return (f"{change.get('field')}: {_value(change.get('old'))} -> "
            f"{_value(change.get('new'))} ({apply})")


def _value(value: Any) -> str:
    if value is None:
        return "(unset)"
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def events(args: argparse.Namespace) -> None:
    """Show lifecycle events; --follow keeps printing them.

    The recent events, of every domain or of --name; with --follow, new ones as they come."""
    for record in _client(args).stream("events", name=args.name, follow=args.follow):
        if record.get("marker"):
            _fail(str(record.get("message", "events were lost")))
        if args.output == "json":
            print(json.dumps({key: record.get(key) for key in EVENT_KEYS}), flush=True)
        else:
            print(_event_line(record), flush=True)


def _event_line(record: Document) -> str:
    transition = f"{record.get('event')}/{record.get('detail')}"
    state = (f"{record.get('state')}/{record.get('reason')}" if "domain" in record
             else "network")
    subject = record.get("domain") or f"network/{record.get('network')}"
    return (f"{cell(record.get('time')):<24}  {cell(subject):<16} "
            f"{transition:<22} {state:<22} {cell(record.get('cause')):<9} "
            f"{record.get('message') or ''}").rstrip()


def _wait_condition(value: str) -> Condition:
    """--for's type: its text, and the test of a status document."""
    kind, _, wanted = value.partition("=")
    if kind == "state" and wanted:
        return value, lambda doc: doc.get("state") == wanted
    type_, _, status = wanted.partition("=")
    status = status or "True"
    if kind == "condition" and type_ and status.lower() in ("true", "false"):
        return value, lambda doc: any(
            str(c.get("type", "")).lower() == type_.lower()
            and str(c.get("status", "")).lower() == status.lower()
            for c in doc.get("conditions") or ())
    raise argparse.ArgumentTypeError("expected state=STATE or condition=TYPE[=True|False]")


def wait(args: argparse.Namespace) -> None:
    """Wait until NAME reaches a state or condition.

    First until the controller has seen NAME's manifest as it is on disk now, then until NAME
    reaches the state or condition; an invalid manifest fails at once, a domain that does not
    exist yet is waited for too (kubectl wait)."""
    name, timeout = args.name, args.timeout
    text, met = args.condition
    deadline = time.monotonic() + timeout
    target = _WaitTarget(args, max(timeout, 1.0))
    document: Document | None = None
    while (remaining := deadline - time.monotonic()) > 0:
        # the controller pushes NAME's status at every change; a quiet second reopens the
        # stream, which sends the status again, so a target that moved is asked for again
        try:
            for document in _client(args, max(remaining, 1.0)).stream(
                    "watch", idle=min(WAIT_REFRESH, remaining), name=name):
                if target.observed(document) and met(document):
                    print(f"{name}: {text}")
                    return
                if time.monotonic() >= deadline:
                    break
        except ApiError as err:
            if err.type != "Timeout":
                raise
    _fail(f"timed out waiting for {name}: {text}{target.why(document)}")


class _WaitTarget:
    """The generation `wait` waits for: the controller re-reads the manifests for the request
    and names the generation it then holds (None: no manifest declares NAME yet, so the first
    generation its status shows). Generations are content hashes, not counters: when the
    status settles on another generation than the target, the manifest may have changed
    again since, so the target is asked for again (at most every WAIT_REFRESH seconds)."""

    def __init__(self, args: argparse.Namespace, timeout: float) -> None:
        self._args, self._timeout = args, timeout
        self._asked = 0.0
        self.generation = self._ask()

    def _ask(self) -> str | None:
        self._asked = time.monotonic()
        generation = _client(self._args, self._timeout).call(
            "wait", name=self._args.name).get("generation")
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
        if document is None:
            return "; no such domain yet"
        if not self._matches(document):
            wanted = self.generation or document.get("generation")
            return (f"; generation {wanted} not observed yet (observedGeneration "
                    f"{document.get('observedGeneration')})")
        message = headline(document)
        return f"; {message}" if message else ""


def diff(args: argparse.Namespace) -> None:
    """Show the manifest changes not yet in effect.

    Of every domain or of NAME, each with how it applies: live, or at the next restart."""
    name = args.name
    lines: list[str] = []
    for domain in _client(args).call("diff", name=name):
        changes = domain.get("changes") or []
        if changes:
            lines += [f"{domain.get('name')}:", *(f"  {_change_line(c)}" for c in changes)]
    for line in lines or [f"{name}: no changes" if name else "no changes"]:
        print(line)


def logs(args: argparse.Namespace) -> None:
    """Print the last lines of NAME's log.

    qemu's or the container's output; --follow keeps printing appended lines."""
    for item in _client(args).stream("logs", name=args.name, follow=args.follow,
                                     lines=args.lines):
        print(item.get("line", ""), flush=True)


def console(args: argparse.Namespace) -> None:
    """Join the terminal to NAME's console.

    A qemu serial port (`serial: socket`; Ctrl-] leaves) or an LXC container's console
    (lxc-console; Ctrl-a q leaves)."""
    from controller.cli import console as terminal  # termios, selectors: only for this

    name = args.name
    where = _client(args).call("console", name=name)
    if where.get("argv"):
        terminal.run([str(arg) for arg in where["argv"]])
    print(f"Connected to {name}'s console; escape character is ^]", file=sys.stderr)
    try:
        terminal.relay(str(where["socket"]))
    except OSError as err:
        _fail(f"cannot open the console of {name} at {where['socket']}: {err.strerror or err}")
    print(file=sys.stderr)


HOLDS = """The action holds until NAME's manifest next changes, also across controller restarts:
meanwhile it shows as the Overridden condition and drift correction does not undo it; then
the manifest's state applies again."""
ACTION_DOCS = {
    "start": f"""Start NAME now (restored if it has a saved image).

Asks the controller to start NAME; a domain with a saved image is restored from it.

{HOLDS}""",
    "stop": f"""Shut NAME down now (gracefully).

Asks the controller to shut NAME down gracefully, whatever its stopMode says.

{HOLDS}""",
    "suspend": f"""Suspend (pause) NAME now.

{HOLDS}""",
    "resume": f"""Resume NAME now.

{HOLDS}""",
    "restart": """Shut NAME down gracefully and start it again.

Like the other actions it holds until NAME's manifest next changes (shown as the Overridden
condition meanwhile), but only until NAME has started again: then the manifest rules.""",
    "destroy": f"""Stop NAME at once (like virsh destroy).

Asks the controller to destroy NAME now: it cuts short a graceful shutdown in progress.

{HOLDS}""",
    "save": f"""Save NAME to an image now (qemu).

Asks the controller to save NAME's memory to an image, restored at its next start (libvirt's
managedsave; qemu only).

{HOLDS}""",
}


def _act(args: argparse.Namespace, action: str, **more: Any) -> None:
    # the controller bounds an action itself (30 s plus the domain's shutdownTimeout)
    name = args.name
    result = _client(args, timeout=ACTION_REPLY_TIMEOUT).call(action, name=name, **more)
    image = result.get("image")
    where = f"; image {image.get('path')} ({size(image.get('size'))})" \
        if isinstance(image, dict) else ""
    print((result.get("message") or f"{name}: {action} requested") + where)


def _action_handler(action: str) -> Callable[[argparse.Namespace], None]:
    return lambda args: _act(args, action)


def start(args: argparse.Namespace) -> None:
    _act(args, "start", forceBoot=args.force_boot or None)


def host_shutdown(args: argparse.Namespace) -> int:
    """Save or shut down every running domain.

    As the host goes down (libvirt-guests): they
    stay down until the controller restarts, and the next `domctl run` brings them back
    (restored with their memory when saved). Exit 1 when one was not taken down cleanly."""
    result = _client(args, timeout=ACTION_REPLY_TIMEOUT).call(
        "host-shutdown", mode=args.mode, parallel=args.parallel, timeout=args.timeout)
    rows = [[cell(d.get("name")), cell(d.get("mode")), cell(d.get("result"))]
            for d in result.get("domains") or ()]
    for line in table(["NAME", "MODE", "RESULT"], rows) if rows else ():
        print(line)
    print(result.get("message") or "host-shutdown done")
    return 0 if result.get("ok", False) else 1


def prune(args: argparse.Namespace) -> None:
    """Release the removals the controller holds back.

    More than half of the domains gone in one rescan are held; released, those domains are shut
    down and forgotten (disk images are kept)."""
    if not args.confirm:
        raise UsageError(PRUNE_REFUSED)
    result = _client(args).call("prune", confirm=True)
    print(result.get("message") or "prune confirmed")
