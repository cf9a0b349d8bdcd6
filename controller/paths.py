"""Where the daemon keeps its files: the directories of `domctl run`, defaults for root and users.

`domctl run` (controller/service/command.py) builds one `Paths` from its flags and these
defaults and puts it at the root of the settings tree (controller/settings.py); the client
commands (controller/cli/commands.py) use `default_paths(...).runtime_dir` to find the API
socket. Nothing else reads the environment. As root the defaults are the FHS places a packaged
daemon uses; as a user they follow the XDG base directories, so `domctl run` works
unprivileged for qemu (LXC needs root).

A leaf module (standard library only), so both the CLI and the daemon's layers may import it;
a NamedTuple rather than a dataclass, since the CLI loads it at every start and dataclasses
costs 6 ms of imports (inspect).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple


class Paths(NamedTuple):
    manifests: Path  # the watched directory of Domain manifests
    state_dir: Path  # status, events.jsonl, audit.jsonl, per-domain records, driver data
    runtime_dir: Path  # sockets and pidfiles; may be a tmpfs cleared at boot
    log_dir: Path  # <name>.log per domain
    hooks_dir: Path  # <driver> and <driver>.d/* hook scripts; missing = no hooks

    def ensure(self) -> None:
        """Create every directory the daemon writes to (not the manifests or hooks)."""
        for directory in (self.state_dir, self.runtime_dir, self.log_dir):
            directory.mkdir(parents=True, exist_ok=True, mode=0o755)


def default_paths(euid: int, env: Mapping[str, str]) -> Paths:
    if euid == 0:
        return Paths(manifests=Path("/etc/domctl/manifests"), state_dir=Path("/var/lib/domctl"),
                     runtime_dir=Path("/run/domctl"), log_dir=Path("/var/log/domctl"),
                     hooks_dir=Path("/etc/domctl/hooks"))
    home = Path(env.get("HOME", "/tmp"))
    config = Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "domctl"
    state = Path(env.get("XDG_STATE_HOME") or home / ".local" / "state") / "domctl"
    runtime = Path(env["XDG_RUNTIME_DIR"]) / "domctl" if env.get("XDG_RUNTIME_DIR") \
        else Path(f"/tmp/domctl-{euid}")
    return Paths(manifests=config / "manifests", state_dir=state, runtime_dir=runtime,
                 log_dir=state / "log", hooks_dir=config / "hooks")
