"""A running domain's NICs as its status shows them: host device, MAC, network, addresses.

What `virsh domifaddr` gives, from every source there is: the NICs of the live spec (resolved:
each has its bridge and MAC), the host-side device each got (tap or veth, names.py), the
addresses the guest reports (the lxc driver reads the container's namespace; the qemu driver
asks the guest agent) and the leases of the managed networks' dnsmasq. An address the guest
reports wins over the same address leased (it carries the prefix length). Pure: the engine
gathers the inputs (statusview.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from controller.state.status import Condition, ConditionStatus, ConditionType, InterfaceStatus
from reconcilers.driver import AgentState, GuestInterfaces
from reconcilers.model import DomainSpec, DriverName, NicMode
from reconcilers.net.names import tap_name, veth_name
from reconcilers.net.nics import spec_nics


def interface_statuses(name: str, spec: DomainSpec, guest: GuestInterfaces,
                       leases: Mapping[str, Sequence[str]]) -> tuple[InterfaceStatus, ...]:
    device = tap_name if spec.driver is DriverName.QEMU else veth_name
    shown = []
    for index, nic in enumerate(spec_nics(spec)):
        mac = nic.mac.lower() if nic.mac else None
        reported = list(guest.addresses.get(mac, ())) if mac else []
        known = {address.split("/")[0] for address in reported}
        leased = [a for a in (leases.get(mac, ()) if mac else ()) if a not in known]
        shown.append(InterfaceStatus(
            name=None if nic.mode is NicMode.USER else device(name, index), mac=mac,
            network=nic.network, bridge=nic.bridge, addresses=tuple(reported + leased)))
    return tuple(shown)


def agent_condition(guest: GuestInterfaces) -> Condition | None:
    """GuestAgent: shown only for a domain that has an agent channel."""
    if guest.agent is None:
        return None
    answers = guest.agent is AgentState.CONNECTED
    return Condition(ConditionType.GUEST_AGENT,
                     ConditionStatus.TRUE if answers else ConditionStatus.FALSE,
                     guest.agent.value, guest.agent_message)
