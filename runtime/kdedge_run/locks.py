"""An exclusive lock on a file for a command that writes one output (flock, taken without waiting): a second
process finds it held at once, instead of waiting or mixing its work with the first one's."""
from __future__ import annotations

import os
from pathlib import Path


def exclusive_lock(path: Path) -> int | None:
    """A descriptor holding an exclusive lock on `path` (created if missing, never through a symlink), or None
    when another process holds it. Without flock (Windows) the lock is not enforced: always a descriptor."""
    try:
        import fcntl
    except ImportError:
        fcntl = None
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
    return fd
