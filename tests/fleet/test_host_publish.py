"""`domctl publish` as a user runs it, against a real etcd member: what it prints and its exit
code for a publish, an unchanged directory, an invalid file (its file:line:column, nothing
written) and a mass removal held until --confirm-prune."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from controller.fleet.keys import Keys
from tests.daemon.conftest import DOMCTL
from tests.fleet.helpers import write
from tests.support.etcd import EtcdCluster

pytestmark = pytest.mark.etcd


def publish(directory: Path, etcd: EtcdCluster, keys: Keys,
            *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DOMCTL), "publish", "--manifests", str(directory), "--etcd",
                           ",".join(etcd.endpoints), "--prefix", keys.prefix, *extra],
                          capture_output=True, text=True, timeout=30, check=False)


def test_publish_prints_what_it_wrote_and_refuses_what_it_must(tmp_path: Path,
                                                               etcd: EtcdCluster,
                                                               keys: Keys) -> None:
    manifests = tmp_path / "m"
    for file, name in (("a.yaml", "web-1"), ("b.yaml", "web-2"), ("c.yaml", "web-3")):
        write(manifests, file, name)
    first = publish(manifests, etcd, keys)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[:3] == ["written: a.yaml", "written: b.yaml", "written: c.yaml"]
    assert lines[3].startswith("published at revision ")

    again = publish(manifests, etcd, keys)
    assert again.returncode == 0 and again.stdout.startswith("unchanged: nothing to publish")

    (manifests / "b.yaml").write_text((manifests / "b.yaml").read_text()
                                      .replace("memory:", "memroy:"))
    refused = publish(manifests, etcd, keys)
    assert refused.returncode == 1
    assert f"{manifests}/b.yaml:" in refused.stderr and "spec.memroy" in refused.stderr
    assert "nothing published" in refused.stderr

    for file in ("a.yaml", "b.yaml", "c.yaml"):
        (manifests / file).unlink()
    write(manifests, "d.yaml", "web-4")
    held = publish(manifests, etcd, keys)
    assert held.returncode == 1 and "--confirm-prune" in held.stderr, held.stderr
    confirmed = publish(manifests, etcd, keys, "--confirm-prune")
    assert confirmed.returncode == 0, confirmed.stderr
    assert confirmed.stdout.splitlines()[:4] == ["written: d.yaml", "deleted: a.yaml",
                                                 "deleted: b.yaml", "deleted: c.yaml"]
