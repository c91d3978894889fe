"""Writing one object's bytes to its spool file: buffered, or direct I/O past the page cache.

THEORY OF OPERATION
-------------------
A received object is written once and, on an ingest appliance, mostly not read again soon.
Buffered writes copy every byte into freshly allocated page-cache pages; on a virtual machine
whose free memory is handed back to the host (free-page reporting), allocating those pages
is the single largest cost of ingest: ≈1.2–1.4 ms of kernel CPU per 0.5 MB object here,
against ≈0.05–0.4 ms for the same write with ``O_DIRECT`` (bench/micro/spool.py; README
"Direct I/O"). So large objects go to the disk directly:

  - ``DirectSpool`` copies fragments into a page-aligned staging buffer from a per-process
    pool (reused, so its pages stay resident) and writes each full buffer with ``O_DIRECT``
    (offsets and lengths multiples of ``BLOCK``). At ``finish`` the aligned part of what is
    left goes out directly and the unaligned tail through the page cache (``O_DIRECT`` cleared
    with ``fcntl``), so the file has exactly the object's length.
  - An object that ends before ``direct_min_bytes`` was only ever in the staging buffer; it is
    written buffered in one call (small objects gain nothing from direct I/O: a synchronous
    device write per object would cost the worker more wall time than the page cache).
  - A filesystem without direct I/O (tmpfs) refuses ``O_DIRECT`` with EINVAL: the spool falls
    back to buffered writes for good (``DirectSpool.direct`` turns False), nothing is lost.

``BufferedSpool`` is the page-cache path: small fragments are coalesced into fewer writes,
large ones are written straight from the ring (the caller's memoryview) without a copy.

Durability is unchanged (workers/store.py, workers/indexer.py): ``O_DIRECT`` data is on the
device when ``write`` returns but the device cache and the metadata still need the fsync /
syncfs of the configured mode, which become cheaper as no dirty page is left to flush.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from typing import Protocol

BLOCK = 4096  # O_DIRECT alignment of memory, offset and length (covers 512 B devices too)
STAGING_BYTES = 1024 * 1024
DIRECT_MIN_BYTES = 128 * 1024
_WRITE_COALESCE_BYTES = 256 * 1024
_DIRECT_WRITE_BYTES = 32 * 1024  # fragments this large are written without a copy
_POOL_KEEP = 8


class Spool(Protocol):
    fd: int

    def write(self, data: bytes | memoryview) -> None: ...
    def finish(self) -> None: ...
    def release(self) -> None: ...


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class BufferedSpool:
    """Through the page cache; see the module docstring."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._pending: list[bytes | memoryview] = []
        self._pending_bytes = 0

    def write(self, data: bytes | memoryview) -> None:
        n = len(data)
        if n < _DIRECT_WRITE_BYTES and self._pending_bytes + n < _WRITE_COALESCE_BYTES:
            self._pending.append(bytes(data))  # small fragment: coalesce into fewer writes
            self._pending_bytes += n
            return
        # A large fragment goes to the file straight from the ring (one kernel copy): a
        # syscall costs less than copying it out first (128 KiB PDVs from storescu, profiled).
        self._pending.append(data)
        self._flush()

    def finish(self) -> None:
        if self._pending:
            self._flush()

    def release(self) -> None:
        self._pending = []
        self._pending_bytes = 0

    def _flush(self) -> None:
        bufs = self._pending
        self._pending = []
        self._pending_bytes = 0
        total = sum(len(b) for b in bufs)
        written = os.writev(self.fd, bufs)
        if written != total:  # short write (e.g. disk full on the next call): finish by hand
            write_all(self.fd, b"".join(bytes(b) for b in bufs)[written:])


class _StagingPool:
    """Page-aligned staging buffers of this process, reused so their pages stay resident."""

    free: list[mmap.mmap] = []

    @classmethod
    def take(cls) -> mmap.mmap:
        if cls.free:
            return cls.free.pop()
        buf = mmap.mmap(-1, STAGING_BYTES)
        for off in range(0, STAGING_BYTES, mmap.PAGESIZE):  # fault in now, not per object
            buf[off] = 0
        return buf

    @classmethod
    def give(cls, buf: mmap.mmap) -> None:
        if len(cls.free) < _POOL_KEEP:
            cls.free.append(buf)
        else:
            buf.close()


class DirectSpool:
    """``O_DIRECT`` through an aligned staging buffer; see the module docstring."""

    def __init__(self, fd: int, direct_min_bytes: int = DIRECT_MIN_BYTES) -> None:
        self.fd = fd
        self.direct = True  # False once the filesystem refused O_DIRECT
        self._direct_min = direct_min_bytes
        self._buf: mmap.mmap | None = _StagingPool.take()
        self._view = memoryview(self._buf)
        self._pos = 0
        self._flushed = 0  # bytes already in the file
        self._o_direct = False  # O_DIRECT currently set on fd
        self.direct_bytes = 0  # written with O_DIRECT (observability, tests)

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        room = STAGING_BYTES - self._pos
        while len(view) >= room:
            self._view[self._pos:STAGING_BYTES] = view[:room]
            view = view[room:]
            self._pos = STAGING_BYTES
            self._write_out(STAGING_BYTES)
            room = STAGING_BYTES
        n = len(view)
        if n:
            self._view[self._pos:self._pos + n] = view
            self._pos += n

    def finish(self) -> None:
        pos = self._pos
        if not pos:
            return
        if self._flushed == 0 and pos < self._direct_min:
            self._buffered(self._view[:pos])  # small object: one buffered write
        else:
            aligned = pos - pos % BLOCK
            if aligned:
                self._write_out(aligned)
            if pos > aligned:
                self._buffered(self._view[aligned:pos])
        self._pos = 0

    def release(self) -> None:
        """Give the staging buffer back (idempotent); the fd stays the caller's."""
        if self._buf is not None:
            self._view.release()
            _StagingPool.give(self._buf)
            self._buf = None

    def _write_out(self, n: int) -> None:
        """Write the first ``n`` staged bytes (a multiple of BLOCK) and keep the rest."""
        chunk = self._view[:n]
        if self.direct and self._set_direct(True):
            try:
                write_all(self.fd, chunk)
                self.direct_bytes += n
            except OSError as exc:
                if exc.errno != errno.EINVAL or self._flushed:
                    raise
                self.direct = False  # accepted by fcntl, refused on write: buffered for good
                self._set_direct(False)
                write_all(self.fd, chunk)
        else:
            write_all(self.fd, chunk)
        self._flushed += n
        rest = self._pos - n
        if rest:
            self._view[:rest] = self._view[n:self._pos]
        self._pos = rest

    def _buffered(self, data: memoryview) -> None:
        self._set_direct(False)
        write_all(self.fd, data)
        self._flushed += len(data)

    def _set_direct(self, on: bool) -> bool:
        if on == self._o_direct:
            return True
        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        try:
            fcntl.fcntl(self.fd, fcntl.F_SETFL,
                        flags | os.O_DIRECT if on else flags & ~os.O_DIRECT)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self.direct = False  # this filesystem has no direct I/O (tmpfs)
            return False
        self._o_direct = on
        return True


def open_spool(fd: int, direct: bool) -> BufferedSpool | DirectSpool:
    return DirectSpool(fd) if direct else BufferedSpool(fd)
