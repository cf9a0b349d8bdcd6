"""The JSON Schemas of the manifest kinds: loaded once, checked once, errors in plain words.

Called by controller/manifests/loader.py. A document's `kind` picks its schema (KINDS: Domain
in schemas/domain.schema.json, Network in schemas/network.schema.json); a missing or unknown
kind is one finding listing the known kinds, since no other field can be judged without it.
jsonschema's own messages ("Additional properties are not allowed ('memroy' was unexpected)")
name neither the field path nor a fix; here every error becomes (path of the offending field,
message), with a did-you-mean for unknown fields and kinds and the schema's `title` for values
of the wrong form. The manifest module turns the path into a line.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from controller.manifests.errors import quote, shorten

PathElem = str | int


@dataclass(frozen=True)
class SchemaFinding:
    path: tuple[PathElem, ...]
    message: str
    value_path: bool  # True: the path names a value present in the file (hints may apply)


DOMAIN, NETWORK = "Domain", "Network"
KINDS = {DOMAIN: "domain.schema.json", NETWORK: "network.schema.json"}
"""Every `kind` a manifest document may have, and the file of its schema."""


@functools.cache
def _schema_text(kind: str) -> str:
    return resources.files("schemas").joinpath(KINDS[kind]).read_text()


def schema(kind: str = DOMAIN) -> dict[str, Any]:
    """A fresh copy of a kind's schema: callers (e.g. test generators) may change theirs."""
    loaded: dict[str, Any] = json.loads(_schema_text(kind))
    return loaded


@functools.cache
def validator(kind: str = DOMAIN) -> jsonschema.protocols.Validator:
    """One validator per kind for the process: building one per call re-checks the schema
    (~175x slower)."""
    own = schema(kind)
    cls = jsonschema.validators.validator_for(own)
    cls.check_schema(own)
    return cls(own)


def findings(document: object) -> list[SchemaFinding]:
    """Every schema error of `document`, validated against the schema of its kind."""
    kind = document.get("kind") if isinstance(document, Mapping) else None
    if isinstance(document, Mapping) and not (isinstance(kind, str) and kind in KINDS):
        return [_unknown_kind(kind, "kind" in document)]
    return [f for error in validator(kind or DOMAIN).iter_errors(document)
            for f in _explain(error)]


def _unknown_kind(kind: object, present: bool) -> SchemaFinding:
    known = ", ".join(KINDS)
    if not present:
        return SchemaFinding(("kind",), f"required field is missing; one of {known}", False)
    close = difflib.get_close_matches(kind, list(KINDS), n=1, cutoff=0.6) \
        if isinstance(kind, str) and len(kind) <= 64 else []
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return SchemaFinding(("kind",), f"must be one of {known} (got {_show(kind)}){hint}", True)


def _explain(error: ValidationError) -> Iterator[SchemaFinding]:
    path = tuple(error.absolute_path)
    kind = error.validator
    if kind == "additionalProperties" and isinstance(error.instance, Mapping):
        yield from _unknown_fields(error, path)
    elif kind == "required" and isinstance(error.instance, Mapping):
        for name in error.validator_value:
            if name not in error.instance:
                yield SchemaFinding(path + (name,), "required field is missing", False)
    elif kind == "propertyNames":
        yield SchemaFinding(path + (str(error.instance),),
                            f"key {quote(error.instance)} is not {_title(error, 'a valid key')}",
                            False)
    elif kind == "not" and error.validator_value == {}:
        yield _forbidden_field(path)
    elif kind in ("allOf", "if", "then") and error.context:
        for sub in error.context:
            yield from _explain(sub)
    else:  # a number out of its range is of the right type: no quoting hint applies
        yield SchemaFinding(path, _value_message(error), kind not in ("minimum", "maximum"))


def _unknown_fields(error: ValidationError, path: tuple[PathElem, ...]) -> Iterator[SchemaFinding]:
    known = list(error.schema.get("properties", {}))
    for name in error.instance:
        if name in known:
            continue
        # difflib is quadratic in the name's length: a long name is close to no known field
        close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6) \
            if len(str(name)) <= 64 else []
        hint = f"; did you mean '{close[0]}'?" if close else \
            f"; known fields here: {', '.join(known)}" if known else ""
        yield SchemaFinding(path + (name,), f"unknown field {quote(str(name))}{hint}", False)


def _title(error: ValidationError, default: str) -> str:
    schema_part = error.schema if isinstance(error.schema, Mapping) else {}
    title = schema_part.get("title")
    return str(title) if title else default


def _show(value: object) -> str:
    """A value as the messages quote it: JSON for a string, at most a short prefix of it."""
    if isinstance(value, str):
        return json.dumps(shorten(value))
    return json.dumps(value) if isinstance(value, bool) or value is None else quote(value)


def _value_message(error: ValidationError) -> str:
    kind, expected, value = error.validator, error.validator_value, error.instance
    if kind in ("type", "pattern", "format") and _title(error, ""):
        return f"{_show(value)} is not {_title(error, '')}"
    if kind == "type":
        wanted = " or ".join(expected) if isinstance(expected, list) else expected
        return f"must be {_article(wanted)}, not {_json_type(value)} ({_show(value)})"
    if kind == "enum":
        return f"must be one of {', '.join(map(str, expected))} (got {_show(value)})"
    if kind == "const":
        return f"must be {_show(expected)} (got {_show(value)})"
    if kind in ("minimum", "maximum"):
        if _title(error, ""):
            return f"{_show(value)} is not {_title(error, '')}"
        bound = "at least" if kind == "minimum" else "at most"
        return f"must be {bound} {expected} (got {_show(value)})"
    if kind == "minItems":
        return f"needs at least {expected} item{'s' if expected != 1 else ''}"
    if kind in ("minLength", "maxLength"):
        bound = "at least" if kind == "minLength" else "at most"
        return f"must be {bound} {expected} characters long"
    if kind == "uniqueItems":
        return "must not list the same item twice"
    if kind == "oneOf":
        return f"{_show(value)} is not {_describe_alternatives(error)}"
    return shorten(str(error.message), 200)  # jsonschema's own quotes the instance whole


def _forbidden_field(path: tuple[PathElem, ...]) -> SchemaFinding:
    """A property the schema forbids here (`not: {}`): qemu on an lxc domain, or lxc on qemu."""
    field = str(path[-1]) if path else "this field"
    if field in ("qemu", "lxc"):
        return SchemaFinding(path, f"a {field} section is only allowed when spec.driver is "
                                   f"{field}", False)
    return SchemaFinding(path, f"{field} is not allowed here", False)


def _describe_alternatives(error: ValidationError) -> str:
    options = []
    for alternative in error.validator_value:
        if "const" in alternative:
            options.append(_show(alternative["const"]))
        elif alternative.get("type") == "integer":
            lo, hi = alternative.get("minimum"), alternative.get("maximum")
            options.append(f"an integer from {lo} to {hi}" if lo is not None else "an integer")
        else:
            options.append(alternative.get("title", "another form"))
    return " or ".join(options)


def _article(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return "null" if value is None else type(value).__name__
