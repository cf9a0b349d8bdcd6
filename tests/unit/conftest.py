"""Fixtures shared by the API tests (test_api, test_client, test_commands)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A directory for the API sockets: short (sun_path has 108 bytes) and world-traversable,
    unlike pytest's tmp_path."""
    with tempfile.TemporaryDirectory(prefix="dctl") as directory:
        os.chmod(directory, 0o755)
        yield Path(directory)
