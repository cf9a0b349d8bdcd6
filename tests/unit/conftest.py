"""Fixtures shared by the API tests (test_api, test_client, test_commands)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.support.cleanup import scratch_dir


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A directory for the API sockets: short (sun_path has 108 bytes) and world-traversable,
    unlike pytest's tmp_path."""
    directory = scratch_dir("api", mode=0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def quiet_logs() -> Iterator[None]:
    """The API server thread's log lines must not land in the captured stdout/stderr of a CLI
    test, whether structlog is unconfigured (prints to stdout) or configured."""
    with capture_logs():
        logging.disable(logging.CRITICAL)
        yield
        logging.disable(logging.NOTSET)
