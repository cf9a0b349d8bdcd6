"""What the fast commands (`get`, `describe`, `events`, `wait`, the actions, `logs`) load (issue
12: the CLI starts fast): only the CLI's own modules, the client and the wire format; no daemon
code, not click, and none of the libraries only other commands need (`validate`'s jsonschema,
`-o yaml`, `-o jsonpath`'s jsonpath-ng, --version's importlib.metadata, the console's terminal
handling); `get -o jsonpath` loads jsonpath-ng and `get -w` its watch module, only them. Nor
the standard library's costly modules that a client can do without: typing, pathlib (with
urllib.parse and ipaddress), dataclasses, contextlib; datetime only where a time is read or
computed (`events --since`, an AGE: the document here has no `since`); `get`'s formats and
`describe`'s device tables only for them.

Each command runs as the console script runs it (controller.service.entry:main) in a fresh
interpreter against a real ApiServer, and prints the modules it loaded when it exits. Times are
not asserted here: bench/bench_e2e.py measures them.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.settings import ApiSettings
from reconcilers.model import Cause, EventDetail, EventType, Reason, State
from tests.support.api import DocsBackend, ThreadedServer

RUN_AND_LIST_MODULES = """
import sys
from controller.service.entry import main
sys.argv = ["domctl", *sys.argv[1:]]
try:
    sys.exit(main())
finally:
    sys.stderr.write("modules: " + " ".join(sorted(sys.modules)) + "\\n")
"""
# the whole of domctl a fast command may load: the CLI, its client, the wire format, the
# directories (for the default socket) and the console script's module
DOMCTL_MODULES = {"controller", "controller.cli", "controller.cli.main", "controller.cli.commands",
                  "controller.cli.client", "controller.cli.render", "controller.cli.netview",
                  "controller.cli.parser", "controller.cli.output", "controller.cli.selection",
                  "controller.cli.waiting",  # `wait`'s
                  "controller.protocol", "controller.paths",
                  "controller.service", "controller.service.entry"}
NOT_LOADED = ("reconcilers", "yaml", "jsonschema", "structlog", "asyncio", "watchdog",
              "prometheus_client", "qemu", "click", "argcomplete", "importlib.metadata",
              "difflib", "termios", "tty", "subprocess", "logging", "jsonpath_ng",
              "typing", "pathlib", "urllib", "ipaddress", "dataclasses", "inspect", "contextlib")
ONLY_FOR = {"controller.cli.output": "get", "controller.cli.netview": "describe"}
DOCUMENT = {"name": "web-1", "driver": "qemu", "desired": "running", "state": "running",
            "reason": "booted", "generation": "g1", "observedGeneration": "g1", "conditions": []}


@pytest.fixture
def server(sockdir: Path, tmp_path: Path) -> Iterator[ThreadedServer]:
    with ThreadedServer(DocsBackend(tmp_path, {"web-1": DOCUMENT}), sockdir,
                        ApiSettings()) as running:
        running.run(lambda: running.backend.bus.emit(  # one event for `events` to show
            "web-1", EventType.STARTED, EventDetail.BOOTED, State.RUNNING, Reason.BOOTED,
            Cause.API, {"uid": 0}, ""))
        yield running


@pytest.mark.parametrize("args", [
    ("get",), ("get", "web-1", "-o", "json"), ("get", "-o", "name", "-l", "!tier"),
    ("describe", "web-1"), ("events", "--since", "1h", "--type", "started"),
    ("wait", "web-1", "--for", "state=running", "--timeout", "10"), ("destroy", "web-1"),
    ("stop", "-l", "!tier"), ("start", "web-1", "--force-boot"), ("logs", "web-1")],
    ids=["get", "get-json", "get-name", "describe", "events", "wait", "destroy", "stop-l",
         "start", "logs"])
def test_a_fast_command_loads_only_the_client_and_the_wire_format(
        server: ThreadedServer, args: tuple[str, ...]) -> None:
    (server.backend.directory / "web-1.log").write_text("web-1 booted\n")
    modules = loaded(server, args)
    ours = {m for m in modules if m.partition(".")[0] in ("controller", "reconcilers")}
    assert ours <= DOMCTL_MODULES, sorted(ours - DOMCTL_MODULES)
    unexpected = NOT_LOADED if "--since" in args else (*NOT_LOADED, "datetime")
    assert not {m for m in modules if m.startswith(unexpected)}, \
        sorted(m for m in modules if m.startswith(unexpected))
    assert not {m for m, command in ONLY_FOR.items() if m in ours and args[0] != command}


def test_jsonpath_loads_jsonpath_ng_only_for_itself(server: ThreadedServer) -> None:
    modules = loaded(server, ("get", "-o", "jsonpath={.items[*].name}"))
    ours = {m for m in modules if m.partition(".")[0] in ("controller", "reconcilers")}
    assert ours - DOMCTL_MODULES == {"controller.cli.jsonpath"}
    assert "jsonpath_ng" in modules


def loaded(server: ThreadedServer, args: tuple[str, ...]) -> set[str]:
    """The modules `domctl ARGS` loaded, run as the console script runs it; it printed web-1."""
    done = subprocess.run([sys.executable, "-c", RUN_AND_LIST_MODULES, "--socket",
                           str(server.rw), *args], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "web-1" in done.stdout
    return set(done.stderr.rpartition("modules: ")[2].split())
