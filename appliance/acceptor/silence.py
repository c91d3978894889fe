"""How long a peer may stay silent: the network and DIMSE idle limits of one association.

``[network] idle_timeout_s`` bounds silence while nothing is in progress, ``dimse_timeout_s``
while the peer owes us the rest of a message or the answer to our sub-operation; neither
applies while *we* owe something (a worker is busy, reading is paused). Which one applies is
the association's state, so the protocol supplies it (``limit``); this watch keeps the time of
the last PDU and one lazy timer per association, so that a PDU costs a float store, not a
timer cancel and re-arm: the timer looks again when the limit in force could have run out,
and at least every step (a PDU that starts a message can switch to the shorter limit).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

Limit = tuple[str, float]  # ("network" | "dimse", seconds)


class SilenceWatch:
    def __init__(self, loop: asyncio.AbstractEventLoop, idle_timeout_s: float,
                 dimse_timeout_s: float, limit: Callable[[], Limit | None],
                 expired: Callable[[str, float], None]) -> None:
        self.loop = loop
        self.limit = limit  # the limit in force now, None while we owe the peer something
        self.expired = expired  # (which limit, seconds silent): the association must end
        self.step = min((t for t in (idle_timeout_s, dimse_timeout_s) if t > 0), default=0.0)
        self.last_rx = 0.0  # when the last PDU arrived
        self._timer: asyncio.TimerHandle | None = None
        self._stopped = False

    @property
    def armed_at(self) -> float | None:
        """When the timer looks next (None: not armed)."""
        return None if self._timer is None else self._timer.when()

    def touch(self) -> None:
        """A PDU arrived."""
        self.last_rx = self.loop.time()
        if self._timer is None and not self._stopped and self.step:
            self._timer = self.loop.call_at(self.last_rx + self.step, self.check)

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def check(self) -> None:
        """The timer: end the association if the limit in force ran out, else look again."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        if self._stopped:
            return
        now = self.loop.time()
        silent_s = now - self.last_rx
        limit = self.limit()
        if limit is not None and silent_s >= limit[1]:
            self.expired(limit[0], silent_s)
            return
        at = now + self.step
        if limit is not None:
            at = min(at, self.last_rx + limit[1])
        self._timer = self.loop.call_at(at, self.check)
