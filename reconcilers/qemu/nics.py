"""The qemu driver's NICs on the host and over QMP: taps, link states, hotplug, vhost-net.

Role: what QemuDriver does for NICs beyond the command line (argv.py spells -netdev/-device,
and the same properties for netdev_add/device_add). Before a start: `check_host` (a network
NIC's network is up, each tap NIC's bridge exists: else the start is refused naming the field)
and `plug` (one tap per network/bridge NIC, named by names.tap_name, on its bridge; this
domain's taps of NICs it no longer has are deleted). Between launch and `cont`: `set_links`
(linkState down). On a running domain: `apply_live` (set_link; NICs added at or removed from
the end of the list: tap + netdev_add + device_add, or device_del, the guest's DEVICE_DELETED
awaited for at most UNPLUG_TIMEOUT, netdev_del and the tap deleted). The taps of a domain that
stopped, in any way, are removed by runtime.release_taps.

vhost-net: used when /dev/vhost-net opens read-write (probed once per driver, said in the
capabilities' message); without it qemu moves the packets itself, slower but the same to the
guest. Commands run in the controller's own network namespace (Place()). Never: touches a tap
not marked as this domain's (reconcilers/net/tap.py), or sends a hotplug to a device id it
did not derive from a NIC index.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from reconcilers.errors import DriverError, HostValidationError
from reconcilers.model import Domain, DomainSpec, LinkState, Nic, NicMode
from reconcilers.net import bridge, nics, tap
from reconcilers.net.command import Place
from reconcilers.net.errors import NetError
from reconcilers.net.names import UnsafeValue, tap_name
from reconcilers.qemu.argv import device_props, netdev_props, nic_ids
from reconcilers.qemu.changes import NICS
from reconcilers.qemu.commands import QmpCommands
from reconcilers.qemu.escape import ValueRefused
from reconcilers.qemu.monitor import MonitorError
from reconcilers.qemu.runtime import Running, release_taps

VHOST_NET = Path("/dev/vhost-net")
UNPLUG_TIMEOUT = 10.0  # seconds for the guest to release a NIC (ACPI eject; milliseconds)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Vhost:
    usable: bool
    note: str  # for the capabilities' message


def probe_vhost() -> Vhost:
    """Whether /dev/vhost-net opens read-write for this process."""
    try:
        fd = os.open(VHOST_NET, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return Vhost(False, f"vhost-net unusable ({VHOST_NET}: {exc.strerror}): tap NICs "
                            "without it")
    os.close(fd)
    return Vhost(True, "tap NICs with vhost-net")


def _taps(nic_list: tuple[Nic, ...]) -> Iterator[tuple[int, Nic]]:
    return ((index, nic) for index, nic in enumerate(nic_list) if nic.mode is not NicMode.USER)


def has_taps(nic_list: tuple[Nic, ...]) -> bool:
    """Whether any NIC of the list runs on a tap."""
    return any(True for _ in _taps(nic_list))


def _field(index: int, nic: Nic) -> str:
    key = "network" if nic.mode is NicMode.NETWORK else "bridge"
    return f"spec.qemu.nics[{index}].{key}"


async def check_nic(name: str, index: int, nic: Nic) -> None:
    """Refuse a tap NIC that cannot be plugged here: its network is not up (NetworkNotReady:
    the domain waits), its bridge does not exist, it has no MAC (never resolved)."""
    field = _field(index, nic)
    if nic.mac is None:
        raise HostValidationError(name, f"spec.qemu.nics[{index}].mac",
                                  "no MAC: the NIC was not resolved before the start")
    if nic.bridge is None:
        raise nics.NetworkNotReady(name, field, nic.network or "")
    try:
        state = await bridge.observe(Place(), nic.bridge)
    except UnsafeValue as exc:
        raise HostValidationError(name, field, str(exc)) from exc
    if state is not None and state.kind == "bridge":
        return
    if nic.mode is NicMode.NETWORK:
        raise nics.NetworkNotReady(name, field, nic.network or "")
    raise HostValidationError(name, field, f"bridge {nic.bridge!r} " + (
        "does not exist on this host" if state is None else
        f"is not a bridge (a {state.kind or 'plain device'})"))


async def check_host(domain: Domain) -> None:
    """check_nic for every tap NIC of the domain, in order."""
    nics.check_ready(domain)
    assert domain.spec.qemu is not None
    for index, nic in _taps(domain.spec.qemu.nics):
        await check_nic(domain.name, index, nic)


async def plug(domain: Domain, vhost: bool) -> None:
    """The taps of a start, each on its bridge; leftovers of this domain's that no NIC needs
    now are deleted. On a failure nothing of this domain's is left and DriverError says why."""
    assert domain.spec.qemu is not None
    wanted = list(_taps(domain.spec.qemu.nics))
    if not wanted:  # no command on the start of a domain without taps (the common case)
        return
    try:
        await tap.sweep(Place(), domain.name,
                        keep=frozenset(tap_name(domain.name, i) for i, _ in wanted))
        for index, nic in wanted:
            assert nic.bridge is not None  # check_host
            await tap.ensure(Place(), tap.TapSpec(domain.name, index, nic.bridge, vhost))
    except NetError as exc:
        await release_taps(domain.name)
        raise DriverError(domain.name, "start", str(exc)) from exc


