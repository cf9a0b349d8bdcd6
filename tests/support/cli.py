"""`domctl` called in-process, as a test calls it: the console script's `main(argv)` (every
command, `run` included) with its exit code and what it printed, captured by pytest's capsys.

Standard input, when given, is the bytes of a pipe (`virsh dumpxml NAME | domctl ...`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import sys
from collections.abc import Sequence
from unittest import mock

import pytest

from controller.service.entry import main


@dataclasses.dataclass(frozen=True)
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def invoke(capsys: pytest.CaptureFixture[str], argv: Sequence[str],
           stdin: bytes | None = None) -> Result:
    """Run `domctl ARGV`; what it printed before is dropped first."""
    capsys.readouterr()
    piped = io.TextIOWrapper(io.BytesIO(stdin or b""))
    with mock.patch.object(sys, "stdin", piped) if stdin is not None else \
            contextlib.nullcontext():
        code = main(list(argv))
    out, err = capsys.readouterr()
    return Result(code, out, err)

