"""The id range unprivileged containers are mapped to: root's subordinate ids, or domctl's own.

Read once by host.probe_facts (the map goes into every unprivileged container's config as
`lxc.idmap`); `shadow_stand_ins` is called by the driver before an lxc-start that needs it. It
never edits /etc: it only reads /etc/subuid, /etc/subgid and /etc/login.defs.

The choice, safest first:
1. root's own range in /etc/subuid and /etc/subgid (`root:100000:65536`, at least 65536 ids):
   what LXC and Incus use, and what shadow's newuidmap lets root map.
2. No range for root: domctl's own, FALLBACK_START (1000000000) for 65536 ids, above what
   useradd hands out on its own (SUB_UID_MAX/SUB_GID_MAX, 600100000 by default), so that no
   user created later gets the same ids (a user whose ids are a container's could signal its
   processes). Refused, with the fix in the message, when an entry of any user in those files
   overlaps it or login.defs lets useradd reach it.
With domctl's own range LXC must write the map itself, as root may: when shadow's setuid
newuidmap is installed, LXC would use it and newuidmap refuses a range root does not own. So
lxc-start then runs with a PATH that finds the stand-ins of `shadow_stand_ins` first: plain,
non-setuid scripts, which LXC rejects ("lacking necessary privileges") before writing
/proc/PID/[ug]id_map itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")
LOGIN_DEFS = Path("/etc/login.defs")
COUNT = 65536  # ids mapped: 0..65535 inside, as every distribution's rootfs expects
FALLBACK_START = 1_000_000_000
STAND_IN = "#!/bin/sh\necho 'domctl: LXC writes this container map itself' >&2\nexit 1\n"


class IdMapError(RuntimeError):
    """No id range is safe to map unprivileged containers to."""


@dataclass(frozen=True)
class IdMap:
    """Container ids 0..count-1 are host ids uid.. and gid.. ."""

    uid: int
    gid: int
    count: int = COUNT
    direct: bool = False  # domctl's own range: LXC writes the map itself (no newuidmap)


def root_idmap(subuid: Path = SUBUID, subgid: Path = SUBGID,
               login_defs: Path = LOGIN_DEFS) -> IdMap:
    """The map for this host (see the module docstring); IdMapError when there is none."""
    uid = _root_start(subuid)
    gid = _root_start(subgid)
    if uid is None:
        _check_fallback(subuid, login_defs, "SUB_UID_MAX")
    if gid is None:
        _check_fallback(subgid, login_defs, "SUB_GID_MAX")
    return IdMap(uid=FALLBACK_START if uid is None else uid,
                 gid=FALLBACK_START if gid is None else gid,
                 direct=uid is None or gid is None)


def shadow_stand_ins(directory: Path) -> Path:
    """`directory` holding non-setuid newuidmap/newgidmap stand-ins (made if missing), to put
    first in lxc-start's PATH when the map is domctl's own."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    for tool in ("newuidmap", "newgidmap"):
        path = directory / tool
        if not path.is_file() or path.read_text() != STAND_IN:
            tmp = directory / f".{tool}.tmp"
            tmp.write_text(STAND_IN)
            tmp.chmod(0o755)
            tmp.replace(path)
    return directory


def _entries(path: Path) -> list[tuple[str, int, int]]:
    """(owner, start, count) of each well-formed line of a subuid/subgid file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise IdMapError(f"cannot read {path}: {exc.strerror}") from exc
    entries = []
    for line in text.splitlines():
        owner, _, rest = line.strip().partition(":")
        start, _, count = rest.partition(":")
        if owner and start.isdigit() and count.isdigit():
            entries.append((owner, int(start), int(count)))
    return entries


def _root_start(path: Path) -> int | None:
    for owner, start, count in _entries(path):
        if owner in ("root", "0") and count >= COUNT:
            return start
    return None


def _check_fallback(path: Path, login_defs: Path, key: str) -> None:
    end = FALLBACK_START + COUNT
    fix = (f"give root {COUNT} ids no user has in /etc/subuid and /etc/subgid (e.g. usermod "
           "--add-subuids 2000000-2065535 --add-subgids 2000000-2065535 root), or run the "
           "container privileged")
    for owner, start, count in _entries(path):
        if start < end and start + count > FALLBACK_START:
            raise IdMapError(f"root has no range in {path} and domctl's own ids "
                             f"{FALLBACK_START}-{end - 1} are {owner}'s there: {fix}")
    limit = _login_def(login_defs, key)
    if limit is not None and limit >= FALLBACK_START:
        raise IdMapError(f"root has no range in {path} and {login_defs} lets useradd hand out "
                         f"ids up to {key}={limit}, domctl's own ids among them: {fix}")


def _login_def(path: Path, key: str) -> int | None:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] == key and words[1].isdigit():
            return int(words[1])
    return None
