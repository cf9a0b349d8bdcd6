"""The suite tests this checkout: a venv installed from another checkout fails here, loudly,
instead of silently testing that other checkout's code."""

from __future__ import annotations

from pathlib import Path

import pytest

import controller
import reconcilers

CHECKOUT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("package", [controller, reconcilers], ids=lambda p: p.__name__)
def test_the_code_under_test_is_this_checkouts(package: object) -> None:
    where = Path(str(getattr(package, "__file__", ""))).resolve()
    assert where.is_relative_to(CHECKOUT), (
        f"{getattr(package, '__name__', package)} is imported from {where}, not from the "
        f"checkout under test {CHECKOUT}: reinstall the venv from here "
        "(`.venv/bin/pip install -e '.[test]'`)")
