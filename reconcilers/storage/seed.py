"""The cloud-init NoCloud seed of a VM: an ISO 9660 volume labelled `cidata` holding user-data,
meta-data and (when given) network-config, attached as a read-only CD-ROM.

Built with pycdlib, not genisoimage/cloud-localds: it is pure Python and maintained, builds the
image in memory from the documents' bytes (no scratch directory of files, no subprocess, no
tool to install: genisoimage comes from cdrkit, unmaintained upstream for over a decade), and
it reads an ISO back, which is how "rebuilt only when its content changes" is decided: two
builds of the same documents differ in their volume dates, so the files inside are compared.
Names: ISO 9660 level 1 for the record, Rock Ridge and Joliet for the `user-data` names that
Linux (and so cloud-init) sees. 300 KiB of zeros follow the volume, as mkisofs pads by default:
Linux's CD-ROM driver reads ahead past a small volume's end and fails the read (a 66 KiB seed
without it is not found by label in the guest).

`documents()` assembles the files: the user-data and network-config inline or read from the
named files at that moment (regular files, at most MAX_DOCUMENT bytes), meta-data as YAML with
`instance-id` defaulting to the domain's uuid and `local-hostname` to its name. A user-data
file is checked like the loader checks an inline one (controller/manifests/cloudinit.py): the
first line names a format cloud-init knows, a #cloud-config is a YAML mapping; a problem is
Refused naming the field and the file's line. `ensure()` writes the seed (0600: it may hold
passwords and keys) when what it holds differs.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pycdlib
import yaml
from pycdlib.pycdlibexception import PyCdlibException

from reconcilers.model import CloudInit
from reconcilers.storage.errors import Refused
from reconcilers.storage.pool import replace_file

LABEL = "cidata"
USER_DATA, META_DATA, NETWORK_CONFIG = "user-data", "meta-data", "network-config"
PADDING = 150 * 2048  # mkisofs -pad: sectors after the volume, for the CD-ROM read-ahead
_ISO9660 = {USER_DATA: "/USERDATA.;1", META_DATA: "/METADATA.;1",
            NETWORK_CONFIG: "/NETWORKC.;1"}  # level 1: 8.3 upper case
MAX_DOCUMENT = 16 << 20  # bytes read from a userDataFile / networkConfigFile
CLOUD_CONFIG = "#cloud-config"
USER_DATA_FORMATS = (CLOUD_CONFIG, "#!", "#include", "#cloud-boothook", "Content-Type:")
"""The first lines of the user-data formats accepted, by prefix (as the loader's)."""

Documents = dict[str, bytes]


def documents(cloud_init: CloudInit, uuid: str, hostname: str, field: str) -> Documents:
    """The seed's files for a domain; `field` is the cloudInit section's manifest path."""
    meta = {"instance-id": uuid, "local-hostname": hostname, **dict(cloud_init.meta_data)}
    files = {META_DATA: yaml.safe_dump(meta, default_flow_style=False, sort_keys=True).encode()}
    user = cloud_init.user_data or ""
    if cloud_init.user_data_file is not None:  # an inline one was checked by the loader
        user = _read(cloud_init.user_data_file, f"{field}.userDataFile", user_data_problem)
    files[USER_DATA] = user.encode()
    network = cloud_init.network_config
    if cloud_init.network_config_file is not None:
        network = _read(cloud_init.network_config_file, f"{field}.networkConfigFile",
                        lambda text: _mapping_problem(text, "a network config (version 1 or 2)"))
    if network:
        files[NETWORK_CONFIG] = network.encode()
    return files


def _read(path: str, field: str, problem: Callable[[str], str | None]) -> str:
    """The text of the file `path` now, checked by `problem`; Refused naming `field`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block
    except OSError as exc:
        raise Refused(field, f"cannot read {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as source:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Refused(field, f"{path} is not a regular file")
        data = source.read(MAX_DOCUMENT + 1)
    if len(data) > MAX_DOCUMENT:
        raise Refused(field, f"{path} is larger than {MAX_DOCUMENT >> 20} MiB")
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise Refused(field, f"{path} is not UTF-8 text (byte {exc.start})") from exc
    said = problem(text)
    if said is not None:
        raise Refused(field, f"{path}: {said}")
    return text


def user_data_problem(text: str) -> str | None:
    """Why cloud-init would not take `text` as user-data, or None."""
    first = text.split("\n", 1)[0].rstrip()
    if first == CLOUD_CONFIG:
        return _mapping_problem(text, "a #cloud-config")
    if first.startswith(USER_DATA_FORMATS) and not first.startswith(CLOUD_CONFIG):
        return None
    return (f"user-data must start with {', '.join(USER_DATA_FORMATS)}; its first line is "
            f"{first[:40]!r}")


def _mapping_problem(text: str, what: str) -> str | None:
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f"line {mark.line + 1}: " if mark is not None else ""
        return f"{what} is not valid YAML: {at}{exc.problem or exc.context}"
    except yaml.YAMLError as exc:
        return f"{what} is not valid YAML: {exc}"
    if data is not None and not isinstance(data, dict):
        return f"{what} must be a YAML mapping, not a {type(data).__name__}"
    return None


def build(files: Documents) -> bytes:
    """The ISO image holding `files`, labelled cidata, padded."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1, vol_ident=LABEL, joliet=3, rock_ridge="1.09")
    for name, data in sorted(files.items()):
        iso.add_fp(io.BytesIO(data), len(data), iso_path=_ISO9660[name], rr_name=name,
                   joliet_path=f"/{name}")
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue() + bytes(PADDING)


def read(path: Path) -> Documents | None:
    """The files of the seed at `path` by their Rock Ridge names; None when there is no
    readable seed there (or it is not labelled cidata)."""
    iso = pycdlib.PyCdlib()
    try:
        iso.open(str(path))
    except (OSError, PyCdlibException):
        return None
    try:
        if iso.pvd.volume_identifier.decode(errors="replace").strip() != LABEL:
            return None
        files: Documents = {}
        for child in iso.list_children(rr_path="/"):
            if child.is_file() and child.rock_ridge is not None:
                out = io.BytesIO()
                name = child.rock_ridge.name().decode()
                iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
                files[name] = out.getvalue()
        return files
    except (OSError, PyCdlibException, UnicodeDecodeError):
        return None
    finally:
        iso.close()


def ensure(path: Path, files: Documents) -> bool:
    """Make the seed at `path` hold exactly `files`; True when it was (re)written."""
    if read(path) == files:
        return False
    image = build(files)
    replace_file(path, lambda out: out.write(image))
    return True
