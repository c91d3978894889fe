"""Receive buffer that cuts a TCP byte stream into PDUs (PS3.8 §9.3.1 framing).

THEORY OF OPERATION
-------------------
Every PDU starts with a 6-byte header: PDU-type (1), reserved (1), PDU-length (u32, big
endian), followed by PDU-length bytes of body. Bytes come in one of two ways, and
``next_pdu`` returns ``(pdu_type, body)`` for the next complete PDU, or ``None`` when more
bytes are needed:

* ``feed(data)`` appends bytes the caller already has (a copy, or none at all when the
  buffer is empty and ``data`` is ``bytes``: it is kept as it is);
* ``get_buffer()`` / ``wrote(n)``, for ``asyncio.BufferedProtocol``: the caller reads from the
  transport straight into the returned writable view, then commits the first ``n`` bytes.

State is one buffer plus ``_start`` and ``_end``: ``_buf[_start:_end]`` is the unconsumed
stream; everything before ``_start`` was returned. Limits are checked as soon as the header is
there, before the body is waited for: an unknown PDU-type byte raises reason 1 once that one
byte has arrived, and an announced body over the limit raises reason 6 (PS3.8 §9.3.8, and
PS3.8 D.1 for the P-DATA-TF maximum). The checks are repeated on every call, so after an error
the buffer keeps raising.

Receiving into the buffer (``get_buffer``) is how a large PDU is written once, by the kernel:

* Between PDUs the read goes to offset 0 of a receive buffer from a ``ReceivePool``, offering
  ``READ_BYTES``, so that many small PDUs come in one read. The pool is shared by every
  ``PduBuffer`` of one thread: its free buffer is only *peeked* at (no reference is kept);
  ``wrote`` claims it, and it goes back to the pool as soon as ``next_pdu`` has returned
  everything in it. An idle association therefore holds no buffer, even when its last read
  found nothing (EAGAIN: no ``wrote``).
* Once a PDU header is known, the offer is the rest of that PDU (plus ``TAIL_BYTES``, so that
  a read finishing the PDU does not fill the offer and cost one more read, empty), in place:
  a pool buffer (``receive_buffer_bytes``) holds a maximum P-DATA-TF starting anywhere in the
  first read, so that PDU is never moved. A partial PDU is moved to the front only when the
  rest does not fit behind it (it started in a tail), and a PDU bigger than a pool buffer
  (an A-ASSOCIATE-RQ near its own limit; no P-DATA limit) goes to a buffer that grows
  geometrically with what arrived, never to the size a header merely announces.
* View lifetime. Pool buffers are fixed-size ``mmap`` memory that is never resized, but it is
  reused: a body returned from a receive buffer is valid until ``next_pdu`` returns ``None``
  or ``get_buffer``, ``wrote`` or ``feed`` is called, whichever comes first. Copy what must
  live longer. Bodies from ``feed``-only use keep the old guarantee: a ``bytearray`` with
  exported views is never resized (a new one is started instead), so they stay valid.
"""

from __future__ import annotations

import mmap
import struct

from appliance.errors import LocalULError, RemoteULError

_PDU_LENGTH = struct.Struct(">I")
_HEADER_BYTES = 6
_P_DATA_TF = 0x04
_FIRST_PDU_TYPE, _LAST_PDU_TYPE = 0x01, 0x07  # A-ASSOCIATE-RQ .. A-ABORT (PS3.8 §9.3.1)
_UNRECOGNIZED_PDU = 1
_INVALID_PDU_PARAMETER_VALUE = 6
READ_BYTES = 256 * 1024  # offered between PDUs: many small PDUs per read
TAIL_BYTES = 16 * 1024  # offered past a large PDU's end (see the module docstring)
POOL_KEEP = 8  # free receive buffers a pool keeps (concurrently receiving associations)
_NOT_PEEKED = -1


def receive_buffer_bytes(max_pdata_bytes: int) -> int:
    """The size of a pool buffer for a P-DATA-TF limit (0 = none): a read between PDUs plus
    the largest P-DATA-TF and its tail, so that PDU completes where its first bytes landed."""
    return READ_BYTES + _HEADER_BYTES + max_pdata_bytes + TAIL_BYTES


def _allocate(size: int) -> memoryview:
    # Anonymous mmap, not bytearray: pages become resident only when written, so a buffer
    # taken for an announced PDU costs memory in proportion to the bytes that arrived.
    return memoryview(mmap.mmap(-1, size))


