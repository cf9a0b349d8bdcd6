"""`domctl diff -f FILE`: what a candidate manifest file would change, before it lands (kubectl
diff's role, for a pull-request check).

The file's text goes to the daemon (POST /v1/previews: a read, served by the read-only socket
too), which validates it as the directory would and compares each domain it declares with what
runs (controller/engine/candidate.py); nothing is stored. Exit codes are kubectl diff's: 0 no
differences, 1 differences, 2 an error (an invalid file: its problems, file:line:column).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from controller.cli.client import ApiError, Client
from controller.cli.parser import Failed

DIFFERENCES, ERROR = 1, 2


def preview(client: Client, filename: str) -> int:
    """Print the changes `filename` would make; the exit code."""
    try:
        with open(filename, encoding="utf-8") as candidate:
            text = candidate.read()
    except (OSError, UnicodeDecodeError) as err:
        raise Failed(f"cannot read {filename}: {getattr(err, 'strerror', None) or err}") from None
    try:
        results = client.call("preview", file=filename, text=text)
    except ApiError as err:
        if err.type != "Invalid":
            raise
        print(f"error: {err.message}", file=sys.stderr)
        return ERROR
    for result in results:
        print(f"{result['name']}: {result['action']}")
        for change in result.get("changes") or ():
            print(f"  {_field(change['path'])}: {_value(change.get('old'))} -> "
                  f"{_value(change.get('new'))} ({change['apply']})")
    return DIFFERENCES if any(r["action"] != "unchanged" for r in results) else 0


def _field(path: list[str | int]) -> str:
    """`["spec", "qemu", "disks", 0, "size"]` → `qemu.disks[0].size` (the manifest's spelling)."""
    parts = path[1:] if path[:1] == ["spec"] else path
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)[1:]


def _value(value: Any) -> str:
    if value is None:
        return "(unset)"
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
