"""Guests from images in manifests (#14), through the real loader: disks from a base image or of a
size, cloud-init seeds, firmware, containers from a rootfs tarball, unprivileged containers.

Every new field is read and defaulted (a default written out is the same generation), every
refusal names FILE:LINE:COLUMN: FIELD, a YAML error inside a #cloud-config points at the line of
the manifest it is on, and tests/support/domains.py writes every new field back as the loader
reads it.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.manifests import schema
from controller.manifests.errors import ManifestError
from controller.manifests.loader import load_file, load_text
from reconcilers.model import (
    CloudInit,
    DeletePolicy,
    Disk,
    DiskBus,
    DiskCache,
    DiskFormat,
    Domain,
    LxcSpec,
    QemuSpec,
)
from tests.support.domains import TCG_PC, domain, manifest

MiB, GiB = 1024 ** 2, 1024 ** 3
EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"

VM = """\
apiVersion: domctl/v1
kind: Domain
metadata:
  name: vm
spec:
  driver: qemu
  qemu:
    disks:
      - name: root
        image: /images/base.qcow2
"""
# the line of `image:` above, and the column of a disk's keys
IMAGE_LINE, DISK_COLUMN = 10, 9

CT = """\
apiVersion: domctl/v1
kind: Domain
metadata:
  name: ct
spec:
  driver: lxc
  lxc:
    rootfs: /srv/ct
