"""Errors of the controller layer, on top of the tree in reconcilers/errors.py.

    DomctlError (reconcilers/errors.py)
    ├── TransientError ── DriverError, BusyError
    └── TerminalError ─┬─ NotSupportedError, HostValidationError
                       └─ ManifestError: one or more located Problems in manifest files

A Problem always renders as `FILE:LINE:COLUMN: FIELD: MESSAGE`, the form `domctl validate`,
the ManifestValid condition and the logs all use, so an editor or CI log can jump to it. The
checks that find problems name a field's path (a Finding), and the loader turns it into a line.

A message quotes a value through `quote()`, which keeps a short prefix of it: a manifest may hold
a value of megabytes, and the message lands in the status file, the log and the API. A Problem
also caps its field and message, whatever built them.
"""

from __future__ import annotations

import reprlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import NamedTuple

from reconcilers.errors import DomctlError, TerminalError

__all__ = ["DomctlError", "Finding", "ManifestError", "Problem", "format_path", "quote",
           "shorten"]

QUOTE_CHARS = 60
"""Characters of a value a message quotes; the rest is replaced by its length."""
FIELD_CHARS = 200
MESSAGE_CHARS = 1000

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = QUOTE_CHARS
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6
_REPR.maxlevel = 3


def shorten(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text` itself, or its first `limit` characters and how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


def quote(value: object) -> str:
    """A value as a message quotes it: `'abc'` for a string, at most a short prefix of it."""
    if isinstance(value, str):
        return repr(shorten(value)) if len(value) > QUOTE_CHARS else repr(value)
    return shorten(_REPR.repr(value))


def format_path(path: Sequence[str | int]) -> str:
    """`("spec", "qemu", "disks", 0, "format")` → `spec.qemu.disks[0].format`."""
    out = ""
    for elem in path:
        if isinstance(elem, int):
            out += f"[{elem}]"
        else:
            name = shorten(str(elem))  # a key may be as long as a value
            out += f".{name}" if out else name
    return shorten(out, FIELD_CHARS) or "(document)"


class Finding(NamedTuple):
    """A problem a check found in a document, before the loader locates it in the file."""

    path: tuple[str | int, ...]  # of the field, keys and list indexes
    message: str
    inside: tuple[int, int] | None = None  # 1-based line and column within the field's value,
    # for a problem inside a document held in a string (a #cloud-config in userData)


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    column: int
    field: str  # dotted path such as spec.qemu.disks[0].format, or "(yaml)" for syntax errors
    message: str

    def __post_init__(self) -> None:
        """Whatever built the message, a Problem never carries a value whole."""
        object.__setattr__(self, "field", shorten(self.field, FIELD_CHARS))
        object.__setattr__(self, "message", shorten(self.message, MESSAGE_CHARS))

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.field}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class ManifestError(TerminalError):
    """A manifest file is invalid; `problems` lists every error found in it, in file order."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.column, p.field))
        super().__init__("\n".join(str(p) for p in self.problems))
