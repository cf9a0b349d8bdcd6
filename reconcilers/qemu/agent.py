"""The qemu guest agent: is it answering, and what addresses does the guest report.

Role: QemuDriver.interfaces() for a domain with `guestAgent: true`. qemu serves the agent's
virtio-serial channel on a unix socket (argv.py, DomainFiles.agent); each call connects,
synchronises with `guest-sync-delimited` (a fresh random id; the reply follows a 0xFF byte, so
stale replies of an earlier session, which sit in the channel until an agent reads them, are
skipped), asks `guest-network-get-interfaces`, and disconnects. Every read is bounded
(SYNC_TIMEOUT: an agent answers in milliseconds; none answers at all in a guest without one), so
a pass is never held for long.

What the guest says is untrusted: only well-formed unicast MACs and parseable IP addresses
reach the status, normalised by the ipaddress module. Never raises: an agent that is absent,
silent or confused is AgentState.NOT_RESPONDING with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconcilers.driver import AgentState, GuestInterfaces
from reconcilers.net.names import UnsafeValue, check_mac

SYNC_TIMEOUT = 1.0  # seconds for the agent to answer guest-sync-delimited
QUERY_TIMEOUT = 3.0  # seconds for guest-network-get-interfaces
READ_LIMIT = 1 << 20  # bytes of one reply line


class AgentError(Exception):
    """The agent did not answer, or not as the protocol says; the message says how."""


def parse_interfaces(reply: object) -> dict[str, tuple[str, ...]]:
    """guest-network-get-interfaces' reply → MAC (lower case) → addresses with prefix.

    Interfaces without a MAC (lo's is all zeros) and entries that do not parse are left out.
    """
    if not isinstance(reply, list):
        raise AgentError(f"guest-network-get-interfaces: not a list: {str(reply)[:80]!r}")
    found: dict[str, list[str]] = {}
    for interface in reply:
        if not isinstance(interface, Mapping):
            continue
        try:
            mac = check_mac(interface.get("hardware-address"))
        except UnsafeValue:
            continue
        if mac == "00:00:00:00:00:00":
            continue
        addresses = found.setdefault(mac, [])
        for entry in interface.get("ip-addresses") or ():
            with contextlib.suppress(KeyError, TypeError, ValueError, AttributeError):
                address = ipaddress.ip_interface(f"{entry['ip-address']}/{int(entry['prefix'])}")
                if str(address) not in addresses:
                    addresses.append(str(address))
    return {mac: tuple(addresses) for mac, addresses in found.items()}


async def _send(writer: asyncio.StreamWriter, command: str, arguments: Mapping[str, Any],
                prefix: bytes = b"") -> None:
    writer.write(prefix + json.dumps({"execute": command, "arguments": dict(arguments)}
                                     ).encode() + b"\n")
    await writer.drain()


async def _sync(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    token = secrets.randbelow(1 << 31)
    # a leading 0xFF makes the agent drop any half-read request of an earlier session
    await _send(writer, "guest-sync-delimited", {"id": token}, prefix=b"\xff")
    while True:
        await reader.readuntil(b"\xff")
        line = await reader.readline()
        with contextlib.suppress(ValueError):
            if json.loads(line).get("return") == token:
                return


async def _execute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   command: str) -> Any:
    await _send(writer, command, {})
    reply = json.loads(await reader.readline())
    if not isinstance(reply, dict):
        raise AgentError(f"{command}: unexpected reply {str(reply)[:80]!r}")
    if "error" in reply:
        error = reply["error"]
        desc = error.get("desc", error) if isinstance(error, dict) else error
        raise AgentError(f"{command}: {str(desc)[:200]}")
    return reply.get("return")


async def guest_interfaces(socket: Path) -> GuestInterfaces:
    """Ask the agent behind `socket`; its state, and the addresses when it answers."""
    writer: asyncio.StreamWriter | None = None
    phase, limit = "guest-sync-delimited", SYNC_TIMEOUT
    try:
        async with asyncio.timeout(limit):
            reader, writer = await asyncio.open_unix_connection(str(socket), limit=READ_LIMIT)
            await _sync(reader, writer)
        phase, limit = "guest-network-get-interfaces", QUERY_TIMEOUT
        async with asyncio.timeout(limit):
            reply = await _execute(reader, writer, phase)
        return GuestInterfaces(addresses=parse_interfaces(reply), agent=AgentState.CONNECTED)
    except TimeoutError:
        message = (f"the guest agent did not answer {phase} within {limit:g} s "
                   "(is qemu-guest-agent running in the guest?)")
    except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
            ValueError, AgentError) as exc:
        message = f"guest agent: {exc}"
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return GuestInterfaces(agent=AgentState.NOT_RESPONDING, agent_message=message)
