"""The <devices> of a libvirt domain → the device fields of the manifest's `spec.qemu`.

Part of libvirt.py's conversion (its docstring has the whole table): disks and the CD-ROM,
NICs, the serial port, VNC, the guest agent's channel, the panic device and the watchdog, plus
the devices every domctl VM has anyway (the root PCI bus, the ps2 keyboard and mouse, a virtio
balloon), which are taken without a comment. Each device's own leftovers are comments beside
its entry; devices not mapped at all are reported by the caller, after the mapped ones. Also
here: the small readers both modules use (`child`, `value`, ...).
"""

from __future__ import annotations

import dataclasses

from controller.importer.fields import fits
from controller.importer.xmltree import Element, Ledger
from controller.importer.yamltext import Map, Scalar

GUEST_AGENT = "org.qemu.guest_agent.0"
NIC_MODELS = {"virtio": "virtio-net-pci", "e1000": "e1000", "e1000e": "e1000e",
              "rtl8139": "rtl8139"}  # libvirt's model type → qemu's device
DEFAULT_NIC_MODEL = "rtl8139"  # what libvirt gives an x86 NIC without <model>
_SOURCE_ATTRIBUTE = {"file": "file", "block": "dev"}  # disk type → where its path is
_BUS_BY_PREFIX = {"vd": "virtio", "sd": "scsi", "hd": "ide"}  # libvirt's guess from the name
_CDROM_BUSES = ("ide", "sata")  # domctl's CD-ROM is on IDE (pc) or the AHCI (q35)


def children(elem: Element | None, tag: str) -> list[Element]:
    return [] if elem is None else [each for each in elem if each.tag == tag]


def child(elem: Element | None, tag: str) -> Element | None:
    return next(iter(children(elem, tag)), None)


def to_int(text: str | None) -> int | None:
    """A decimal (or 0x hexadecimal) integer, else None."""
    text = (text or "").strip()
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        return None


def value(ledger: Ledger, elem: Element | None, attr: str, path: str,
          number: bool = False) -> str | int | None:
    """Attribute `attr` of `elem` (its text when `attr` is empty), an int when `number`:
    taken when it fits manifest field `path`, else None (left to be reported)."""
    if elem is None:
        return None
    raw = elem.get(attr) if attr else (elem.text or "").strip()
    found = to_int(raw) if number else raw
    if found is None or not fits(path, found):
        return None
    if attr:
        ledger.attr(elem, attr)
    else:
        ledger.text(elem)
    return found


def report(ledger: Ledger, elem: Element | None, into: Map) -> None:
    """Comments in `into` for what of `elem` is not imported (nothing if it was all)."""
    if elem is not None:
        into.comment(*ledger.leftovers(elem))


@dataclasses.dataclass
class Boot:
    """The bootable devices found, and their own <boot order=...> (order, kind, disk name)."""

    kinds: set[str] = dataclasses.field(default_factory=set)  # disk, cdrom, network
    disks: list[str] = dataclasses.field(default_factory=list)  # their names, in order
    orders: list[tuple[int, str, str]] = dataclasses.field(default_factory=list)

    def device(self, ledger: Ledger, elem: Element, kind: str, name: str = "") -> None:
        self.kinds.add(kind)
        if kind == "disk":
            self.disks.append(name)
        boot = child(elem, "boot")
        order = to_int(boot.get("order")) if boot is not None else None
        if boot is not None and order is not None:
            ledger.attr(boot, "order")
            self.orders.append((order, kind, name))


