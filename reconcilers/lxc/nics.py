"""A container's NICs on the host: the start's host check, live changes, the addresses inside.

Called by LxcDriver. At a start LXC itself makes each NIC's veth pair from the config
(config.py); this module checks beforehand that every NIC can be made (its bridge exists and is
a Linux bridge), applies on a running container what changes.py classifies as live (a NIC
added or removed at the end of the list, a linkState) through reconcilers/net/veth.py, and
reads the container's addresses for its status. Host ends live in the controller's network
namespace, where LXC's monitor runs; the container is reached through its init pid. Never
touches a veth whose name it did not derive from the container's name.
"""

from __future__ import annotations

import structlog

from reconcilers.driver import GuestInterfaces
from reconcilers.errors import HostValidationError
from reconcilers.lxc.changes import nic_changes
from reconcilers.lxc.config import ConfigValueError, container_ifname, nic_values
from reconcilers.model import Domain, DomainSpec, LinkState, Nic, NicMode
from reconcilers.net import bridge, veth
from reconcilers.net.command import Place
from reconcilers.net.errors import NetError
from reconcilers.net.names import UnsafeValue, veth_name
from reconcilers.net.nics import NetworkNotReady
from reconcilers.net.veth import ADDRESS_TIMEOUT

log = structlog.get_logger(__name__)


async def check_bridges(domain: Domain) -> None:
    """Refuse a start whose NICs cannot be made: NetworkNotReady for a network that is not up,
    HostValidationError naming the NIC's field for a bridge that is missing or not a bridge."""
    if domain.spec.lxc is not None:
        for index, nic in enumerate(domain.spec.lxc.nics):
            await _bridge_mtu(domain.name, index, nic)


async def _bridge_mtu(name: str, index: int, nic: Nic) -> int:
    """The MTU of the bridge NIC `index` joins, once it is proven to be a Linux bridge."""
    field = f"spec.lxc.nics[{index}]." + ("network" if nic.mode is NicMode.NETWORK else "bridge")
    if nic.mode is NicMode.NETWORK and nic.bridge is None:
        raise NetworkNotReady(name, field, nic.network or "")
    try:
        _, bridge_name, _ = nic_values(name, index, nic)
    except ConfigValueError as exc:
        raise HostValidationError(name, exc.field, exc.message) from exc
    state = await bridge.observe(Place(), bridge_name)
    if state is None:
        raise HostValidationError(name, field, f"bridge {bridge_name} does not exist on this "
                                               "host")
    if state.kind != "bridge":
        raise HostValidationError(name, field, f"{bridge_name} is a {state.kind or 'device'}, "
                                               "not a Linux bridge")
    return state.mtu


async def apply_live(name: str, pid: int, old: DomainSpec, new: DomainSpec) -> None:
    """The live NIC changes of old → new on the container whose init is `pid`: carriers
    switched, NICs removed from the end, then NICs added at the end (all checked first)."""
    if old.lxc is None or new.lxc is None:
        return
    changes = nic_changes(old.lxc.nics, new.lxc.nics)
    mtus = [await _bridge_mtu(name, index, nic) for index, nic in changes.added]
    for index, nic in changes.links:
        await veth.set_carrier(veth_name(name, index), nic.link_state is LinkState.UP)
        log.info("nic link state applied live", domain=name, nic=index,
                 link_state=nic.link_state.value)
    for index in changes.removed:
        await veth.unplug(veth_name(name, index))
        log.info("nic removed live", domain=name, nic=index)
    for (index, nic), mtu in zip(changes.added, mtus, strict=True):
        host_end, bridge_name, mac = nic_values(name, index, nic)
        await veth.plug(host_end, bridge_name, mtu, pid, container_ifname(index), mac,
                        carrier=nic.link_state is LinkState.UP)
        log.info("nic added live", domain=name, nic=index, veth=host_end, bridge=bridge_name,
                 mac=mac)


async def addresses(name: str, pid: int) -> GuestInterfaces:
    """The addresses inside the container by MAC; empty when they cannot be read."""
    try:
        return GuestInterfaces(addresses=await veth.addresses(pid, ADDRESS_TIMEOUT))
    except (NetError, UnsafeValue) as exc:
        log.debug("container addresses not read", domain=name, pid=pid, error=str(exc))
        return GuestInterfaces()
