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
import re
import sys
import time

from controller.cli.client import ApiError, Client, DaemonNotRunning, socket_path
from controller.cli.parser import Commands, Failed, Parser, UsageError, bounded
from controller.cli.render import age, cell, size, table
from controller.cli.selection import add_selector, exclusive, matching
from controller.paths import runtime_dir
from controller.protocol import (
    HOST_SHUTDOWN_MODE,
    HOST_SHUTDOWN_MODES,
    HOST_SHUTDOWN_PARALLEL,
    HOST_SHUTDOWN_TIMEOUT,
    parse_rfc3339,
    rfc3339,
)

TYPE_CHECKING = False  # typing's constant without typing's import (cli/__init__.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

    from controller.cli import output as formats

    Document = dict[str, Any]

ACTION_REPLY_TIMEOUT = 3600.0  # a safety net only: the controller answers within its own bound
# patterns, compiled (and cached by re) when --since is given, not at every start
DURATION = r"(?:(\d+(?:\.\d+)?)(ms|s|m|h|d))+"
DURATION_PART = r"(\d+(?:\.\d+)?)(ms|s|m|h|d)"
SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
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
        commands.add(action, _action_handler(action), _targets, ACTION_DOCS[action])
    commands.add("prune", prune, _prune_arguments)
    commands.add("host-shutdown", host_shutdown, _host_shutdown_arguments)


def _name(parser: Parser) -> None:
    parser.add_argument("name", metavar="NAME")


def _targets(parser: Parser) -> None:
    """An action's NAME, or -l: every domain the selector picks."""
    parser.add_argument("name", nargs="?", metavar="NAME")
    add_selector(parser, "Act on each of")


def _get_arguments(parser: Parser) -> None:
    from controller.cli import output as formats  # `get`'s: only for it

    parser.add_argument("words", nargs="*", metavar="KIND|NAME",
                        help="NAME, networks [NAME], or domain|network NAME.")
    parser.add_argument("-o", "--output", type=formats.output_format,
                        default=formats.Output("table"),
                        metavar="FORMAT",
                        help="table; wide (with MODE, ADDRESSES and LABELS); name "
                             "(domain/NAME lines); json; yaml; jsonpath=TEMPLATE (kubectl's "
                             "templates: jsonpath='{.items[*].name}', of one domain "
                             "jsonpath='{.state}') [default: table].")
    add_selector(parser, "Only")
    parser.add_argument("--show-labels", action="store_true",
                        help="A LABELS column (in -o wide too).")
    parser.add_argument("-w", "--watch", action="store_true",
                        help="Then print each change as it happens (a row, or a document), "
                             "until ^C.")
    parser.add_argument("--invalid", action="store_true",
                        help="Only the invalid manifests that stand for no domain yet.")


def _events_arguments(parser: Parser) -> None:
    parser.add_argument("-f", "--follow", action="store_true", help="Keep printing new events.")
    parser.add_argument("--name", help="Only this domain's events.")
    add_selector(parser, "Only the events of")
    parser.add_argument("--since", type=_since, metavar="DURATION|TIME",
                        help="Only the events since then: a duration back from now (30s, 5m, "
                             "2h, 1d, 1h30m) or an RFC 3339 time (2025-11-24T16:00:00Z); every "
                             "one of them, unless --limit.")
    parser.add_argument("--limit", type=bounded(int, 0), metavar="N",
                        help="At most the last N recent events [default: 20, with --follow 0].")
    parser.add_argument("--type", dest="types", action="append", metavar="EVENT",
                        help="Only events of this type (defined, started, stopped, ...); "
                             "repeated or comma-separated for several.")
    parser.add_argument("-o", "--output", choices=["text", "json"], default="text",
                        help="json: one object per line [default: %(default)s].")


