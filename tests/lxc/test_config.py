"""Config rendering: golden files (manifest in → LXC config out, cgroup v1 and v2) and the
proof that no manifest value can add or alter a config line."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from reconcilers.lxc.config import (CgroupVersion, ConfigPaths, ConfigValueError, HostFacts,
                                    render_config, shares_to_weight)
from reconcilers.model import BUSYBOX_ROOTFS, Domain, Mount

from .support import make_domain
from .manifests import load_manifest

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "lxc"
REGEN = os.environ.get("DOMCTL_REGEN_GOLDEN") == "1"
HOSTS = {  # each variant also flips AppArmor, so both branches are golden too
    "v1": HostFacts(cgroup=CgroupVersion.V1, apparmor=False),
    "v2": HostFacts(cgroup=CgroupVersion.V2, apparmor=True),
}


def paths_for(domain: Domain) -> ConfigPaths:
    assert domain.spec.lxc is not None
    rootfs = domain.spec.lxc.rootfs
    if rootfs == BUSYBOX_ROOTFS:
        rootfs = "/var/lib/domctl/lxc-rootfs/busybox-0123456789abcdef"
    return ConfigPaths(rootfs=rootfs, delta=f"/var/lib/domctl/lxc/{domain.name}/delta",
                       console_log=f"/var/log/domctl/{domain.name}.log",
                       lxc_log=f"/var/lib/domctl/lxc/{domain.name}/lxc.log")


@pytest.mark.parametrize("variant", sorted(HOSTS))
@pytest.mark.parametrize("manifest", sorted(p.name for p in GOLDEN.glob("*.yaml")))
def test_golden(manifest: str, variant: str) -> None:
    domain = load_manifest(GOLDEN / manifest)
    rendered = render_config(domain, HOSTS[variant], paths_for(domain))
    expected = GOLDEN / f"{manifest.removesuffix('.yaml')}.{variant}.conf"
    if REGEN:
        expected.write_text(rendered)
    assert rendered == expected.read_text(), f"regenerate with DOMCTL_REGEN_GOLDEN=1: {expected}"


def parse_like_lxc(text: str) -> list[tuple[str, str]]:
    """LXC's reading of a config (confile.c parse_line): one entry per non-comment line, key
    before the first '=', both trimmed, one pair of matching outer quotes stripped."""
    entries = []
    for line in text.split("\n"):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) > 1 and value[0] in "'\"" and value[-1] == value[0]:
            value = value[1:-1]
        entries.append((key.strip(), value))
    return entries


HOSTILE = "x\nlxc.cap.drop =\nlxc.mount.entry = / host none bind 0 0"


@pytest.mark.parametrize("domain, field", [
    (make_domain("evil", env=(("A", HOSTILE),)), "spec.lxc.env.A"),
    (make_domain("evil", init=("/sbin/init", HOSTILE)), "spec.lxc.init[1]"),
    (make_domain("evil", mounts=(Mount("/srv", "/x\rlxc.y = z"),)), "spec.lxc.mounts[0].target"),
    (make_domain("evil", mounts=(Mount("/srv", "/../../etc"),)), "spec.lxc.mounts[0].target"),
    (make_domain("evil", rootfs_dir="/srv/r\nlxc.init.cmd = /evil"), "spec.lxc.rootfs"),
    (make_domain("evil", env=(("A=B", "c"),)), "spec.lxc.env.A=B"),
    (make_domain("evil\nlxc.x = y"), "metadata.name"),
])
def test_newlines_and_bad_names_are_refused(domain: Domain, field: str) -> None:
    with pytest.raises(ConfigValueError) as refused:
        render_config(domain, HOSTS["v1"], paths_for(domain))
    assert refused.value.field == field


def test_equals_signs_and_quotes_stay_inside_their_value() -> None:
    sneaky = {"A": "1 = lxc.cap.drop = ", "B": '"quoted"', "C": " padded ", "D": "x=y=z"}
    domain = make_domain("sneaky", env=tuple(sorted(sneaky.items())),
                         init=("/bin/sh", "-c", "echo lxc.apparmor.profile = unconfined"),
                         mounts=(Mount("/srv/a b", "/mnt/c = d", readonly=True),))
    plain = make_domain("sneaky")
    for host in HOSTS.values():
        entries = parse_like_lxc(render_config(domain, host, paths_for(domain)))
        baseline = parse_like_lxc(render_config(plain, host, paths_for(plain)))
        keys = [key for key, _ in entries]
        # exactly the plain config's keys plus one environment line per variable and one mount
        # entry; the init line is dropped because lxc.init.cmd cannot quote blanks
        expected = sorted([k for k, _ in baseline if k != "lxc.init.cmd"]
                          + ["lxc.environment"] * 4 + ["lxc.mount.entry"])
        assert sorted(keys) == expected
        env = dict(v.split("=", 1) for k, v in entries if k == "lxc.environment")
        assert env == sneaky
        assert ("lxc.mount.entry", "/srv/a\\040b mnt/c\\040=\\040d none bind,ro,create=dir 0 0"
                ) in entries


def test_init_without_blanks_is_written_for_humans() -> None:
    domain = make_domain("plain", init=("/bin/busybox", "init"))
    text = render_config(domain, HOSTS["v1"], paths_for(domain))
    assert re.search(r"^lxc\.init\.cmd = /bin/busybox init$", text, re.MULTILINE)


@pytest.mark.parametrize("shares, weight", [(2, 1), (1024, 39), (262144, 10000), (1, 1)])
def test_shares_to_weight(shares: int, weight: int) -> None:
    assert shares_to_weight(shares) == weight
