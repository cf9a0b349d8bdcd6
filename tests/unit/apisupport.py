"""Moved to tests/support/api.py; this name stays for the test modules that still import it."""

from tests.support.api import DocsBackend, ThreadedServer

__all__ = ["DocsBackend", "ThreadedServer"]
