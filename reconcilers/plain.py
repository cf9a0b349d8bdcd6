"""The inverse of `model.to_plain`: a model object rebuilt from its JSON-ready form, typed.

`from_plain(tp, data)` rebuilds a frozen dataclass of the model (or an enum, tuple, Optional,
mapping, scalar) guided by the dataclass field types, so a document is read back into the same
types it was written from; anything of another shape is a TypeError or ValueError, which the
caller takes as a damaged document. Used by the controller's state files
(controller/state/jsondir.py: domain records, status documents) and by the qemu driver's own
files (the live spec of a running domain, a managed save's metadata). Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
from collections.abc import Mapping
from typing import Any, Union, get_args, get_origin, get_type_hints

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
