"""Typed JSON documents in a directory: one file per domain, written atomically.

`from_plain` rebuilds a frozen dataclass of the model (or an enum, tuple, Optional, ...) from
its `model.to_plain` form, guided by the dataclass field types, so a state file is read back
into the same types it was written from. Used by the registry (domain records) and the status
store. A corrupt or unreadable file is logged and skipped, never raised: a bad state file
must not stop the controller (atomic writes make it rare).

Public surface:
    from_plain(cls, data)
    JsonDir(directory): path(name), write(name, obj), read(name), read_as(tp, name), names(),
        remove(name)
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import json
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import structlog

from controller.state.fsutil import atomic_write_json, fsync_dir

log = structlog.get_logger(__name__)

T = TypeVar("T")
log = structlog.get_logger(__name__)

_SCALARS = (str, int, float, bool)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def from_plain(tp: Any, data: Any) -> Any:
    """The inverse of `model.to_plain` for the type `tp`; TypeError/ValueError on a mismatch."""
    origin = get_origin(tp)
    if tp is Any:
        return data
    if origin in (Union, types.UnionType):
        return _from_optional(tp, data)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _from_dataclass(tp, data)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(data)
    if origin is tuple:
        return _from_tuple(get_args(tp), data)
    if origin in (Mapping, dict):
        key_type, value_type = get_args(tp)
        _expect(data, dict, tp)
        return {from_plain(key_type, k): from_plain(value_type, v) for k, v in data.items()}
    if tp is float and isinstance(data, int) and not isinstance(data, bool):
        return float(data)
    if tp in _SCALARS:
        _expect(data, tp, tp)
        if tp is not bool and isinstance(data, bool):
            raise TypeError(f"expected {tp.__name__}, got bool")
        return data
    raise TypeError(f"from_plain: unsupported type {tp!r}")


def _from_optional(tp: Any, data: Any) -> Any:
    if data is None and type(None) in get_args(tp):
        return None
    options = [arg for arg in get_args(tp) if arg is not type(None)]
    if len(options) != 1:
        raise TypeError(f"from_plain: ambiguous union {tp!r}")
    return from_plain(options[0], data)


def _from_dataclass(cls: type, data: Any) -> Any:
    _expect(data, dict, cls)
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = set(data) - set(names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    return cls(**{name: from_plain(hints[name], data[name]) for name in names if name in data})


def _from_tuple(args: tuple[Any, ...], data: Any) -> tuple[Any, ...]:
    _expect(data, list, tuple)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(from_plain(args[0], item) for item in data)
    if len(args) != len(data):
        raise ValueError(f"expected {len(args)} items, got {len(data)}")
    return tuple(from_plain(arg, item) for arg, item in zip(args, data, strict=True))


def _expect(data: Any, kind: type, tp: Any) -> None:
    if not isinstance(data, kind):
        raise TypeError(f"expected {kind.__name__} for {tp!r}, got {type(data).__name__}")


class JsonDir:
    """A directory of `<name>.json` documents, one per domain, written atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith(".") or "\0" in name:
            raise ValueError(f"not a domain name usable as a file name: {name!r}")
        return self.directory / f"{name}.json"

    def write(self, name: str, obj: Any) -> None:
        path = self.path(name)
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, obj)

    def read(self, name: str) -> Any | None:
        """The parsed document; None when missing or unreadable (the latter is logged)."""
        path = self.path(name)
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("state file unreadable, skipped", path=str(path), error=str(exc))
            return None

    def read_as(self, tp: type[T], name: str) -> T | None:
        """The document rebuilt as `tp`; None when missing, unreadable or malformed (logged)."""
        data = self.read(name)
        if data is None:
            return None
        try:
            result: T = from_plain(tp, data)
        except (TypeError, ValueError) as exc:
            log.warning("state file invalid, skipped", path=str(self.path(name)), error=str(exc))
            return None
        return result

    def names(self) -> list[str]:
        """Names with a document, sorted; temp files (`.x.json.*.tmp`) are not documents."""
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json")
                      if not p.name.startswith("."))

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(name).unlink()
            fsync_dir(self.directory)
