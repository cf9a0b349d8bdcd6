"""Config rendering: golden files (manifest in → LXC config out, cgroup v1 and v2), the proof
that no manifest value can add or alter a config line, and the host facts a config needs."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from reconcilers.lxc.config import (
    CgroupVersion,
    ConfigPaths,
    ConfigValueError,
    HostFacts,
    cpuset,
    render_config,
    shares_to_weight,
    uses_overlay,
)
from reconcilers.lxc.idmap import IdMap
from reconcilers.model import BUSYBOX_ROOTFS, Domain, LinkState, LxcSpec, Mount, Nic, NicMode
from reconcilers.net import nics
from reconcilers.net.names import veth_name
from tests.support.domains import domain, load

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "lxc"
REGEN = os.environ.get("DOMCTL_REGEN_GOLDEN") == "1"
HOSTS = {  # each variant also flips AppArmor and the id map's source, so both are golden too
    "v1": HostFacts(cgroup=CgroupVersion.V1, apparmor=False, cpus=(0, 1, 2, 3),
                    idmap=IdMap(uid=100000, gid=200000)),
    "v2": HostFacts(cgroup=CgroupVersion.V2, apparmor=True, cpus=(0, 2, 4, 6, 7),
                    idmap=IdMap(uid=1000000000, gid=1000000000, direct=True)),
}


def paths_for(container: Domain) -> ConfigPaths:
    """The paths the driver would give (storage.py): the shared busybox tree under a busybox
    container's overlay, the container's own rootfs for an image, else the user's directory."""
    assert container.spec.lxc is not None
    name = container.name
    rootfs = container.spec.lxc.rootfs
    if uses_overlay(container.spec.lxc):
        rootfs = "/var/lib/domctl/lxc-rootfs/busybox-0123456789abcdef"
    elif container.spec.lxc.image is not None:
        rootfs = f"/var/lib/domctl/lxc/{name}/storage/rootfs"
    return ConfigPaths(rootfs=rootfs, delta=f"/var/lib/domctl/lxc/{name}/storage/delta",
                       console_log=f"/var/log/domctl/{name}.log",
                       lxc_log=f"/var/lib/domctl/lxc/{name}/lxc.log")


@pytest.mark.parametrize("variant", sorted(HOSTS))
@pytest.mark.parametrize("manifest", sorted(p.name for p in GOLDEN.glob("*.yaml")))
def test_golden(manifest: str, variant: str) -> None:
    container = load(GOLDEN / manifest)
    rendered = render_config(container, HOSTS[variant], paths_for(container))
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


@pytest.mark.parametrize("lxc, field", [
    (LxcSpec(env=(("A", HOSTILE),)), "spec.lxc.env.A"),
    (LxcSpec(init=("/sbin/init", HOSTILE)), "spec.lxc.init[1]"),
    (LxcSpec(mounts=(Mount("/srv", "/x\rlxc.y = z"),)), "spec.lxc.mounts[0].target"),
    (LxcSpec(mounts=(Mount("/srv", "/../../etc"),)), "spec.lxc.mounts[0].target"),
    (LxcSpec(rootfs="/srv/r\nlxc.init.cmd = /evil"), "spec.lxc.rootfs"),
    (LxcSpec(env=(("A=B", "c"),)), "spec.lxc.env.A=B"),
])
def test_newlines_are_refused(lxc: LxcSpec, field: str) -> None:
    evil = domain("evil", "lxc", lxc=lxc)
    with pytest.raises(ConfigValueError) as refused:
        render_config(evil, HOSTS["v1"], paths_for(evil))
    assert refused.value.field == field


def nic_container(*extra: Nic) -> Domain:
    """A container with a NIC on a managed network and one on a bridge of the host's (link
    down), resolved the way the engine resolves them before the driver sees the domain."""
    declared = domain("web-2", "lxc", lxc=LxcSpec(nics=(
        Nic(NicMode.NETWORK, network="lan", ip="192.168.122.10"),
        Nic(NicMode.BRIDGE, bridge="br0", mac="00:16:3E:0A:0B:0C", link_state=LinkState.DOWN),
        *extra)))
    assert declared.metadata.uuid is not None
    return nics.resolve(declared, declared.metadata.uuid, {"lan": "dc-lan"})


