"""The spec a running qemu domain has: the one it started with, plus the live changes applied.

A managed save records it beside the image (the restore builds its command line from it), and
only the driver knows it when the save comes after a controller restart: so QemuDriver writes
it to the domain's runtime directory (`DomainFiles.spec`, removed with the other runtime files
when qemu is gone) when it starts, restores or recovers a domain and after each successful
apply_live, and reads it back for a save. Written atomically (a temporary renamed over it);
not fsynced: the runtime directory lives as long as the host's boot, as qemu does.
"""

from __future__ import annotations

import json
import os

from reconcilers.model import DomainSpec, to_plain
from reconcilers.plain import from_plain
from reconcilers.qemu.layout import DomainFiles


def write(files: DomainFiles, spec: DomainSpec) -> None:
    temporary = files.spec.with_name(f".{files.spec.name}.tmp")
    temporary.write_text(json.dumps(to_plain(spec), sort_keys=True))
    os.replace(temporary, files.spec)


def read(files: DomainFiles) -> DomainSpec | None:
    """The recorded spec; None when there is none or it is unreadable (never guessed)."""
    try:
        spec: DomainSpec = from_plain(DomainSpec, json.loads(files.spec.read_text()))
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        return None
    return spec
