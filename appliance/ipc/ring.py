"""Single-producer single-consumer byte-record ring in shared memory (STYLE 2.7 "Rings").

THEORY OF OPERATION
-------------------
Backing: one ``memfd`` (anonymous, no name in /dev/shm, nothing for resource_tracker to leak)
mapped ``MAP_SHARED``. ``posix_fallocate`` reserves the tmpfs pages at creation (so a full tmpfs
fails here, not as a SIGBUS mid-record) and every mapping is made with ``MAP_POPULATE`` so its
page tables are filled up front: the first record does not page-fault (DESIGN: pre-faulting gave
2.3-3.8x). The segment lives while any process holds the fd or a mapping.

Layout: a 4 KiB control page, then ``capacity`` data bytes. In the control page, 64-bit words
(each on its own cache line per side, each written by exactly ONE side):

    producer line  HEAD       bytes ever published (monotonic; records are [TAIL, HEAD))
                   PUT_SEQ    records ever published (a record's seq is PUT_SEQ mod 2**32)
                   WAIT_SEQ   bumped each time the producer starts waiting for space
                   WAIT_TAIL  the TAIL the waiting producer needs before its record fits
    consumer line  TAIL       bytes ever released (monotonic)
                   GET_SEQ    records ever released
                   WOKEN_SEQ  last WAIT_SEQ the consumer answered on ``space_fd``

Word loads/stores go through a ``memoryview.cast("Q")``, i.e. one aligned 8-byte ``memcpy``:
a single instruction on x86-64, so a word is never torn.

Records: a 32-byte header ``<HHIIIIIQ`` (kind, flags, assoc_id, msg_id, length, seq, reserved,
aux) then the payload, padded so every record starts on a 32-byte boundary. A record never
wraps: if it does not fit before the end of the data area the producer writes a PAD record over
the rest (a PAD header always fits, because the gap is a multiple of 32) and starts at offset 0.
Max payload is ``capacity // 2 - HEADER_SIZE``: with records at most half the ring, an empty
ring accepts any record wherever HEAD is (PAD + record <= capacity).

Publication and memory ordering: the producer writes header + payload, then stores HEAD (and
PUT_SEQ); ``notify`` then adds the bytes published since the last notify to ``data_fd``'s
counter. The consumer's visible end is ``TAIL + sum(counter values it read)``: it never reads
HEAD to decide what to consume. The eventfd write/read pair (a kernel spinlock: release on the
producer, acquire on the consumer) is therefore the only barrier needed, on any CPU, and a
record stored but not yet notified is never touched (STYLE 2.7). Deltas always cover whole
records, so a record that overruns the visible end is corruption. Because a record is complete
before it is notified, a consumer of a ring whose producer died sees only complete records.
TAIL is stored only after the consumer is done with the slot (``release``), so the producer
never overwrites bytes a ``Record.payload`` still points at.

Space doorbell without a syscall per record: a producer that finds too little room stores
WAIT_TAIL then bumps WAIT_SEQ, drains ``space_fd`` (a syscall: a full barrier, and it drops
stale wake-ups), and re-checks TAIL. The consumer, after storing TAIL, issues a full fence (an
uncontended ``threading.Lock`` round trip = LOCK CMPXCHG in glibc; ~90 ns) and reads WAIT_SEQ;
if it is new and TAIL has reached WAIT_TAIL it writes ``space_fd``. Store->fence->load on
both sides (Dekker) means at least one of them sees the other: no lost wake-up on x86-64.
``put_blocking`` still re-checks every ``recheck_s`` as defence in depth.

Each ``Ring`` object keeps local copies of its side's counters; one process uses one end. After
``fork`` the child should ``Ring.attach(ring.fds)`` (fresh local state and page tables) rather
than use the parent's object. A ring serves one producer and one consumer for its life: the
doorbell counter is consumer state that dies with the consumer, so when either side dies the
arbiter hands the survivor a fresh ring (or ``reset()``s this one once nobody uses it).
"""

from __future__ import annotations

import mmap
import os
import select
import struct
import threading
import time
from typing import NamedTuple