def test_nics_are_golden() -> None:
    """Veth pairs (no ipv4 line: the NIC's ip is the network's DHCP reservation), the link-down
    NIC's host end set down by a start-host hook; the config a NIC-less container gets is
    test_golden's (lxc.net.0.type = empty)."""
    container = nic_container()
    rendered = render_config(container, HOSTS["v2"], paths_for(container))
    expected = GOLDEN / "nics.v2.conf"
    if REGEN:
        expected.write_text(rendered)
    assert rendered == expected.read_text(), f"regenerate with DOMCTL_REGEN_GOLDEN=1: {expected}"
    assert "lxc.net.0.type = empty" not in rendered


@pytest.mark.skipif(shutil.which("lxc-info") is None, reason="LXC is not installed")
def test_lxc_reads_back_the_nics(tmp_path: Path) -> None:
    container = nic_container()
    (tmp_path / container.name).mkdir()
    (tmp_path / container.name / "config").write_text(
        render_config(container, HOSTS["v2"], paths_for(container)))
    read = functools.partial(lxc_info_values, tmp_path, container.name)
    assert read("lxc.net.0.link") == ["dc-lan"]
    assert read("lxc.net.1.link") == ["br0"]
    assert read("lxc.net.1.veth.pair") == [veth_name(container.name, 1)]
    assert read("lxc.net.1.hwaddr") == ["00:16:3e:0a:0b:0c"]
    assert read("lxc.net.1.name") == ["eth1"]
    assert read("lxc.net.1.flags") == ["up"]
    assert read("lxc.hook.start-host") == [f"ip link set dev {veth_name(container.name, 1)} down"]


@pytest.mark.parametrize("nic, field", [
    (Nic(NicMode.BRIDGE, bridge="br0\nlxc.cap.drop =", mac="00:16:3e:00:00:01"),
     "spec.lxc.nics[2].bridge"),
    (Nic(NicMode.BRIDGE, bridge="br0 -x", mac="00:16:3e:00:00:01"), "spec.lxc.nics[2].bridge"),
    (Nic(NicMode.BRIDGE, bridge="br0", mac="00:16:3e:00:00:01\nlxc.x = y"),
     "spec.lxc.nics[2].mac"),
    (Nic(NicMode.BRIDGE, bridge="br0", mac="01:16:3e:00:00:01"), "spec.lxc.nics[2].mac"),
    (Nic(NicMode.USER), "spec.lxc.nics[2].mode"),
    (Nic(NicMode.NETWORK, network="down"), "spec.lxc.nics[2].network"),  # its network is not up
])
def test_hostile_or_unresolved_nics_are_refused(nic: Nic, field: str) -> None:
    evil = nic_container(nic)
    with pytest.raises(ConfigValueError) as refused:
        render_config(evil, HOSTS["v1"], paths_for(evil))
    assert refused.value.field == field


def test_a_bad_name_is_refused() -> None:
    evil = domain("evil\nlxc.x = y", "lxc")
    with pytest.raises(ConfigValueError) as refused:
        render_config(evil, HOSTS["v1"], paths_for(evil))
    assert refused.value.field == "metadata.name"


def test_equals_signs_and_quotes_stay_inside_their_value() -> None:
    sneaky = {"A": "1 = lxc.cap.drop = ", "B": '"quoted"', "C": " padded ", "D": "x=y=z"}
    sneaky_container = domain("sneaky", "lxc", lxc=LxcSpec(
        env=tuple(sorted(sneaky.items())),
        init=("/bin/sh", "-c", "echo lxc.apparmor.profile = unconfined"),
        mounts=(Mount("/srv/a b", "/mnt/c = d", readonly=True),)))
    plain = domain("sneaky", "lxc")
    for host in HOSTS.values():
        entries = parse_like_lxc(render_config(sneaky_container, host,
                                               paths_for(sneaky_container)))
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
    plain = domain("plain", "lxc", lxc=LxcSpec(init=("/bin/busybox", "init")))
    text = render_config(plain, HOSTS["v1"], paths_for(plain))
    assert re.search(r"^lxc\.init\.cmd = /bin/busybox init$", text, re.MULTILINE)


@pytest.mark.parametrize("shares, weight", [(2, 1), (1024, 39), (262144, 10000), (1, 1)])
def test_shares_to_weight(shares: int, weight: int) -> None:
    assert shares_to_weight(shares) == weight


