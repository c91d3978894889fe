"""The control block: per-process slots and appliance-wide state in shared memory (STYLE 2.6).

THEORY OF OPERATION
-------------------
The arbiter creates one memfd-backed block before forking (children inherit the fd; others get
it with ``fdpass``) and mmaps it ``MAP_SHARED``. Layout: a 128-byte global area, then
``n_slots`` slots of 128 bytes (two cache lines each, so neighbours never share a line).

Single writer per field, by convention and by who holds the slot:

    global area      appliance_state, arbiter_pid, workers_index: the arbiter. The disk probe
                     (disk_ok, disk_free_bytes, disk_checked_ns): initialised by the arbiter before
                     fork, then written only by the one process that probes the disk (the
                     exporter). The disk-full report (disk_full_ns, disk_full_until_free):
                     written by any process whose write failed for lack of space (a worker,
                     the index writer); last write wins, which is all a latch needs.
    slot, line 0     arbiter-owned: role, generation, pid. Written only while no live child
                     owns the slot (``claim()`` before fork / after reaping; ``pid`` right after
                     fork, a field the child never writes).
    slot, line 1     child-owned: state, heartbeat_ns, in_flight, associations_active and the
                     counters. ``claim()`` resets them before the child exists; from then on
                     only that child writes them.

Readers (arbiter, exporter, acceptor) may read anything at any time. Every field is an aligned
4- or 8-byte word accessed with one native-endian ``struct`` memcpy, so a single field is never
torn; a snapshot across fields is NOT atomic (a heartbeat and a state may come from moments a
few nanoseconds apart), which is fine for supervision and health. There is no doorbell: nothing
here orders other data; a reader learns the *current-ish* value of each word, nothing more.

``generation`` is how peers detect a replaced process: the acceptor remembers the generation of
the worker it routed an association to and, when it changes, answers that worker's in-flight
operations with a failure status (STYLE 2.5).
"""

from __future__ import annotations

import enum
import mmap
import os
import struct
import time
from dataclasses import dataclass

__all__ = [
    "ApplianceState",
    "ControlBlock",
    "GlobalState",
    "GlobalView",
    "ProcState",
    "Role",
    "SlotState",
    "SlotView",
]

_MAGIC = 0x4C52544353434150  # b"PACSCTRL" little-endian
_VERSION = 1
_GLOBAL_BYTES = 128
_SLOT_BYTES = 128
_MAX_SLOTS = 4096

_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")

# Global area offsets.
_G_MAGIC, _G_VERSION, _G_NSLOTS = 0, 8, 12
_G_APP_STATE, _G_DISK_OK, _G_ARBITER_PID = 16, 20, 24
_G_DISK_FREE, _G_DISK_CHECKED = 32, 40
_G_DISK_FULL_UNTIL, _G_DISK_FULL_NS = 48, 56
_G_WORKERS_INDEX = 64

# Slot offsets: line 0 arbiter-owned, line 1 child-owned.
_S_ROLE, _S_GENERATION, _S_PID = 0, 4, 8
_S_STATE, _S_IN_FLIGHT, _S_ASSOCS = 64, 68, 72
_S_HEARTBEAT, _S_JOBS, _S_ERRORS, _S_BYTES = 80, 88, 96, 104

# A child's exit codes that mean something to the arbiter (appliance/children.py):
EXIT_BOOT_FAILED = 3  # it could not set itself up: forked again with backoff, then a halt
EXIT_STATE_CORRUPT = 4  # its LMDB environment or a ring is in doubt: replaced


class Role(enum.IntEnum):
    NONE = 0  # slot unused
    ARBITER = 1
    ACCEPTOR = 2
    WORKER = 3
    INDEX_WRITER = 4
    EXPORTER = 5


class ProcState(enum.IntEnum):
    STARTING = 0
    READY = 1
    DRAINING = 2
    STOPPED = 3


class ApplianceState(enum.IntEnum):
    STARTING = 0
    READY = 1
    DRAINING = 2


@dataclass(frozen=True, slots=True)
class SlotState:
    index: int
    role: Role
    generation: int
    pid: int
    state: ProcState
    heartbeat_ns: int
    in_flight: int
    associations_active: int
    jobs_total: int
    errors_total: int
    bytes_total: int


@dataclass(frozen=True, slots=True)
class GlobalState:
    appliance_state: ApplianceState
    disk_ok: bool
    disk_free_bytes: int
    disk_checked_ns: int
    arbiter_pid: int
    workers_index: bool = False


