"""`domctl import-libvirt`: libvirt domain XML → manifest (controller/importer, cli/importer.py).

Golden files (tests/golden/libvirt/, its README says how the real ones were made): each input's
manifest, word for word, and loaded by the real loader. Then what the goldens cannot show: that
nothing is dropped silently (an unknown attribute or element put anywhere shows up in a
comment), that no input value can break the YAML (hostile fixtures and generated values read
back as exactly themselves, with no key added), that DTDs and entities are refused, and the
command's inputs, outputs and errors.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.importer import xmltree
from controller.importer.libvirt import NotImportable, bytes_of, convert, cpuset, domain_name
from controller.manifests.loader import load_text
from tests.support.cli import Result, invoke

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "libvirt"
CASES = sorted(path.stem for path in GOLDEN.glob("*.xml"))
REGEN = os.environ.get("DOMCTL_REGEN_GOLDEN") == "1"
Run = Callable[..., Result]
MINIMAL = "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>{more}</domain>"


def manifest(case: str) -> str:
    [imported] = convert((GOLDEN / f"{case}.xml").read_bytes(), f"{case}.xml")
    return imported.text


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    return lambda *args, stdin=None: invoke(capsys, ["import-libvirt", *args], stdin)


@pytest.mark.parametrize("case", CASES)
def test_golden_manifest_that_the_loader_takes(case: str) -> None:
    text = manifest(case)
    expected = GOLDEN / f"{case}.yaml"
    if REGEN:
        expected.write_text(text)
    assert text == expected.read_text(), f"regenerate with DOMCTL_REGEN_GOLDEN=1: {expected}"
    [domain] = load_text(text, expected.name)
    assert domain.spec.qemu is not None


def test_the_real_full_domain_maps_every_field() -> None:
    """virsh-full.xml (real virsh output) through the loader: the normalised spec has what the
    XML said, field by field."""
    [domain] = load_text(manifest("virsh-full"), "virsh-full.yaml")
    spec, qemu = domain.spec, domain.spec.qemu
    assert qemu is not None
    xml_uuid = ET.fromstring((GOLDEN / "virsh-full.xml").read_bytes()).findtext("uuid")
    assert (domain.name, domain.metadata.uuid) == ("imported-full", xml_uuid)
    assert (spec.memory, spec.current_memory) == (2 << 30, 1 << 30)
    assert (spec.vcpus, spec.max_vcpus) == (2, 4)
    assert (spec.cpu.model, spec.cpu.sockets, spec.cpu.cores, spec.cpu.threads) == \
        ("qemu64", 1, 2, 2)
    assert (spec.cputune.shares, spec.cputune.period, spec.cputune.quota) == (512, 100000, 50000)
    assert [(p.vcpu, p.cpuset) for p in spec.cputune.vcpupin] == [(0, "0"), (1, "1")]
    assert spec.cputune.emulatorpin == "0-1"
    assert spec.lifecycle.on_crash.value == "restart"
    assert (qemu.machine, qemu.accel.value, qemu.firmware) == ("pc-q35-7.2", "tcg", "uefi")
    assert qemu.boot == ("disk", "cdrom")
    assert [(d.name, d.source, d.format.value, d.bus.value, d.cache.value, d.readonly)
            for d in qemu.disks] == [
        ("vda", "/var/lib/libvirt/images/imported-full.qcow2", "qcow2", "virtio", "none", False),
        ("vdb", "/var/lib/libvirt/images/shared-data.img", "raw", "virtio", "writeback", True),
        ("sda", "/dev/mapper/vg0-data", "raw", "sata", "writethrough", False)]
    assert qemu.cdrom == "/var/lib/libvirt/images/debian-12.iso"
    assert [(n.mode.value, n.network, n.bridge, n.model, n.mac) for n in qemu.nics] == [
        ("network", "default", None, "virtio-net-pci", "52:54:00:aa:bb:01"),
        ("bridge", None, "br0", "e1000e", "52:54:00:aa:bb:02"),
        ("user", None, None, "rtl8139", "52:54:00:aa:bb:03")]
    assert qemu.serial.value == "pty"
    assert qemu.vnc is not None and (qemu.vnc.listen, qemu.vnc.port, qemu.vnc.password) == \
        ("127.0.0.1", None, "secret")
    assert (qemu.guest_agent, qemu.panic) == (True, True)
    assert qemu.watchdog is not None and (qemu.watchdog.model.value,
                                          qemu.watchdog.action.value) == ("i6300esb", "poweroff")
    assert domain.spec.state.value == "shutoff"


# --- nothing dropped silently ------------------------------------------------------------------

def _placement(root: ET.Element, elem: ET.Element) -> bool:
    """An <address> or <alias> of a device: counted in one comment, not listed."""
    parents = {child: parent for parent in root.iter() for child in parent}
    device = parents.get(elem)
    return elem.tag in xmltree.PLACEMENT and device is not None \
        and getattr(parents.get(device), "tag", None) == "devices"


@pytest.mark.parametrize("case", [c for c in CASES if c != "hand-hostile"])
def test_an_unknown_attribute_or_element_anywhere_becomes_a_comment(case: str) -> None:
    """For every element of the input: the same input with an attribute, then a child element,
    that domctl cannot know added to it; the manifest must name what was added (and still
    load)."""
    data = (GOLDEN / f"{case}.xml").read_bytes()
    count = sum(1 for _ in ET.fromstring(data).iter())
    missed = []
    for index in range(count):
        for attribute in (True, False):
            root = ET.fromstring(data)
            elem = list(root.iter())[index]
            if _placement(root, elem):
                continue
            if attribute:
                elem.set("zz-unknown", "marker")
            else:
                ET.SubElement(elem, "zz-unknown-element")
            [imported] = convert(ET.tostring(root), case)
            said = "zz-unknown='marker'" if attribute else "<zz-unknown-element/>"
            if said not in imported.text:
                missed.append(f"{said} in <{elem.tag}> #{index}")
            load_text(imported.text, case)
    assert not missed, missed


# --- hostile values ------------------------------------------------------------------------

def test_hostile_values_stay_values() -> None:
    """hand-hostile.xml: quotes, colons, hashes, YAML words and every kind of line break read
    back as themselves, in their fields only, or are comments that add nothing."""
    text = manifest("hand-hostile")
    doc = yaml.safe_load(text)
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    assert doc["metadata"] == {
        "name": "etc-evil-name-x",
        "annotations": {"libvirt.org/title": "off",
                        "libvirt.org/description": "---\nkey: value # not a comment\x85next"
                                                   "\u2028line\n..."}}
    assert set(doc["spec"]) == {"driver", "state", "memory", "qemu"}
    qemu = doc["spec"]["qemu"]
    assert set(qemu) == {"machine", "accel", "kernel", "cmdline", "disks", "cdrom", "nics"}
    assert qemu["kernel"] == "/srv/it's: 'a kernel' # yes"
    assert qemu["cmdline"] == 'console=ttyS0 x="a: b" #c'
    assert qemu["disks"][0]["source"] == "/srv/[disk] {1}, *alias &anchor !tag %x @y `z` |>"
    assert (qemu["cdrom"], qemu["nics"][0]["bridge"]) == ("/srv/null", "yes")
    assert "initrd" not in qemu  # it has a line break: a comment, not a value


def _xml_text(value: str) -> str:
    """`value` as XML character references: exactly `value` after parsing."""
    return "".join(f"&#{ord(char)};" for char in value)


# every character XML 1.0 can hold, YAML's special ones many times more likely
XML_TEXT = st.text(st.one_of(
    st.sampled_from(list("\n\r\t #:'\"-[]{},&*!|>%@`?\x85\u2028\u2029\ufeff")),
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\ufffe\uffff",
                  min_codepoint=0x20)), max_size=40)


@given(name=XML_TEXT, description=XML_TEXT, path=XML_TEXT, other=XML_TEXT)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_value_gives_a_manifest_that_loads_and_reads_back(name: str, description: str,
                                                              path: str, other: str) -> None:
    """Generated name, description, disk path and an unknown element's attribute: the manifest
    always loads, the description and path (when it is a valid one) read back exactly, and
    nothing adds a key."""
    more = (f"<description>{_xml_text(description)}</description><devices>"
            f"<disk type='file' device='disk'><source file='/{_xml_text(path)}'/>"
            f"<target dev='vda' bus='virtio'/></disk>"
            f"<sound model='{_xml_text(other)}'/></devices>")
    [imported] = convert(MINIMAL.format(name=_xml_text(name), more=more))
    [domain] = load_text(imported.text, "generated.yaml")
    assert domain.name == imported.name
    doc = yaml.safe_load(imported.text)
    assert set(doc["metadata"]) <= {"name", "annotations"}
    assert set(doc["spec"]) == {"driver", "state", "memory", "qemu"}
    assert set(doc["spec"]["qemu"]) <= {"accel", "disks"}
    if description.strip():
        assert doc["metadata"]["annotations"] == {"libvirt.org/description": description.strip()}
    disks = doc["spec"]["qemu"].get("disks", [])
    assert disks == [] or disks[0]["source"] == f"/{path}"
    assert disks or any(c in f"/{path}" for c in "\n\r\x00")


# --- refused inputs --------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE domain [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>
<domain type='qemu'><name>&b;</name></domain>"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE domain [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<domain type='qemu'><name>&secret;</name></domain>"""


