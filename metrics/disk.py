"""The data volume's free-space floor, shared by the workers (refuse new C-STOREs) and the
exporter (readiness, ``pacs_disk_free_bytes``). Stdlib only.

The floor is the larger of ``min_free_bytes`` and ``min_free_percent`` of the volume. A
statvfs costs about a microsecond but is a syscall per C-STORE, so the answer is cached for
``max_age_s``: a burst can overshoot the floor by what arrives in that time, which is what
the floor's margin is for. Below the floor a worker refuses new objects with 0xA700 (Out of
Resources, PS3.4 B.2.3) before writing anything; objects already being received finish.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class DiskState:
    ok: bool
    free_bytes: int
    floor_bytes: int


class DiskFloor:
    """``check()`` answers from a statvfs at most ``max_age_s`` old."""

    def __init__(self, path: Path, min_free_bytes: int = 0, min_free_percent: float = 0.0,
                 max_age_s: float = 0.5) -> None:
        self.path = path
        self.min_free_bytes = min_free_bytes
        self.min_free_percent = min_free_percent
        self.max_age_s = max_age_s
        self._state: DiskState | None = None
        self._at = 0.0

    def update(self, min_free_bytes: int, min_free_percent: float) -> None:
        """New limits (SIGHUP); the next check samples again."""
        self.min_free_bytes = min_free_bytes
        self.min_free_percent = min_free_percent
        self._state = None

    @property
    def enabled(self) -> bool:
        return self.min_free_bytes > 0 or self.min_free_percent > 0

    def check(self, now: float | None = None) -> DiskState:
        now = time.monotonic() if now is None else now
        if self._state is None or now - self._at >= self.max_age_s:
            self._state = self.sample()
            self._at = now
        return self._state

    def sample(self) -> DiskState:
        """A fresh statvfs. An unreadable volume counts as full."""
        try:
            st = os.statvfs(self.path)
        except OSError:
            return DiskState(False, 0, self.min_free_bytes)
        free = st.f_bavail * st.f_frsize
        total = st.f_blocks * st.f_frsize
        floor = max(self.min_free_bytes, int(total * self.min_free_percent / 100))
        return DiskState(free >= floor, free, floor)


class FullLatch:
    """Readiness after a real ENOSPC, which a floor of 0 never sees coming.

    A process whose write failed for lack of space reports (control block) how much free
    space would have been enough: what was free after its partial file was removed plus the
    bytes it needed. From that report on the volume counts as full until a sample shows more
    free space than that ("space returned"); a later report replaces the threshold.
    """

    def __init__(self) -> None:
        self.seen_ns = 0  # the last report taken into account
        self.until_free = 0  # 0 = not latched

    def full(self, report_ns: int, until_free: int, free_bytes: int) -> bool:
        """True while the last report still holds at ``free_bytes``."""
        if report_ns != self.seen_ns:
            self.seen_ns = report_ns
            self.until_free = until_free
        if self.until_free and free_bytes > self.until_free:
            self.until_free = 0
        return self.until_free > 0
