"""The settings tree: one documented place for every tunable, and the modules that use it."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import controller.settings
from controller.paths import Paths
from controller.settings import EngineSettings, Settings, SourceSettings
from reconcilers.qemu.layout import QemuSettings

SOURCE = Path(controller.settings.__file__)


def test_every_field_of_every_settings_class_has_a_docstring() -> None:
    tree = ast.parse(SOURCE.read_text())
    undocumented: list[str] = []
    for cls in (node for node in tree.body if isinstance(node, ast.ClassDef)):
        body = cls.body
        for i, statement in enumerate(body):
            if not isinstance(statement, ast.AnnAssign):
                continue
            following = body[i + 1] if i + 1 < len(body) else None
            if not (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                assert isinstance(statement.target, ast.Name)
                undocumented.append(f"{cls.name}.{statement.target.id}")
    assert undocumented == []


def test_the_engine_resyncs_with_the_directory() -> None:
    assert EngineSettings().resync == SourceSettings().resync


def test_a_built_tree_holds_every_branch(tmp_path: Path) -> None:
    paths = Paths(*(tmp_path / name for name in ("m", "s", "r", "l", "h")))
    settings = Settings(paths=paths)
    assert settings.qemu == QemuSettings()
    assert {f.name for f in dataclasses.fields(settings)} == {
        "paths", "engine", "source", "hooks", "events", "api", "metrics", "networks", "qemu",
        "fleet"}


def test_importing_the_tree_loads_no_driver() -> None:
    """Any layer may import it: the qemu driver comes in only when a Settings is built."""
    code = ("import sys, controller.settings; "
            "print(sorted(m for m in sys.modules if m.startswith(('reconcilers', 'qemu'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "[]"
