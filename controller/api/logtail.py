"""Reading a domain's log file for `domctl logs [-f]`: the last lines, then what is appended.

Called by the API server (controller/api/server.py) for the `logs` stream. Follows the file the way
`tail -F` does: a file replaced by rotation is finished and the new one read from its start, a
truncated one is read again from 0, a missing one is waited for. Reads bounded chunks from the
end, so a huge log costs no more than its last few MiB; never writes.

Public surface:
    last_lines(path, n) -> list[str]
    follow_lines(path, n, poll) -> async iterator of str
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO


def last_lines(path: Path, n: int) -> list[str]:
    """The last `n` lines of `path` (none while it does not exist), an unfinished one included."""
    file = _open(path)
    if file is None:
        return []
    with file:
        return _tail(file, os.fstat(file.fileno()).st_size, n)


async def follow_lines(path: Path, n: int, poll: float) -> AsyncIterator[str]:
    """The last `n` lines, then lines as they are appended; a file replaced by rotation is
    finished and the new one read from its start; a truncated one is read again from 0."""
    file = _open(path)
    pending = b""
    try:
        if file is not None:
            end = os.fstat(file.fileno()).st_size
            for line in _tail(file, end, n):
                yield line
            file.seek(end)
        while True:
            await asyncio.sleep(poll)
            file = file or _open(path)
            if file is None:
                continue
            *complete, pending = (pending + file.read()).split(b"\n")
            if len(pending) > _TAIL_CHUNK:  # a runaway line is sent in pieces
                complete, pending = [*complete, pending], b""
            for raw in complete:
                yield raw.decode(errors="replace")
            if _replaced(file, path):
                file.close()
                file = _open(path)
            elif os.fstat(file.fileno()).st_size < file.tell():
                file.seek(0)
                pending = b""
    finally:
        if file is not None:
            file.close()


_TAIL_CHUNK = 65536
_TAIL_LIMIT = 4 * 1024 * 1024  # bytes read back at most to find the last lines


def _tail(file: BinaryIO, end: int, n: int) -> list[str]:
    chunks: list[bytes] = []
    position, newlines = end, 0
    while position > 0 and newlines <= n and end - position < _TAIL_LIMIT:
        step = min(_TAIL_CHUNK, position)
        position -= step
        file.seek(position)
        chunks.append(file.read(step))
        newlines += chunks[-1].count(b"\n")
    data = b"".join(reversed(chunks)).removesuffix(b"\n")
    lines = data.split(b"\n") if data else []
    if position > 0:
        lines = lines[1:]  # may be the end of a line that starts before what was read
    return [line.decode(errors="replace") for line in lines[-n:]] if n else []


def _open(path: Path) -> BinaryIO | None:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        return None


def _replaced(file: BinaryIO, path: Path) -> bool:
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False  # keep the old file until a new one appears
    held = os.fstat(file.fileno())
    return (current.st_dev, current.st_ino) != (held.st_dev, held.st_ino)
