"""What the lxc driver checks of a spec on this host before a start, and its rendered config.

Called by LxcDriver.validate and start. `check` reads the host only (files, modes); `render`
turns config.py's ConfigValueError into the HostValidationError the engine reports, naming
the manifest field.

An unprivileged container is set up from inside its user namespace, as its mapped root: LXC
requires it to search every directory above its lxcpath (the driver's state dir among them),
and it mounts its rootfs and bind mounts from there, so every directory above a user's rootfs
directory or a mount's source must be searchable by those host ids too. `check` proves it from
the modes (a 0700 directory of root's is not searchable), naming the directory. Inside,
a mounted file shows the owner the map gives its host owner: ids outside the map (host root's
files among them) show as nobody, readable as their mode lets others read them, and writable
only when owned by a mapped id (chowned on the host to the map's first uid: the root inside).
"""

from __future__ import annotations

import os
from pathlib import Path

from reconcilers.errors import HostValidationError
from reconcilers.lxc import host, rootfs
from reconcilers.lxc.config import ConfigPaths, ConfigValueError, HostFacts, render_config
from reconcilers.lxc.files import ContainerFiles
from reconcilers.model import BUSYBOX_ROOTFS, Domain, DriverName


def check(domain: Domain, facts: HostFacts, files: ContainerFiles) -> None:
    """HostValidationError naming the field this host cannot run."""
    spec, name = domain.spec, domain.name
    lxc = spec.lxc
    if spec.driver is not DriverName.LXC or lxc is None:
        raise HostValidationError(name, "spec.lxc", "an lxc domain needs an lxc section")
    if spec.cputune.vcpupin or spec.cputune.emulatorpin:
        raise HostValidationError(name, "spec.cputune", "cpu pinning is qemu-only")
    if spec.current_memory not in (None, spec.memory):
        raise HostValidationError(name, "spec.currentMemory", "ballooning is qemu-only")
    if lxc.image is not None:
        if not files.rootfs(name).is_dir() and not Path(lxc.image).is_file():
            raise HostValidationError(name, "spec.lxc.image", f"{lxc.image} is not a file on "
                                                              "this host")
    elif lxc.rootfs == BUSYBOX_ROOTFS:
        if not rootfs.HOST_BUSYBOX.is_file():
            raise HostValidationError(name, "spec.lxc.rootfs",
                                      f"{rootfs.HOST_BUSYBOX} missing: install busybox-static")
    elif not Path(lxc.rootfs).is_dir():
        raise HostValidationError(name, "spec.lxc.rootfs", "not a directory on this host")
    elif lxc.init[:1] and not os.path.lexists(Path(lxc.rootfs) / lxc.init[0].lstrip("/")):
        raise HostValidationError(name, "spec.lxc.init", f"{lxc.init[0]} is not in the rootfs "
                                                         f"{lxc.rootfs}")
    for index, mount in enumerate(lxc.mounts):
        if not os.path.exists(mount.source):
            raise HostValidationError(name, f"spec.lxc.mounts[{index}].source",
                                      f"{mount.source} does not exist")
    if not lxc.privileged and facts.idmap is not None:  # (no map: render names the field)
        reached = [("spec.lxc.privileged", files.directory(name), "its LXC directory")]
        if lxc.image is None and lxc.rootfs != BUSYBOX_ROOTFS:
            reached.append(("spec.lxc.rootfs", Path(lxc.rootfs), lxc.rootfs))
        reached += [(f"spec.lxc.mounts[{index}].source", Path(mount.source), mount.source)
                    for index, mount in enumerate(lxc.mounts)]
        for field, path, what in reached:
            blocked = host.unsearchable(path, facts.idmap.uid, facts.idmap.gid)
            if blocked is not None:
                raise HostValidationError(
                    name, field, f"{blocked} is not searchable by the unprivileged container's "
                                 f"root (host uid {facts.idmap.uid}), which reaches {what} from "
                                 "inside its user namespace: make it searchable (chmod o+x) or "
                                 "run the container privileged")


def render(domain: Domain, facts: HostFacts, files: ContainerFiles, rootfs_dir: str) -> str:
    """The container's config with `rootfs_dir` as its rootfs; HostValidationError naming the
    field for a value the config cannot hold or the host cannot give (vcpus, an id map)."""
    assert domain.spec.lxc is not None
    name = domain.name
    sources = frozenset(m.source for m in domain.spec.lxc.mounts if os.path.isfile(m.source))
    paths = ConfigPaths(rootfs=rootfs_dir, delta=str(files.delta(name)),
                        console_log=str(files.console_log(name)),
                        lxc_log=str(files.lxc_log(name)), file_sources=sources)
    try:
        return render_config(domain, facts, paths)
    except ConfigValueError as exc:
        raise HostValidationError(name, exc.field, exc.message) from exc
