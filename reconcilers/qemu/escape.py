"""Escaping and refusal of manifest values on their way into a qemu command line.

Used by argv.py only. qemu splits option values at single commas (a doubled comma is a literal
comma) and reads `key=value` pairs; a value therefore cannot add a key or an option once its
commas are doubled, as long as it also carries no control characters. A value that stands alone
as an argument (a kernel path, the kernel command line) is refused when it starts with `-`, so
it can never be read as an option. Type names (machine, cpu model, device) are checked
against a strict pattern instead, because `-cpu` does not honour doubled commas. It never
builds arguments itself.
"""

from __future__ import annotations

import ipaddress
import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*")
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


class ValueRefused(ValueError):
    """A manifest value that cannot be passed to qemu safely; `field` is its manifest path."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def _clean(value: str, field: str) -> str:
    if _CONTROL.search(value):
        raise ValueRefused(field, "control characters (newline, tab, NUL, ...) are not allowed")
    if not value:
        raise ValueRefused(field, "must not be empty")
    return value


def opt(value: str, field: str) -> str:
    """A value inside `key=value,...`: commas doubled."""
    return _clean(value, field).replace(",", ",,")


def lone(value: str, field: str) -> str:
    """A value that is a whole argument of its own: must not look like an option."""
    if _clean(value, field).startswith("-"):
        raise ValueRefused(field, "must not start with '-'")
    return value


def token(value: str, field: str) -> str:
    """A qemu type name (machine, cpu model, device): `-cpu` splits its value at the first
    comma without honouring `,,`, so such names are checked, never escaped."""
    if not _TOKEN.fullmatch(value):
        raise ValueRefused(field, f"{value!r} is not a valid name (letters, digits, _ . + -)")
    return value


def host(value: str, field: str) -> str:
    """A listen address: an IP address or a host name, nothing qemu could read as a key."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOSTNAME.fullmatch(value):
            raise ValueRefused(field, f"{value!r} is not an IP address or host name") from None
    return value


def uuid(value: str, field: str) -> str:
    if not _UUID.fullmatch(value):
        raise ValueRefused(field, f"{value!r} is not a UUID")
    return value


def mac(value: str, field: str) -> str:
    if not _MAC.fullmatch(value):
        raise ValueRefused(field, f"{value!r} is not a MAC address (xx:xx:xx:xx:xx:xx)")
    return value
