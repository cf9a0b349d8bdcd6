"""The qemu driver: real qemu processes, daemonized, each controlled over its own QMP socket.

The controller uses QemuDriver (the Driver protocol of reconcilers/driver.py) and QemuSettings;
the modules behind them are private to the driver: capabilities (probe), hostcheck
(validation), escape + argv (command line), layout + process (files, launch), bringup
(cgroup move and QMP connect, overlapping qemu's start-up), cgroups, pinning, monitor (the
only qemu.qmp user), commands (one typed method per QMP command), events (classification),
tracking (the domains held, their events and exits), adopt (identity), runtime (per-domain
state), changes (live vs restart), storage (volumes, seeds and UEFI variables in the
storage pool, over reconcilers/storage).
"""

from reconcilers.qemu.driver import QemuDriver
from reconcilers.qemu.layout import QemuSettings

__all__ = ["QemuDriver", "QemuSettings"]