from appliance.errors import ApplianceError

__all__ = [
    "ALIGN",
    "HEADER_SIZE",
    "KIND_PAD",
    "Record",
    "RecordHeader",
    "Ring",
    "RingCorruptError",
]

_PAGE = mmap.PAGESIZE
_CTRL_BYTES = 4096
_MAGIC = 0x474E495253434150  # b"PACSRING" little-endian
_VERSION = 1

# Word indices into the control page viewed as uint64[512].
_W_MAGIC, _W_VERSION, _W_CAPACITY = 0, 1, 2
_W_HEAD, _W_PUT_SEQ, _W_WAIT_SEQ, _W_WAIT_TAIL = 8, 9, 10, 11  # producer cache line
_W_TAIL, _W_GET_SEQ, _W_WOKEN_SEQ = 16, 17, 18  # consumer cache line

_HDR = struct.Struct("<HHIIIIIQ")
HEADER_SIZE = _HDR.size  # 32
ALIGN = 32
KIND_PAD = 0xFFFF
"""Reserved kind: filler up to the end of the data area; callers may use 0..0xFFFE."""

_U32 = 0xFFFFFFFF


class RingCorruptError(ApplianceError):
    """The shared ring holds something no correct producer writes (bad header or sequence)."""


class RecordHeader(NamedTuple):
    kind: int
    flags: int
    assoc_id: int
    msg_id: int
    length: int
    aux: int


class Record(NamedTuple):
    """A record in place; ``payload`` is a view INTO the ring, valid until ``Ring.release()``."""

    kind: int
    flags: int
    assoc_id: int
    msg_id: int
    aux: int
    payload: memoryview

    @property
    def header(self) -> RecordHeader:
        return RecordHeader(
            self.kind, self.flags, self.assoc_id, self.msg_id, len(self.payload), self.aux
        )


def _align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


def _drain_eventfd(fd: int) -> int:
    try:
        return os.eventfd_read(fd)
    except BlockingIOError:
        return 0


def _as_bytes_view(part: bytes | bytearray | memoryview) -> memoryview:
    view = part if isinstance(part, memoryview) else memoryview(part)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