class Devices:
    """Reads the <devices> of one domain into the manifest's qemu section."""

    def __init__(self, ledger: Ledger, devices: Element | None, name: str) -> None:
        self.ledger, self.devices, self.name = ledger, devices, name
        self.boot = Boot()
        if devices is not None:
            ledger.take(devices)

    def storage(self, qemu: Map) -> None:
        """`disks` and `cdrom`, and a comment for a disk whose format domctl cannot open."""
        disks: list[Map | Scalar] = []
        cdrom: Map | None = None
        for elem in children(self.devices, "disk"):
            device = elem.get("device", "disk")
            if device == "cdrom" and cdrom is None:
                cdrom = self.cdrom(elem)
            elif device == "disk":
                disk = self.disk(elem, disks, qemu)
                if disk is not None:
                    disks.append(disk)
        if disks:
            qemu.set("disks", disks)
        if cdrom is not None:
            qemu.items += cdrom.items

    def _source(self, elem: Element) -> str | None:
        """The path of a file or block disk, if the manifest can take it (taken then)."""
        attr = _SOURCE_ATTRIBUTE.get(elem.get("type", "file"))
        path = value(self.ledger, child(elem, "source"), attr, "absolutePath") if attr else None
        if isinstance(path, str):
            self.ledger.accept(elem, "type", "file", "block")
            return path
        return None

    def disk(self, elem: Element, disks: list[Map | Scalar], qemu: Map) -> Map | None:
        driver = child(elem, "driver")
        fmt = (driver.get("type") if driver is not None else None) or "raw"
        if not fits("disk.format", fmt):
            said = self.ledger.leftovers(elem)  # the whole disk, in one line
            qemu.comment(*said, "(domctl opens raw and qcow2 images: "
                         f"`qemu-img convert -O qcow2` makes one of this {fmt} image)")
            return None
        path = self._source(elem)
        if path is None:
            return None
        self.ledger.attr(elem, "device")
        disk = Map()
        target = child(elem, "target")
        dev = target.get("dev", "") if target is not None else ""
        taken = {d.get("name") for d in disks if isinstance(d, Map)}
        name = dev if fits("disk.name", dev) and dev not in taken else next(
            f"disk{n}" for n in range(len(disks), len(disks) * 2 + 2) if f"disk{n}" not in taken)
        if name == dev and target is not None:
            self.ledger.attr(target, "dev")
        disk.set("name", name)
        disk.set("source", path)
        if driver is not None:
            self.ledger.accept(driver, "name", "qemu")
            self.ledger.accept(driver, "type", fmt)
        disk.set("format", fmt)
        bus = (target.get("bus") if target is not None else None) or _BUS_BY_PREFIX.get(dev[:2])
        if bus is not None and fits("disk.bus", bus):
            if target is not None:
                self.ledger.accept(target, "bus", bus)
            disk.set("bus", bus)
        else:
            disk.comment("on virtio, domctl's default bus")
        cache = driver.get("cache") if driver is not None else None
        if driver is not None and cache is not None and fits("disk.cache", cache):
            self.ledger.attr(driver, "cache")
            disk.set("cache", cache)
        elif cache in (None, "default"):
            if driver is not None:
                self.ledger.accept(driver, "cache", "default")
            disk.comment("no cache mode in libvirt: qemu's own, writeback (domctl's default "
                         "would be none)")
            disk.set("cache", "writeback")
        readonly = child(elem, "readonly")
        if readonly is not None:
            self.ledger.take(readonly)
            disk.set("readonly", True)
        self.boot.device(self.ledger, elem, "disk", name)
        report(self.ledger, elem, disk)
        return disk

    def cdrom(self, elem: Element) -> Map | None:
        """`cdrom: PATH` with its comments before it, for the first CD-ROM with a medium."""
        path = self._source(elem)
        if path is None:
            return None
        self.ledger.attr(elem, "device")
        driver, target = child(elem, "driver"), child(elem, "target")
        if driver is not None:
            self.ledger.accept(driver, "name", "qemu")
            self.ledger.accept(driver, "type", "raw")
        if target is not None:
            self.ledger.attr(target, "dev")
            self.ledger.accept(target, "bus", *_CDROM_BUSES)
        readonly = child(elem, "readonly")
        if readonly is not None:
            self.ledger.take(readonly)
        self.boot.device(self.ledger, elem, "cdrom")
        cdrom = Map()
        report(self.ledger, elem, cdrom)
        cdrom.set("cdrom", path)
        return cdrom

    def nics(self, qemu: Map) -> None:
        nics: list[Map | Scalar] = []
        for elem in children(self.devices, "interface"):
            nic = self.nic(elem)
            if nic is not None:
                nics.append(nic)
        if any(isinstance(nic, Map) and nic.get("network") for nic in nics):
            qemu.comment("libvirt's networks are not domctl's: a NIC on network: NAME needs a "
                         "domctl `kind: Network` of that name (or bridge: virbr0 joins "
                         "libvirt's default network while libvirt runs it)")
        if nics:
            qemu.set("nics", nics)

    def nic(self, elem: Element) -> Map | None:
        kind, source = elem.get("type"), child(elem, "source")
        nic = Map()
        if kind == "network":
            network = value(self.ledger, source, "network", "networkName")
            if network is None:
                return None
            nic.set("network", network)
        elif kind == "bridge":
            bridge = value(self.ledger, source, "bridge", "nic.bridge")
            if bridge is None:
                return None
            nic.set("bridge", bridge)
        elif kind == "user":
            nic.set("mode", "user")
        else:
            return None
        self.ledger.attr(elem, "type")
        model = child(elem, "model")
        if model is None:
            nic.comment("no <model>: libvirt's default on x86, rtl8139")
            nic.set("model", DEFAULT_NIC_MODEL)
        elif model.get("type") in NIC_MODELS:
            nic.set("model", NIC_MODELS[self.ledger.attr(model, "type") or ""])
        else:
            nic.comment("the NIC is virtio-net-pci, domctl's default")
        mac = value(self.ledger, child(elem, "mac"), "address", "nic.mac")
        if isinstance(mac, str):
            nic.set("mac", mac.lower())
        link = value(self.ledger, child(elem, "link"), "state", "nic.linkState")
        if link is not None:
            nic.set("linkState", link)
        self.boot.device(self.ledger, elem, "network")
        report(self.ledger, elem, nic)
        return nic

    def serial(self, qemu: Map) -> None:
        """The first serial port (or a console that is one): pty, a file (→ the domain's log)
        or a unix socket (→ domctl's own, for `domctl console`). libvirt lists serial port 0
        again as a <console>: that one is taken with it."""
        serials, consoles = children(self.devices, "serial"), children(self.devices, "console")
        # an Element without children is false: no `or` between elements
        port = serials[0] if serials else next(
            (c for c in consoles if _target_type(c) in (None, "serial")), None)
        if port is None:
            return
        kind, source, path = port.get("type", "pty"), child(port, "source"), _source_path(port)
        notes = []
        if kind == "pty":
            mode = "pty"
        elif kind == "file" and path:
            mode = "log"
            notes.append(f"the serial port went to {path}; domctl appends it to the domain's "
                         f"log, <log dir>/{self.name}.log")
        elif kind == "unix" and (source is None or source.get("mode", "bind") == "bind"):
            mode = "socket"
            notes.append(f"libvirt's socket {path} not reused: domctl makes its own, for "
                         f"`domctl console {self.name}`")
        else:
            return
        repeats = [port] + [c for c in consoles if c is not port and c.get("type", "pty") == kind
                            and _target_type(c) in (None, "serial") and _target_port(c) == "0"
                            and _source_path(c) == path]
        for elem in repeats:  # the port, and the <console> that is the same port again
            self._serial_port(elem)
            notes += self.ledger.leftovers(elem)
        qemu.comment(*notes)
        qemu.set("serial", mode)

    def _serial_port(self, elem: Element) -> None:
        """Take what of serial port 0 (or its console) domctl's serial port is anyway."""
        self.ledger.attr(elem, "type")
        self.ledger.attr(elem, "tty")  # the pty a running domain has: not configuration
        source = child(elem, "source")
        if source is not None:
            self.ledger.attr(source, "path")
            self.ledger.accept(source, "mode", "bind")
        target = child(elem, "target")
        if target is not None:
            self.ledger.accept(target, "type", "isa-serial", "serial")
            self.ledger.accept(target, "port", "0")
            model = child(target, "model")
            if model is not None:
                self.ledger.accept(model, "name", "isa-serial")

    def vnc(self, qemu: Map) -> None:
        elem = next((g for g in children(self.devices, "graphics") if g.get("type") == "vnc"),
                    None)
        if elem is None:
            return
        self.ledger.attr(elem, "type")
        vnc = Map()
        addresses = [a for a in children(elem, "listen") if a.get("type") == "address"]
        listen = elem.get("listen") or next((a.get("address") for a in addresses), None)
        if listen is not None and fits("qemu.graphics.vnc.listen", listen):
            self.ledger.attr(elem, "listen")
            for address in addresses:  # libvirt repeats the attribute as an element
                if address.get("address", listen) == listen:
                    self.ledger.attr(address, "type")
                    self.ledger.attr(address, "address")
            vnc.set("listen", listen)
        port = elem.get("port")
        if elem.get("autoport") == "yes" or port in (None, "-1"):
            self.ledger.attr(elem, "autoport")
            self.ledger.attr(elem, "port")  # with autoport: the port a running domain got
            vnc.set("port", "auto")
        else:
            fixed = value(self.ledger, elem, "port", "qemu.graphics.vnc.port", number=True)
            if fixed is not None:
                self.ledger.accept(elem, "autoport", "no")
                vnc.set("port", fixed)
        password = elem.get("passwd")
        if password is not None and fits("qemu.graphics.vnc.password", password):
            vnc.set("password", self.ledger.attr(elem, "passwd") or "")
        elif password is not None:
            self.ledger.attr(elem, "passwd")
            vnc.comment("not imported: passwd (VNC takes 8 characters at most); set one")
        report(self.ledger, elem, vnc)
        graphics = Map()
        graphics.set("vnc", vnc)
        qemu.set("graphics", graphics)

    def agent(self, qemu: Map) -> None:
        for elem in children(self.devices, "channel"):
            target = child(elem, "target")
            if elem.get("type") == "unix" and target is not None \
                    and target.get("type") == "virtio" and target.get("name") == GUEST_AGENT:
                self.ledger.attr(elem, "type")
                self.ledger.attr(target, "type")
                self.ledger.attr(target, "name")
                self.ledger.attr(target, "state")  # whether a running agent is connected
                qemu.comment(*self.ledger.leftovers(elem))
                qemu.set("guestAgent", True)
                return

    def panic(self, qemu: Map) -> None:
        elem = next((p for p in children(self.devices, "panic")
                     if p.get("model", "isa") == "isa"), None)
        if elem is not None:
            self.ledger.accept(elem, "model", "isa")
            qemu.comment(*self.ledger.leftovers(elem))
            qemu.set("panic", True)

    def watchdog(self, qemu: Map) -> None:
        elem = child(self.devices, "watchdog")
        if elem is None or not fits("qemu.watchdog.model", elem.get("model", "")):
            return
        watchdog = Map()
        watchdog.set("model", value(self.ledger, elem, "model", "qemu.watchdog.model") or "")
        action = value(self.ledger, elem, "action", "qemu.watchdog.action")
        if action is not None:
            watchdog.set("action", action)
        report(self.ledger, elem, watchdog)
        qemu.set("watchdog", watchdog)

    def built_in(self) -> None:
        """Take what every domctl VM has anyway: the root PCI bus, the ps2 keyboard and mouse,
        a virtio balloon, no audio."""
        for elem in children(self.devices, "controller"):
            if elem.get("type") == "pci" and elem.get("index", "0") == "0" \
                    and elem.get("model") in ("pci-root", "pcie-root"):
                for attr in ("type", "index", "model"):
                    self.ledger.attr(elem, attr)
        for elem in children(self.devices, "input"):
            if elem.get("bus") == "ps2" and elem.get("type") in ("mouse", "keyboard"):
                self.ledger.attr(elem, "type")
                self.ledger.attr(elem, "bus")
        for elem in children(self.devices, "audio"):
            if elem.get("type") == "none":
                self.ledger.attr(elem, "type")
                self.ledger.attr(elem, "id")
        balloon = child(self.devices, "memballoon")
        if balloon is not None and balloon.get("model") == "virtio":
            self.ledger.attr(balloon, "model")


def _target_type(elem: Element) -> str | None:
    target = child(elem, "target")
    return target.get("type") if target is not None else None


def _source_path(elem: Element) -> str | None:
    source = child(elem, "source")
    return source.get("path") if source is not None else None


def _target_port(elem: Element) -> str:
    target = child(elem, "target")
    return (target.get("port") if target is not None else None) or "0"
