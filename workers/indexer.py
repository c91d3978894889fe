"""The index writer process: the workers' index records, committed in groups (DESIGN 6-7).

THEORY OF OPERATION
-------------------
Every worker has an ``index`` ring (records in) and an ``acks`` ring (acknowledgements out).
The loop waits on all index doorbells, takes every record visible on every ring (up to
``batch_max``), optionally waits ``batch_window_ms`` for more, commits them as one group
(workers/group_commit.py: the durability modes, the audit events, what a failed flush or
commit answers) and only then acknowledges each record to its worker, which answers the peer.
So a Success C-STORE-RSP always follows the durable commit of its record. Group commit needs no
timer: while one batch syncs, the next accumulates. When the workers commit their own records
(one worker, or `os` durability: workers/inline_index.py) this process only waits.

A panic or corruption error is not survivable in place: it propagates, the writer exits and
the arbiter halts the appliance for systemd to restart it.

Acks that do not fit in a worker's ack ring wait in memory (bounded by that worker's index ring
capacity) and are retried when the ring signals space; the writer never blocks on a worker.
When the arbiter replaces a worker it sends the new ring fds over the control socket; the old
index ring is drained (its files exist; committing them is harmless) before it is closed.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import structlog

from appliance.config import Config
from appliance.ipc.fdpass import recv_with_fds
from appliance.ipc.kinds import Flag, Kind
from appliance.ipc.ring import Ring
from metrics import fast
from workers.group_commit import GroupCommit, open_writer

log = structlog.get_logger(component="index_writer")

_BEAT_INTERVAL_S = 0.25  # heartbeat (and orphan check) at least this often while busy


@dataclass
class SlotRings:
    slot: int
    generation: int
    index: Ring
    acks: Ring
    backlog: deque[tuple[int, int, bytes]] = field(default_factory=deque)
    retired: bool = False


class IndexWriterProcess:
    def __init__(
        self,
        cfg: Config,
        slots: list[tuple[int, int, tuple[int, int, int], tuple[int, int, int]]],
        control: socket.socket | None,
        heartbeat: Callable[[int], None],
    ) -> None:
        self.cfg = cfg
        self.writer = open_writer(cfg)
        self.rings: dict[int, SlotRings] = {}
        self.retired: list[SlotRings] = []
        for slot, gen, idx_fds, ack_fds in slots:
            self.rings[slot] = SlotRings(slot, gen, Ring.attach(idx_fds), Ring.attach(ack_fds))
        self.control = control
        self.heartbeat = heartbeat
        self.stopping = False
        self.group = GroupCommit(cfg, self.writer)

    @property
    def commits(self) -> int:
        return self.group.commits

    def _all(self) -> list[SlotRings]:
        return [*self.rings.values(), *self.retired]

    def run(self) -> int:
        ppid = os.getppid()
        poller, registered = select.poll(), frozenset[int]()
        beat_at = flush_at = 0.0
        beat_n = -1
        while True:
            watched = self._watched()
            if watched != registered:  # a new poller only when the set changes, not per turn
                poller, registered = select.poll(), watched
                for fd in watched:
                    poller.register(fd, select.POLLIN)
            timeout = 1000
            if fast.pending():  # metric tallies: out within FLUSH_INTERVAL_S (metrics/fast.py)
                timeout = max(0, int((flush_at - time.monotonic()) * 1000) + 1)
            ready = {fd for fd, _ in poller.poll(timeout)}
            if self.control is not None and self.control.fileno() in ready:
                self._control()
            self._cycle(ready)
            backlog = sum(len(s.backlog) for s in self._all())
            now = time.monotonic()
            if now >= flush_at:
                fast.flush()
                flush_at = now + fast.FLUSH_INTERVAL_S
            if backlog != beat_n or now >= beat_at:
                self.heartbeat(backlog)
                beat_n, beat_at = backlog, now + _BEAT_INTERVAL_S
                if os.getppid() != ppid:
                    return 0
            if self.stopping and not self._pending():
                return 0

    def _watched(self) -> frozenset[int]:
        """The fds to poll: every index doorbell, the ack rings we wait on, the control."""
        fds = set()
        for sr in self._all():
            fds.add(sr.index.data_fd)
            if sr.backlog:
                fds.add(sr.acks.space_fd)
        if self.control is not None:
            fds.add(self.control.fileno())
        return frozenset(fds)

    def _pending(self) -> bool:
        return any(s.index.pending_bytes() or s.backlog for s in self._all())

    def _cycle(self, ready: Collection[int] | None = None) -> None:
        """One group commit of what is visible; ``ready``: the fds poll() reported (only
        those doorbells are read: reading a silent eventfd is a syscall and an exception,
        half the doorbell reads here with two workers), None = all."""
        batch = self._collect(ready=ready)
        st = self.cfg.storage
        if batch and st.batch_window_ms > 0 and len(batch) < st.batch_max:
            time.sleep(st.batch_window_ms / 1000)
            batch += self._collect(st.batch_max - len(batch))
        if batch:
            self._commit(batch)
        for sr in self._all():
            if sr.backlog:  # _commit flushed its own; what a full ack ring held back
                self._flush_backlog(sr)
        if self.retired:
            self._drop_drained_retired()

    def _collect(self, limit: int | None = None, ready: Collection[int] | None = None
                 ) -> list[tuple[SlotRings, int, int, bytes]]:
        limit = self.cfg.storage.batch_max if limit is None else limit
        out: list[tuple[SlotRings, int, int, bytes]] = []
        for sr in self._all():
            ring = sr.index
            if ready is None or ring.data_fd in ready:
                ring.drain_doorbell()
            while len(out) < limit and (got := ring.get_copy()) is not None:
                hdr, payload = got
                if hdr.kind == Kind.INDEX:
                    out.append((sr, hdr.msg_id, hdr.aux, payload))
        return out

    def _commit(self, batch: list[tuple[SlotRings, int, int, bytes]]) -> None:
        results = self.group.commit([(policy, payload, None) for _, _, policy, payload in batch])
        acked: dict[int, SlotRings] = {}
        for (sr, token, _, _), (code, old) in zip(batch, results, strict=True):
            sr.backlog.append((token, code, old.encode()))
            acked[sr.slot] = sr
        for sr in acked.values():
            self._flush_backlog(sr)

    def _flush_backlog(self, sr: SlotRings) -> None:
        put = False
        while sr.backlog:
            token, code, old = sr.backlog[0]
            if not sr.acks.try_put(Kind.INDEXED, 0, token, Flag.NONE, code, old, notify=False):
                break
            sr.backlog.popleft()
            put = True
        if put:
            sr.acks.notify()

    def _drop_drained_retired(self) -> None:
        keep = []
        for sr in self.retired:
            if sr.index.pending_bytes() == 0:
                sr.index.drain_doorbell()
            if sr.index.pending_bytes() == 0 and sr.index.peek() is None:
                sr.index.close()
                sr.acks.close()
            else:
                keep.append(sr)
        self.retired = keep

    def _control(self) -> None:
        assert self.control is not None
        got = recv_with_fds(self.control)
        if got is None:
            return
        header, fds = got
        if header.get("kind") != "worker_rings":
            return
        slot, gen = int(header["slot"]), int(header["generation"])
        old = self.rings.get(slot)
        if old is not None:
            old.backlog.clear()  # acks to a dead worker are pointless
            self.retired.append(old)
        self.rings[slot] = SlotRings(
            slot, gen, Ring.attach((fds[0], fds[1], fds[2]), own=True),
            Ring.attach((fds[3], fds[4], fds[5]), own=True),
        )
        # A worker killed inside a read transaction leaves its LMDB reader slot behind, pinning
        # old pages (the map only grows) until someone clears it: dead pids are cleared here.
        stale = self.writer.env.reader_check()
        log.info("index_writer.rings_replaced", slot=slot, generation=gen, stale_readers=stale)


def run_index_writer(
    cfg: Config,
    slots: list[tuple[int, int, tuple[int, int, int], tuple[int, int, int]]],
    control: socket.socket | None,
    heartbeat: Callable[[int], None],
    ready: Callable[[], None],
) -> int:
    try:
        proc = IndexWriterProcess(cfg, slots, control, heartbeat)
    except Exception:  # noqa: BLE001 - boot failure is reported by exit code
        log.exception("index_writer.boot_failed")
        return 3

    def _term(_signo: int, _frame: object) -> None:
        proc.stopping = True

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ready()
    log.info("index_writer.started", durability=cfg.storage.durability.value)
    try:
        return proc.run()
    finally:
        fast.flush()  # the last metric tallies (metrics/fast.py)
