"""Control block: layout isolation, claim/reset, cross-process visibility, attach checks."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from appliance.ipc.control import (
    ApplianceState,
    ControlBlock,
    ProcState,
    Role,
    SlotState,
)


@pytest.fixture
def block() -> Iterator[ControlBlock]:
    cb = ControlBlock.create(6)
    yield cb
    cb.close()


def test_fresh_block_is_empty(block: ControlBlock) -> None:
    assert block.n_slots == 6
    snap = block.snapshot()
    assert [s.index for s in snap] == list(range(6))
    assert all(s.role is Role.NONE and s.generation == 0 and s.pid == 0 for s in snap)
    g = block.global_area.snapshot()
    assert g.appliance_state is ApplianceState.STARTING and not g.disk_ok


def test_slots_do_not_overlap(block: ControlBlock) -> None:
    # Max out every field of every slot, then check each slot reads back only its own values.
    for i in range(block.n_slots):
        s = block.slot(i)
        s.claim(Role.WORKER, generation=1000 + i)
        s.pid = 40000 + i
        s.state = ProcState.DRAINING
        s.heartbeat(2**64 - 1 - i)
        s.in_flight = 2**32 - 1 - i
        s.associations_active = 7 + i
        s.count(jobs=i + 1, errors=i + 2, nbytes=2**40 + i)
    block.global_area.appliance_state = ApplianceState.READY
    block.global_area.arbiter_pid = 2**32 - 1
    block.global_area.set_disk(True, 2**63, checked_ns=5)
    for i, st in enumerate(block.snapshot()):
        assert st == SlotState(
            index=i, role=Role.WORKER, generation=1000 + i, pid=40000 + i,
            state=ProcState.DRAINING, heartbeat_ns=2**64 - 1 - i, in_flight=2**32 - 1 - i,
            associations_active=7 + i, jobs_total=i + 1, errors_total=i + 2,
            bytes_total=2**40 + i,
        )
    g = block.global_area.snapshot()
    assert (g.appliance_state, g.arbiter_pid, g.disk_ok, g.disk_free_bytes, g.disk_checked_ns) == (
        ApplianceState.READY, 2**32 - 1, True, 2**63, 5
    )


def test_claim_resets_child_fields_for_new_generation(block: ControlBlock) -> None:
    s = block.slot(2)
    s.claim(Role.WORKER, generation=1)
    s.pid = 123
    s.state = ProcState.READY
    s.heartbeat(99)
    s.in_flight = 4
    s.count(jobs=10, errors=1, nbytes=100)
    s.claim(Role.WORKER, generation=2)  # the arbiter replaces a dead worker
    st = s.snapshot()
    assert (st.generation, st.pid, st.state, st.heartbeat_ns, st.in_flight) == (
        2, 0, ProcState.STARTING, 0, 0
    )
    assert (st.jobs_total, st.errors_total, st.bytes_total) == (0, 0, 0)


def test_heartbeat_defaults_to_monotonic_clock(block: ControlBlock) -> None:
    before = time.monotonic_ns()
    block.slot(0).heartbeat()
    assert before <= block.slot(0).heartbeat_ns <= time.monotonic_ns()


def test_child_writes_are_visible_to_parent_and_vice_versa(block: ControlBlock) -> None:
    slot = block.slot(3)
    slot.claim(Role.INDEX_WRITER, generation=9)
    block.global_area.appliance_state = ApplianceState.DRAINING
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(r)
            mine = ControlBlock.attach(block.fd)  # as a freshly forked child does
            me = mine.slot(3)
            ok = (
                me.role is Role.INDEX_WRITER
                and me.generation == 9
                and mine.global_area.appliance_state is ApplianceState.DRAINING
            )
            me.state = ProcState.READY
            me.heartbeat(123456789)
            me.in_flight = 3
            me.count(jobs=5)
            os.write(w, b"1" if ok else b"0")
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    slot.pid = pid
    assert os.read(r, 1) == b"1"  # the child saw what the parent wrote before fork
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    st = block.slot(3).snapshot()
    assert (st.pid, st.state, st.heartbeat_ns, st.in_flight, st.jobs_total) == (
        pid, ProcState.READY, 123456789, 3, 5
    )


def test_attach_rejects_foreign_segment_and_bad_sizes() -> None:
    fd = os.memfd_create("not-control")
    try:
        os.ftruncate(fd, 4096)
        with pytest.raises(ValueError):
            ControlBlock.attach(fd)
        os.fstat(fd)  # attach must not have closed the caller's fd
    finally:
        os.close(fd)
    with pytest.raises(ValueError):
        ControlBlock.create(0)