@pytest.mark.parametrize("vcpus, cpus, expected", [
    (1, (0, 1), "0"), (2, (0, 1), "0-1"), (3, (0, 1, 2, 4), "0-2"), (4, (0, 2, 3, 4, 6), "0,2-4"),
    (3, (0, 2, 4), "0,2,4")])
def test_a_cpuset_is_the_first_vcpus_host_cpus(vcpus: int, cpus: tuple[int, ...],
                                                expected: str) -> None:
    assert cpuset(vcpus, cpus) == expected


def test_more_vcpus_than_host_cpus_is_refused() -> None:
    big = domain("big", "lxc", vcpus=5)
    with pytest.raises(ConfigValueError, match="the host has 4 CPUs") as refused:
        render_config(big, HOSTS["v1"], paths_for(big))
    assert refused.value.field == "spec.vcpus"


def test_unprivileged_without_an_id_range_names_the_field() -> None:
    container = domain("plain", "lxc")
    host = HostFacts(cgroup=CgroupVersion.V1, apparmor=False, cpus=(0,), idmap=None,
                     idmap_problem="root has no range")
    with pytest.raises(ConfigValueError, match="root has no range") as refused:
        render_config(container, host, paths_for(container))
    assert refused.value.field == "spec.lxc.privileged"
    privileged = domain("plain", "lxc", lxc=LxcSpec(privileged=True))
    assert "lxc.idmap" not in render_config(privileged, host, paths_for(privileged))


def lxc_info_values(lxcpath: Path, name: str, key: str) -> list[str]:
    """The values LXC itself read for `key` from the container's config (`lxc-info -c`)."""
    out = subprocess.run(["lxc-info", "-P", str(lxcpath), "-n", name, "-c", key],
                         check=True, capture_output=True, text=True).stdout
    assert out.startswith(f"{key} = "), out
    lines = out.removeprefix(f"{key} = ").split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    return lines


def _fstab_decode(field: str) -> str:
    return field.replace("\\040", " ").replace("\\134", "\\")


@pytest.mark.skipif(shutil.which("lxc-info") is None, reason="LXC is not installed")
@pytest.mark.parametrize("rootfs", ["/srv/root fs ", "/srv/it's \"here\"", BUSYBOX_ROOTFS])
def test_lxc_reads_back_exactly_the_validated_values(tmp_path: Path, rootfs: str) -> None:
    """Blanks at either end, quotes, `=` and backslashes: LXC's own parser (lxc-info -c KEY)
    reads back each value as the manifest (or the driver's paths) gave it."""
    env = {"A": " padded ", "B": '"quoted"', "C": "x = y", "D": "'single' ", "E": "back\\slash"}
    container = domain("readback", "lxc", lxc=LxcSpec(
        rootfs=rootfs, env=tuple(sorted(env.items())),
        mounts=(Mount("/srv/a b \\c", "/mnt/d = e ", readonly=True),)))
    base = tmp_path / " state dir "
    paths = ConfigPaths(rootfs=rootfs if rootfs != BUSYBOX_ROOTFS else f"{base}/rootfs ",
                        delta=f"{base}/delta ", console_log=f"{base}/console log ",
                        lxc_log=f"{base}/lxc.log ")
    base.mkdir()
    lxcpath = tmp_path / "lxcpath"
    (lxcpath / container.name).mkdir(parents=True)
    for host in HOSTS.values():
        (lxcpath / container.name / "config").write_text(render_config(container, host, paths))
        read = functools.partial(lxc_info_values, lxcpath, container.name)
        want_rootfs = paths.rootfs if rootfs != BUSYBOX_ROOTFS else \
            f"{paths.rootfs}:{paths.delta}"  # lxc-info shows the path without dir:/overlay:
        assert read("lxc.rootfs.path") == [want_rootfs]
        assert read("lxc.environment") == [f"{k}={v}" for k, v in sorted(env.items())]
        assert read("lxc.console.logfile") == [paths.console_log]
        assert read("lxc.log.file") == [paths.lxc_log]
        assert read("lxc.uts.name") == [container.name]
        assert host.idmap is not None
        assert read("lxc.idmap") == [f"u 0 {host.idmap.uid} 65536",
                                     f"g 0 {host.idmap.gid} 65536"]
        [entry] = read("lxc.mount.entry")
        fields = entry.split(" ")
        assert [_fstab_decode(f) for f in fields[:2]] == ["/srv/a b \\c", "mnt/d = e "]
        assert fields[2:] == ["none", "bind,ro,create=dir", "0", "0"]
