"""Golden inputs are real manifests: loaded through the controller's manifest loader."""

from __future__ import annotations

from pathlib import Path

import yaml

from reconcilers.model import Domain, SourceRef

try:
    from controller.manifests.loader import load_text
except ImportError:  # the loader is still being written: use its normaliser directly
    load_text = None


def load_manifest(path: Path) -> Domain:
    text = path.read_text()
    if load_text is not None:
        (domain,) = load_text(text, path.name)
        return domain
    from controller.manifests import normalise
    raw = yaml.safe_load(text)
    return Domain(metadata=normalise.metadata(raw["metadata"]), spec=normalise.spec(raw["spec"]),
                  source=SourceRef(file=path.name, line=1))
