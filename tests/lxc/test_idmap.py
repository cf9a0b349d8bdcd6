"""The id map of unprivileged containers (idmap.py) and a tree's owners moved between maps
(shift.py): root's subordinate range first, domctl's own range only where no user can be given
it, the newuidmap stand-ins LXC rejects."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from reconcilers.lxc.idmap import FALLBACK_START, IdMap, IdMapError, root_idmap, shadow_stand_ins
from reconcilers.lxc.shift import shift_tree

DEFS = "SUB_UID_MIN\t100000\nSUB_UID_MAX\t600100000\nSUB_GID_MAX   600100000\n"


def files(tmp_path: Path, subuid: str | None, subgid: str | None, defs: str = DEFS
          ) -> tuple[Path, Path, Path]:
    paths = (tmp_path / "subuid", tmp_path / "subgid", tmp_path / "login.defs")
    for path, text in zip(paths, (subuid, subgid, defs), strict=True):
        if text is not None:
            path.write_text(text)
    return paths


def test_roots_own_range_first(tmp_path: Path) -> None:
    paths = files(tmp_path, "alice:100000:65536\nroot:165536:10\nroot:231072:65536\n",
                  "0:300000:65536\n")
    assert root_idmap(*paths) == IdMap(uid=231072, gid=300000)


def test_without_a_range_domctls_own(tmp_path: Path) -> None:
    assert root_idmap(*files(tmp_path, "alice:100000:65536\n", None)) == \
        IdMap(uid=FALLBACK_START, gid=FALLBACK_START, direct=True)


@pytest.mark.parametrize("subuid, defs, why", [
    (f"bob:{FALLBACK_START + 5}:65536\n", DEFS, "bob's"),
    ("", "SUB_UID_MAX 4000000000\n", "SUB_UID_MAX=4000000000"),
])
def test_domctls_own_range_is_refused_where_a_user_may_get_it(tmp_path: Path, subuid: str,
                                                              defs: str, why: str) -> None:
    with pytest.raises(IdMapError, match=why) as refused:
        root_idmap(*files(tmp_path, subuid, "", defs))
    assert "usermod --add-subuids" in str(refused.value)


def test_stand_ins_are_not_setuid(tmp_path: Path) -> None:
    directory = shadow_stand_ins(tmp_path / "bin")
    for tool in ("newuidmap", "newgidmap"):
        mode = (directory / tool).stat().st_mode
        assert mode & stat.S_IXUSR and not mode & (stat.S_ISUID | stat.S_ISGID)
    assert shadow_stand_ins(tmp_path / "bin") == directory  # made once, kept


def test_a_tree_is_shifted_between_maps(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "home").mkdir(parents=True)
    su = tree / "su"
    su.write_text("")
    os.chown(su, 0, 0)
    su.chmod(0o4755)
    os.link(su, tree / "su-again")  # one inode, two names: shifted once
    os.chown(tree / "home", 1000, 1000)
    os.symlink("/etc/passwd", tree / "link")  # chowned itself, /etc/passwd untouched
    os.mkfifo(tree / "big")
    os.chown(tree / "big", 70000, 70000)  # beyond a map: stays
    os.mknod(tree / "disk", stat.S_IFBLK | 0o600, os.makedev(8, 0))  # never handed over
    first, second = IdMap(uid=100000, gid=200000), IdMap(uid=130000, gid=130000)
    shift_tree(tree, None, first)
    owners = {p.name: (p.lstat().st_uid, p.lstat().st_gid) for p in tree.iterdir()}
    assert owners == {"su": (100000, 200000), "su-again": (100000, 200000),
                      "home": (101000, 201000), "link": (100000, 200000),
                      "big": (70000, 70000), "disk": (0, 0)}
    assert stat.S_IMODE(su.stat().st_mode) == 0o4755  # chown cleared it: set again
    assert tree.stat().st_uid == 100000 and Path("/etc/passwd").stat().st_uid == 0
    shift_tree(tree, first, second)  # overlapping ranges: each inode moves once
    assert (tree / "home").stat().st_uid == 131000 and su.stat().st_uid == 130000
    shift_tree(tree, second, None)
    assert (tree / "home").stat().st_uid == 1000 and su.stat().st_uid == 0
