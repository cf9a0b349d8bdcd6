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
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    return ["   ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip()
            for row in [headers, *rows]]
