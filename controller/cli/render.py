"""Plain-text rendering shared by the CLI's commands: cells, tables, ages.

Imports nothing but the standard library (every CLI command loads it).
"""

from __future__ import annotations

import datetime
from typing import Any


def age(since: str | None, now: float) -> str:
    """kubectl's AGE: 45s, 3m, 2h, 4d; "-" without a time."""
    try:
        seconds = max(0, int(now - datetime.datetime.fromisoformat(str(since)).timestamp()))
    except ValueError:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def cell(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    sizes = widths(headers, rows)
    return [line(row, sizes) for row in [headers, *rows]]


def widths(headers: list[str], rows: list[list[str]]) -> list[int]:
    """Each column's width: its longest cell's."""
    return [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]


def line(row: list[str], sizes: list[int]) -> str:
    """A table's row, its cells padded to `sizes` (`get -w` keeps the first table's)."""
    return "   ".join(text.ljust(width) for text, width in zip(row, sizes, strict=True)).rstrip()
