"""The acceptor's end of one worker's rings (jobs out, replies in).

THEORY OF OPERATION
-------------------
One ``WorkerLink`` per worker slot and incarnation. Associations are pinned to a link when
accepted (least loaded among the ready workers) and every record of that association goes
through its ``jobs`` ring, so the worker sees each association's records in order.
Records are put without ringing the doorbell; ``flush()`` rings once per event-loop callback,
except for data set fragments short of their message's end: those ring once a MiB has piled up
(or when the ring is full), so the worker wakes about once per object instead of once per
socket read (a 0.5 MB CT came in 3-4 reads, each a worker wake-up: profiled). Nothing waits on
a partial data set: the response needs the last fragment, whose record rings at once.
A protocol whose put fails joins ``waiting`` (FIFO) and pauses its transport; when the worker
frees space (``space_fd`` readable) waiting protocols retry in order and resume.
"""

from __future__ import annotations

import os
from collections import deque
from typing import TYPE_CHECKING

from appliance.ipc.kinds import Flag, Kind
from appliance.ipc.ring import Ring

if TYPE_CHECKING:
    from appliance.acceptor.protocol import DicomProtocol

DEFER_DATA_BYTES = 1 << 20  # data set fragments ring the worker at least once per this much
_DATA, _LAST = int(Kind.DATA), int(Flag.LAST)


class WorkerLink:
    def __init__(self, slot: int, generation: int, jobs: Ring, replies: Ring) -> None:
        self.slot = slot
        self.generation = generation
        self.jobs = jobs
        self.replies = replies
        self.associations: set[DicomProtocol] = set()
        self.waiting: deque[DicomProtocol] = deque()
        self.dirty = False
        self.urgent = False  # something other than a mid-message DATA record awaits the bell
        self.ready = False

    def put(self, kind: int, assoc_id: int, msg_id: int, flags: int, aux: int,
            *parts: bytes | bytearray | memoryview) -> bool:
        ok = self.jobs.try_put(kind, assoc_id, msg_id, flags, aux, *parts, notify=False)
        if ok:
            self.dirty = True
            if kind != _DATA or int(flags) & _LAST:  # plain ints: IntFlag's & is slow
                self.urgent = True
        return ok

    def flush(self) -> None:
        if self.dirty and (self.urgent or self.jobs.unnotified_bytes() >= DEFER_DATA_BYTES):
            self.dirty = self.urgent = False
            self.jobs.notify()

    def wait_for_space(self, proto: DicomProtocol) -> None:
        if proto not in self.waiting:
            self.waiting.append(proto)

    def on_space(self) -> None:
        """``jobs.space_fd`` is readable: let waiting associations retry, in order."""
        try:
            os.eventfd_read(self.jobs.space_fd)
        except BlockingIOError:
            pass
        while self.waiting:
            proto = self.waiting[0]
            if not proto.retry_pending():
                break  # still no room; try_put re-flagged the wait
            self.waiting.popleft()
        self.flush()

    def close(self) -> None:
        self.jobs.close()
        self.replies.close()
