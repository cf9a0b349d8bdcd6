"""Where the daemon keeps its files: the directories of `domctl run`, defaults for root and users.

`domctl run` (controller/service/command.py) builds one `Paths` from its flags and these
defaults and puts it at the root of the settings tree (controller/settings.py); the client
commands (controller/cli/commands.py) use `runtime_dir(...)`, the one rule `default_paths`
follows too, to find the API socket. Nothing else reads the environment. As root the defaults
are the FHS places a packaged daemon uses; as a user they follow the XDG base directories, so
`domctl run` works unprivileged for qemu (LXC needs root).

A leaf module (standard library only), so both the CLI and the daemon's layers may import it.
The CLI loads it at every start (issue 12: the CLI's start-up), so it costs no more than it
must: `runtime_dir` is a string, as the CLI uses it, and pathlib (3.5 ms of imports, with
urllib.parse and ipaddress) is imported by `default_paths`, the daemon's; `Paths` is a
collections.namedtuple, not typing's NamedTuple (typing costs 3 ms) nor a dataclass (6 ms,
inspect). `TYPE_CHECKING = False` is typing's constant, which mypy honours, without the import.
"""

from __future__ import annotations

import os
from collections import namedtuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path


class Paths(namedtuple("Paths", ["manifests", "state_dir", "runtime_dir", "log_dir",
                                 "hooks_dir"])):
    __slots__ = ()
    # the fields' types, for mypy
    manifests: Path  # the watched directory of Domain manifests
    state_dir: Path  # status, events.jsonl, audit.jsonl, per-domain records, driver data
    runtime_dir: Path  # sockets and pidfiles; may be a tmpfs cleared at boot
    log_dir: Path  # <name>.log per domain
    hooks_dir: Path  # <driver> and <driver>.d/* hook scripts; missing = no hooks

    def ensure(self) -> None:
        """Create every directory the daemon writes to (not the manifests or hooks)."""
        for directory in (self.state_dir, self.runtime_dir, self.log_dir):
            directory.mkdir(parents=True, exist_ok=True, mode=0o755)


def runtime_dir(euid: int, env: Mapping[str, str]) -> str:
    """The default runtime dir of `euid`: where the API sockets are."""
    if euid == 0:
        return "/run/domctl"
    if env.get("XDG_RUNTIME_DIR"):
        return os.path.join(env["XDG_RUNTIME_DIR"], "domctl")
    return f"/tmp/domctl-{euid}"


def default_paths(euid: int, env: Mapping[str, str]) -> Paths:
    from pathlib import Path

    runtime = Path(runtime_dir(euid, env))
    if euid == 0:
        return Paths(manifests=Path("/etc/domctl/manifests"), state_dir=Path("/var/lib/domctl"),
                     runtime_dir=runtime, log_dir=Path("/var/log/domctl"),
                     hooks_dir=Path("/etc/domctl/hooks"))
    home = Path(env.get("HOME", "/tmp"))
    config = Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "domctl"
    state = Path(env.get("XDG_STATE_HOME") or home / ".local" / "state") / "domctl"
    return Paths(manifests=config / "manifests", state_dir=state, runtime_dir=runtime,
                 log_dir=state / "log", hooks_dir=config / "hooks")
