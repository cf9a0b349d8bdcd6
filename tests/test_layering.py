"""The import rules of docs/architecture.md, checked on the source so a violation fails CI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def offenders(package: str, forbidden: str) -> list[str]:
    return [f"{p.relative_to(ROOT)} imports {m}" for p in sources(package)
            for m in imported_modules(p) if m == forbidden or m.startswith(forbidden + ".")]


@pytest.mark.parametrize(("package", "forbidden"), [
    ("reconcilers", "controller"),
    ("reconcilers/qemu", "reconcilers.lxc"),
    ("reconcilers/lxc", "reconcilers.qemu"),
])
def test_layer_does_not_import(package: str, forbidden: str) -> None:
    assert offenders(package, forbidden) == []


def test_only_the_monitor_imports_qemu_qmp() -> None:
    users = {p.relative_to(ROOT).as_posix() for pkg in ("controller", "reconcilers")
             for p in sources(pkg) if any(m.startswith("qemu") for m in imported_modules(p))}
    assert users == {"reconcilers/qemu/monitor.py"}
