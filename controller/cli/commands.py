"""The `domctl` commands that talk to a running controller over its API socket (DESIGN §8).

`cli/main.py` calls `register(main)` once. Besides adding the commands, `register` adds the global
`--socket PATH` option (envvar DOMCTL_SOCKET) to the group, so it goes before the subcommand:
`domctl --socket /run/domctl/domctl-ro.sock get`. The group's own callback does not know that
option, so `register` wraps the callback to drop `socket` from its keyword arguments; commands
read it back from the root context's params, which click fills even during shell completion,
where no callback runs. Without --socket, `client.socket_path` picks the read-write socket of
the default runtime dir when the caller may open it, else the read-only one; a non-root user
with no controller of their own also finds the root controller's read-only socket.

Every command prints an ApiError (DaemonNotRunning included) as `error: <message>` on stderr
and exits 1. NAME arguments complete through click's shell completion
(`_DOMCTL_COMPLETE=bash_source domctl`) by asking the daemon; nothing is offered when it is down.

Public surface:
    register(group)
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import click

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
from controller.cli.render import age, cell, table
from controller.paths import default_paths
from controller.protocol import (
    HOST_SHUTDOWN_MODE,
    HOST_SHUTDOWN_MODES,
    HOST_SHUTDOWN_PARALLEL,
    HOST_SHUTDOWN_TIMEOUT,
    headline,
)

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

F = TypeVar("F", bound=Callable[..., Any])
Document = dict[str, Any]

WAIT_REFRESH = 1.0  # at least this long between two `wait` requests of one `domctl wait`
ACTION_REPLY_TIMEOUT = 3600.0  # a safety net only: the controller answers within its own bound
GET_COLUMNS = ["NAME", "DRIVER", "DESIRED", "STATE", "REASON", "ID", "PID", "AGE", "MESSAGE"]
EVENT_KEYS = ("time", "domain", "event", "detail", "state", "reason", "cause", "message")
PRUNE_REFUSED = ("prune needs --confirm: it lets the controller go on with removing the domains "
                 "whose manifests are gone, which it holds back when one rescan would remove "
                 "more than half of them; they are shut down and forgotten (disk images are "
                 "kept)")


def register(group: click.Group) -> None:
    """Add the API commands and the global --socket option to `group` (idempotent)."""
    if not any(param.name == "socket" for param in group.params):
        group.params.append(click.Option(
            ["--socket"], envvar="DOMCTL_SOCKET", metavar="PATH",
            help="The controller's API socket [default: domctl.sock in the runtime dir if "
                 "writable, else domctl-ro.sock]."))
        group.callback = _without_socket(group.callback)
    for command in (get, describe, events, wait, diff, logs, console, start, *ACTION_COMMANDS,
                    prune, host_shutdown):
        group.add_command(command)


def _without_socket(callback: Callable[..., Any] | None) -> Callable[..., Any]:
    def wrapper(*args: Any, socket: str | None = None, **kwargs: Any) -> Any:
        return callback(*args, **kwargs) if callback is not None else None

    return functools.wraps(callback)(wrapper) if callback is not None else wrapper


def _socket(ctx: click.Context) -> Path:
    euid = os.geteuid()
    fallback = [default_paths(0, os.environ).runtime_dir] if euid != 0 else []
    return socket_path(ctx.find_root().params.get("socket"), os.environ,
                       default_paths(euid, os.environ).runtime_dir, fallback)


def _client(timeout: float = 60.0) -> Client:
    return Client(_socket(click.get_current_context()), timeout)


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _reports_errors(command: F) -> F:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ApiError as err:
            _fail(err.message)
        except KeyboardInterrupt:  # ^C is how a followed stream ends: no "Aborted!"
            sys.exit(130)

    return cast(F, wrapper)


def _complete_names(ctx: click.Context, param: click.Parameter,
                    incomplete: str) -> list[CompletionItem]:
    from click.shell_completion import CompletionItem  # loaded by click only when completing

    try:
        documents = Client(_socket(ctx), timeout=2.0).call("get")
        names = [str(doc["name"]) for doc in documents]
    except Exception:
        return []
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]


NAME = click.argument("name", shell_complete=_complete_names)


@click.command()
@click.argument("words", nargs=-1, metavar="[KIND] [NAME]", shell_complete=_complete_names)
@click.option("-o", "--output", type=click.Choice(["table", "wide", "json", "yaml"]),
              default="table", show_default=True)
@click.option("--invalid", is_flag=True,
              help="Only the invalid manifests that stand for no domain yet.")
@_reports_errors
def get(words: tuple[str, ...], output: str, invalid: bool) -> None:
    """Show the status of every domain, or of NAME; `get networks [NAME]` shows networks.

    An invalid manifest that stands for no domain yet (a new file with an error) is listed
    after the domains, named after its file, with STATE `-` and its first problem as MESSAGE;
    `--invalid` shows only those. `-o wide` adds each domain's management (MODE: Enforce, or
    Observe) and addresses."""
    try:
        kind, name = split_kind(words)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    if kind == "network":
        documents = _client().call("networks", name=name)
    elif output in ("json", "yaml"):  # the documents whole: with the disks, read now
        documents = _client().call("get", name=name, disks=True, invalid=invalid)
    else:
        documents = _client().call("get", name=name, invalid=invalid)
    if output in ("table", "wide"):
        if not documents:
            click.echo(f"no {kind}s", err=True)
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
            click.echo(line)
        return
    chosen = documents[0] if name else documents
    if output == "json":
        click.echo(json.dumps(chosen, indent=2))
    else:
        import yaml  # only for -o yaml: every command pays for what it imports at start

        click.echo(yaml.safe_dump(chosen, sort_keys=False), nl=False)


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


@click.command()
@NAME
@_reports_errors
def describe(name: str) -> None:
    """Show NAME in detail: status, conditions, pending changes, job, last events."""
    for line in _describe_lines(_client().call("describe", name=name), time.time()):
        click.echo(line)


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


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events.")
@click.option("--name", shell_complete=_complete_names, help="Only this domain's events.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json: one object per line.")
@_reports_errors
def events(follow: bool, name: str | None, output: str) -> None:
    """Show recent lifecycle events; with --follow, keep printing new ones."""
    for record in _client().stream("events", name=name, follow=follow):
        if record.get("marker"):
            _fail(str(record.get("message", "events were lost")))
        if output == "json":
            click.echo(json.dumps({key: record.get(key) for key in EVENT_KEYS}))
        else:
            click.echo(_event_line(record))


def _event_line(record: Document) -> str:
    transition = f"{record.get('event')}/{record.get('detail')}"
    state = (f"{record.get('state')}/{record.get('reason')}" if "domain" in record
             else "network")
    subject = record.get("domain") or f"network/{record.get('network')}"
    return (f"{cell(record.get('time')):<24}  {cell(subject):<16} "
            f"{transition:<22} {state:<22} {cell(record.get('cause')):<9} "
            f"{record.get('message') or ''}").rstrip()


def _wait_condition(ctx: click.Context, param: click.Parameter,
                    value: str) -> tuple[str, Callable[[Document], bool]]:
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
    raise click.BadParameter("expected state=STATE or condition=TYPE[=True|False]")


@click.command()
@NAME
@click.option("--for", "for_", required=True, callback=_wait_condition,
              metavar="state=STATE|condition=TYPE[=True|False]", help="What to wait for.")
@click.option("--timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
              metavar="SECONDS", help="Exit 1 when they pass first.")
@_reports_errors
def wait(name: str, for_: tuple[str, Callable[[Document], bool]], timeout: float) -> None:
    """Wait until the controller has seen NAME's manifest as it is on disk now, then until NAME
    reaches a state or a condition (kubectl wait); an invalid manifest fails at once, a domain
    that does not exist yet is waited for too."""
    text, met = for_
    deadline = time.monotonic() + timeout
    target = _WaitTarget(name, max(timeout, 1.0))
    document: Document | None = None
    while (remaining := deadline - time.monotonic()) > 0:
        # the controller pushes NAME's status at every change; a quiet second reopens the
        # stream, which sends the status again, so a target that moved is asked for again
        try:
            for document in _client(max(remaining, 1.0)).stream(
                    "watch", idle=min(WAIT_REFRESH, remaining), name=name):
                if target.observed(document) and met(document):
                    click.echo(f"{name}: {text}")
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

    def __init__(self, name: str, timeout: float) -> None:
        self._name, self._timeout = name, timeout
        self._asked = 0.0
        self.generation = self._ask()

    def _ask(self) -> str | None:
        self._asked = time.monotonic()
        generation = _client(self._timeout).call("wait", name=self._name).get("generation")
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


@click.command()
@click.argument("name", required=False, shell_complete=_complete_names)
@_reports_errors
def diff(name: str | None) -> None:
    """Show the manifest changes not yet in effect, and how each applies."""
    lines: list[str] = []
    for domain in _client().call("diff", name=name):
        changes = domain.get("changes") or []
        if changes:
            lines += [f"{domain.get('name')}:", *(f"  {_change_line(c)}" for c in changes)]
    for line in lines or [f"{name}: no changes" if name else "no changes"]:
        click.echo(line)


@click.command()
@NAME
@click.option("-f", "--follow", is_flag=True, help="Keep printing appended lines.")
@click.option("--lines", type=click.IntRange(min=0), help="How many last lines  [default: 100]")
@_reports_errors
def logs(name: str, follow: bool, lines: int | None) -> None:
    """Print the last lines of NAME's log (qemu's or the container's output)."""
    for item in _client().stream("logs", name=name, follow=follow, lines=lines):
        click.echo(item.get("line", ""))