class ReceivePool:
    """Receive buffers of one size, shared by the ``PduBuffer`` s of one thread (one event
    loop: a read and its commit happen in one callback, so a peeked buffer cannot be claimed
    by anyone else in between). Reused buffers are already faulted in."""

    __slots__ = ("size", "generation", "_keep", "_free")

    def __init__(self, size: int, keep: int = POOL_KEEP) -> None:
        self.size = size
        self.generation = 0  # changes whenever the free list does: a peek is still current
        self._keep = max(1, keep)
        self._free: list[memoryview] = []

    @property
    def free(self) -> int:
        return len(self._free)

    def peek(self) -> memoryview:
        """The buffer the next claim takes (allocated if none is free)."""
        if not self._free:
            self._free.append(_allocate(self.size))
        return self._free[-1]

    def claim(self, generation: int) -> memoryview:
        """Take the buffer ``peek`` returned when the pool was at ``generation``."""
        if generation != self.generation or not self._free:
            raise LocalULError("the peeked receive buffer was taken in between")
        self.generation += 1
        return self._free.pop()

    def give(self, view: memoryview) -> None:
        """Return a claimed buffer; other sizes and buffers beyond ``keep`` are dropped."""
        if len(view) == self.size and len(self._free) < self._keep:
            self.generation += 1
            self._free.append(view)