@pytest.mark.parametrize(("data", "message"), [
    (BILLION_LAUGHS, "line 2, column 18: a DOCTYPE is refused"),
    (EXTERNAL, "line 2, column 18: a DOCTYPE is refused"),
    (b"<!DOCTYPE domain><domain/>", "line 1, column 17: a DOCTYPE is refused"),
    (b"<domain><name>x</name>", "line 1, column 23: no element found"),
    (b"<domain>\n<name>x</nam></domain>", "line 2, column 10: mismatched tag"),
    (b"", "no XML document"),
    (b"<network><name>x</name></network>", "the root element is <network>, not a libvirt"),
    (b"<domain type='lxc'><name>ct</name></domain>", "<domain type='lxc'> is a libvirt contai"),
    (b"<domain type='qemu'/>", "the <domain> has no <name>"),
    (b"<domain type='qemu'><name>a</name></domain>\njunk", "line 2, column 1: syntax error"),
    (b"<domain>" + b"<a>" * 100 + b"</a>" * 100 + b"</domain>",
     "line 1, column 309: elements nested more than 100 deep are refused"),
], ids=["billion-laughs", "external-entity", "doctype", "unclosed", "mismatched", "empty",
        "network", "lxc", "no-name", "junk-after", "too-deep"])
def test_refused_input_says_why_and_where(data: bytes, message: str) -> None:
    with pytest.raises((xmltree.XmlError, NotImportable), match="^" + re.escape(message)):
        convert(data)