@click.command()
@NAME
@_reports_errors
def console(name: str) -> None:
    """Join the terminal to NAME's console: a qemu serial port (`serial: socket`; Ctrl-] leaves)
    or an LXC container's console (lxc-console; Ctrl-a q leaves)."""
    from controller.cli import console as terminal  # termios, selectors: only for this

    where = _client().call("console", name=name)
    if where.get("argv"):
        terminal.run([str(arg) for arg in where["argv"]])
    click.echo(f"Connected to {name}'s console; escape character is ^]", err=True)
    try:
        terminal.relay(str(where["socket"]))
    except OSError as err:
        _fail(f"cannot open the console of {name} at {where['socket']}: {err.strerror or err}")
    click.echo("", err=True)


_ACTION_HELP = {
    "stop": "Ask the controller to shut NAME down now (gracefully, whatever its stopMode).",
    "save": "Ask the controller to save NAME now: its memory to an image, restored at its next "
            "start (libvirt's managedsave; qemu only).",
}


def _act(action: str, name: str, **args: Any) -> None:
    # the controller bounds an action itself (30 s plus the domain's shutdownTimeout)
    result = _client(timeout=ACTION_REPLY_TIMEOUT).call(action, name=name, **args)
    image = result.get("image")
    where = f"; image {image.get('path')} ({size(image.get('size'))})" \
        if isinstance(image, dict) else ""
    click.echo((result.get("message") or f"{name}: {action} requested") + where)


