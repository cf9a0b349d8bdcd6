"""Errors of the controller layer, on top of the tree in reconcilers/errors.py.

    DomctlError (reconcilers/errors.py)
    ├── TransientError ── DriverError, BusyError
    └── TerminalError ─┬─ NotSupportedError, HostValidationError
                       └─ ManifestError: one or more located Problems in manifest files

A Problem always renders as `FILE:LINE:COLUMN: FIELD: MESSAGE`, the form `domctl validate`,
the ManifestValid condition and the logs all use, so an editor or CI log can jump to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from reconcilers.errors import DomctlError, TerminalError

__all__ = ["DomctlError", "ManifestError", "Problem", "format_path"]


def format_path(path: Sequence[str | int]) -> str:
    """`("spec", "qemu", "disks", 0, "format")` → `spec.qemu.disks[0].format`."""
    out = ""
    for elem in path:
        if isinstance(elem, int):
            out += f"[{elem}]"
        else:
            out += f".{elem}" if out else str(elem)
    return out or "(document)"


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    column: int
    field: str  # dotted path such as spec.qemu.disks[0].format, or "(yaml)" for syntax errors
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.field}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class ManifestError(TerminalError):
    """A manifest file is invalid; `problems` lists every error found in it, in file order."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.column, p.field))
        super().__init__("\n".join(str(p) for p in self.problems))
