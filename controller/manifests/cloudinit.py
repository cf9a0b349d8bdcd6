"""A VM's cloud-init documents (spec.qemu.cloudInit), checked when the manifest is loaded.

Called by semantic.py on a schema-valid qemu domain. cloud-init picks the handler of a user-data
by its first line; a `#cloud-config` that does not parse, or that is not a mapping, boots a guest
without its SSH key and says so only in a log inside that guest. Here it is refused when the
manifest is loaded, at the line of the manifest the YAML error is on: the value is parsed by
yamlsource.py (strict and bounded, like the manifest itself: a duplicate key is an error, not a
silently dropped setting), and each finding carries its position inside the value, which the
loader turns into the manifest's line (yamlsource.position_inside). An inline networkConfig must
be a YAML mapping too. The files named by userDataFile and networkConfigFile are read when the
seed is built, by the driver: the loader never reads anything but manifests.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from controller.manifests.errors import Finding, quote
from controller.manifests.yamlsource import YamlSyntaxError, parse

Path = tuple[str | int, ...]

CLOUD_CONFIG = "#cloud-config"
USER_DATA_FORMATS = {
    CLOUD_CONFIG: "#cloud-config (a YAML mapping)",
    "#!": "#! (a script)",
    "#include": "#include (URLs)",
    "#cloud-boothook": "#cloud-boothook",
    "Content-Type:": "Content-Type: (a MIME multipart)",
}
"""The first lines of the user-data formats accepted, by prefix (a #cloud-config: that line)."""

_INLINE_OR_FILE = (("userData", "userDataFile"), ("networkConfig", "networkConfigFile"))


def check(cloud_init: Mapping[str, Any], path: Path) -> Iterator[Finding]:
    for inline, from_file in _INLINE_OR_FILE:
        if inline in cloud_init and from_file in cloud_init:
            yield Finding(path + (from_file,), f"give {inline} (inline) or {from_file}, not both")
    if "userData" in cloud_init:
        yield from _user_data(cloud_init["userData"], path + ("userData",))
    if "networkConfig" in cloud_init:
        yield from _yaml_mapping(cloud_init["networkConfig"], path + ("networkConfig",),
                                 "networkConfig", "(network config version 1 or 2)")


def _user_data(text: str, path: Path) -> Iterator[Finding]:
    first = text.split("\n", 1)[0].rstrip()
    if first == CLOUD_CONFIG:
        yield from _yaml_mapping(text, path, "the #cloud-config",
                                 "(of keys such as hostname and ssh_authorized_keys)")
    elif not first.startswith(tuple(USER_DATA_FORMATS)) or first.startswith(CLOUD_CONFIG):
        formats = ", ".join(USER_DATA_FORMATS.values())
        yield Finding(path, f"user-data must start with {formats}; its first line is "
                            f"{quote(first)}", (1, 1))


def _yaml_mapping(text: str, path: Path, what: str, kind: str) -> Iterator[Finding]:
    """`text` is one YAML document, a mapping (or nothing at all)."""
    try:
        documents = parse(text)
    except YamlSyntaxError as err:
        for problem in err.problems:
            at = problem.position
            yield Finding(path, f"{what} is not valid YAML (at its line {at.line}): "
                                f"{problem.message}", (at.line, at.column))
        return
    if len(documents) > 1:
        mark = documents[1].node.start_mark
        yield Finding(path, f"{what} holds more than one YAML document (at its line "
                            f"{mark.line + 1}); cloud-init reads one", (mark.line + 1, 1))
    elif documents and not isinstance(documents[0].data, Mapping):
        mark = documents[0].node.start_mark
        yield Finding(path, f"{what} must be a YAML mapping {kind}, not "
                            f"{_kind_of(documents[0].data)}", (mark.line + 1, mark.column + 1))


def _kind_of(data: object) -> str:
    return "a list" if isinstance(data, list) else f"the scalar {quote(data)}"