def test_several_documents_in_one_input() -> None:
    """What `for d in ...; do virsh dumpxml $d; done` prints: each document, its own manifest
    (an XML declaration may start each)."""
    data = "\n".join(["<?xml version='1.0'?>" + MINIMAL.format(name="one", more=""),
                      "<?xml version='1.0'?>\n" + MINIMAL.format(name="two", more="")])
    assert [imported.name for imported in convert(data)] == ["one", "two"]


# --- values, one by one ----------------------------------------------------------------------

@pytest.mark.parametrize(("value", "unit", "expected"), [
    ("65536", None, 64 << 20), ("64", "MiB", 64 << 20), ("64", "M", 64 << 20),
    ("1", "G", 1 << 30), ("1", "GB", 10 ** 9), ("1000", "KB", 10 ** 6), ("5", "b", 5),
    ("5", "bytes", 5), ("2", "TiB", 2 << 40), ("1", "k", 1024), ("x", None, None),
    ("1", "furlongs", None), ("-1", None, None)])
def test_libvirt_sizes(value: str, unit: str | None, expected: int | None) -> None:
    assert bytes_of(value, unit) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("0", "0"), ("0-3", "0-3"), ("0-3,^1", "0,2-3"), (" 4 , 0-1 ", "0-1,4"),
    ("0-7,^2-3", "0-1,4-7"), ("^1", None), ("a", None), ("", None), ("1-", None),
    ("3-1", None), ("0-99999999999", None)])
def test_libvirt_cpu_lists(text: str, expected: str | None) -> None:
    assert cpuset(text) == expected


@pytest.mark.parametrize(("name", "expected"), [
    ("web-1", "web-1"), ("Web Server 1", "web-server-1"), ("../../x", "x"),
    ("_a", "a"), ("日本", "fallback"), ("a" * 80, "a" * 63), ("a" + "-" * 70 + "b", "a")])
def test_domain_names(name: str, expected: str) -> None:
    assert domain_name(name, "fallback") == expected


# --- the command -----------------------------------------------------------------------------

def test_standard_input_and_files_to_standard_output(run: Run) -> None:
    xml = (GOLDEN / "virsh-diskless.xml").read_bytes()
    piped = run(stdin=xml)
    assert piped.exit_code == 0, piped.output
    assert piped.stdout.startswith("# libvirt domain 'imported-diskless' from <stdin>")
    assert run("-", stdin=xml).stdout == piped.stdout
    both = run(str(GOLDEN / "virsh-diskless.xml"), str(GOLDEN / "virsh-kernel.xml"),
               "--state", "running")
    assert both.exit_code == 0, both.output
    documents = list(yaml.safe_load_all(both.stdout))
    assert [(d["metadata"]["name"], d["spec"]["state"]) for d in documents] == [
        ("imported-diskless", "running"), ("imported-kernel", "running")]
    assert [d.name for d in load_text(both.stdout, "both.yaml")] == ["imported-diskless",
                                                                       "imported-kernel"]