def _action_command(action: str) -> click.Command:
    @click.command(name=action,
                   help=_ACTION_HELP.get(action, f"Ask the controller to {action} NAME now."))
    @NAME
    @_reports_errors
    def command(name: str) -> None:
        _act(action, name)

    return command


ACTION_COMMANDS = [_action_command(action)
                   for action in ("stop", "suspend", "resume", "restart", "destroy", "save")]


@click.command()
@NAME
@click.option("--force-boot", is_flag=True,
              help="Discard NAME's saved image (if any) and boot it afresh.")
@_reports_errors
def start(name: str, force_boot: bool) -> None:
    """Ask the controller to start NAME now; a domain with a saved image is restored from it."""
    _act("start", name, forceBoot=force_boot or None)


@click.command(name="host-shutdown")
@click.option("--mode", type=click.Choice(HOST_SHUTDOWN_MODES), default=HOST_SHUTDOWN_MODE,
              show_default=True, help="save: each domain's memory to its image (restored at "
              "the next start); shutdown: graceful shutdowns.")
@click.option("--parallel", type=click.IntRange(min=1), default=HOST_SHUTDOWN_PARALLEL,
              show_default=True, metavar="N", help="Domains taken down at once.")
@click.option("--timeout", type=click.IntRange(min=0), default=HOST_SHUTDOWN_TIMEOUT,
              show_default=True, metavar="SECONDS",
              help="How long the graceful shutdowns may take in all; those still up then are "
                   "destroyed (saves are never cut short).")
@_reports_errors
def host_shutdown(mode: str, parallel: int, timeout: int) -> None:
    """Save or shut down every running domain, as the host goes down (libvirt-guests): they
    stay down until the controller restarts, and the next `domctl run` brings them back
    (restored with their memory when saved). Exit 1 when one was not taken down cleanly."""
    result = _client(timeout=ACTION_REPLY_TIMEOUT).call(
        "host-shutdown", mode=mode, parallel=parallel, timeout=timeout)
    rows = [[cell(d.get("name")), cell(d.get("mode")), cell(d.get("result"))]
            for d in result.get("domains") or ()]
    for line in table(["NAME", "MODE", "RESULT"], rows) if rows else ():
        click.echo(line)
    click.echo(result.get("message") or "host-shutdown done")
    if not result.get("ok", False):
        sys.exit(1)


@click.command()
@click.option("--confirm", is_flag=True, help="Really release the held removals.")
@_reports_errors
def prune(confirm: bool) -> None:
    """Release the removals the controller holds back (more than half of the domains gone in
    one rescan): those domains are shut down and forgotten; disk images are kept."""
    if not confirm:
        raise click.UsageError(PRUNE_REFUSED)
    result = _client().call("prune", confirm=True)
    click.echo(result.get("message") or "prune confirmed")
