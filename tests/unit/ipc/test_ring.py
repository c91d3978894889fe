"""SPSC ring: delivery, wrap/PAD, backpressure doorbells, limits, crash safety, fd passing."""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import select
import signal
import socket
import struct
from collections.abc import Callable, Iterator

import pytest

from appliance.ipc import fdpass
from appliance.ipc.ring import HEADER_SIZE, KIND_PAD, Ring, RingCorruptError

CAP = 16384


@pytest.fixture
def pair() -> Iterator[tuple[Ring, Ring]]:
    prod = Ring.create(CAP)
    cons = Ring.attach(prod.fds)
    yield prod, cons
    cons.close()
    prod.close()


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def payload_for(i: int, size: int) -> bytes:
    # Content depends on the record number, so a duplicate, a skip or a reorder is detected.
    return (i.to_bytes(4, "little") * (size // 4 + 1))[:size]


def fork_child(body: Callable[[], None]) -> int:
    """Run ``body`` in a forked child; returns the pid. Exit 0 = success, 1 = exception."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            body()
            code = 0
        finally:
            os._exit(code)
    return pid


def wait_ok(pid: int) -> None:
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# ---------------------------------------------------------------- single process


def test_roundtrip_fields_and_zero_copy_payload(pair: tuple[Ring, Ring]) -> None:
    prod, cons = pair
    assert prod.try_put(7, 0xDEADBEEF, 42, 3, 2**64 - 1, b"abc", memoryview(b"defg"))
    assert cons.peek() is None  # not visible before the doorbell is drained
    assert readable(cons.data_fd)
    assert cons.drain_doorbell() > 0
    assert not readable(cons.data_fd)
    rec = cons.peek()
    assert rec is not None
    assert (rec.kind, rec.assoc_id, rec.msg_id, rec.flags, rec.aux) == (
        7, 0xDEADBEEF, 42, 3, 2**64 - 1
    )
    assert bytes(rec.payload) == b"abcdefg"
    assert rec.header.length == 7
    assert cons.peek() is rec  # idempotent until release
    payload = rec.payload
    cons.release()
    with pytest.raises(ValueError):  # view into the ring is dead after release
        bytes(payload)
    assert cons.peek() is None
    assert prod.free_bytes() == prod.capacity


def test_many_random_sizes_in_order_with_wrap_and_pad(pair: tuple[Ring, Ring]) -> None:
    prod, cons = pair
    rng = random.Random(1)
    sent = got = 0
    pads_seen = 0
    total_bytes = 0
    while got < 3000:
        # Put a random burst, then get a random number: exercises every fill level.
        for _ in range(rng.randint(0, 6)):
            size = rng.choice([0, 1, 7, 8, 31, 32, 33, rng.randint(0, prod.max_payload)])
            before = prod._head
            if not prod.try_put(1, 9, sent, 0, sent, payload_for(sent, size)):
                break
            advanced = prod._head - before
            if advanced > ((HEADER_SIZE + size + 31) & ~31):
                pads_seen += 1
            total_bytes += advanced
            sent += 1
        cons.drain_doorbell()
        for _ in range(rng.randint(0, 6)):
            rec = cons.peek()
            if rec is None:
                break
            assert rec.msg_id == got and rec.aux == got
            assert bytes(rec.payload) == payload_for(got, len(rec.payload))
            cons.release()
            got += 1
        assert 0 <= prod.capacity - prod.free_bytes() <= prod.capacity
    assert pads_seen > 10 and total_bytes > 50 * CAP


def test_batch_notify_rings_once(pair: tuple[Ring, Ring]) -> None:
    prod, cons = pair
    for i in range(5):
        assert prod.try_put(1, 0, i, 0, 0, b"x" * 10, notify=False)
    assert not readable(cons.data_fd)
    cons.drain_doorbell()
    assert cons.peek() is None  # put but not notified: the consumer must not touch it
    prod.notify()
    prod.notify()  # nothing new: must not make phantom bytes visible
    assert cons.drain_doorbell() == 5 * 64
    assert [cons.get_copy() is not None for _ in range(6)] == [True] * 5 + [False]


def test_full_ring_try_put_false_then_space_doorbell(pair: tuple[Ring, Ring]) -> None:
    prod, cons = pair
    n = 0
    while prod.try_put(1, 0, n, 0, 0, b"y" * 1000):
        n += 1
    assert n == CAP // 1056  # 32-byte header + 1000 rounded up to 1056
    assert not readable(prod.space_fd)
    cons.drain_doorbell()
    assert cons.get_copy() is not None  # frees 1056 bytes: enough for the waiting record
    assert readable(prod.space_fd)
    assert prod.try_put(1, 0, n, 0, 0, b"y" * 1000)
    # No waiter now: releasing does not ring space_fd (no syscall per record).
    os.eventfd_read(prod.space_fd)
    cons.get_copy()
    assert not readable(prod.space_fd)


def test_refused_put_rings_pending_doorbell(pair: tuple[Ring, Ring]) -> None:
    # Regression: records put with notify=False then a full ring = consumer never sees them,
    # never frees space, producer waits forever. A refused put must notify what is pending.
    prod, cons = pair
    while prod.try_put(1, 0, 0, 0, 0, b"p" * 500, notify=False):
        pass
    assert readable(cons.data_fd)
    cons.drain_doorbell()
    assert cons.get_copy() is not None
    assert readable(prod.space_fd)
    prod.drain_space_doorbell()
    assert not readable(prod.space_fd)


def test_space_doorbell_waits_until_enough_room(pair: tuple[Ring, Ring]) -> None:
    prod, cons = pair
    while prod.try_put(1, 0, 0, 0, 0, b"s" * 100):
        pass
    big = b"B" * 3000
    assert not prod.try_put(1, 0, 1, 0, 0, big)
    cons.drain_doorbell()
    released = 0
    while not readable(prod.space_fd):
        assert cons.get_copy() is not None
        released += 1
    # Woken exactly when the room appeared: one release earlier the record did not fit yet.
    assert released > 1
    wanted_tail = cons._words[11]  # WAIT_TAIL
    assert cons._tail >= wanted_tail > cons._tail - 128
    assert prod.try_put(1, 0, 1, 0, 0, big)


def test_payload_too_big_and_reserved_kind(pair: tuple[Ring, Ring]) -> None:
    prod, _ = pair
    assert prod.max_payload == CAP // 2 - HEADER_SIZE
    assert prod.try_put(1, 0, 0, 0, 0, bytes(prod.max_payload))
    with pytest.raises(ValueError):
        prod.try_put(1, 0, 0, 0, 0, bytes(prod.max_payload), b"!")
    with pytest.raises(ValueError):
        prod.try_put(KIND_PAD, 0, 0, 0, 0, b"")


def test_empty_ring_accepts_max_payload_at_any_offset(pair: tuple[Ring, Ring]) -> None:
    prod, cons = pair
    for step in range(0, CAP, 32 * 37):
        prod.reset()
        cons.reset()
        remaining = step
        while remaining:  # move HEAD (and TAIL) to offset ``step`` of an empty ring
            chunk = min(remaining, CAP // 2)
            assert prod.try_put(1, 0, 0, 0, 0, bytes(chunk - HEADER_SIZE))
            cons.drain_doorbell()
            assert cons.get_copy() is not None
            remaining -= chunk
        assert prod._head == step and prod.free_bytes() == CAP
        assert prod.try_put(1, 0, 1, 0, 0, bytes(prod.max_payload)), step


def test_release_refuses_while_payload_exported(pair: tuple[Ring, Ring]) -> None:
    prod, cons = pair
    prod.try_put(1, 0, 0, 0, 0, b"abcd")
    cons.drain_doorbell()
    rec = cons.peek()
    assert rec is not None
    held = pickle.PickleBuffer(rec.payload)  # a buffer export, as numpy.frombuffer makes
    with pytest.raises(BufferError):
        cons.release()
    assert cons.peek() is rec  # ring unchanged
    held.release()
    cons.release()
    with pytest.raises(RuntimeError):
        cons.release()


def test_corrupt_length_is_detected(pair: tuple[Ring, Ring]) -> None:
    prod, cons = pair
    prod.try_put(1, 0, 0, 0, 0, b"abcd")
    struct.pack_into("<I", prod._data, 12, 10**6)  # length field of the first record
    cons.drain_doorbell()
    with pytest.raises(RingCorruptError):
        cons.peek()


def test_attach_rejects_non_ring_and_wrong_fd_count() -> None:
    fd = os.memfd_create("not-a-ring")
    try:
        os.ftruncate(fd, 65536)
        with pytest.raises(RingCorruptError):
            Ring.attach((fd, fd, fd))
        with pytest.raises(ValueError):
            Ring.attach([fd])
    finally:
        os.close(fd)


def test_put_blocking_times_out_when_nobody_consumes(pair: tuple[Ring, Ring]) -> None:
    prod, _ = pair
    while prod.try_put(1, 0, 0, 0, 0, b"z" * 2000):
        pass
    with pytest.raises(TimeoutError):
        prod.put_blocking(1, 0, 0, 0, 0, b"z" * 2000, timeout_s=0.0)


# ---------------------------------------------------------------- across processes


def _digest(i: int, size: int) -> bytes:
    return hashlib.blake2b(payload_for(i, size), digest_size=8).digest()


def test_cross_process_exactly_once_in_order() -> None:
    ring = Ring.create(65536)
    n = 4000
    sizes = [random.Random(i).randint(0, 20000) for i in range(n)]

    def produce() -> None:
        prod = Ring.attach(ring.fds)
        for i, size in enumerate(sizes):
            body = payload_for(i, size)
            prod.put_blocking(2, 1, i, 0, size, _digest(i, size), body, timeout_s=10)

    pid = fork_child(produce)
    cons = Ring.attach(ring.fds)
    got = 0
    try:
        while got < n:
            assert cons.wait_data(10)
            while (rec := cons.peek()) is not None:
                size = rec.aux
                assert rec.msg_id == got
                assert len(rec.payload) == size + 8
                assert bytes(rec.payload[:8]) == _digest(got, size)
                assert bytes(rec.payload[8:]) == payload_for(got, size)
                cons.release()
                got += 1
        wait_ok(pid)
        cons.drain_doorbell()
        assert cons.peek() is None
    finally:
        cons.close()
        ring.close()


def test_producer_killed_mid_stream_leaves_only_complete_records() -> None:
    ring = Ring.create(1 << 20)

    def produce_forever() -> None:
        prod = Ring.attach(ring.fds)
        i = 0
        while True:
            size = (i * 7919) % 60000
            digest = _digest(i, size)
            if prod.try_put(3, 0, i, 0, size, digest, payload_for(i, size)):
                i += 1
            else:
                select.select([prod.space_fd], [], [], 1)

    cons = Ring.attach(ring.fds)
    try:
        pid = fork_child(produce_forever)
        got = 0
        while got < 200:
            assert cons.wait_data(10)
            while got < 200 and cons.get_copy() is not None:
                got += 1
        # The producer is refilling the space just freed: the kill lands mid-stream.
        assert cons.wait_data(10)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        cons.drain_doorbell()
        while (rec := cons.peek()) is not None:
            assert rec.msg_id == got
            assert bytes(rec.payload[:8]) == _digest(got, rec.aux)
            assert bytes(rec.payload[8:]) == payload_for(got, rec.aux)
            cons.release()
            got += 1
        assert got > 200
    finally:
        cons.close()
        ring.close()


def test_ring_fds_passed_over_unix_socket() -> None:
    ring = Ring.create(CAP)
    parent_sock, child_sock = fdpass.channel_pair()

    def consume_from_passed_fds() -> None:
        parent_sock.close()
        msg = fdpass.recv_with_fds(child_sock)
        assert msg is not None
        header, fds = msg
        assert header == {"slot": 2, "generation": 5, "kind": "worker_rings"}
        cons = Ring.attach(fds, own=True)
        assert cons.wait_data(10)
        got = cons.get_copy()
        assert got is not None
        # Echo back through the socket so the parent can check what the child saw.
        fdpass.send_with_fds(child_sock, {"msg_id": got[0].msg_id, "body": got[1].hex()}, [])

    pid = fork_child(consume_from_passed_fds)
    child_sock.close()
    try:
        # A fresh process-local fd set, as the arbiter would hold for a replacement worker.
        fdpass.send_with_fds(parent_sock, {"slot": 2, "generation": 5, "kind": "worker_rings"},
                             list(ring.fds))
        assert ring.try_put(1, 0, 77, 0, 0, b"hello")
        reply = fdpass.recv_with_fds(parent_sock)
        assert reply == ({"msg_id": 77, "body": b"hello".hex()}, [])
        wait_ok(pid)
        with pytest.raises(EOFError):  # the child exited: its end is closed
            fdpass.recv_with_fds(parent_sock)
    finally:
        parent_sock.close()
        ring.close()


def test_fdpass_nonblocking_none_and_limits() -> None:
    a, b = fdpass.channel_pair()
    try:
        b.setblocking(False)
        assert fdpass.recv_with_fds(b) is None
        with pytest.raises(ValueError):
            fdpass.send_with_fds(a, {"x": "y" * fdpass.MAX_HEADER_BYTES}, [])
        with pytest.raises(ValueError):
            fdpass.send_with_fds(a, {}, [0] * (fdpass.MAX_FDS + 1))
        r, w = os.pipe()
        fdpass.send_with_fds(a, {"n": 1}, [r, w])
        msg = fdpass.recv_with_fds(b)
        assert msg is not None and msg[0] == {"n": 1} and len(msg[1]) == 2
        os.write(msg[1][1], b"via passed fd")
        assert os.read(r, 100) == b"via passed fd"
        assert not os.get_inheritable(msg[1][0])
        for fd in (r, w, *msg[1]):
            os.close(fd)
        # A non-object header closes the fds that came with it and raises.
        r, w = os.pipe()
        socket.send_fds(a, [b"[1, 2]"], [r])
        with pytest.raises(ValueError):
            fdpass.recv_with_fds(b)
        os.close(r)
        os.close(w)
    finally:
        a.close()
        b.close()


def test_parts_of_every_buffer_kind_are_copied_by_size_in_bytes(pair: tuple[Ring, Ring]) -> None:
    """try_put takes bytes as they are and views anything else as bytes: a 16-bit view
    counts its bytes, not its items."""
    prod, cons = pair
    words = memoryview(bytearray(b"\x01\x00\x02\x00")).cast("H")  # 2 items, 4 bytes
    assert prod.try_put(1, 0, 0, 0, 0, b"ab", bytearray(b"cd"), words, memoryview(b"ef")[1:])
    cons.drain_doorbell()
    got = cons.get_copy()
    assert got is not None
    assert got[1] == b"abcd\x01\x00\x02\x00f" and got[0].length == 9
