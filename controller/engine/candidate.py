"""`domctl diff -f FILE`: what a candidate manifest file would change, before it lands.

For a pull-request check (kubectl diff's role): the file is validated exactly as the directory
source would (strict loader, file:line errors), nothing is stored or started, and each domain
it declares is compared with what runs. A domain that runs is compared with its live spec, each
change marked as the controller would apply it: `controller` (a field only the controller
reads), `live` (applied to the running domain) or `restart` (waits for the next start, or
restarts it under updatePolicy Restart); a domain that does not run, with its manifest, every
change taking effect at its `next start`. A domain the directory's file of the same name
declares and the candidate no longer does is a `delete`. Networks in the file are validated,
not compared.

Public surface:
    preview(controller, text, filename) -> [{"name", "action", "changes": [{"field", "path",
        "old", "new", "apply"}]}]; raises ManifestError for an invalid file
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from controller.engine.controller import Controller
from controller.manifests import render
from controller.manifests.loader import load_documents
from reconcilers.diff import Apply, classify_changes
from reconcilers.model import Domain

_APPLY = {Apply.CONTROLLER: "controller", Apply.LIVE: "live", Apply.RESTART: "restart"}


def preview(controller: Controller, text: str, filename: str) -> list[dict[str, Any]]:
    """The changes `text` (a manifest file named `filename`) would make, by domain name."""
    candidates = load_documents(text, filename).domains  # ManifestError: located problems
    declared = {domain.name for domain in candidates}
    results = [_one(controller, domain) for domain in candidates]
    base = PurePath(filename).name
    for name in controller.store.names():
        current = controller.store.desired(name)
        if (current is not None and name not in declared
                and PurePath(current.source.file).name == base):
            results.append({"name": name, "action": "delete", "changes": []})
    return sorted(results, key=lambda result: str(result["name"]))


def _one(controller: Controller, candidate: Domain) -> dict[str, Any]:
    current = controller.desired_resolved(candidate.name)
    if current is None:
        return {"name": candidate.name, "action": "create", "changes": []}
    new = controller.candidate_resolved(candidate)
    record = controller.registry.get(candidate.name)
    running = record is not None and record.runtime is not None and record.live_spec is not None
    if running and record is not None and record.live_spec is not None and record.driver:
        old_spec = record.live_spec
        classify = controller.drivers[record.driver].classify
        changes = [(change.path, change.old, change.new, _APPLY[change.apply]) for change in
                   classify_changes(old_spec, new.spec, classify(old_spec, new.spec))]
    else:
        old_spec = current.spec
        changes = [(change.path, change.old, change.new,
                    "controller" if change.apply is Apply.CONTROLLER else "next start")
                   for change in classify_changes(old_spec, new.spec, {})]
    before, after = render.spec(old_spec, defaults=True), render.spec(new.spec, defaults=True)
    listed = [{"field": field, "path": list(path := render.manifest_path(field)),
               "old": render.lookup({"spec": before}, path),
               "new": render.lookup({"spec": after}, path), "apply": apply}
              for field, _, _, apply in changes]
    if current.metadata.labels != candidate.metadata.labels:
        listed.append({"field": "labels", "path": ["metadata", "labels"],
                       "old": dict(current.metadata.labels),
                       "new": dict(candidate.metadata.labels), "apply": "controller"})
    return {"name": candidate.name, "action": "update" if listed else "unchanged",
            "changes": listed}
