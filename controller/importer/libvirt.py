"""A libvirt domain XML document (`virsh dumpxml`) → the equivalent domctl manifest.

`convert()` is a pure function of the text, used by `domctl import-libvirt`
(controller/cli/importer.py). What maps to what:
- name → metadata.name (renamed, with a comment, when domctl's names cannot hold it), uuid;
  title and description → annotations `libvirt.org/title` and `libvirt.org/description`;
- memory (whole MiB, as qemu needs), maxMemory, currentMemory, in any of libvirt's units;
- vcpu (current=) → vcpus and maxVcpus; its cpuset= → the pinning of each vCPU and of the
  emulator that have none of their own, as libvirt applies it;
- cpu: host-passthrough → model host, maximum → max, custom → its model, host-model →
  domctl's default (said in a comment); topology → sockets, cores, threads;
- cputune shares, period, quota, vcpupin, emulatorpin; on_poweroff/on_reboot/on_crash →
  lifecycle;
- `<domain type='kvm'>` → accel kvm (not auto: libvirt never falls back to emulation either),
  type qemu → tcg;
- os: machine (arch x86_64 only), a pflash loader or firmware='efi' → firmware uefi (the
  NVRAM path in a comment: domctl keeps its own), another loader → firmware PATH, kernel,
  initrd, cmdline, boot (also from the devices' own boot order);
- devices (devices.py): disks and the CD-ROM, NICs, serial port, VNC, guest agent, panic,
  watchdog.
Everything else becomes a `# not imported: <element ...>` comment beside the manifest entry it
belongs to; so does a value the manifest's schema would refuse (fields.py). A few elements say
only what domctl does anyway (`<acpi/>`, `<clock offset='utc'/>`, a ps2 keyboard, the virtio
balloon, the root PCI bus, ...): those are taken without a comment. `state` is `shutoff`
unless asked otherwise: libvirt may still run the domain, and two qemus on one disk must never
run.
"""

from __future__ import annotations

import dataclasses
import re
import uuid

from controller.importer import xmltree
from controller.importer.devices import Devices, child, children, report, to_int, value
from controller.importer.fields import fits
from controller.importer.xmltree import Element, Ledger
from controller.importer.yamltext import Comment, Map, Scalar, render

API_VERSION, KIND = "domctl/v1", "Domain"
MIB = 1024 * 1024
MAX_CPUS = 1 << 16  # host CPU numbers at or above it make a CPU list invalid (libvirt: 16384)
_BYTES = ("b", "byte", "bytes")
_PREFIXES = "kmgtpe"
_BOOT_KINDS = {"hd": "disk", "cdrom": "cdrom", "network": "network"}
_OVMF_CODE = ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE.fd")
_REASONS = {  # said once, after the first element of the kind that is not imported
    "emulator": "domctl runs the qemu-system-x86_64 on its PATH",
    "controller": "domctl adds the controllers its devices need",
    "video": "domctl adds a VGA display with graphics.vnc, and none without",
    "input": "domctl's machines have the ps2 keyboard and mouse only",
    "sound": "domctl gives VMs no sound device",
    "seclabel": "domctl runs qemu in a cgroup of its own, without sVirt labels",
    "memballoon": "domctl always gives a VM a virtio balloon",
}


class NotImportable(ValueError):
    """The input is not a libvirt domain domctl can import."""


@dataclasses.dataclass(frozen=True)
class Imported:
    name: str  # metadata.name of the manifest
    text: str  # the manifest: one YAML document, comments included


def convert(data: bytes | str, source: str = "<stdin>", state: str = "shutoff") -> list[Imported]:
    """The manifest of each libvirt domain in `data` (XML; several documents may follow each
    other), with `state` as its desired state; `source` names the input in the manifest's
    first comment. Raises xmltree.XmlError or NotImportable."""
    raw = data.encode() if isinstance(data, str) else data
    return [_Domain(root, source, state).convert() for root in xmltree.parse(raw)]


def bytes_of(value: str | None, unit: str | None) -> int | None:
    """A libvirt size in bytes: `unit` as libvirt reads it (default KiB; k, KiB = 1024, KB =
    1000, and so on up to exbibytes), or None when either does not parse."""
    number = to_int(value)
    unit = (unit or "KiB").lower()
    if number is None or number < 0:
        return None
    if unit in _BYTES:
        return number
    power = _PREFIXES.find(unit[:1]) + 1
    base = {"": 1024, "ib": 1024, "b": 1000}.get(unit[1:])
    return None if power == 0 or base is None else number * base ** power