class _Words:
    """Aligned native-endian u32/u64 access at fixed offsets of the mapping."""

    __slots__ = ("_mm", "_base")

    def __init__(self, mm: mmap.mmap, base: int) -> None:
        self._mm = mm
        self._base = base

    def u32(self, off: int) -> int:
        return int(_U32.unpack_from(self._mm, self._base + off)[0])

    def set_u32(self, off: int, value: int) -> None:
        _U32.pack_into(self._mm, self._base + off, value)

    def u64(self, off: int) -> int:
        return int(_U64.unpack_from(self._mm, self._base + off)[0])

    def set_u64(self, off: int, value: int) -> None:
        _U64.pack_into(self._mm, self._base + off, value)


class SlotView(_Words):
    """One process's slot. Setters are for the field's owner only (module docstring)."""

    __slots__ = ("index",)

    def __init__(self, mm: mmap.mmap, index: int) -> None:
        super().__init__(mm, _GLOBAL_BYTES + index * _SLOT_BYTES)
        self.index = index

    # -- arbiter-owned
    def claim(self, role: Role, generation: int) -> None:
        """Arbiter, before forking the slot's (new) process: reset it for ``generation``."""
        self.set_u32(_S_STATE, ProcState.STARTING)
        for off in (_S_IN_FLIGHT, _S_ASSOCS):
            self.set_u32(off, 0)
        for off in (_S_HEARTBEAT, _S_JOBS, _S_ERRORS, _S_BYTES):
            self.set_u64(off, 0)
        self.set_u32(_S_PID, 0)
        self.set_u32(_S_ROLE, role)
        self.set_u32(_S_GENERATION, generation)

    @property
    def role(self) -> Role:
        return Role(self.u32(_S_ROLE))

    @property
    def generation(self) -> int:
        return self.u32(_S_GENERATION)

    @property
    def pid(self) -> int:
        return self.u32(_S_PID)

    @pid.setter
    def pid(self, value: int) -> None:
        self.set_u32(_S_PID, value)

    # -- child-owned
    @property
    def state(self) -> ProcState:
        return ProcState(self.u32(_S_STATE))

    @state.setter
    def state(self, value: ProcState) -> None:
        self.set_u32(_S_STATE, value)

    @property
    def heartbeat_ns(self) -> int:
        return self.u64(_S_HEARTBEAT)

    def heartbeat(self, now_ns: int | None = None) -> None:
        """Child: record liveness (``time.monotonic_ns()`` unless given)."""
        self.set_u64(_S_HEARTBEAT, time.monotonic_ns() if now_ns is None else now_ns)

    @property
    def in_flight(self) -> int:
        return self.u32(_S_IN_FLIGHT)

    @in_flight.setter
    def in_flight(self, value: int) -> None:
        self.set_u32(_S_IN_FLIGHT, value)

    @property
    def associations_active(self) -> int:
        return self.u32(_S_ASSOCS)

    @associations_active.setter
    def associations_active(self, value: int) -> None:
        self.set_u32(_S_ASSOCS, value)

    @property
    def jobs_total(self) -> int:
        return self.u64(_S_JOBS)

    @property
    def errors_total(self) -> int:
        return self.u64(_S_ERRORS)

    @property
    def bytes_total(self) -> int:
        return self.u64(_S_BYTES)

    def count(self, jobs: int = 0, errors: int = 0, nbytes: int = 0) -> None:
        """Child: add to the monotonic counters (read-modify-write is safe: one writer)."""
        if jobs:
            self.set_u64(_S_JOBS, self.u64(_S_JOBS) + jobs)
        if errors:
            self.set_u64(_S_ERRORS, self.u64(_S_ERRORS) + errors)
        if nbytes:
            self.set_u64(_S_BYTES, self.u64(_S_BYTES) + nbytes)

    def snapshot(self) -> SlotState:
        return SlotState(
            index=self.index,
            role=self.role,
            generation=self.generation,
            pid=self.pid,
            state=self.state,
            heartbeat_ns=self.heartbeat_ns,
            in_flight=self.in_flight,
            associations_active=self.associations_active,
            jobs_total=self.jobs_total,
            errors_total=self.errors_total,
            bytes_total=self.bytes_total,
        )