def test_a_bad_input_is_named_and_the_others_still_converted(run: Run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text("<domain><name>x</name>")
    result = run(str(bad), str(GOLDEN / "virsh-diskless.xml"), str(tmp_path / "missing.xml"))
    assert result.exit_code == 1
    assert f"{bad}: line 1, column 23: no element found" in result.stderr
    assert f"{tmp_path / 'missing.xml'}: No such file or directory" in result.stderr
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(result.stdout)] == [
        "imported-diskless"]


def test_output_dir_writes_name_yaml_and_replaces_only_with_force(run: Run,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    first = run("-o", str(out), str(GOLDEN / "virsh-kernel.xml"), str(GOLDEN / "hand-hostile.xml"))
    assert first.exit_code == 0, first.output
    assert sorted(p.name for p in out.iterdir()) == ["etc-evil-name-x.yaml", "imported-kernel.yaml"]
    written = (out / "imported-kernel.yaml").read_text()
    kernel = GOLDEN / "virsh-kernel.xml"
    assert written == convert(kernel.read_bytes(), str(kernel))[0].text
    (out / "imported-kernel.yaml").write_text("mine")
    again = run("-o", str(out), str(GOLDEN / "virsh-kernel.xml"))
    assert again.exit_code == 1
    assert "imported-kernel.yaml exists (--force replaces it)" in again.stderr
    assert (out / "imported-kernel.yaml").read_text() == "mine"
    forced = run("-o", str(out), "--force", str(GOLDEN / "virsh-kernel.xml"))
    assert forced.exit_code == 0, forced.output
    assert (out / "imported-kernel.yaml").read_text() == written
    assert sorted(p.name for p in out.iterdir()) == ["etc-evil-name-x.yaml",
                                                     "imported-kernel.yaml"]  # no temp left


def test_a_link_in_the_output_dir_is_not_followed(run: Run, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "imported-kernel.yaml").symlink_to(target)
    result = run("-o", str(tmp_path / "out"), str(GOLDEN / "virsh-kernel.xml"))
    assert result.exit_code == 1 and "exists" in result.stderr
    assert not target.exists()


def test_two_inputs_with_one_name(run: Run, tmp_path: Path) -> None:
    twice = tmp_path / "twice.xml"
    twice.write_bytes((GOLDEN / "virsh-kernel.xml").read_bytes())
    result = run("-o", str(tmp_path / "out"), str(GOLDEN / "virsh-kernel.xml"), str(twice))
    assert result.exit_code == 1
    assert f"{twice}: left out imported-kernel, a name already imported from" in result.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["imported-kernel.yaml"]


def test_help_names_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert "import-libvirt" in invoke(capsys, ["--help"]).stdout


def test_a_directory_is_refused_as_an_input(run: Run, tmp_path: Path) -> None:
    result = run(str(tmp_path))
    assert result.exit_code == 2 and f"'{tmp_path}' is a directory" in result.stderr


def _spec(text: str) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(text)["spec"]
    return spec


def test_vcpu_current_and_default_pinning() -> None:
    more = ("<vcpu current='1' cpuset='2'>2</vcpu><cputune><vcpupin vcpu='1' cpuset='3'/>"
            "<emulatorpin cpuset='0'/></cputune>")
    [imported] = convert(MINIMAL.format(name="pins", more=more))
    spec = _spec(imported.text)
    assert (spec["vcpus"], spec["maxVcpus"]) == (1, 2)
    assert spec["cputune"] == {"vcpupin": [{"vcpu": 0, "cpuset": "2"},
                                           {"vcpu": 1, "cpuset": "3"}], "emulatorpin": "0"}


def test_the_nvram_of_libvirt_8_5_names_its_file_in_a_source() -> None:
    more = ("<os firmware='efi'><type arch='x86_64' machine='q35'>hvm</type>"
            "<nvram type='file'><source file='/var/lib/libvirt/qemu/nvram/n_VARS.fd'/></nvram>"
            "</os>")
    [imported] = convert(MINIMAL.format(name="n", more=more))
    assert _spec(imported.text)["qemu"]["firmware"] == "uefi"
    assert "# NVRAM /var/lib/libvirt/qemu/nvram/n_VARS.fd not reused" in imported.text
    assert "not imported" not in imported.text.split("firmware: uefi")[1]