def size_text(value: int) -> str:
    """Bytes as the manifest writes a size: the largest binary unit that divides them."""
    for unit, scale in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if value % scale == 0:
            return f"{value // scale}{unit}"
    raise ValueError(f"{value} bytes is not a whole number of KiB")


def cpuset(text: str | None) -> str | None:
    """A libvirt CPU list ("0-3,^2", blanks allowed) as the manifest writes one ("0-1,3"), or
    None when it does not parse or is empty."""
    chosen: set[int] = set()
    excluded: set[int] = set()
    for part in (text or "").split(","):
        found = re.fullmatch(r"\s*(\^?)\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if found is None:
            return None
        first, last = int(found[2]), int(found[3] or found[2])
        if not first <= last < MAX_CPUS:
            return None
        (excluded if found[1] else chosen).update(range(first, last + 1))
    cpus = sorted(chosen - excluded)
    if not cpus:
        return None
    ranges: list[list[int]] = []
    for cpu in cpus:
        if ranges and ranges[-1][1] == cpu - 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def domain_name(name: str, fallback: str) -> str:
    """`name` as a domctl name: lower case, each run of other characters one '-', trimmed to
    63 characters; `fallback` when nothing is left."""
    name = re.sub(r"[^a-z0-9_.-]+", "-", name.lower())
    name = re.sub(r"^[^a-z0-9]+", "", name)[:63].rstrip("-")
    return name if fits("name", name) else fallback


class _Domain:
    """One conversion: the document, its ledger, and the manifest built from them."""

    def __init__(self, root: Element, source: str, state: str) -> None:
        if root.tag != "domain":
            raise NotImportable(f"the root element is <{root.tag}>, not a libvirt <domain>")
        if root.get("type") == "lxc":
            raise NotImportable("<domain type='lxc'> is a libvirt container: only qemu and kvm "
                                "domains are imported")
        name = child(root, "name")
        if name is None:
            raise NotImportable("the <domain> has no <name>")
        self.root, self.source, self.state = root, source, state
        self.libvirt_name = (name.text or "").strip()
        self.ledger = Ledger(root, _REASONS)
        self.ledger.take(root)
        self.os = child(root, "os")
        self.name = ""  # the manifest's, once metadata() chose it
        self.max_vcpus = 1

    def value(self, elem: Element | None, attr: str, path: str,
              number: bool = False) -> str | int | None:
        return value(self.ledger, elem, attr, path, number)

    def convert(self) -> Imported:
        doc = Map()
        doc.comment(f"libvirt domain {self.libvirt_name!r} from {self.source}, by `domctl "
                    "import-libvirt`. '# not imported:' marks what domctl has no equivalent "
                    "for.")
        doc.set("apiVersion", API_VERSION)
        doc.set("kind", KIND)
        doc.set("metadata", self.metadata())
        doc.set("spec", self.spec())
        doc.items[1:1] = [Comment(text) for text in self.placement()]
        return Imported(self.name, render(doc))

    def placement(self) -> list[str]:
        """The one comment for the <address> and <alias> of every device."""
        counts = self.ledger.placement
        said = []
        if counts["address"]:
            said.append(f"not imported: the <address> of {counts['address']} devices (domctl "
                        "assigns PCI slots and drive units itself: guest names made from them, "
                        "such as enp1s0, may change)")
        if counts["alias"]:
            said.append(f"not imported: the <alias> of {counts['alias']} devices (domctl names "
                        "devices itself)")
        return said

    def metadata(self) -> Map:
        meta = Map()
        domain_uuid = None
        uuid_elem = child(self.root, "uuid")
        if uuid_elem is not None:
            try:
                domain_uuid = str(uuid.UUID((uuid_elem.text or "").strip()))
                self.ledger.text(uuid_elem)
            except ValueError:
                pass  # not a uuid: reported with the rest
        name_elem = child(self.root, "name")
        if name_elem is not None:
            self.ledger.text(name_elem)
        self.name = domain_name(self.libvirt_name, f"libvirt-{(domain_uuid or '0' * 8)[:8]}")
        if self.name != self.libvirt_name:
            meta.comment(f"renamed: libvirt's name {self.libvirt_name!r} is not a domctl name "
                         "(a-z, 0-9, '.', '_' and '-', at most 63)")
        meta.set("name", self.name)
        if domain_uuid is not None:
            meta.set("uuid", domain_uuid)
        annotations = Map()
        for tag in ("title", "description"):
            elem = child(self.root, tag)
            if elem is not None:
                annotations.set(f"libvirt.org/{tag}", self.ledger.text(elem))
        meta.nest("annotations", annotations)
        return meta

    def spec(self) -> Map:
        spec = Map()
        spec.set("driver", "qemu")
        if self.state == "shutoff":
            spec.comment("shutoff: libvirt may still run this domain, and two qemus must never "
                         "share its disks. Write running once `virsh shutdown` stopped it and "
                         "`virsh autostart --disable` keeps it off.")
        spec.set("state", self.state)
        spec.comment("libvirt never restarts a domain that stopped; domctl's restartPolicy "
                     "(Always unless set) does: restartPolicy: Never is libvirt's way.")
        self.memory(spec)
        self.vcpus(spec)
        spec.nest("cpu", self.cpu())
        spec.nest("cputune", self.cputune())
        spec.nest("lifecycle", self.lifecycle())
        spec.set("qemu", self.qemu())
        self.built_in()
        report(self.ledger, self.root, spec)
        return spec

    # sizes and CPUs

    def memory(self, spec: Map) -> None:
        found: dict[str, int] = {}
        for tag in ("memory", "maxMemory", "currentMemory"):
            elem = child(self.root, tag)
            amount = bytes_of(elem.text, elem.get("unit")) if elem is not None else None
            if elem is not None and amount:
                self.ledger.text(elem)
                self.ledger.attr(elem, "unit")
                found[tag] = amount
        memory = found.get("memory")
        if memory is None:
            spec.comment("no <memory>: domctl's default, 512Mi")
            memory = 512 * MIB
        else:
            whole = _round_up(memory, MIB)
            if whole != memory:
                spec.comment(f"<memory> of {memory} bytes rounded up to whole MiB, as qemu "
                             "needs")
            memory = whole
            spec.set("memory", size_text(memory))
        maximum = found.get("maxMemory")
        if maximum is not None and maximum > memory:
            spec.set("maxMemory", size_text(_round_up(maximum, MIB)))
        current = found.get("currentMemory")
        if current is not None and current < memory:
            spec.set("currentMemory", size_text(_round_up(current, 1024)))

    def vcpus(self, spec: Map) -> None:
        vcpu = child(self.root, "vcpu")
        count = self.value(vcpu, "", "spec.vcpus", number=True)
        current = self.value(vcpu, "current", "spec.vcpus", number=True)
        if vcpu is not None:
            self.ledger.accept(vcpu, "placement", "static")
        if isinstance(count, int):
            self.max_vcpus = count
            start = current if isinstance(current, int) and current < count else count
            spec.set("vcpus", start)
            if start != count:
                spec.set("maxVcpus", count)

    def cpu(self) -> Map:
        cpu = Map()
        elem = child(self.root, "cpu")
        if elem is None:
            return cpu
        self.ledger.take(elem)
        mode = elem.get("mode", "custom")
        if mode in ("host-passthrough", "maximum"):
            self.ledger.attr(elem, "mode")
            self.ledger.accept(elem, "migratable", "on")
            cpu.set("model", "host" if mode == "host-passthrough" else "max")
        elif mode == "host-model":
            self.ledger.attr(elem, "mode")
            cpu.comment("host-model: libvirt's named CPU model nearest the host's CPU, which "
                        "domctl cannot name: the model is domctl's default (host under kvm, "
                        "qemu64 under tcg)")
        elif mode == "custom":
            model_elem = child(elem, "model")
            model = self.value(model_elem, "", "spec.cpu.model")
            if model is not None and model_elem is not None:
                self.ledger.accept(elem, "mode", "custom")
                self.ledger.accept(model_elem, "fallback", "forbid")
                cpu.set("model", model)
        self.ledger.accept(elem, "match", "exact")
        self.ledger.accept(elem, "check", "none")
        self.topology(child(elem, "topology"), cpu)
        report(self.ledger, elem, cpu)
        return cpu

    def topology(self, elem: Element | None, cpu: Map) -> None:
        """sockets, cores and threads, all three or none (dies and clusters must be 1)."""
        if elem is None:
            return
        keys = ("sockets", "cores", "threads")
        counts = [to_int(elem.get(key)) for key in keys]
        product = 1
        for key, count in zip(keys, counts, strict=True):
            if count is None or not fits(f"spec.cpu.{key}", count):
                return
            product *= count
        if product != self.max_vcpus or any(elem.get(key, "1") != "1"
                                            for key in ("dies", "clusters")):
            return
        for key in (*keys, "dies", "clusters"):
            self.ledger.attr(elem, key)
        for key, count in zip(keys, counts, strict=True):
            cpu.set(key, count or 1)

    def cputune(self) -> Map:
        tune = Map()
        elem = child(self.root, "cputune")
        if elem is not None:
            self.ledger.take(elem)
        for key in ("shares", "period", "quota"):
            setting = child(elem, key)
            number = to_int(setting.text) if setting is not None else None
            if key == "quota" and number is not None and number < 0:
                number = -1  # libvirt: any negative quota is no limit
            if setting is not None and number is not None \
                    and fits(f"spec.cputune.{key}", number):
                self.ledger.text(setting)
                tune.set(key, number)
        pins: dict[int, str] = {}
        for pin in children(elem, "vcpupin"):
            vcpu, cpus = to_int(pin.get("vcpu")), cpuset(pin.get("cpuset"))
            if vcpu is not None and cpus is not None and vcpu not in pins \
                    and 0 <= vcpu < self.max_vcpus and fits("cpuset", cpus):
                self.ledger.attr(pin, "vcpu")
                self.ledger.attr(pin, "cpuset")
                pins[vcpu] = cpus
        emulator = child(elem, "emulatorpin")
        emulator_cpus = cpuset(emulator.get("cpuset")) if emulator is not None else None
        if emulator is not None and emulator_cpus is not None:
            self.ledger.attr(emulator, "cpuset")
        placement = child(self.root, "vcpu")
        default = cpuset(placement.get("cpuset")) if placement is not None else None
        if placement is not None and default is not None:
            tune.comment(f"<vcpu cpuset='{self.ledger.attr(placement, 'cpuset')}'>: the pinning of "
                         "each vCPU, and of the emulator, that has none of its own (as libvirt "
                         "applies it)")
            pins = {cpu: pins.get(cpu, default) for cpu in range(self.max_vcpus)}
            emulator_cpus = emulator_cpus or default
        if pins:
            tune.set("vcpupin", [_pin(vcpu, pins[vcpu]) for vcpu in sorted(pins)])
        if emulator_cpus is not None:
            tune.set("emulatorpin", emulator_cpus)
        report(self.ledger, elem, tune)
        return tune

    def lifecycle(self) -> Map:
        lifecycle = Map()
        for tag, key in (("on_poweroff", "onPoweroff"), ("on_reboot", "onReboot"),
                         ("on_crash", "onCrash")):
            action = self.value(child(self.root, tag), "", f"spec.lifecycle.{key}")
            if action is not None:
                lifecycle.set(key, action)
        return lifecycle

    # the qemu section

    def qemu(self) -> Map:
        qemu = Map()
        if self.os is not None:
            self.ledger.take(self.os)
        os_type = child(self.os, "type")
        if os_type is not None and self.ledger.accept(os_type, "arch", "x86_64"):
            machine = self.value(os_type, "machine", "qemu.machine")  # another arch's: not ours
            if machine is not None:
                qemu.set("machine", machine)
            if (os_type.text or "").strip() == "hvm":
                self.ledger.text(os_type)
        self.accel(qemu)
        self.firmware(qemu)
        for key, path in (("kernel", "absolutePath"), ("initrd", "absolutePath"),
                          ("cmdline", "qemu.cmdline")):
            found = self.value(child(self.os, key), "", path)
            if found is not None:
                qemu.set(key, found)
        devices = Devices(self.ledger, child(self.root, "devices"), self.name)
        found_devices = Map()  # filled first: the boot order depends on what is there
        devices.storage(found_devices)
        devices.nics(found_devices)
        boot = self.boot_order(devices, qemu)
        if boot:
            qemu.set("boot", boot)
        report(self.ledger, self.os, qemu)
        qemu.items += found_devices.items
        devices.serial(qemu)
        devices.vnc(qemu)
        devices.agent(qemu)
        devices.panic(qemu)
        devices.watchdog(qemu)
        devices.built_in()
        report(self.ledger, devices.devices, qemu)
        return qemu

    def built_in(self) -> None:
        """Take what every domctl VM has anyway: ACPI, an APIC, PAE, a UTC clock."""
        features = child(self.root, "features")
        if features is not None:
            self.ledger.take(features)
            for feature in features:
                if feature.tag in ("acpi", "apic", "pae") and not feature.attrib \
                        and not len(feature):
                    self.ledger.take(feature)
        clock = child(self.root, "clock")
        if clock is not None:
            self.ledger.accept(clock, "offset", "utc")

    def accel(self, qemu: Map) -> None:
        kind = self.root.get("type")
        if kind == "kvm":
            qemu.comment("<domain type='kvm'>: kvm, as libvirt, which never falls back to "
                         "software emulation (accel auto would)")
        elif kind == "qemu":
            qemu.comment("<domain type='qemu'>: tcg, software emulation, as libvirt")
        elif kind is not None:
            qemu.comment(f"not imported: <domain type='{self.ledger.attr(self.root, 'type')}'>: "
                         "domctl runs qemu, with accel auto (kvm where it works, else tcg)")
        if kind in ("kvm", "qemu"):
            self.ledger.attr(self.root, "type")
            qemu.set("accel", "kvm" if kind == "kvm" else "tcg")

    def firmware(self, qemu: Map) -> None:
        loader, nvram = child(self.os, "loader"), child(self.os, "nvram")
        chosen = self.os.get("firmware") if self.os is not None else None
        pflash = loader is not None and loader.get("type") == "pflash"
        if self.os is not None and (chosen == "efi" or pflash):
            self.ledger.accept(self.os, "firmware", "efi")
            qemu.comment(*self.uefi(loader, nvram))
            qemu.set("firmware", "uefi")
        elif loader is not None:
            path = self.value(loader, "", "absolutePath")
            if path is not None:
                self.ledger.accept(loader, "type", "rom")
                self.ledger.accept(loader, "readonly", "yes")
                qemu.set("firmware", path)
        elif self.os is not None and chosen == "bios":
            self.ledger.attr(self.os, "firmware")
            qemu.set("firmware", "bios")

    def uefi(self, loader: Element | None, nvram: Element | None) -> list[str]:
        """Take libvirt's UEFI loader and NVRAM; what domctl does instead, as comments."""
        notes = []
        if loader is not None:
            self.ledger.accept(loader, "type", "pflash")
            self.ledger.accept(loader, "readonly", "yes")
            self.ledger.accept(loader, "secure", "no")
            code = self.ledger.text(loader)
            if code and code not in _OVMF_CODE:
                notes.append(f"loader {code} not imported: domctl boots the OVMF its host "
                             "check finds (Debian's ovmf package)")
        source = child(nvram, "source")  # libvirt 8.5's <nvram type='file'><source file=...>
        if nvram is not None and source is not None and nvram.get("type") == "file":
            self.ledger.attr(nvram, "type")
            self.ledger.attr(source, "file")
        if nvram is not None:
            variables = self.ledger.text(nvram) or (source.get("file") if source is not None
                                                    else None) or "(no path)"
            self.ledger.attr(nvram, "template")
            notes.append(f"NVRAM {variables} not reused: domctl keeps the domain's own, "
                         f"<pool>/{self.name}/VARS.fd, made from OVMF's template at the first "
                         f"start; copy {variables} there before that to keep the guest's boot "
                         "entries")
        return notes

    def boot_order(self, devices: Devices, qemu: Map) -> list[Map | Scalar]:
        """The kinds of device to boot from, in order: from <os><boot dev=...>, or from the
        devices' <boot order=...> (domctl boots the first device of a kind in its list)."""
        order: list[Map | Scalar] = []
        ordered = sorted(devices.boot.orders)
        for _, device, _name in ordered:
            if device not in order:
                order.append(device)
        first = next((name for _, device, name in ordered if device == "disk"), None)
        if first is not None and first != devices.boot.disks[0]:
            qemu.comment(f"libvirt boots disk {first} first; domctl boots the first disk of its "
                         f"list, {devices.boot.disks[0]}")
        for boot in children(self.os, "boot"):
            dev = boot.get("dev") or ""
            kind = _BOOT_KINDS.get(dev)
            if kind is None:
                continue
            self.ledger.attr(boot, "dev")
            if kind not in devices.boot.kinds:
                qemu.comment(f"not imported: <boot dev='{dev}'/>, as the domain has no {kind}")
            elif kind not in order:
                order.append(kind)
        return order


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def _pin(vcpu: int, cpus: str) -> Map:
    pin = Map()
    pin.set("vcpu", vcpu)
    pin.set("cpuset", cpus)
    return pin