class GlobalView(_Words):
    """Appliance-wide fields (owners in the module docstring)."""

    __slots__ = ()

    @property
    def appliance_state(self) -> ApplianceState:
        return ApplianceState(self.u32(_G_APP_STATE))

    @appliance_state.setter
    def appliance_state(self, value: ApplianceState) -> None:
        self.set_u32(_G_APP_STATE, value)

    @property
    def arbiter_pid(self) -> int:
        return self.u32(_G_ARBITER_PID)

    @arbiter_pid.setter
    def arbiter_pid(self, value: int) -> None:
        self.set_u32(_G_ARBITER_PID, value)

    @property
    def workers_index(self) -> bool:
        """The workers commit their own index records and no index writer runs
        (workers/inline_index.py)."""
        return self.u32(_G_WORKERS_INDEX) != 0

    @workers_index.setter
    def workers_index(self, value: bool) -> None:
        self.set_u32(_G_WORKERS_INDEX, 1 if value else 0)

    @property
    def disk_ok(self) -> bool:
        return self.u32(_G_DISK_OK) != 0

    @property
    def disk_free_bytes(self) -> int:
        return self.u64(_G_DISK_FREE)

    @property
    def disk_checked_ns(self) -> int:
        return self.u64(_G_DISK_CHECKED)

    def set_disk(self, ok: bool, free_bytes: int, checked_ns: int | None = None) -> None:
        """Record a disk probe; ``disk_ok`` last so a reader never sees ok=1 with stale bytes."""
        self.set_u64(_G_DISK_FREE, free_bytes)
        self.set_u64(_G_DISK_CHECKED, time.monotonic_ns() if checked_ns is None else checked_ns)
        self.set_u32(_G_DISK_OK, 1 if ok else 0)

    @property
    def disk_full_ns(self) -> int:
        """monotonic_ns of the last write that failed for lack of space; 0 = never."""
        return self.u64(_G_DISK_FULL_NS)

    @property
    def disk_full_until_free(self) -> int:
        """Free bytes the volume needs before that failure counts as resolved."""
        return self.u64(_G_DISK_FULL_UNTIL)

    def report_disk_full(self, until_free_bytes: int) -> None:
        """A write failed for lack of space (ENOSPC); the threshold before the timestamp so a
        reader that sees the new timestamp sees its threshold."""
        self.set_u64(_G_DISK_FULL_UNTIL, until_free_bytes)
        self.set_u64(_G_DISK_FULL_NS, time.monotonic_ns())

    def snapshot(self) -> GlobalState:
        return GlobalState(
            appliance_state=self.appliance_state,
            disk_ok=self.disk_ok,
            disk_free_bytes=self.disk_free_bytes,
            disk_checked_ns=self.disk_checked_ns,
            arbiter_pid=self.arbiter_pid,
            workers_index=self.workers_index,
        )


class ControlBlock:
    """Shared control block. ``create`` in the arbiter before fork; ``attach(fd)`` elsewhere."""

    def __init__(self, fd: int, mm: mmap.mmap) -> None:
        self._fd = fd
        self._mm = mm
        head = _Words(mm, 0)
        if head.u64(_G_MAGIC) != _MAGIC or head.u32(_G_VERSION) != _VERSION:
            raise ValueError("not a control block (magic/version mismatch)")
        self._n = head.u32(_G_NSLOTS)
        if mm.size() < _GLOBAL_BYTES + self._n * _SLOT_BYTES:
            raise ValueError("control block segment is truncated")
        self.global_area = GlobalView(mm, 0)
        self._slots = [SlotView(mm, i) for i in range(self._n)]

    @classmethod
    def create(cls, n_slots: int) -> ControlBlock:
        if not 1 <= n_slots <= _MAX_SLOTS:
            raise ValueError(f"n_slots must be in 1..{_MAX_SLOTS}")
        size = -(-(_GLOBAL_BYTES + n_slots * _SLOT_BYTES) // mmap.PAGESIZE) * mmap.PAGESIZE
        fd = os.memfd_create("pacs-control", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            os.posix_fallocate(fd, 0, size)
            mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)
        except BaseException:
            os.close(fd)
            raise
        head = _Words(mm, 0)
        head.set_u32(_G_NSLOTS, n_slots)
        head.set_u32(_G_VERSION, _VERSION)
        head.set_u64(_G_MAGIC, _MAGIC)
        return cls(fd, mm)

    @classmethod
    def attach(cls, fd: int, *, own: bool = False) -> ControlBlock:
        """Map an existing block; dups ``fd`` unless ``own=True``."""
        mine = fd if own else os.dup(fd)
        try:
            size = os.fstat(mine).st_size
            if size < _GLOBAL_BYTES:
                raise ValueError("segment too small for a control block")
            mm = mmap.mmap(mine, size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)
            try:
                return cls(mine, mm)
            except BaseException:
                mm.close()
                raise
        except BaseException:
            if not own:
                os.close(mine)
            raise

    @property
    def fd(self) -> int:
        return self._fd

    @property
    def n_slots(self) -> int:
        return self._n

    def slot(self, i: int) -> SlotView:
        return self._slots[i]

    def snapshot(self) -> list[SlotState]:
        """Every slot, including unused ones (``role == Role.NONE``)."""
        return [s.snapshot() for s in self._slots]

    def close(self) -> None:
        self._mm.close()
        os.close(self._fd)
