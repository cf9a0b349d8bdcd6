"""A rename or unlink made durable: the directory entry fsynced, without which a crash may undo
it even though the file itself was fsynced. Shared by the daemon's state files
(controller/state/fsutil.py) and the drivers' own durable files (managed saves, the storage
pool)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Persist a rename or unlink in `directory`."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