class Ring:
    """SPSC byte-record ring over memfd + mmap with eventfd doorbells. See module docstring."""

    def __init__(self, memfd: int, data_fd: int, space_fd: int, mm: mmap.mmap) -> None:
        self._memfd = memfd
        self._data_fd = data_fd
        self._space_fd = space_fd
        self._mm = mm
        self._view = memoryview(mm)
        self._words = self._view[:_CTRL_BYTES].cast("Q")
        if self._words[_W_MAGIC] != _MAGIC or self._words[_W_VERSION] != _VERSION:
            self._release_views()
            raise RingCorruptError("not a ring segment (magic/version mismatch)")
        self._cap = int(self._words[_W_CAPACITY])
        self._data = self._view[_CTRL_BYTES : _CTRL_BYTES + self._cap]
        self._fence_lock = threading.Lock()
        # Producer-side local state (mirrors of producer-owned words).
        self._head = int(self._words[_W_HEAD])
        self._put_seq = int(self._words[_W_PUT_SEQ])
        self._wait_seq = int(self._words[_W_WAIT_SEQ])
        self._notified_head = self._head
        # Consumer-side local state.
        self._tail = int(self._words[_W_TAIL])
        self._get_seq = int(self._words[_W_GET_SEQ])
        self._woken_seq = int(self._words[_W_WOKEN_SEQ])
        self._visible_head = self._tail
        self._cur: Record | None = None
        self._cur_end = 0  # TAIL after releasing the current record
        self._closed = False

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    def create(cls, capacity_bytes: int, *, prefault: bool = True) -> Ring:
        """A new ring with ``capacity_bytes`` of data area (rounded up to whole pages).

        ``prefault=False`` exists only so the benchmark can measure what pre-faulting buys.
        """
        if capacity_bytes < 2 * _PAGE:
            raise ValueError(f"capacity_bytes must be >= {2 * _PAGE}")
        cap = -(-capacity_bytes // _PAGE) * _PAGE
        memfd = os.memfd_create("pacs-ring", os.MFD_CLOEXEC)
        fds: list[int] = [memfd]
        try:
            os.ftruncate(memfd, _CTRL_BYTES + cap)
            if prefault:
                os.posix_fallocate(memfd, 0, _CTRL_BYTES + cap)
            mm = _map(memfd, _CTRL_BYTES + cap, prefault)
            words = memoryview(mm)[:_CTRL_BYTES].cast("Q")
            words[_W_CAPACITY] = cap
            words[_W_VERSION] = _VERSION
            words[_W_MAGIC] = _MAGIC
            words.release()
            flags = os.EFD_NONBLOCK | os.EFD_CLOEXEC
            fds.append(os.eventfd(0, flags))
            fds.append(os.eventfd(0, flags))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return cls(fds[0], fds[1], fds[2], mm)

    @classmethod
    def attach(cls, fds: tuple[int, int, int] | list[int], *, own: bool = False) -> Ring:
        """Map an existing ring from its ``(memfd, data_fd, space_fd)``.

        The ring dups the fds unless ``own=True`` (then it takes them and closes them in
        ``close()``); either way the caller's fds stay valid only as the caller manages them.
        """
        if len(fds) != 3:
            raise ValueError("a ring is exactly (memfd, data_fd, space_fd)")
        mine = list(fds) if own else [os.dup(fd) for fd in fds]
        try:
            size = os.fstat(mine[0]).st_size
            if size < _CTRL_BYTES + 2 * _PAGE:
                raise RingCorruptError(f"segment too small for a ring ({size} bytes)")
            mm = _map(mine[0], size, True)
            return cls(mine[0], mine[1], mine[2], mm)
        except BaseException:
            if not own:
                for fd in mine:
                    os.close(fd)
            raise

    @property
    def fds(self) -> tuple[int, int, int]:
        """``(memfd, data_fd, space_fd)``: inherit across fork or pass with ``fdpass``."""
        return (self._memfd, self._data_fd, self._space_fd)

    @property
    def data_fd(self) -> int:
        """Readable when records were published (register with ``loop.add_reader``/poll)."""
        return self._data_fd

    @property
    def space_fd(self) -> int:
        """Readable when a waiting producer may retry."""
        return self._space_fd

    @property
    def capacity(self) -> int:
        return self._cap

    @property
    def max_payload(self) -> int:
        return self._cap // 2 - HEADER_SIZE

    def close(self) -> None:
        """Unmap and close this object's fds. Views from ``peek()`` must be dropped first."""
        if self._closed:
            return
        if self._cur is not None:
            self._cur.payload.release()
            self._cur = None
        self._release_views()
        self._mm.close()
        for fd in (self._memfd, self._data_fd, self._space_fd):
            os.close(fd)
        self._closed = True

    def reset(self) -> None:
        """Empty the ring. Only for a ring nobody else is using (e.g. a dead worker's)."""
        if self._cur is not None:
            self._cur.payload.release()
            self._cur = None
        for w in (_W_HEAD, _W_PUT_SEQ, _W_WAIT_SEQ, _W_WAIT_TAIL):
            self._words[w] = 0
        for w in (_W_TAIL, _W_GET_SEQ, _W_WOKEN_SEQ):
            self._words[w] = 0
        self._head = self._put_seq = self._wait_seq = self._notified_head = 0
        self._tail = self._get_seq = self._woken_seq = self._visible_head = 0
        _drain_eventfd(self._data_fd)
        _drain_eventfd(self._space_fd)

    def _release_views(self) -> None:
        for attr in ("_data", "_words", "_view"):
            view = getattr(self, attr, None)
            if view is not None:
                view.release()

    # ---------------------------------------------------------------- producer side

    def free_bytes(self) -> int:
        """Bytes not holding unreleased records (producer's view; a record also needs PAD)."""
        return self._cap - (self._head - int(self._words[_W_TAIL]))

    def try_put(
        self,
        kind: int,
        assoc_id: int,
        msg_id: int,
        flags: int,
        aux: int,
        *parts: bytes | bytearray | memoryview,
        notify: bool = True,
    ) -> bool:
        """Copy ``parts`` (concatenated, one copy per byte) into the ring as one record.

        Returns False when there is no room now; the producer is then flagged as waiting, and
        ``space_fd`` becomes readable once the consumer has freed enough (retry then; an
        event-loop producer should stop watching ``space_fd`` or ``drain_space_doorbell()``
        once it has resumed). ``notify=False`` defers the data doorbell so a batch can be rung
        once with ``notify()``; a refused put rings it for any such pending records.
        """
        # bytes (most parts: headers, packed records) need no view: len() is their size.
        views = [p if type(p) is bytes else _as_bytes_view(p) for p in parts]
        length = sum(map(len, views))  # len of a 1-D "B" view is its nbytes
        if length > self._cap // 2 - HEADER_SIZE:
            raise ValueError(
                f"payload of {length} bytes exceeds the ring's max {self._cap // 2 - HEADER_SIZE}"
            )
        if not 0 <= kind < KIND_PAD:
            raise ValueError(f"kind {kind} is reserved or out of range")
        total = _align(HEADER_SIZE + length)
        head = self._head
        pos = head % self._cap
        to_end = self._cap - pos
        need = total if total <= to_end else to_end + total
        if need > self._cap - (head - int(self._words[_W_TAIL])) and not self._wait_for(need):
            # The consumer cannot free space for records it was never told about.
            self.notify()
            return False
        data = self._data
        if total > to_end:
            _HDR.pack_into(data, pos, KIND_PAD, 0, 0, 0, to_end - HEADER_SIZE, 0, 0, 0)
            head += to_end
            pos = 0
        seq = self._put_seq
        _HDR.pack_into(data, pos, kind, flags, assoc_id, msg_id, length, seq & _U32, 0, aux)
        off = pos + HEADER_SIZE
        for v in views:
            n = len(v)
            data[off : off + n] = v
            off += n
        # Publish: record bytes first, then HEAD (a dead producer leaves only whole records).
        self._head = head + total
        self._put_seq = seq + 1
        self._words[_W_PUT_SEQ] = seq + 1
        self._words[_W_HEAD] = head + total
        if notify:
            self.notify()
        return True

    def _wait_for(self, need: int) -> bool:
        """Flag "waiting for ``need`` bytes", then re-check: True if the room appeared."""
        target_tail = self._head + need - self._cap
        self._words[_W_WAIT_TAIL] = target_tail
        self._wait_seq += 1
        self._words[_W_WAIT_SEQ] = self._wait_seq
        # The syscall is the store->load barrier and discards wake-ups for older waits.
        _drain_eventfd(self._space_fd)
        return int(self._words[_W_TAIL]) >= target_tail

    def drain_space_doorbell(self) -> None:
        """Producer: clear ``space_fd`` (e.g. in the event-loop callback before retrying)."""
        _drain_eventfd(self._space_fd)

    def unnotified_bytes(self) -> int:
        """Producer: bytes put since the last ``notify`` (invisible to the consumer so far)."""
        return self._head - self._notified_head

    def notify(self) -> None:
        """Ring the data doorbell for everything put since the last notify (no-op if none)."""
        delta = self._head - self._notified_head
        if delta:
            self._notified_head = self._head
            os.eventfd_write(self._data_fd, delta)

    def put_blocking(
        self,
        kind: int,
        assoc_id: int,
        msg_id: int,
        flags: int,
        aux: int,
        *parts: bytes | bytearray | memoryview,
        timeout_s: float,
        recheck_s: float = 0.05,
    ) -> None:
        """``try_put`` for sync processes: waits on ``space_fd``; TimeoutError after timeout_s."""
        deadline = time.monotonic() + timeout_s
        poller = select.poll()
        poller.register(self._space_fd, select.POLLIN)
        while not self.try_put(kind, assoc_id, msg_id, flags, aux, *parts):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"ring full for {timeout_s} s")
            poller.poll(max(1, int(min(left, recheck_s) * 1000)))

    # ---------------------------------------------------------------- consumer side

    def drain_doorbell(self) -> int:
        """Consume the data doorbell, making the records notified so far visible to ``peek``.

        Call when ``data_fd`` is readable. Returns the number of bytes that became visible.
        """
        n = _drain_eventfd(self._data_fd)
        self._visible_head += n
        return n

    def wait_data(self, timeout_s: float) -> bool:
        """Block until records are visible (polls ``data_fd``); False on timeout."""
        if self._visible_head != self._tail:
            return True
        poller = select.poll()
        poller.register(self._data_fd, select.POLLIN)
        deadline = time.monotonic() + timeout_s
        while True:
            self.drain_doorbell()
            if self._visible_head != self._tail:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            poller.poll(max(1, int(left * 1000)))

    def pending_bytes(self) -> int:
        """Bytes of records visible to the consumer and not yet released."""
        return self._visible_head - self._tail

    def peek(self) -> Record | None:
        """The oldest visible record, in place, or None. Idempotent until ``release()``."""
        if self._cur is not None:
            return self._cur
        cap = self._cap
        data = self._data
        while self._tail != self._visible_head:
            tail = self._tail
            pos = tail % cap
            kind, flags, assoc_id, msg_id, length, seq, _, aux = _HDR.unpack_from(data, pos)
            to_end = cap - pos
            if kind == KIND_PAD:
                if length != to_end - HEADER_SIZE or tail + to_end > self._visible_head:
                    raise RingCorruptError(f"bad PAD at {tail}: length {length}")
                self._publish_tail(tail + to_end)
                continue
            total = _align(HEADER_SIZE + length)
            if total > to_end or tail + total > self._visible_head:
                raise RingCorruptError(f"record at {tail} overruns: length {length}")
            if seq != self._get_seq & _U32:
                raise RingCorruptError(f"record at {tail} has seq {seq}, want {self._get_seq}")
            start = pos + HEADER_SIZE
            self._cur = Record(kind, flags, assoc_id, msg_id, aux, data[start : start + length])
            self._cur_end = tail + total
            return self._cur
        return None

    def release(self) -> None:
        """Free the record returned by ``peek()``; its ``payload`` view is released.

        Raises BufferError (ring unchanged) while something holds a buffer export of
        ``payload`` (numpy.frombuffer, ctypes). Slices and ``memoryview(payload)`` are separate
        views the ring cannot revoke: not using them after release is the caller's duty.
        """
        cur = self._cur
        if cur is None:
            raise RuntimeError("release() without a peeked record")
        try:
            cur.payload.release()
        except BufferError as exc:
            raise BufferError(
                "Record.payload is still exported (e.g. numpy.frombuffer); drop that first"
            ) from exc
        self._cur = None
        self._get_seq += 1
        self._words[_W_GET_SEQ] = self._get_seq
        self._publish_tail(self._cur_end)

    def get_copy(self) -> tuple[RecordHeader, bytes] | None:
        """Copy out and release the oldest visible record (for small records)."""
        rec = self.peek()
        if rec is None:
            return None
        out = (rec.header, bytes(rec.payload))
        self.release()
        return out

    def _publish_tail(self, tail: int) -> None:
        self._tail = tail
        self._words[_W_TAIL] = tail
        # Full fence (store TAIL -> load WAIT_SEQ); see "Space doorbell" in the module doc.
        with self._fence_lock:
            wait_seq = int(self._words[_W_WAIT_SEQ])
        if wait_seq != self._woken_seq:
            if tail >= int(self._words[_W_WAIT_TAIL]):
                self._woken_seq = wait_seq
                self._words[_W_WOKEN_SEQ] = wait_seq
                os.eventfd_write(self._space_fd, 1)


def _map(fd: int, size: int, populate: bool) -> mmap.mmap:
    flags = mmap.MAP_SHARED | (mmap.MAP_POPULATE if populate else 0)
    return mmap.mmap(fd, size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
