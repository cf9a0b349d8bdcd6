"""The `domctl` command line: commands, the socket client, the console relay.

Runs in the user's shell, not in the daemon: it imports no engine code (checked by
import-linter), so `domctl get` starts fast and shares with the daemon only `protocol.py`.

Start-up (issue 12: a command within 3x `python3 -c pass`): a fast command (`get`, `describe`,
`events`, `wait`, the actions, `logs`) loads only what it uses, checked by
tests/unit/test_cli_startup.py. No typing at run time (3 ms of imports): annotations are
strings (`from __future__ import annotations`), the names only they use are imported under
`if TYPE_CHECKING:`, with `TYPE_CHECKING = False` defined in the module (typing's constant
without typing's import; mypy treats the name as typing's); small records are plain classes
with `__slots__`, not NamedTuples. No pathlib (3.5 ms, with urllib.parse and ipaddress): paths
are strings. datetime, a command's helpers and its output formats are imported in the function
that needs them.
"""
