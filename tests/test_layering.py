"""The import rules of docs/architecture.md and DESIGN §2, checked by import-linter.

The contracts are in pyproject.toml ([tool.importlinter]); this runs `lint-imports` on them so
the README's test command (and CI) fails on an import across a layer, as `lint-imports` alone
would. `--no-cache`: nothing is written into the checkout.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"  # installed by the test extra


def test_import_contracts_are_kept() -> None:
    done = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
