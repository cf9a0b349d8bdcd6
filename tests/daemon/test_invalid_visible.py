"""A NEW manifest with an error is visible (issue 17 point 1), through the real daemon and CLI:
`domctl get` lists it (STATE `-`, MESSAGE file:line:column), `get --invalid` shows only it,
`describe` its problems, `wait` fails at once instead of waiting out its timeout, and the
metrics count its problems; once fixed, the domain starts."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.domains import domain, manifest

from .conftest import Controller, controller_on


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    with controller_on(tmp_path_factory.mktemp("invalid"), ("--metrics", "127.0.0.1:0")) as ctl:
        yield ctl


def problems_metric(ctl: Controller, file: str) -> float | None:
    url = next(line["url"] for line in ctl.log_lines() if line.get("event") == "metrics listening")
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return next((s.value for family in text_string_to_metric_families(text)
                 for s in family.samples
                 if s.name == "domctl_manifest_problems" and s.labels == {"file": file}), None)


@pytest.mark.qemu
def test_a_new_manifest_with_a_typo_is_visible_and_starts_once_fixed(ctl: Controller) -> None:
    name = ctl.name("typo")
    good = manifest(domain(name))
    path = ctl.write_manifest(f"{name}.yaml", good.replace("memory:", "memroy:"))
    row = ctl.wait_for(lambda: next((line for line in ctl.domctl("get").stdout.splitlines()
                                     if line.startswith(name)), None),
                       f"`domctl get` to list {name}")
    assert row.split()[1:8] == ["-"] * 7, row
    assert f"{path}:" in row and "memroy" in row, row
    invalid = ctl.domctl("get", "--invalid", "-o", "json")
    [document] = json.loads(invalid.stdout)
    assert document["kind"] == "InvalidManifest" and document["file"] == str(path), document
    assert "memroy" in ctl.domctl("describe", name).stdout

    started = time.monotonic()
    waited = ctl.domctl("wait", name, "--for", "state=running", "--timeout", "60")
    assert waited.returncode == 1 and f"{path}:" in waited.stderr, waited
    assert time.monotonic() - started < 10
    assert (problems_metric(ctl, str(path)) or 0) >= 1

    ctl.write_manifest(f"{name}.yaml", good)
    ctl.wait_state(name, "running")
    assert ctl.domctl("get", "--invalid").stdout == ""
    assert problems_metric(ctl, str(path)) == 0
    ctl.remove_manifest(f"{name}.yaml")
    ctl.wait_for(lambda: ctl.status(name) is None, f"{name} to be undefined", name,
                 timeout=60)
