"""A domain's NICs resolved against the networks: the bridge each one joins and its MAC.

Role: the one place that turns a NIC as declared (`network: lan`, maybe no MAC) into what a
driver needs (the bridge `dc-lan`, a MAC). A MAC left out is derived from the domain's uuid
and the NIC's index: the same on every start, on every host, across controller restarts,
and distinct between domains (24 bits of SHA-256; a clash is possible and is refused by
the network's reservation check, never silently shared). Callers: the engine, before a pass
and for `domctl diff`; the network reconciler (static reservations). Never touches the host.

A network NIC whose network is not known (not declared, or declared but not up) resolves to
`bridge=None`; the driver's host check then refuses the start with NetworkNotReady, a host
stall, and the engine requeues the domain when that network comes up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import replace

from reconcilers.errors import HostValidationError
from reconcilers.model import Domain, DomainSpec, DriverName, Nic, NicMode

# libvirt gives VMs 52:54:00 (qemu's own prefix); LXC and Incus give containers 00:16:3e
MAC_PREFIX = {DriverName.QEMU: "52:54:00", DriverName.LXC: "00:16:3e"}


class NetworkNotReady(HostValidationError):
    """A NIC's network is not declared or not up yet: the domain waits for it (no error)."""

    def __init__(self, domain: str, field: str, network: str) -> None:
        self.network = network
        super().__init__(domain, field, f"waiting for network {network!r}: it is not "
                         "declared or not up yet; the domain starts once it is")


def derive_mac(driver: DriverName, uuid: str, index: int) -> str:
    """The stable MAC of NIC `index` of the domain with `uuid`."""
    digest = hashlib.sha256(f"{uuid}/nic/{index}".encode()).digest()
    return MAC_PREFIX[driver] + "".join(f":{b:02x}" for b in digest[:3])


def nics_of(domain: Domain) -> tuple[Nic, ...]:
    return spec_nics(domain.spec)


def spec_nics(spec: DomainSpec) -> tuple[Nic, ...]:
    """The NIC list of either driver's section."""
    section = spec.qemu if spec.qemu is not None else spec.lxc
    return section.nics if section is not None else ()


def with_nics(domain: Domain, nics: tuple[Nic, ...]) -> Domain:
    """`domain` with resolved NICs: the same manifest generation."""
    spec = domain.spec
    if spec.qemu is not None:
        return domain.with_resolved_spec(replace(spec, qemu=replace(spec.qemu, nics=nics)))
    assert spec.lxc is not None
    return domain.with_resolved_spec(replace(spec, lxc=replace(spec.lxc, nics=nics)))


def networks_used(domain: Domain | None) -> frozenset[str]:
    """The managed networks the domain's NICs name."""
    return frozenset() if domain is None else networks_used_by_spec(domain.spec)


def networks_used_by_spec(spec: DomainSpec) -> frozenset[str]:
    return frozenset(nic.network for nic in spec_nics(spec)
                     if nic.mode is NicMode.NETWORK and nic.network is not None)


def resolve(domain: Domain, uuid: str, bridges: Mapping[str, str]) -> Domain:
    """`domain` with every tap/veth NIC's MAC set and each network NIC's bridge filled in from
    `bridges` (network name → bridge, the networks that are up); user NICs are left alone."""
    nics = nics_of(domain)
    if not any(nic.mode is not NicMode.USER for nic in nics):
        return domain
    resolved = []
    for index, nic in enumerate(nics):
        if nic.mode is NicMode.USER:
            resolved.append(nic)
            continue
        mac = nic.mac or derive_mac(domain.spec.driver, uuid, index)
        bridge = nic.bridge
        if nic.mode is NicMode.NETWORK:
            bridge = bridges.get(nic.network or "")
        resolved.append(replace(nic, mac=mac, bridge=bridge))
    return with_nics(domain, tuple(resolved))


def check_ready(domain: Domain) -> None:
    """Refuse a start while a network NIC has no bridge (its network is not up)."""
    section = domain.spec.driver.value
    for index, nic in enumerate(nics_of(domain)):
        if nic.mode is NicMode.NETWORK and nic.bridge is None:
            raise NetworkNotReady(domain.name, f"spec.{section}.nics[{index}].network",
                                  nic.network or "")


def reservations(domains: Iterable[Domain], network: str) -> list[tuple[str, str, str]]:
    """(domain, mac, ip) of every resolved NIC on `network` that asks for a static address."""
    found = []
    for domain in domains:
        for nic in nics_of(domain):
            if nic.mode is NicMode.NETWORK and nic.network == network and nic.ip and nic.mac:
                found.append((domain.name, nic.mac, nic.ip))
    return sorted(found)