"""


def load(text: str) -> Domain:
    [loaded] = load_text(text, "m.yaml")
    return loaded


def qemu(text: str) -> QemuSpec:
    spec = load(text).spec.qemu
    assert spec is not None
    return spec


def lxc(text: str) -> LxcSpec:
    spec = load(text).spec.lxc
    assert spec is not None
    return spec


def problems(text: str) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load_text(text, "m.yaml")
    return [str(p) for p in caught.value.problems]


def problem(text: str) -> str:
    [found] = problems(text)
    return found


def with_disk(*lines: str) -> str:
    """VM whose disk has `lines` in place of its `image:` line."""
    return VM.replace("        image: /images/base.qcow2\n",
                      "".join(f"        {line}\n" for line in lines))


def with_qemu(block: str) -> str:
    """VM with `block` (YAML at the indentation of qemu's fields) added to its qemu section."""
    return VM + textwrap.indent(textwrap.dedent(block), "    ")


# --- disks ----------------------------------------------------------------------------------

def test_a_disk_from_a_base_image_is_an_overlay_to_make() -> None:
    [disk] = qemu(VM).disks
    assert disk == Disk("root", image="/images/base.qcow2")
    assert disk.source is None and disk.size is None
    assert disk.delete_policy is DeletePolicy.RETAIN


@pytest.mark.parametrize(("lines", "expected"), [
    (("image: /images/base.qcow2", "size: 20Gi"),
     Disk("root", image="/images/base.qcow2", size=20 * GiB)),
    (("size: 10Gi", "deletePolicy: Delete"),
     Disk("root", size=10 * GiB, delete_policy=DeletePolicy.DELETE)),
    (("size: 1024",), Disk("root", size=GiB)),  # a bare integer is MiB, as for memory
    (("size: 1536Ki",), Disk("root", size=1536 * 1024)),
    (("image: /images/base.raw", "readonly: true", "bus: sata", "cache: writeback"),
     Disk("root", image="/images/base.raw", readonly=True, bus=DiskBus.SATA,
          cache=DiskCache.WRITEBACK)),
    (("source: /dev/vg0/root", "format: qcow2"),
     Disk("root", "/dev/vg0/root", format=DiskFormat.QCOW2)),
], ids=["image-and-size", "size-alone-deleted", "bare-integer-mib", "kib", "readonly-image",
        "source"])
def test_the_three_forms_of_a_disk(lines: tuple[str, ...], expected: Disk) -> None:
    assert qemu(with_disk(*lines)).disks == (expected,)


FORMS = "a disk is source, image (optionally with size), or size alone"


@pytest.mark.parametrize(("lines", "where", "words"), [
    (("source: /dev/vg0/root", "image: /images/base.qcow2"), f"{IMAGE_LINE + 1}:9: "
     "spec.qemu.disks[0].image", FORMS),
    (("source: /dev/vg0/root", "size: 10Gi"), f"{IMAGE_LINE + 1}:9: spec.qemu.disks[0].size",
     FORMS),
    (("bus: virtio",), f"{IMAGE_LINE - 1}:9: spec.qemu.disks[0]", f"{FORMS}: give one"),
    (("image: /images/base.qcow2", "format: qcow2"), f"{IMAGE_LINE + 1}:9: "
     "spec.qemu.disks[0].format", "format applies to a source only: the volume domctl makes is "
     "a qcow2 overlay, and the format of a base image is detected"),
    (("size: 1Gi", "format: raw"), f"{IMAGE_LINE + 1}:9: spec.qemu.disks[0].format",
     "format applies to a source only"),
    (("source: /dev/vg0/root", "deletePolicy: Delete"), f"{IMAGE_LINE + 1}:9: "
     "spec.qemu.disks[0].deletePolicy", "a source is never deleted"),
    (("size: 512Ki",), f"{IMAGE_LINE}:9: spec.qemu.disks[0].size",
     "a disk is at least 1Mi (got 512Ki)"),
    (("image: images/base.qcow2",), f"{IMAGE_LINE}:9: spec.qemu.disks[0].image",
     '"images/base.qcow2" is not an absolute path'),
    (("size: 20GB",), f"{IMAGE_LINE}:9: spec.qemu.disks[0].size", '"20GB" is not a size'),
    (("size: 0",), f"{IMAGE_LINE}:9: spec.qemu.disks[0].size", "0 is not a size"),
    (("size: 1Gi", "deletePolicy: delete"), f"{IMAGE_LINE + 1}:9: "
     "spec.qemu.disks[0].deletePolicy", "must be one of Retain, Delete"),
], ids=["source-and-image", "source-and-size", "none", "format-with-image", "format-with-size",
        "deletePolicy-with-source", "under-1mi", "relative-image", "bad-unit", "zero",
        "policy-case"])
def test_a_disk_of_no_form_or_of_fields_of_another_form_is_refused_at_the_field(
        lines: tuple[str, ...], where: str, words: str) -> None:
    found = problem(with_disk(*lines))
    assert found.startswith(f"m.yaml:{where}: ")
    assert words in found


def test_two_disks_on_one_base_image_are_two_overlays() -> None:
    text = with_disk("image: /images/base.qcow2") + \
        "      - {name: data, image: /images/base.qcow2, size: 2Gi}\n"
    assert [d.image for d in qemu(text).disks] == ["/images/base.qcow2"] * 2


# --- firmware -------------------------------------------------------------------------------

@pytest.mark.parametrize(("written", "firmware"), [
    ("bios", None), ("uefi", "uefi"), ("/usr/share/seabios/bios-256k.bin",
                                       "/usr/share/seabios/bios-256k.bin"),
])
def test_firmware_is_bios_uefi_or_a_path(written: str, firmware: str | None) -> None:
    assert qemu(with_qemu(f"firmware: {written}\n")).firmware == firmware


@pytest.mark.parametrize("written", ["efi", "ovmf.fd", "UEFI"])
def test_other_firmware_is_refused_saying_the_forms(written: str) -> None:
    assert problem(with_qemu(f"firmware: {written}\n")) == (
        f'm.yaml:11:5: spec.qemu.firmware: "{written}" is not bios, uefi, or the absolute path '
        "of a firmware image")


# --- cloud-init -----------------------------------------------------------------------------

def test_every_cloud_init_field_is_read() -> None:
    inline = qemu(with_qemu("""\
        cloudInit:
          userData: |
            #cloud-config
            hostname: web
          metaData: {local-hostname: web, instance-id: i-1}
          networkConfig: |
            version: 2
            ethernets: {eth0: {dhcp4: true}}
        """)).cloud_init
    assert inline == CloudInit(
        user_data="#cloud-config\nhostname: web\n",
        meta_data=(("instance-id", "i-1"), ("local-hostname", "web")),
        network_config="version: 2\nethernets: {eth0: {dhcp4: true}}\n")
    files = qemu(with_qemu("cloudInit: {userDataFile: /etc/ci/user, networkConfigFile: /etc/ci/net}"
                           "\n")).cloud_init
    assert files == CloudInit(user_data_file="/etc/ci/user", network_config_file="/etc/ci/net")


def test_an_empty_cloud_init_is_a_seed_of_defaults_and_none_is_no_seed() -> None:
    assert qemu(with_qemu("cloudInit: {}\n")).cloud_init == CloudInit()
    assert qemu(VM).cloud_init is None


@pytest.mark.parametrize("first", [
    "#cloud-config", "#!/bin/sh", "#include", "#include-once", "#cloud-boothook",
    'Content-Type: multipart/mixed; boundary="==B=="',
])
def test_the_user_data_formats_cloud_init_reads(first: str) -> None:
    text = with_qemu(f"cloudInit:\n  userData: |\n    {first}\n    echo: hi\n")
    cloud_init = qemu(text).cloud_init
    assert cloud_init is not None and cloud_init.user_data == f"{first}\necho: hi\n"


@pytest.mark.parametrize("first", ["hostname: web", "#cloud-config-archive", "#cloud-confi",
                                   "'#cloud-config'"])
def test_other_user_data_is_refused_listing_the_formats(first: str) -> None:
    found = problem(with_qemu(f"cloudInit:\n  userData: |\n    {first}\n    more: 1\n"))
    assert found.startswith("m.yaml:13:9: spec.qemu.cloudInit.userData: user-data must start "
                            "with #cloud-config (a YAML mapping), #! (a script), #include (URLs), "
                            "#cloud-boothook, Content-Type: (a MIME multipart); its first line is")


@pytest.mark.parametrize(("body", "where", "words"), [
    # (lines of the #cloud-config after its first, manifest line:column, message)
    (["hostname: web", "users:", "  - name: a", "    groups: [sudo", "packages: [vim]"],
     "18:17", "the #cloud-config is not valid YAML (at its line 6): did not find expected ','"),
    (["hostname: web", "runcmd: [a]", "hostname: db"], "16:9",
     "the #cloud-config is not valid YAML (at its line 4): duplicate key 'hostname'"),
    (["- hostname: web"], "14:9", "the #cloud-config must be a YAML mapping (of keys such as "
                                  "hostname and ssh_authorized_keys), not a list"),
    (["hostname: web", "---", "hostname: db"], "16:9",
     "the #cloud-config holds more than one YAML document (at its line 4); cloud-init reads one"),
], ids=["syntax", "duplicate-key", "a-list", "two-documents"])
def test_a_cloud_config_error_is_located_at_its_line_in_the_manifest(
        body: list[str], where: str, words: str) -> None:
    """userData's first line is line 13 of the manifest (its `|` is on line 12), indented by 8
    columns: its line N is the manifest's line 12 + N, its column C the manifest's 8 + C."""
    lines = ["#cloud-config", *body]
    text = with_qemu("cloudInit:\n  userData: |\n" + "".join(f"    {x}\n" for x in lines))
    found = problem(text)
    assert found.startswith(f"m.yaml:{where}: spec.qemu.cloudInit.userData: {words}"), found


def test_a_cloud_config_that_is_empty_is_accepted() -> None:
    cloud_init = qemu(with_qemu("cloudInit: {userData: \"#cloud-config\\n\"}\n")).cloud_init
    assert cloud_init == CloudInit(user_data="#cloud-config\n")


def test_a_cloud_config_not_in_a_literal_block_is_located_at_its_value() -> None:
    """A quoted or folded value does not keep its lines: the value's own position stands."""
    text = with_qemu('cloudInit:\n  userData: "#cloud-config\\nhostname: [web\\n"\n')
    found = problem(text)
    assert found.startswith("m.yaml:12:17: spec.qemu.cloudInit.userData: the #cloud-config is "
                            "not valid YAML (at its line 3)")


def test_a_cloud_config_error_is_located_in_a_manifest_with_crlf_line_ends() -> None:
    text = with_qemu("cloudInit:\n  userData: |\n    #cloud-config\n    a: 1\n    a: 2\n")
    found = problem(text.replace("\n", "\r\n"))
    assert found.startswith("m.yaml:15:9: spec.qemu.cloudInit.userData: the #cloud-config is not "
                            "valid YAML (at its line 3): duplicate key 'a'"), found


@pytest.mark.parametrize(("block", "where", "words"), [
    ("networkConfig: |\n  - eth0\n", "13:9", "networkConfig must be a YAML mapping (network "
                                              "config version 1 or 2), not a list"),
    ("networkConfig: |\n  version: 2\n  ethernets: {eth0: {dhcp4: yes}\n", "15:1",
     "networkConfig is not valid YAML (at its line 3): "),
    ("networkConfig: v2\n", "12:22", "networkConfig must be a YAML mapping (network config "
                                     "version 1 or 2), not the scalar 'v2'"),
], ids=["a-list", "syntax", "a-scalar"])
def test_an_inline_network_config_must_be_a_yaml_mapping(block: str, where: str,
                                                          words: str) -> None:
    text = with_qemu("cloudInit:\n" + textwrap.indent(block, "  "))
    found = problem(text)
    assert found.startswith(f"m.yaml:{where}: spec.qemu.cloudInit.networkConfig: {words}"), found


@pytest.mark.parametrize(("block", "where"), [
    ("{userData: '#!/bin/sh', userDataFile: /etc/ci/user}", "cloudInit.userDataFile: give "
                                                            "userData (inline) or userDataFile"),
    ("{networkConfig: 'version: 2', networkConfigFile: /n}", "cloudInit.networkConfigFile: give "
                                                             "networkConfig (inline) or "
                                                             "networkConfigFile, not both"),
    ("{metaData: {instance-id: 42}}", "cloudInit.metaData.instance-id: must be a string, not a "
                                      "number (42)"),
    ("{userDataFile: user-data}", 'cloudInit.userDataFile: "user-data" is not an absolute path'),
    ("{userdata: x}", "cloudInit.userdata: unknown field 'userdata'; did you mean 'userData'?"),
], ids=["user-data-twice", "network-config-twice", "meta-data-number", "relative-file", "typo"])
def test_cloud_init_refusals_are_located(block: str, where: str) -> None:
    found = problem(with_qemu(f"cloudInit: {block}\n"))
    assert found.startswith("m.yaml:11:") or found.startswith("m.yaml:12:")
    assert f": spec.qemu.{where}" in found, found


def test_cloud_init_is_for_qemu_only() -> None:
    text = CT + "    cloudInit: {userData: '#!/bin/sh'}\n"
    assert problem(text).startswith("m.yaml:9:5: spec.lxc.cloudInit: unknown field")


# --- containers -----------------------------------------------------------------------------

def test_a_container_from_a_rootfs_tarball() -> None:
    spec = lxc(CT.replace("rootfs: /srv/ct", "rootfs: {image: /images/debian.tar.xz}"))
    assert spec == LxcSpec(image="/images/debian.tar.xz")
    deleted = lxc(CT.replace("rootfs: /srv/ct",
                             "rootfs:\n      image: /images/a.tar\n      deletePolicy: Delete"))
    assert (deleted.image, deleted.delete_policy) == ("/images/a.tar", DeletePolicy.DELETE)


def test_a_container_is_unprivileged_unless_it_says_so_and_may_have_a_pids_limit() -> None:
    assert lxc(CT) == LxcSpec(rootfs="/srv/ct")
    assert not lxc(CT).privileged and lxc(CT).pids_limit is None
    spec = lxc(CT + "    privileged: true\n    pidsLimit: 100\n")
    assert (spec.privileged, spec.pids_limit) == (True, 100)


@pytest.mark.parametrize(("edit", "where"), [
    ("rootfs: {image: /i.tar, deletePolicy: Retain, imgae: x}",
     "8:51: spec.lxc.rootfs.imgae: unknown field 'imgae'; did you mean 'image'?"),
    ("rootfs: {deletePolicy: Delete}", "8:5: spec.lxc.rootfs.image: required field is missing"),
    ("rootfs: {image: i.tar}", '8:14: spec.lxc.rootfs.image: "i.tar" is not an absolute path '
                               "(starting with '/', without newlines)"),
    ("rootfs: debian", '8:5: spec.lxc.rootfs: "debian" is not an absolute directory, the word '
                       "busybox, or a mapping {image: PATH}"),
    ("rootfs: [/a]", "8:5: spec.lxc.rootfs: ['/a'] is not an absolute directory, the word "
                     "busybox, or a mapping {image: PATH}"),
    ("rootfs: /srv/ct\n    pidsLimit: 0", "9:5: spec.lxc.pidsLimit: must be at least 1 (got 0)"),
    ("rootfs: /srv/ct\n    privileged: 'yes'",
     '9:5: spec.lxc.privileged: must be a boolean, not a string ("yes")'),
], ids=["typo", "no-image", "relative-image", "a-word", "a-list", "pids-zero", "privileged-str"])
def test_container_refusals_are_located(edit: str, where: str) -> None:
    assert problem(CT.replace("rootfs: /srv/ct", edit)) == f"m.yaml:{where}"


# --- generations and the round trip -----------------------------------------------------------

@pytest.mark.parametrize(("text", "same_as"), [
    (with_qemu("firmware: bios\n"), VM),
    (with_disk("image: /images/base.qcow2", "deletePolicy: Retain"), VM),
    (with_qemu("cloudInit: {metaData: {b: '2', a: '1'}}\n"),
     with_qemu("cloudInit:\n  metaData:\n    a: '1'\n    b: '2'\n")),
    (CT + "    privileged: false\n", CT),
    (CT.replace("rootfs: /srv/ct", "rootfs: {image: /i.tar, deletePolicy: Retain}"),
     CT.replace("rootfs: /srv/ct", "rootfs: {image: /i.tar}")),
], ids=["bios", "retain", "metadata-order", "unprivileged", "rootfs-retain"])
def test_a_default_written_out_is_the_same_generation(text: str, same_as: str) -> None:
    assert load(text).generation == load(same_as).generation


@pytest.mark.parametrize("changed", [
    with_disk("image: /images/base.qcow2", "size: 20Gi"),
    with_disk("image: /images/base.qcow2", "deletePolicy: Delete"),
    with_qemu("cloudInit: {}\n"),
    with_qemu("cloudInit: {userData: '#!/bin/sh'}\n"),
    with_qemu("firmware: uefi\n"),
], ids=["size", "policy", "seed", "user-data", "uefi"])
def test_a_changed_volume_seed_or_firmware_is_a_new_generation(changed: str) -> None:
    assert load(changed).generation != load(VM).generation


BUILT = [
    domain(qemu=QemuSpec(
        machine="q35", firmware="uefi", disks=(
            Disk("root", image="/images/base.qcow2", size=20 * GiB),
            Disk("data", size=1536 * 1024, delete_policy=DeletePolicy.DELETE, readonly=True),
            Disk("raw", "/dev/vg0/raw", format=DiskFormat.QCOW2)),
        cloud_init=CloudInit(user_data="#cloud-config\nhostname: vm\n",
                             meta_data=(("instance-id", "i-1"), ("local-hostname", "vm")),
                             network_config_file="/etc/ci/net"))),
    domain(qemu=QemuSpec(firmware="/fw/bios.bin", cloud_init=CloudInit())),
    domain(qemu=dataclasses.replace(TCG_PC, cloud_init=CloudInit(
        user_data_file="/etc/ci/user", network_config="version: 2\n"))),
    domain("ct", "lxc", lxc=LxcSpec(image="/images/ct.tar.gz", delete_policy=DeletePolicy.DELETE,
                                    privileged=True, pids_limit=64)),
    domain("ct", "lxc", lxc=LxcSpec(image="/images/ct.tar")),
]


@pytest.mark.parametrize("built", BUILT, ids=["vm", "bios-path", "files", "ct-deleted", "ct"])
def test_the_test_builder_writes_every_new_field_as_the_loader_reads_it(built: Domain) -> None:
    assert load_text(manifest(built), f"{built.name}.yaml") == [built]


# --- the examples and the schema --------------------------------------------------------------

def test_the_cloud_image_examples_load_as_documented() -> None:
    [vm] = load_file(EXAMPLES / "cloud-vm.yaml")
    assert vm.spec.qemu is not None and vm.spec.qemu.cloud_init is not None
    assert vm.spec.qemu.firmware == "uefi"
    assert vm.spec.qemu.disks == (
        Disk("root", image="/var/lib/domctl/images/debian-12-genericcloud-amd64.qcow2",
             size=20 * GiB),)
    assert (vm.spec.qemu.cloud_init.user_data or "").startswith("#cloud-config\nhostname: ")
    assert "ssh_authorized_keys" in (vm.spec.qemu.cloud_init.user_data or "")
    assert [n.network for n in vm.spec.qemu.nics] == ["lan"]
    [ct] = load_file(EXAMPLES / "image-ct.yaml")
    assert ct.spec.lxc is not None and ct.spec.lxc.image is not None
    assert ct.spec.lxc.image.endswith(".tar.xz") and not ct.spec.lxc.privileged
    assert {vm.spec.state.value, ct.spec.state.value} == {"shutoff"}


def _properties(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for name, value in node.get("properties", {}).items():
            yield f"{path}.{name}", value
        for key, value in node.items():
            if key != "if":  # a condition's properties are tests, not fields
                yield from _properties(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _properties(value, f"{path}[{i}]")


def test_every_field_of_the_domain_schema_is_described() -> None:
    undescribed = [path for path, value in _properties(schema.schema(), "")
                   if "description" not in value and "$ref" not in value]
    assert undescribed == []
