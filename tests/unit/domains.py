"""The unit tests' domain(): tests/support/domains.py's builder, as a manifest without a uuid
(the controller generates one), for the modules that still import it from here."""

from __future__ import annotations

from reconcilers.model import Domain
from tests.support.domains import domain as build


def domain(name: str = "vm", state: str = "running", memory: str = "64Mi") -> Domain:
    """A tcg qemu domain."""
    return build(name, state=state, memory=memory, uuid=None)
