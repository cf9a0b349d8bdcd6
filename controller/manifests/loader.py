"""Load manifest files: strict YAML → JSON Schema → cross-field checks → normalised objects.

Called by `domctl validate` and by the manifest source of the daemon. A file holds documents of
either kind, in any mix: `kind: Domain` (a reconcilers.model.Domain) and `kind: Network` (a
reconcilers.net.model.Network); `load_documents`/`load_file_documents` return both, while
`load_text`/`load_file` return the domains alone (what most callers want). Every error, whatever
stage finds it, becomes a located Problem (`FILE:LINE:COLUMN: FIELD: MESSAGE`); a file with any
problem yields nothing at all, so a half-valid file never starts half of what it declares.
Names are unique per kind (a Network and a Domain may share one), and a bridge serves one
Network: documents that clash are all refused, each naming the others.
Never touches a running domain, never reads anything but the files it is given, and of those
only regular files (a FIFO would block the read for ever, a device never end), never more than
`max_bytes` of one (`SourceSettings.max_manifest_bytes`): a bigger file is refused unread.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from controller.manifests import network, normalise, schema, semantic
from controller.manifests.errors import ManifestError, Problem, format_path, shorten
from controller.manifests.yamlsource import (
    Document,
    YamlSyntaxError,
    implicit_type_hint,
    locate,
    parse,
    position_inside,
)
from controller.settings import SourceSettings
from reconcilers.model import Domain, SourceRef
from reconcilers.net.model import Network


def is_manifest_name(name: str) -> bool:
    """The files a manifests directory may hold: `*.yaml`/`*.yml`, no dot files or editor temps.

    Ansible's temp files (`.ansible_tmp…a.yaml`) end in `.yaml`, hence the leading-dot rule;
    emacs locks start with `.#`, vim swaps end in `.swp`, backups in `~`.
    """
    if name.startswith((".", "#")) or name.endswith(("~", ".swp", ".tmp")):
        return False
    return name.endswith((".yaml", ".yml"))


@dataclass(frozen=True)
class Documents:
    """What one file (or text) declares, each kind in file order; equal to `Documents()` when
    it holds no document."""

    domains: tuple[Domain, ...] = ()
    networks: tuple[Network, ...] = ()


def load_documents(text: str, filename: str) -> Documents:
    """Every domain and network declared in `text`; raises ManifestError listing every problem
    found."""
    try:
        documents = parse(text)
    except YamlSyntaxError as err:
        raise ManifestError([Problem(filename, p.position.line, p.position.column,
                                     format_path(p.path) if p.path else "(yaml)", p.message)
                             for p in err.problems]) from None
    problems: list[Problem] = []
    built: list[Domain | Network] = []
    for document in documents:
        found = list(_document_problems(document, filename, text))
        if found:
            problems.extend(found)
            continue
        built.append(_build(document, filename))
    if problems:
        raise ManifestError(problems)
    return Documents(domains=tuple(d for d in built if isinstance(d, Domain)),
                     networks=tuple(n for n in built if isinstance(n, Network)))


def load_text(text: str, filename: str) -> list[Domain]:
    """Every domain declared in `text` (its networks are checked too, not returned)."""
    return list(load_documents(text, filename).domains)


MAX_BYTES = SourceSettings.max_manifest_bytes


def load_file_documents(path: str | os.PathLike[str], max_bytes: int = MAX_BYTES) -> Documents:
    """Every domain and network declared in the regular file `path` of at most `max_bytes`."""
    return load_documents(read_manifest_text(path, max_bytes), str(path))


def read_manifest_text(path: str | os.PathLike[str], max_bytes: int = MAX_BYTES) -> str:
    """The text of a manifest file (read_manifest's checks), or ManifestError: also for an
    unreadable file or one that is not UTF-8. `domctl publish` stores the text it validated."""
    try:
        return read_manifest(path, max_bytes).decode("utf-8")
    except UnicodeDecodeError as err:
        problem = Problem(str(path), 1, 1, "(file)",
                          f"not UTF-8 text: invalid byte at offset {err.start}")
        raise ManifestError([problem]) from None
    except OSError as err:
        problem = Problem(str(path), 1, 1, "(file)", err.strerror or str(err))
        raise ManifestError([problem]) from None


def load_file(path: str | os.PathLike[str], max_bytes: int = MAX_BYTES) -> list[Domain]:
    """Every domain declared in the regular file `path` of at most `max_bytes` bytes."""
    return list(load_file_documents(path, max_bytes).domains)


def read_manifest(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of a regular file of at most `max_bytes`, or ManifestError (OSError passes).

    The file is checked before it is opened (a device is never opened), opened non-blocking
    (a FIFO swapped in meanwhile cannot block the open) and checked again once open; the read
    stops at `max_bytes` + 1, so a file growing meanwhile is refused too.
    """
    def refuse(message: str) -> ManifestError:
        return ManifestError([Problem(str(path), 1, 1, "(file)", message)])

    def check(st: os.stat_result) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise refuse(f"not a regular file ({_kind(st.st_mode)}): only regular files are "
                         "read as manifests")
        if st.st_size > max_bytes:
            raise refuse(_too_big(f"{st.st_size} bytes", max_bytes))

    check(os.stat(path))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        check(os.fstat(fd))
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, min(max_bytes + 1 - size, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > max_bytes:
        raise refuse(_too_big(f"more than {max_bytes} bytes (it grew)", max_bytes))
    return b"".join(chunks)


def _too_big(size: str, max_bytes: int) -> str:
    return (f"{size}: larger than the limit of {max_bytes} bytes for one manifest "
            "file (`domctl run --max-manifest-bytes`)")


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a file")


def _document_problems(document: Document, filename: str, text: str) -> Iterator[Problem]:
    """Every problem of `document`, located in the file whose text is `text`."""
    def problem(path: tuple[str | int, ...], message: str, value_path: bool,
                inside: tuple[int, int] | None = None) -> Problem:
        where = locate(document.node, path)
        if value_path and where.complete:
            hint = implicit_type_hint(where.node)
            if hint:
                message = f"{message}; {hint}"
        # a missing field is reported where its parent stands (Located stops at the parent)
        position = where.position
        if inside is not None and where.complete:  # a line of a document held in a string
            position = position_inside(where.node, *inside, text.splitlines())
        return Problem(filename, position.line, position.column, format_path(path), message)

    if not isinstance(document.data, Mapping):
        yield problem((), "a manifest document must be a mapping with apiVersion, kind "
                          f"({', '.join(schema.KINDS)}), metadata and spec", False)
        return
    schema_findings = schema.findings(document.data)
    for finding in schema_findings:
        yield problem(finding.path, finding.message, finding.value_path)
    if not schema_findings:
        try:
            found = semantic.check(document.data)
        except (ValueError, OverflowError) as err:  # a number Python will not convert
            yield problem((), f"a value is out of range: {shorten(str(err), 200)}", False)
            return
        for path, message, inside in found:
            yield problem(path, message, False, inside)


def _build(document: Document, filename: str) -> Domain | Network:
    data = document.data
    assert isinstance(data, Mapping)
    source = SourceRef(filename, document.node.start_mark.line + 1, document.index)
    try:
        if data["kind"] == schema.NETWORK:
            return network.build(data, source)
        metadata, spec = normalise.metadata(data["metadata"]), normalise.spec(data["spec"])
    except (ValueError, OverflowError) as err:
        where = document.node.start_mark
        message = f"a value is out of range: {shorten(str(err), 200)}"
        raise ManifestError([Problem(filename, where.line + 1, where.column + 1, "(document)",
                                     message)]) from None
    return Domain(metadata=metadata, spec=spec, source=source)


@dataclass
class LoadResult:
    """The outcome of loading many files: the valid domains and networks, and every problem,
    conflicts included."""

    domains: list[Domain] = field(default_factory=list)
    networks: list[Network] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: int = 0


def manifest_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Files named explicitly are taken as they are; directories are filtered by name.

    A directory's entries that are not directories are all taken, FIFOs and devices too:
    load_file refuses those with a problem, which a silent skip would hide.
    """
    for path in map(Path, paths):
        if path.is_dir():
            yield from sorted(p for p in path.iterdir()
                              if not p.is_dir() and is_manifest_name(p.name))
        else:
            yield path


def load_paths(paths: Iterable[str | os.PathLike[str]],
               max_bytes: int = MAX_BYTES) -> LoadResult:
    result = LoadResult()
    for path in manifest_files(paths):
        result.files += 1
        try:
            declared = load_file_documents(path, max_bytes)
        except ManifestError as err:
            result.problems.extend(err.problems)
            continue
        result.domains.extend(declared.domains)
        result.networks.extend(declared.networks)
    domain_clashes, network_clashes = name_conflicts(result.domains), \
        network_conflicts(result.networks)
    domain_clashes += dependency_cycles(_without(result.domains, domain_clashes))
    result.problems.extend(domain_clashes + network_clashes)
    result.domains = _without(result.domains, domain_clashes)
    result.networks = _without(result.networks, network_clashes)
    return result


_Declared = TypeVar("_Declared", Domain, Network)


def _without(declared: list[_Declared], clashes: Iterable[Problem]) -> list[_Declared]:
    """`declared` but the documents a clash names (by file and line)."""
    clashing = {(p.file, p.line) for p in clashes}
    return [d for d in declared if (d.source.file, d.source.line) not in clashing]


def name_conflicts(domains: Iterable[Domain]) -> list[Problem]:
    """Two documents declaring one domain name: both are refused, each message naming the
    other."""
    return _clashes(domains, lambda d: d.name, "metadata.name",
                    lambda name, others: f"domain {name!r} is also declared at {others}; "
                                         "neither is applied until one is removed")


def dependency_cycles(domains: Iterable[Domain]) -> list[Problem]:
    """Domains whose spec.dependsOn close a cycle: none of them could ever start, so each is
    refused with a Problem naming every member of the cycle and its file (a dependency that
    no document declares is no cycle: the domain waits for it, a condition)."""
    by_name = {d.name: d for d in domains}
    problems = []
    for group in _cycles({n: [m for m in d.spec.depends_on if m in by_name]
                          for n, d in by_name.items()}):
        where = ", ".join(f"{n} ({by_name[n].source.file}:{by_name[n].source.line})"
                          for n in group)
        for name in group:
            source = by_name[name].source
            problems.append(Problem(source.file, source.line, 1, "spec.dependsOn",
                                    f"a dependsOn cycle: {where}; none of them is applied "
                                    "until the cycle is broken"))
    return problems


def _cycles(edges: Mapping[str, list[str]]) -> list[list[str]]:
    """The strongly connected components that hold a cycle (Tarjan, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1 or node in edges[node]:
                        found.append(sorted(group))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(edges[child])))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(found)


def network_conflicts(networks: Iterable[Network]) -> list[Problem]:
    """Two Networks of one name, or two of one bridge: all of them are refused, each message
    naming the others (networks whose names clash are not told again about their bridge)."""
    networks = list(networks)
    by_name = _clashes(networks, lambda n: n.name, "metadata.name",
                       lambda name, others: f"network {name!r} is also declared at {others}; "
                                            "neither is applied until one is removed")
    by_bridge = _clashes(networks, lambda n: n.spec.bridge, "spec.bridge",
                         lambda bridge, others: f"bridge {bridge!r} is also the bridge of the "
                                                f"network at {others} (a bridge serves one "
                                                "network); neither is applied until one changes",
                         same=lambda a, b: a.name == b.name)
    return by_name + by_bridge


def _clashes(declared: Iterable[_Declared], key: Callable[[_Declared], str], field: str,
             message: Callable[[str, str], str],
             same: Callable[[_Declared, _Declared], bool] = lambda a, b: a is b) -> list[Problem]:
    """A Problem at each document whose `key` another document has too; documents `same` as
    each other (by default: only itself) do not clash."""
    by_key: dict[str, list[_Declared]] = {}
    for item in declared:
        by_key.setdefault(key(item), []).append(item)
    problems = []
    for value, group in by_key.items():
        for item in group:
            others = [o for o in group if not same(item, o)]
            if others:
                where = ", ".join(f"{o.source.file}:{o.source.line}" for o in others)
                problems.append(Problem(item.source.file, item.source.line, 1, field,
                                        message(value, where)))
    return problems


__all__ = [
    "MAX_BYTES",
    "Documents",
    "LoadResult",
    "ManifestError",
    "Problem",
    "dependency_cycles",
    "is_manifest_name",
    "load_documents",
    "load_file",
    "load_file_documents",
    "load_paths",
    "load_text",
    "manifest_files",
    "name_conflicts",
    "network_conflicts",
    "read_manifest",
    "read_manifest_text",
]
