"""Boot failures: retry a child that failed to boot a few times, further apart each time, then
halt (STYLE 2.5: "the arbiter backs off and then halts rather than crash-looping").

THEORY OF OPERATION
-------------------
A child exits with EXIT_BOOT_FAILED (3) when it cannot set itself up: its data directory is
unusable (a file where ``data/workflow`` should be, wrong owner), LMDB will not open, the
numba cache is broken. Some of that is passing (a volume still mounting, an operator fixing
permissions), so the arbiter respawns that slot after ``BACKOFF_S``, then twice as long, and so
on; after ``RETRIES`` failed respawns in a row it halts with exit code 3, and systemd's
``RestartPreventExitStatus=3`` keeps it down until someone looks. A slot that reaches READY
starts counting from zero again.

The arbiter asks ``due()`` every loop turn; a retry whose core generation has passed (a core
restart forked that slot afresh in the meantime) is dropped rather than run twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

RETRIES = 3
BACKOFF_S = 0.5


@dataclass(frozen=True, slots=True)
class Retry:
    at: float  # time.monotonic() when due
    slot: int
    core_generation: int
    respawn: Callable[[], None]


class BootBackoff:
    def __init__(self, retries: int = RETRIES, backoff_s: float = BACKOFF_S) -> None:
        self.retries = retries
        self.backoff_s = backoff_s
        self.failures: dict[int, int] = {}  # slot -> boot failures in a row
        self.pending: list[Retry] = []

    def failed(self, slot: int, core_generation: int, respawn: Callable[[], None]
               ) -> float | None:
        """A child in ``slot`` failed to boot: the delay before ``respawn`` runs, or None when
        the retries are used up (the caller halts)."""
        n = self.failures.get(slot, 0) + 1
        self.failures[slot] = n
        if n > self.retries:
            return None
        delay = self.backoff_s * float(2 ** (n - 1))
        self.pending.append(Retry(time.monotonic() + delay, slot, core_generation, respawn))
        return delay

    def booted(self, slot: int) -> None:
        """``slot`` reached READY: its next failure is a first one again."""
        self.failures.pop(slot, None)

    def due(self, core_generation: int, now: float | None = None) -> list[Callable[[], None]]:
        """The respawns due now, removed from ``pending``; stale ones are dropped."""
        now = time.monotonic() if now is None else now
        ready = [r for r in self.pending if r.at <= now]
        if not ready:
            return []
        self.pending = [r for r in self.pending if r.at > now]
        return [r.respawn for r in ready if r.core_generation == core_generation]

    def waiting(self, slot: int) -> bool:
        return any(r.slot == slot for r in self.pending)
