"""Plain-text rendering shared by the CLI's commands: cells, tables, ages, sizes.

Every CLI command loads it: it imports nothing but the wire format's time parser (no datetime:
protocol.parse_rfc3339).
"""

from __future__ import annotations

from controller.protocol import parse_rfc3339

TYPE_CHECKING = False  # typing's constant without typing's import (cli/__init__.py)
if TYPE_CHECKING:
    from typing import Any


def age(since: str | None, now: float) -> str:
    """kubectl's AGE: 45s, 3m, 2h, 4d; "-" without a time."""
    if not since:
        return "-"
    try:
        seconds = max(0, int(now - parse_rfc3339(str(since))))
    except ValueError:
        return "-"
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{seconds // span}{unit}"
    return f"{seconds}s"


def size(value: Any) -> str:
    """Bytes as binary units, one decimal: 20.0Gi."""
    if not isinstance(value, int):
        return "-"
    amount = float(value)
    for unit in ("", "Ki", "Mi", "Gi", "Ti"):
        if amount < 1024 or unit == "Ti":
            return f"{amount:.0f}" if not unit else f"{amount:.1f}{unit}"
        amount /= 1024
    return str(value)


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
