"""The four rings that connect one worker incarnation to the rest of the appliance.

jobs     acceptor (or the ingest driver) -> worker   large: PDV payloads up to max PDU
replies  worker -> acceptor (or the ingest driver)   response PDUs, ingest outcomes
index    worker -> index writer                      packed index records
acks     index writer -> worker                      commit acknowledgements

A replaced worker gets a fresh set (new memfds and eventfds), so nobody ever has to reset a
ring another process may still be reading; the old set is drained by its consumers, then closed.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.ipc.ring import Ring

FdTriple = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class WorkerChannels:
    slot: int
    generation: int
    jobs: FdTriple
    replies: FdTriple
    index: FdTriple
    acks: FdTriple

    @classmethod
    def create(
        cls, slot: int, generation: int, jobs_bytes: int, reply_bytes: int
    ) -> tuple[WorkerChannels, list[Ring]]:
        """Create the rings; the caller keeps the Ring objects to close after forking."""
        rings = [
            Ring.create(jobs_bytes),
            Ring.create(reply_bytes),
            Ring.create(reply_bytes),
            Ring.create(max(reply_bytes // 4, 1024 * 1024)),
        ]
        ch = cls(slot, generation, rings[0].fds, rings[1].fds, rings[2].fds, rings[3].fds)
        return ch, rings

    def acceptor_side(self) -> tuple[FdTriple, FdTriple]:
        return self.jobs, self.replies

    def writer_side(self) -> tuple[FdTriple, FdTriple]:
        return self.index, self.acks

    def all_fds(self) -> list[int]:
        return [*self.jobs, *self.replies, *self.index, *self.acks]
