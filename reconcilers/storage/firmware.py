"""UEFI firmware: the host's OVMF (Debian's `ovmf` package) and a domain's own NVRAM variables.

`find_ovmf()` looks in /usr/share/OVMF for a code image and its variables template, the 4 MiB
build first (Debian's default since bookworm), then the 2 MiB one; the Secure Boot builds are
left alone (they need SMM and a q35 machine). The code is attached read-only; the variables
are the domain's own copy, `VARS.fd` in its pool directory: copied from the template on the
first start and kept from then on, so boot entries a guest's installer or `efibootmgr` writes
survive restarts (libvirt's `<nvram>`). A copy whose size does not match the template (made
for the other OVMF build) is refused rather than replaced: it may hold boot entries.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from reconcilers.storage.errors import Refused
from reconcilers.storage.pool import replace_file

OVMF_DIR = Path("/usr/share/OVMF")
BUILDS = (("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"), ("OVMF_CODE.fd", "OVMF_VARS.fd"))
PACKAGE = "ovmf"


@dataclass(frozen=True)
class Ovmf:
    """One OVMF build: its code (read-only pflash) and the template of its variables."""

    code: Path
    vars_template: Path


def find_ovmf(directory: Path | None = None) -> Ovmf | None:
    """The first build of BUILDS whose two files are in `directory` (default OVMF_DIR)."""
    directory = directory or OVMF_DIR
    for code, template in BUILDS:
        if (directory / code).is_file() and (directory / template).is_file():
            return Ovmf(directory / code, directory / template)
    return None


def missing_message(directory: Path | None = None) -> str:
    directory = directory or OVMF_DIR
    wanted = " or ".join(f"{code} with {template}" for code, template in BUILDS)
    return (f"firmware uefi needs OVMF, not found in {directory} ({wanted}): install "
            f"Debian's {PACKAGE!r} package (apt-get install {PACKAGE})")


def check_vars(nvram: Path, ovmf: Ovmf, field: str) -> None:
    """Refuse an existing variables file that does not fit `ovmf`'s code."""
    try:
        size = nvram.stat().st_size
    except FileNotFoundError:
        return
    expected = ovmf.vars_template.stat().st_size
    if size != expected:
        raise Refused(field, f"{nvram} has {size} bytes but {ovmf.vars_template} has "
                             f"{expected}: made for another OVMF build; move it away to "
                             "start from the template (its boot entries are lost)")


def ensure_vars(nvram: Path, ovmf: Ovmf) -> bool:
    """Copy the template to `nvram` unless it exists; True when it was copied."""
    if nvram.exists():
        return False
    with open(ovmf.vars_template, "rb") as source:
        replace_file(nvram, lambda out: shutil.copyfileobj(source, out))
    return True