def _wait_arguments(parser: Parser) -> None:
    from controller.cli import waiting  # only for `wait`

    parser.add_argument("name", nargs="?", metavar="NAME")
    add_selector(parser, "Wait for each of")
    parser.add_argument("--all", action="store_true", help="Wait for every domain.")
    parser.add_argument("--for", dest="condition", required=True, type=waiting.condition,
                        metavar="state=STATE|condition=TYPE[=True|False]|delete",
                        help="What to wait for: a state (running, paused, shutoff, ...), a "
                             "condition (Ready, Synced, Stalled, ...; True unless =False), or "
                             "delete: until the domain is gone.")
    parser.add_argument("--timeout", type=bounded(float, 0), default=30.0, metavar="SECONDS",
                        help=f"Exit {waiting.TIMED_OUT} when they pass first "
                             "[default: %(default)s].")


def _diff_arguments(parser: Parser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME")
    parser.add_argument("-f", "--filename", metavar="FILE",
                        help="A candidate manifest file: the changes it would make, nothing "
                             "stored; exit 0 none, 1 some, 2 an invalid file (kubectl diff's).")


def _logs_arguments(parser: Parser) -> None:
    _name(parser)
    parser.add_argument("-f", "--follow", action="store_true",
                        help="Keep printing appended lines.")
    parser.add_argument("--lines", type=bounded(int, 0),
                        help="How many last lines [default: 100].")


def _start_arguments(parser: Parser) -> None:
    _targets(parser)
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


def _socket(args: argparse.Namespace) -> str:
    euid = os.geteuid()
    fallback = [runtime_dir(0, os.environ)] if euid != 0 else []
    return socket_path(args.socket, os.environ, runtime_dir(euid, os.environ), fallback)


def _client(args: argparse.Namespace, timeout: float = 60.0) -> Client:
    return Client(_socket(args), timeout)


def _fail(message: str) -> NoReturn:
    raise Failed(message)


def get(args: argparse.Namespace) -> None:
    """Show the status of domains (or of networks).

    Every domain, NAME, or those -l picks; `get networks [NAME]` shows networks. An invalid
    manifest that stands for no domain yet (a new file with an error) is listed after the
    domains, named after its file, with STATE `-` and its first problem as MESSAGE; `--invalid`
    shows only those. `-o wide` adds each domain's management (MODE: Enforce, or Observe),
    addresses and labels. `-w` then prints each change as it happens, until ^C."""
    from controller.cli import output as formats

    output: formats.Output = args.output
    try:
        kind, name = formats.split_kind(tuple(args.words))
    except ValueError as err:
        raise UsageError(str(err)) from None
    exclusive(name, args.selector)
    if kind == "network" and (args.selector or args.watch):
        raise UsageError("-l and -w are for domains, not networks")
    if args.watch and args.invalid:
        raise UsageError("-w follows domains: an invalid manifest has no status to change")
    whole = output.kind in ("json", "yaml", "jsonpath") and not args.watch
    if kind == "network":
        documents = _client(args).call("networks", name=name)
    else:  # the documents whole (-o json|yaml|jsonpath) have the disks, read now
        documents = _client(args).call("get", name=name, disks=whole, invalid=args.invalid,
                                       labelSelector=args.selector)
    chosen = formats.columns(output.kind == "wide", args.show_labels,
                             fleet=any("host" in doc for doc in documents))
    if args.watch:
        from controller.cli.watch import follow  # only for -w

        follow(_client(args), name, args.selector, output, chosen, documents)
    elif not output.table:
        sys.stdout.write(formats.render(output, documents[0] if name else documents))
    else:
        if not documents:
            print(f"no {kind}s", file=sys.stderr)
        now = time.time()
        if kind == "network":
            from controller.cli.netview import NETWORK_COLUMNS, network_row

            headers, rows = NETWORK_COLUMNS, [network_row(doc, now) for doc in documents]
        else:
            headers = formats.headers(chosen)
            rows = [formats.row(chosen, doc, now) for doc in documents]
        for line in table(headers, rows) if rows else ():
            print(line)


def describe(args: argparse.Namespace) -> None:
    """Show NAME in detail.

    Its status, conditions, pending changes, interfaces, disks, job and last events."""
    for line in _describe_lines(_client(args).call("describe", name=args.name), time.time()):
        print(line)


def _describe_lines(doc: Document, now: float) -> list[str]:
    from controller.cli.netview import disk_rows, interface_rows  # describe's

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

    The recent events (the last 20 unless --since or --limit), of every domain, of --name, or
    of the domains -l picks, filtered by the controller; with --follow, new ones as they come."""
    exclusive(args.name, args.selector)
    for record in _client(args).stream(
            "events", name=args.name, follow=args.follow, since=args.since, limit=args.limit,
            type=",".join(args.types) if args.types else None, labelSelector=args.selector):
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


def _since(text: str) -> str:
    """--since's type: a duration back from now (Go's form: 90s, 5m, 1h30m, 2d) or an RFC 3339
    time; the RFC 3339 time the server takes."""
    if re.fullmatch(DURATION, text):
        seconds = sum(float(number) * SECONDS[unit]
                      for number, unit in re.findall(DURATION_PART, text))
        return rfc3339(time.time() - seconds)
    try:
        parse_rfc3339(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (30s, 5m, 2h, 1d, 1h30m) nor an RFC 3339 time "
            "(2025-11-24T16:00:00Z)") from None
    return text


def wait(args: argparse.Namespace) -> int:
    """Wait for NAME to reach a state or condition, or to go.

    NAME, or every domain (--all), or those -l picks. First until the controller has seen
    each manifest as it is on disk now, then until the domain reaches the state or condition;
    an invalid manifest fails at once, a domain that does not exist yet is waited for too
    (kubectl wait). `--for delete` waits until the domain is gone (at once if there is
    none). Exit 0 when each met it, 1 for an error, 2 for a usage error (an unknown state or
    condition too), 3 when the timeout passed first."""
    exclusive(args.name, args.selector)
    exclusive(args.name, args.all, "--all")
    if args.name is None and not (args.all or args.selector):
        raise UsageError("give a NAME, --all or -l SELECTOR")
    gone = args.condition.met is None
    names = [args.name] if args.name else matching(_client(args), args.selector, gone)
    from controller.cli.waiting import run

    return run(args, names, lambda timeout: _client(args, timeout))


def diff(args: argparse.Namespace) -> int | None:
    """Show changes not yet in effect (-f FILE: a file's).

    Of every domain or of NAME, each with how it applies: live, or at the next restart. With
    -f FILE: what FILE would change, each domain's action and changes, nothing stored."""
    if args.filename is not None:
        exclusive(args.name, args.filename, "-f")
        from controller.cli.preview import preview  # only for -f

        return preview(_client(args), args.filename)
    name = args.name
    lines: list[str] = []
    for domain in _client(args).call("diff", name=name):
        changes = domain.get("changes") or []
        if changes:
            lines += [f"{domain.get('name')}:", *(f"  {_change_line(c)}" for c in changes)]
    for line in lines or [f"{name}: no changes" if name else "no changes"]:
        print(line)
    return None


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


def _act(args: argparse.Namespace, action: str, **more: Any) -> int:
    """The action on NAME, or on each domain -l picks (one line each; an error of one is
    printed and the others go on, exit 1 if any failed)."""
    exclusive(args.name, args.selector)
    if args.name is None and not args.selector:
        raise UsageError("give a NAME or -l SELECTOR")
    # the controller bounds an action itself (30 s plus the domain's shutdownTimeout)
    client = _client(args, timeout=ACTION_REPLY_TIMEOUT)
    failed = 0
    for name in [args.name] if args.name else matching(client, args.selector, True):
        try:
            result = client.call(action, name=name, **more)
        except ApiError as err:
            if args.name or isinstance(err, DaemonNotRunning):
                raise
            print(f"error: {name}: {err.message}", file=sys.stderr, flush=True)
            failed += 1
            continue
        image = result.get("image")
        where = f"; image {image.get('path')} ({size(image.get('size'))})" \
            if isinstance(image, dict) else ""
        print((result.get("message") or f"{name}: {action} requested") + where, flush=True)
    return 1 if failed else 0


def _action_handler(action: str) -> Callable[[argparse.Namespace], int]:
    return lambda args: _act(args, action)


def start(args: argparse.Namespace) -> int:
    return _act(args, "start", forceBoot=args.force_boot or None)


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
