"""The systemd unit in packaging/: the settings domctl depends on, and systemd's own check."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "packaging" / "systemd" / "domctl.service"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_unit_keeps_domains_running_and_talks_notify() -> None:
    service = unit()["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["KillMode"] == "process"  # domains outlive the controller
    assert service["RuntimeDirectory"] == "domctl"
    assert service["RuntimeDirectoryPreserve"] == "yes"  # QMP sockets survive a restart
    assert service["Restart"] == "on-failure"
    assert service["Delegate"] == "yes"
    assert int(service["WatchdogSec"]) > 0
    assert service["ExecStart"].split()[1:] == ["run"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    # verify refuses an ExecStart that does not exist here; point it at any executable.
    text = "".join(f"ExecStart={sys.executable} run\n" if line.startswith("ExecStart=") else line
                   for line in UNIT.read_text().splitlines(keepends=True))
    copy = tmp_path / "domctl.service"
    copy.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True, timeout=60, check=False)
    # Unknown keys and bad values are only warnings (exit 0), so any output is a failure.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
