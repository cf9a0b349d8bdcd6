"""OVMF found on the host (the 4 MiB build first) and a domain's own UEFI variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconcilers.storage import firmware
from reconcilers.storage.errors import Refused
from reconcilers.storage.firmware import Ovmf, check_vars, ensure_vars, find_ovmf


def build(directory: Path, *names: str) -> Path:
    directory.mkdir(exist_ok=True)
    for name in names:
        (directory / name).write_bytes(name.encode().ljust(64, b"\0"))
    return directory


def test_the_4m_build_comes_first_then_the_2m_one(tmp_path: Path) -> None:
    both = build(tmp_path / "both", "OVMF_CODE.fd", "OVMF_VARS.fd", "OVMF_CODE_4M.fd",
                 "OVMF_VARS_4M.fd", "OVMF_CODE_4M.secboot.fd")
    assert find_ovmf(both) == Ovmf(both / "OVMF_CODE_4M.fd", both / "OVMF_VARS_4M.fd")
    old = build(tmp_path / "old", "OVMF_CODE.fd", "OVMF_VARS.fd", "OVMF_CODE_4M.fd")
    assert find_ovmf(old) == Ovmf(old / "OVMF_CODE.fd", old / "OVMF_VARS.fd")
    assert find_ovmf(build(tmp_path / "none", "OVMF_CODE_4M.secboot.fd")) is None
    said = firmware.missing_message(tmp_path / "none")
    assert "install Debian's 'ovmf' package (apt-get install ovmf)" in said


def test_this_host_has_debians_ovmf() -> None:
    """CI installs the `ovmf` package (README's apt line): the UEFI tests need it."""
    found = find_ovmf()
    assert found is not None, firmware.missing_message()
    assert found.code.stat().st_size > found.vars_template.stat().st_size > 0


def test_the_variables_are_copied_once_and_kept(tmp_path: Path) -> None:
    ovmf = Ovmf(*(build(tmp_path / "ovmf", "CODE", "VARS") / name for name in ("CODE", "VARS")))
    nvram = tmp_path / "VARS.fd"
    assert ensure_vars(nvram, ovmf)
    assert nvram.read_bytes() == ovmf.vars_template.read_bytes()
    assert oct(nvram.stat().st_mode & 0o777) == "0o600"
    written = b"boot entries".ljust(64, b"\0")  # what a guest's firmware writes
    nvram.write_bytes(written)
    check_vars(nvram, ovmf, "spec.qemu.firmware")
    assert not ensure_vars(nvram, ovmf)
    assert nvram.read_bytes() == written
    nvram.write_bytes(b"too short")
    with pytest.raises(Refused, match="made for another OVMF build") as refused:
        check_vars(nvram, ovmf, "spec.qemu.firmware")
    assert refused.value.field == "spec.qemu.firmware"
