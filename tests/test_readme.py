"""The README's commands and its flag table must say what the code does."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from controller.cli.parser import Parser
from controller.paths import default_paths
from controller.service import command

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_exactly_the_readme_test_command() -> None:
    """.ci/run's pytest line is the README's test command, word for word; the static checks
    follow it (import-linter, mypy, ruff), each a line of its own."""
    lines = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    ci_command = next(line for line in lines if line.endswith("-m pytest"))
    readme_lines = (ROOT / "README.md").read_text().splitlines()
    assert ci_command in readme_lines
    checks = lines[lines.index(ci_command) + 1:]
    assert [line.split()[0] for line in checks] == [".venv/bin/lint-imports", ".venv/bin/mypy",
                                                    ".venv/bin/ruff"]


def test_the_run_flag_table_shows_every_flag_with_its_default() -> None:
    """Defaults come from the settings tree (controller/settings.py) through `run`'s options."""
    parser = Parser()
    command.configure(parser)
    names = {flag: action.dest for action in parser._actions
             if not isinstance(action, argparse._HelpAction) for flag in action.option_strings}
    switches = {flag for action in parser._actions if isinstance(action, argparse._StoreConstAction)
                for flag in action.option_strings}  # store_true/false: "off" is not given
    values = vars(parser.parse_args([]))  # every option at its default; nothing runs
    root = default_paths(0, {})
    seen: list[str] = []
    for line in (ROOT / "README.md").read_text().splitlines():
        if not line.startswith("| `--"):
            continue
        flags_cell, default_cell = line.split(" | ")[:2]
        flags = re.findall(r"`(--[a-z-]+)", flags_cell)
        for flag, shown in zip(flags, default_cell.split(", "), strict=True):
            seen.append(flag)
            default = values[names[flag]]
            if shown == "off":
                assert default is None or flag in switches, flag
            elif shown == "none":
                assert default in ({}, (), []), flag
            elif shown.startswith("`<state>/"):  # under whatever --state-dir is: no default
                assert default is None, flag  # of its own
            elif shown.startswith("`") and hasattr(root, field := flag[2:].replace("-", "_")):
                assert shown.split("`")[1] == str(getattr(root, field)), flag  # a directory
            elif shown.startswith("`"):  # a value such as a prefix
                assert shown.split("`")[1] == str(default), flag
            else:
                assert float(shown) == default, flag
    assert sorted(seen) == sorted(names)
