"""SilenceWatch alone: one lazy timer, the limit in force decided by the caller."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from appliance.acceptor.silence import Limit, SilenceWatch


class _Clock:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.now = 100.0
        loop.time = lambda: self.now  # type: ignore[method-assign]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def test_times_out_when_the_limit_in_force_runs_out(loop: asyncio.AbstractEventLoop) -> None:
    clock = _Clock(loop)
    limit: list[Limit | None] = [("network", 10.0)]
    expired: list[tuple[str, float]] = []
    watch = SilenceWatch(loop, 10.0, 3.0, lambda: limit[0],
                         lambda which, s: expired.append((which, s)))
    assert watch.step == 3.0 and watch.armed_at is None
    watch.touch()  # a PDU at t=100: armed one step ahead
    assert watch.armed_at == 103.0
    clock.now = 102.0
    watch.touch()  # a PDU costs no re-arm
    assert watch.armed_at == 103.0
    clock.now = 103.0
    watch.check()  # 1 s silent of 10: look again at most a step later
    assert expired == [] and watch.armed_at == 106.0
    limit[0] = ("dimse", 3.0)  # a message started: the shorter limit, from the last PDU
    clock.now = 104.0
    watch.check()
    assert expired == [] and watch.armed_at == 105.0
    limit[0] = None  # we owe the peer something: never its silence
    clock.now = 200.0
    watch.check()
    assert expired == [] and watch.armed_at == 203.0
    limit[0] = ("dimse", 3.0)
    watch.check()
    assert expired == [("dimse", 98.0)] and watch.armed_at is None


def test_stopped_watch_never_arms(loop: asyncio.AbstractEventLoop) -> None:
    _Clock(loop)
    watch = SilenceWatch(loop, 600.0, 0.0, lambda: ("network", 600.0),
                         lambda which, s: pytest.fail("expired after stop"))
    watch.touch()
    assert watch.armed_at == 700.0
    watch.stop()
    assert watch.armed_at is None
    watch.touch()
    watch.check()
    assert watch.armed_at is None


def test_no_limits_no_timer(loop: asyncio.AbstractEventLoop) -> None:
    _Clock(loop)
    watch = SilenceWatch(loop, 0.0, 0.0, lambda: None, lambda which, s: None)
    watch.touch()
    assert watch.armed_at is None