async def set_links(qmp: QmpCommands, nic_list: tuple[Nic, ...]) -> None:
    """The NICs declared `linkState: down` lose their carrier (before the guest runs)."""
    for index, nic in enumerate(nic_list):
        if nic.link_state is LinkState.DOWN:
            await qmp.set_link(nic_ids(index)[1], False)


async def apply_live(tracked: Running, old: DomainSpec, new: DomainSpec, changed: set[str],
                     vhost: bool) -> None:
    """The live NIC changes among `changed` (classify's paths): set_link for each kept NIC
    whose linkState changed; with `qemu.nics` (the list only grew or shrank at its end), the
    NICs beyond the common length unplugged or hotplugged. A retry after a partial failure
    skips what is already done. Failures are the DriverError (or host refusal) of apply_live."""
    if old.qemu is None or new.qemu is None or not any(p.startswith(NICS) for p in changed):
        return
    try:
        with tracked.failing_as("apply_live"):
            await _apply(tracked, old.qemu.nics, new.qemu.nics, NICS in changed, vhost)
    except NetError as exc:
        raise DriverError(tracked.record.name, "apply_live", str(exc)) from exc


async def _apply(tracked: Running, old: tuple[Nic, ...], new: tuple[Nic, ...], resize: bool,
                 vhost: bool) -> None:
    qmp = tracked.qmp
    for index, (before, after) in enumerate(zip(old, new, strict=False)):
        if before.link_state is not after.link_state:
            await qmp.set_link(nic_ids(index)[1], after.link_state is LinkState.UP)
    if not resize:
        return
    present = await qmp.peripherals()
    for index in reversed(range(len(new), len(old))):
        await _unplug(tracked, index, old[index], present)
    for index in range(len(old), len(new)):
        await _hotplug(tracked, index, new[index], vhost, present)


async def _hotplug(tracked: Running, index: int, nic: Nic, vhost: bool,
                   present: set[str]) -> None:
    name, qmp = tracked.record.name, tracked.qmp
    netdev, device = nic_ids(index)
    if device in present:
        return
    try:
        props = device_props(index, nic)
    except ValueRefused as exc:
        raise HostValidationError(name, exc.field, exc.message) from exc
    if nic.mode is not NicMode.USER:
        await check_nic(name, index, nic)
        assert nic.bridge is not None
        tracked.taps = True
        await tap.ensure(Place(), tap.TapSpec(name, index, nic.bridge, vhost))
    try:
        await qmp.netdev_add(netdev_props(name, index, nic, vhost))
        try:
            await qmp.device_add(props)
        except MonitorError:
            with contextlib.suppress(MonitorError):
                await qmp.netdev_del(netdev)
            raise
        if nic.link_state is LinkState.DOWN:
            await qmp.set_link(device, False)
    except MonitorError:
        if nic.mode is not NicMode.USER:
            await tap.delete(Place(), name, index)
        raise
    log.info("nic hotplugged", domain=name, nic=index, device=device)


async def _unplug(tracked: Running, index: int, nic: Nic, present: set[str]) -> None:
    name, qmp = tracked.record.name, tracked.qmp
    netdev, device = nic_ids(index)
    if device in present:
        released = asyncio.get_running_loop().create_future()
        tracked.unplugs[device] = released
        try:
            await qmp.device_del(device)
            await asyncio.wait_for(released, UNPLUG_TIMEOUT)
        except TimeoutError:
            raise DriverError(name, "apply_live", f"the guest did not release NIC {index} "
                              f"({device}) within {UNPLUG_TIMEOUT:g} s (a guest without ACPI "
                              "PCI hotplug, or paused, ignores the request); retried later"
                              ) from None
        finally:
            tracked.unplugs.pop(device, None)
    try:
        await qmp.netdev_del(netdev)
    except MonitorError as exc:
        if "not found" not in exc.message:  # gone already: a retry of a partial removal
            raise
    if nic.mode is not NicMode.USER:
        await tap.delete(Place(), name, index)
    log.info("nic unplugged", domain=name, nic=index, device=device)
