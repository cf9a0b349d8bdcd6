"""Domains for the controller's unit tests, loaded from manifest text like the real ones."""

from __future__ import annotations

from controller.manifests.loader import load_text
from reconcilers.model import Domain

DOC = """apiVersion: domctl/v1
kind: Domain
metadata: {{name: {name}}}
spec:
  driver: qemu
  state: {state}
  memory: {memory}
  qemu: {{machine: pc, accel: tcg}}
"""


def domain(name: str = "vm", state: str = "running", memory: str = "64Mi") -> Domain:
    """A tcg qemu domain from `/m/<name>.yaml`."""
    [loaded] = load_text(DOC.format(name=name, state=state, memory=memory), f"/m/{name}.yaml")
    return loaded
