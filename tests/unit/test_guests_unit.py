"""packaging/systemd/domctl-guests.service: stopped before the controller, it runs
`domctl host-shutdown` with options the CLI takes; and systemd's own check."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from controller.cli.main import build

UNITS = Path(__file__).resolve().parents[2] / "packaging" / "systemd"
UNIT = UNITS / "domctl-guests.service"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_it_stops_before_the_controller_and_runs_host_shutdown() -> None:
    parsed = unit()
    assert "domctl.service" in parsed["Unit"]["After"].split()  # stopped first at shutdown
    assert parsed["Unit"]["Wants"] == "domctl.service"
    assert "Requires" not in parsed["Unit"] and "PartOf" not in parsed["Unit"]  # a controller
    # restart must not take the domains down
    service = parsed["Service"]
    assert (service["Type"], service["RemainAfterExit"]) == ("oneshot", "yes")
    argv = shlex.split(service["ExecStop"])
    assert Path(argv[0]).name == "domctl" and argv[1] == "host-shutdown"
    args = build().parse_args(argv[1:])  # the CLI's parser; nothing runs
    assert (args.command, args.mode, args.parallel, args.timeout) == ("host-shutdown", "save", 4,
                                                                      300)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    # verify refuses commands that do not exist here: point them at any executable
    text = UNIT.read_text().replace("/usr/local/bin/domctl", sys.executable)
    (tmp_path / "domctl-guests.service").write_text(text)
    controller = (UNITS / "domctl.service").read_text()
    (tmp_path / "domctl.service").write_text("".join(
        f"ExecStart={sys.executable} run\n" if line.startswith("ExecStart=") else line
        for line in controller.splitlines(keepends=True)))
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "domctl-guests.service")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