class PduBuffer:
    """Length-prefixed PDU extraction with size limits; see the module docstring."""

    __slots__ = ("_buf", "_start", "_end", "_owned", "_peeked", "_offered", "_pool",
                 "_max_pdata_bytes", "_max_other_pdu_bytes")

    def __init__(self, max_pdata_bytes: int, max_other_pdu_bytes: int = 4 * 1024 * 1024,
                 pool: ReceivePool | None = None) -> None:
        """``max_pdata_bytes`` is the Maximum Length we advertised (PS3.8 D.1; 0 = no limit);
        ``max_other_pdu_bytes`` bounds every other PDU body (0 = no limit). ``pool`` supplies
        ``get_buffer``'s receive buffers (default: a private one, made on first use)."""
        self._buf: bytes | bytearray | memoryview = b""
        self._start = 0
        self._end = 0
        self._owned = False  # _buf is a receive buffer claimed by this PduBuffer
        self._peeked = _NOT_PEEKED  # pool generation when get_buffer offered its buffer
        self._offered = 0  # bytes get_buffer offered that wrote may commit
        self._pool = pool
        self._max_pdata_bytes = max_pdata_bytes
        self._max_other_pdu_bytes = max_other_pdu_bytes

    @property
    def buffered_bytes(self) -> int:
        """Received bytes not yet returned by ``next_pdu``."""
        return self._end - self._start

    # ---- input: receive into the buffer ----------------------------------------------

    def get_buffer(self) -> memoryview:
        """A writable view to receive the next bytes into (its first bytes follow the
        buffered ones); commit them with ``wrote``. Never empty."""
        self._peeked = _NOT_PEEKED
        start, end = self._start, self._end
        pending = end - start
        must, offer = self._wanted(pending)
        if self._owned:
            buf = self._buf
            assert isinstance(buf, memoryview)
            if not pending:
                self._start = self._end = end = 0
            room = len(buf) - end
            # In place if the offer fits, or at least the PDU does and moving the pending
            # bytes would cost more than a short read. Else they move to the front: then
            # they came in a tail read (TAIL_BYTES at most) unless the PDU outgrew the pool.
            if room >= offer or (room >= must and pending > TAIL_BYTES):
                self._offered = min(offer, room)
                return buf[end : end + self._offered]
        elif not pending:
            pool = self._pool_of()
            peeked = pool.peek()
            self._peeked = pool.generation
            self._offered = offer
            return peeked[:offer]
        return self._rebuffer(pending, offer)

    def wrote(self, nbytes: int) -> None:
        """Commit the first ``nbytes`` of the view the last ``get_buffer`` returned."""
        if not 0 <= nbytes <= self._offered:
            raise LocalULError(f"wrote {nbytes} bytes, {self._offered} were offered")
        self._offered = 0
        if not nbytes:
            return
        if self._peeked != _NOT_PEEKED:
            claimed = self._pool_of().claim(self._peeked)
            self._peeked = _NOT_PEEKED
            self._buf, self._owned, self._start, self._end = claimed, True, 0, 0
        self._end += nbytes

    def offered(self, nbytes: int) -> memoryview:
        """The first ``nbytes`` of the last ``get_buffer`` view, before (or instead of)
        ``wrote``: for a caller that looks at a read first (valid until the next call)."""
        if not 0 <= nbytes <= self._offered:
            raise LocalULError(f"{nbytes} bytes asked for, {self._offered} were offered")
        if self._peeked != _NOT_PEEKED:
            pool = self._pool_of()
            if self._peeked != pool.generation:
                raise LocalULError("the peeked receive buffer was taken in between")
            return pool.peek()[:nbytes]
        buf = self._buf
        return memoryview(buf)[self._end : self._end + nbytes]

    def _wanted(self, pending: int) -> tuple[int, int]:
        """(bytes the buffer must have room for, bytes worth offering) behind ``pending``."""
        if pending < _HEADER_BYTES:
            return _HEADER_BYTES - pending, READ_BYTES
        buf, start = self._buf, self._start
        pdu_type = buf[start]
        (length,) = _PDU_LENGTH.unpack_from(buf, start + 2)
        limit = self._max_pdata_bytes if pdu_type == _P_DATA_TF else self._max_other_pdu_bytes
        if not _FIRST_PDU_TYPE <= pdu_type <= _LAST_PDU_TYPE or (limit and length > limit):
            return 1, READ_BYTES  # next_pdu raises; whatever arrives is never looked at
        rest = _HEADER_BYTES + length - pending
        if rest > READ_BYTES:
            return rest, rest + TAIL_BYTES  # the PDU in place, plus a little of the next
        return max(rest, 1), READ_BYTES

    def _rebuffer(self, pending: int, offer: int) -> memoryview:
        """Room for ``offer`` bytes behind the ``pending`` ones: compact the receive buffer,
        or move to a pool buffer (or a bigger one, grown geometrically)."""
        old, start, pool = self._buf, self._start, self._pool_of()
        need = pending + offer
        if self._owned and need <= len(old):
            assert isinstance(old, memoryview)
            old[:pending] = old[start : start + pending]  # overlapping: memmove
            new = old
        else:
            size = min(need, 2 * pending + READ_BYTES)  # never what a header merely announces
            if size <= pool.size:
                pool.peek()
                new = pool.claim(pool.generation)
            else:
                new = _allocate(size)
            new[:pending] = old[start : start + pending]
            if self._owned:
                assert isinstance(old, memoryview)
                pool.give(old)
            self._buf, self._owned = new, True
        self._start, self._end = 0, pending
        self._offered = min(offer, len(new) - pending)
        return new[pending : pending + self._offered]

    def _pool_of(self) -> ReceivePool:
        if self._pool is None:
            self._pool = ReceivePool(receive_buffer_bytes(self._max_pdata_bytes), keep=1)
        return self._pool

    def _release(self) -> None:
        """Everything was returned: the receive buffer goes back to the pool."""
        buf = self._buf
        assert isinstance(buf, memoryview)
        self._buf, self._owned, self._start, self._end = b"", False, 0, 0
        self._pool_of().give(buf)

    # ---- input: bytes the caller has ---------------------------------------------------

    def feed(self, data: bytes | memoryview) -> None:
        """Append received bytes. ``data`` may be reused by the caller afterwards."""
        if not data:
            return
        self._peeked = _NOT_PEEKED
        self._offered = 0
        if self._owned:  # a receive buffer is in use: copy into it
            src = memoryview(data).cast("B")
            while src:
                view = self.get_buffer()
                n = min(len(view), len(src))
                view[:n] = src[:n]
                self.wrote(n)
                src = src[n:]
            return
        buf, start = self._buf, self._start
        if start == self._end:
            # Nothing pending: keep immutable bytes as they are, copy anything else.
            self._buf = data if type(data) is bytes else bytearray(data)
            self._start = 0
        elif start == 0 and isinstance(buf, bytearray):
            buf += data  # no view has been exported from this bytearray yet
        else:
            # The caller may hold views into ``buf`` (or it is immutable): start a new buffer.
            grown = bytearray(memoryview(buf)[start : self._end])
            grown += data
            self._buf = grown
            self._start = 0
        self._end = len(self._buf)

    # ---- output --------------------------------------------------------------------------

    def next_pdu(self) -> tuple[int, memoryview] | None:
        """The next complete PDU as ``(pdu_type, body)``, body without the 6-byte header.

        Raises ``RemoteULError`` (reason 1) for an unknown PDU type and (reason 6) for a PDU
        longer than the limit."""
        buf, start = self._buf, self._start
        available = self._end - start
        if not available:
            if self._owned:
                self._release()
            return None
        pdu_type = buf[start]
        if not _FIRST_PDU_TYPE <= pdu_type <= _LAST_PDU_TYPE:
            raise RemoteULError(
                f"unrecognized PDU type 0x{pdu_type:02X}", abort_reason=_UNRECOGNIZED_PDU
            )
        if available < _HEADER_BYTES:
            return None
        (length,) = _PDU_LENGTH.unpack_from(buf, start + 2)
        limit = self._max_pdata_bytes if pdu_type == _P_DATA_TF else self._max_other_pdu_bytes
        if limit and length > limit:
            raise RemoteULError(
                f"PDU type 0x{pdu_type:02X} announces {length} bytes, limit is {limit}",
                abort_reason=_INVALID_PDU_PARAMETER_VALUE,
            )
        end = start + _HEADER_BYTES + length
        if end > self._end:
            return None
        self._start = end
        return pdu_type, memoryview(buf)[start + _HEADER_BYTES : end]
