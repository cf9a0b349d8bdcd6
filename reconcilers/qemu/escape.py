"""Escaping and refusal of manifest values on their way into a qemu command line.

Used by argv.py only. qemu splits option values at single commas (a doubled comma is a literal
comma) and reads `key=value` pairs; a value therefore cannot add a key or an option once its
commas are doubled, as long as it also carries no control characters. A value that stands alone
as an argument (a kernel path, the kernel command line) is refused when it starts with `-`, so
it can never be read as an option. Type names (machine, cpu model, device) are checked
against a strict pattern instead, because `-cpu` does not honour doubled commas. `-initrd` is
a list for qemu: with a multiboot kernel it is split at commas into modules (`,,` a literal
comma), each a file name and, after a blank, that module's arguments; with a Linux kernel it is
one file name. No escaping means the same to both, so a comma or a blank there is refused.
Messages quote at most a short prefix of a value. It never builds arguments itself.
"""

from __future__ import annotations

import ipaddress
import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*")
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_QUOTE_CHARS = 60


def _quote(value: str) -> str:
    """`repr(value)`, of at most a short prefix: a manifest value may be megabytes long."""
    if len(value) <= _QUOTE_CHARS:
        return repr(value)
    return f"{value[:_QUOTE_CHARS]!r}… ({len(value)} characters)"


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


def module_list(value: str, field: str) -> str:
    """The value of `-initrd`: one file, which qemu must not read as a list of modules (a
    multiboot kernel's) or as a module with arguments."""
    lone(value, field)
    if "," in value:
        raise ValueRefused(field, "must not contain ',': with a multiboot kernel qemu reads "
                                  "-initrd as a comma-separated list of files")
    if re.search(r"\s", value):
        raise ValueRefused(field, "must not contain blanks: with a multiboot kernel qemu reads "
                                  "what follows a blank in -initrd as the module's arguments")
    return value


def token(value: str, field: str) -> str:
    """A qemu type name (machine, cpu model, device): `-cpu` splits its value at the first
    comma without honouring `,,`, so such names are checked, never escaped."""
    if not _TOKEN.fullmatch(value):
        raise ValueRefused(field, f"{_quote(value)} is not a valid name (letters, digits, _ . + -)")
    return value


def host(value: str, field: str) -> str:
    """A listen address: an IP address or a host name, nothing qemu could read as a key."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOSTNAME.fullmatch(value):
            message = f"{_quote(value)} is not an IP address or host name"
            raise ValueRefused(field, message) from None
    return value


def uuid(value: str, field: str) -> str:
    if not _UUID.fullmatch(value):
        raise ValueRefused(field, f"{_quote(value)} is not a UUID")
    return value


def mac(value: str, field: str) -> str:
    if not _MAC.fullmatch(value):
        raise ValueRefused(field, f"{_quote(value)} is not a MAC address (xx:xx:xx:xx:xx:xx)")
    return value
