"""Making files durable: fsync of files and directories, and syncfs for group commit.

``syncfs(2)`` flushes every dirty page of one filesystem in a single call; the index writer
uses it once per batch in `batch` mode so that N objects written by N workers share one flush
(DESIGN "Durability contract"). Python's os module has no syncfs, so it goes through libc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_syncfs = getattr(_libc, "syncfs", None)


def syncfs(path: Path) -> None:
    """Flush the whole filesystem holding ``path``; falls back to sync() where syncfs lacks."""
    if _syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a directory entry (a rename or a create inside ``path``) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
