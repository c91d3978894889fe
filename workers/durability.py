"""Making files durable: fsync of files and directories, and syncfs for group commit.

``syncfs(2)`` flushes every dirty page of one filesystem in a single call; the index writer
uses it once per batch in `batch` mode so that N objects written by N workers share one flush
(DESIGN "Durability contract"). Python's os module has no syncfs, so it goes through libc.

The order that makes each mode's promise (README "Durability modes"): the object's data
reaches the disk (fsync of the file, or the batch's syncfs) before the rename that names it
is made durable (fsync of its directory, or the same syncfs), and both before the index
transaction that points at it commits with sync; only then does Success go out. A crash
between two steps leaves at worst an unindexed file (``pacs db verify``), never a record
pointing at nothing.

When a write fails for lack of space, ``report_disk_full`` tells readiness (through the
reporter the arbiter installs after fork: the control block) how much free space would have
been enough; /readyz fails until the volume has more (metrics/disk.py ``FullLatch``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Callable
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


def fsync_dir(path: str | Path) -> None:
    """Make a directory entry (a rename or a create inside ``path``) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Errors that mean "no room": the volume is full, or this user's quota is.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# A report asks for at least this much more free space than was left: recovering for one
# small object's worth would flap readiness while the volume stays nearly full.
MIN_RECOVERY_BYTES = 1024 * 1024


class _Reporter:
    """This process's disk-full reporter (set after fork; none in tools and unit tests)."""

    current: Callable[[int], None] | None = None


def set_disk_full_reporter(reporter: Callable[[int], None] | None) -> None:
    """Install ``reporter(until_free_bytes)``; the arbiter passes the control block's."""
    _Reporter.current = reporter


def is_no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


def report_disk_full(path: Path, needed_bytes: int) -> None:
    """A write under ``path`` failed for lack of space after its partial output was removed:
    the volume counts as full until more than (free now + ``needed_bytes``) is free."""
    reporter = _Reporter.current
    if reporter is None:
        return
    try:
        st = os.statvfs(path)
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = 0
    reporter(free + max(needed_bytes, MIN_RECOVERY_BYTES))
