"""Load manifest files: strict YAML → JSON Schema → cross-field checks → normalised Domains.

Called by `domctl validate` and by the manifest source of the daemon. Every error, whatever
stage finds it, becomes a located Problem (`FILE:LINE:COLUMN: FIELD: MESSAGE`); a file with any
problem yields no domains at all, so a half-valid file never starts half of what it declares.
Never touches a running domain, never reads anything but the files it is given.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from controller.manifests import normalise, schema, semantic
from controller.manifests.errors import ManifestError, Problem, format_path
from controller.manifests.yamlsource import (
    Document,
    YamlSyntaxError,
    implicit_type_hint,
    locate,
    parse,
)
from reconcilers.model import Domain, SourceRef


def is_manifest_name(name: str) -> bool:
    """The files a manifests directory may hold: `*.yaml`/`*.yml`, no dot files or editor temps.

    Ansible's temp files (`.ansible_tmp…a.yaml`) end in `.yaml`, hence the leading-dot rule;
    emacs locks start with `.#`, vim swaps end in `.swp`, backups in `~`.
    """
    if name.startswith((".", "#")) or name.endswith(("~", ".swp", ".tmp")):
        return False
    return name.endswith((".yaml", ".yml"))


def load_text(text: str, filename: str) -> list[Domain]:
    """Every domain declared in `text`; raises ManifestError listing every problem found."""
    try:
        documents = parse(text)
    except YamlSyntaxError as err:
        raise ManifestError([Problem(filename, p.position.line, p.position.column,
                                     format_path(p.path) if p.path else "(yaml)", p.message)
                             for p in err.problems]) from None
    problems: list[Problem] = []
    domains: list[Domain] = []
    for document in documents:
        found = list(_document_problems(document, filename))
        if found:
            problems.extend(found)
            continue
        domains.append(_build(document, filename))
    if problems:
        raise ManifestError(problems)
    return domains


def load_file(path: str | os.PathLike[str]) -> list[Domain]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        problem = Problem(str(path), 1, 1, "(file)", f"not UTF-8 text: {err}")
        raise ManifestError([problem]) from None
    except OSError as err:
        problem = Problem(str(path), 1, 1, "(file)", err.strerror or str(err))
        raise ManifestError([problem]) from None
    return load_text(text, str(path))


def _document_problems(document: Document, filename: str) -> Iterator[Problem]:
    def problem(path: tuple[str | int, ...], message: str, value_path: bool) -> Problem:
        where = locate(document.node, path)
        if value_path and where.complete:
            hint = implicit_type_hint(where.node)
            if hint:
                message = f"{message}; {hint}"
        # a missing field is reported where its parent stands (Located stops at the parent)
        position = where.position
        return Problem(filename, position.line, position.column, format_path(path), message)

    if not isinstance(document.data, Mapping):
        yield problem((), "a manifest document must be a mapping with apiVersion, kind, "
                          "metadata and spec", False)
        return
    schema_findings = schema.findings(document.data)
    for finding in schema_findings:
        yield problem(finding.path, finding.message, finding.value_path)
    if not schema_findings:
        for path, message in semantic.check(document.data):
            yield problem(path, message, False)


def _build(document: Document, filename: str) -> Domain:
    data = document.data
    assert isinstance(data, Mapping)
    return Domain(metadata=normalise.metadata(data["metadata"]), spec=normalise.spec(data["spec"]),
                  source=SourceRef(filename, document.node.start_mark.line + 1, document.index))


@dataclass
class LoadResult:
    """The outcome of loading many files: the valid domains and every problem, conflicts
    included."""

    domains: list[Domain] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: int = 0


def manifest_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Files named explicitly are taken as they are; directories are filtered by name."""
    for path in map(Path, paths):
        if path.is_dir():
            yield from sorted(p for p in path.iterdir()
                              if p.is_file() and is_manifest_name(p.name))
        else:
            yield path


def load_paths(paths: Iterable[str | os.PathLike[str]]) -> LoadResult:
    result = LoadResult()
    for path in manifest_files(paths):
        result.files += 1
        try:
            result.domains.extend(load_file(path))
        except ManifestError as err:
            result.problems.extend(err.problems)
    conflicts = name_conflicts(result.domains)
    result.problems.extend(conflicts)
    clashing = {(p.file, p.line) for p in conflicts}
    result.domains = [d for d in result.domains
                      if (d.source.file, d.source.line) not in clashing]
    return result


def name_conflicts(domains: Iterable[Domain]) -> list[Problem]:
    """Two documents declaring one name: both are refused, each message naming the other."""
    by_name: dict[str, list[Domain]] = {}
    for domain in domains:
        by_name.setdefault(domain.name, []).append(domain)
    problems = []
    for name, group in by_name.items():
        if len(group) < 2:
            continue
        for domain in group:
            others = ", ".join(f"{o.source.file}:{o.source.line}" for o in group if o is not domain)
            problems.append(Problem(domain.source.file, domain.source.line, 1, "metadata.name",
                                    f"domain {name!r} is also declared at {others}; "
                                    "neither is applied until one is removed"))
    return problems


__all__ = ["LoadResult", "ManifestError", "Problem", "is_manifest_name", "load_file",
           "load_paths", "load_text", "manifest_files", "name_conflicts"]
