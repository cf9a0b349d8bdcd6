"""The lxc driver: real LXC containers driven with the lxc-* tools on a private lxcpath.

The controller uses only LxcDriver (the Driver protocol of reconcilers/driver.py); the modules
behind it (config, validation, rootfs, storage, image, idmap, shift, tools, tracking, exits,
settle, files, changes, host, nics, halt) are private to it.
"""

from reconcilers.lxc.driver import LxcDriver

__all__ = ["LxcDriver"]
