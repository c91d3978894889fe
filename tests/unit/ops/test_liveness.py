"""metrics.health.liveness: a hung arbiter fails /livez; a child the arbiter has just forked
(booting, not beating yet) does not, so a core restart in progress is not reported dead."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from appliance.ipc.control import ControlBlock, ProcState, Role
from metrics.health import liveness, readiness

TIMEOUT_S = 30.0
ARBITER, ACCEPTOR, WRITER = 0, 1, 2


@pytest.fixture
def cb() -> Iterator[ControlBlock]:
    block = ControlBlock.create(5)
    for index, role, pid in ((ARBITER, Role.ARBITER, 100), (ACCEPTOR, Role.ACCEPTOR, 101),
                             (WRITER, Role.INDEX_WRITER, 102)):
        slot = block.slot(index)
        slot.claim(role, 1)
        slot.pid = pid
        slot.state = ProcState.READY
        slot.heartbeat()
    yield block
    block.close()


def test_all_beating_is_live(cb: ControlBlock) -> None:
    health = liveness(cb, TIMEOUT_S)
    assert health.ok, health.checks
    assert set(health.checks) == {"arbiter_heartbeat", "acceptor_heartbeat",
                                  "index_writer_heartbeat"}


def test_a_hung_arbiter_is_not_live(cb: ControlBlock) -> None:
    cb.slot(ARBITER).heartbeat(time.monotonic_ns() - int((TIMEOUT_S + 1) * 1e9))
    health = liveness(cb, TIMEOUT_S)
    assert not health.ok and health.checks["arbiter_heartbeat"] is False


def test_a_silent_ready_writer_is_not_live(cb: ControlBlock) -> None:
    cb.slot(WRITER).heartbeat(time.monotonic_ns() - int((TIMEOUT_S + 1) * 1e9))
    health = liveness(cb, TIMEOUT_S)
    assert not health.ok and health.checks["index_writer_heartbeat"] is False


def test_a_child_forked_but_not_yet_beating_is_live(cb: ControlBlock) -> None:
    """What a core restart looks like: the arbiter claimed the slot (heartbeat reset) and
    set the new pid; the child boots (numba warm-up, LMDB) before its first beat."""
    slot = cb.slot(ACCEPTOR)
    slot.claim(Role.ACCEPTOR, 2)
    assert slot.heartbeat_ns == 0 and slot.state is ProcState.STARTING
    assert not liveness(cb, TIMEOUT_S).ok  # claimed, not forked yet: no pid
    slot.pid = 201
    assert liveness(cb, TIMEOUT_S).ok
    slot.state = ProcState.STOPPED  # reaped without ever beating: dead
    assert not liveness(cb, TIMEOUT_S).ok


def _workers_index(block: ControlBlock) -> None:
    """What the arbiter sets up when the workers commit their own index records: no index
    writer slot is ever claimed, one worker slot is."""
    block.slot(WRITER).claim(Role.NONE, 0)
    block.global_area.workers_index = True
    worker = block.slot(4)
    worker.claim(Role.WORKER, 1)
    worker.pid = 104
    worker.heartbeat()


def test_without_an_index_writer_nothing_waits_for_one(cb: ControlBlock) -> None:
    _workers_index(cb)
    health = liveness(cb, TIMEOUT_S)
    assert health.ok and set(health.checks) == {"arbiter_heartbeat", "acceptor_heartbeat"}
    ready = readiness(cb, TIMEOUT_S)
    assert ready.checks["index_writable"] is False  # the worker is still booting
    cb.slot(4).state = ProcState.READY  # its LMDB writer is open: the index is writable
    assert readiness(cb, TIMEOUT_S).checks["index_writable"] is True
    cb.global_area.workers_index = False  # the same slots, but an index writer is expected
    assert liveness(cb, TIMEOUT_S).checks["index_writer_heartbeat"] is False
