"""The index writer process: the only LMDB writer, committing in groups (DESIGN step 6-7).

THEORY OF OPERATION
-------------------
Every worker has an ``index`` ring (records in) and an ``acks`` ring (acknowledgements out).
The loop waits on all index doorbells, takes every record visible on every ring (up to
``batch_max``), optionally waits ``batch_window_ms`` for more, then:

  batch mode: syncfs(data dir)   - every object file of the batch (and its directory entry)
                                   reaches the disk in one flush;
              commit, synced     - the records become durable together;
  fsync mode: the workers already fsync'd each file; commit, synced;
  os mode:    commit without sync (survives our crash, not power loss);

and only then acknowledges each record to its worker, which answers the peer. So a Success
C-STORE-RSP always follows the durable commit of its record. After each commit the audit trail
gets one "DICOM Instances Transferred" event (PS3.15 A.5.3.4) per calling AE and study of the
batch: what is audited is what was made durable. Group commit needs no timer: while
one batch syncs, the next accumulates.

A flush or commit that fails (a full volume: the map cannot grow, and LMDB reports the short
write as EIO) refuses that batch only: its records are acknowledged INDEX_OUT_OF_RESOURCES (the
worker removes the files and answers 0xA700), readiness is told the disk is full, and the next
batch tries again. LMDB never overwrites pages a committed transaction uses, so a failed
commit leaves the index as the last one left it. A panic or corruption error is not
survivable in place: it propagates, the writer exits and the arbiter halts the appliance for
systemd to restart it.

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
from collections import defaultdict, deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import lmdb
import structlog

from appliance import audit
from appliance.config import Config, DuplicatePolicy, Durability
from appliance.ipc.fdpass import recv_with_fds
from appliance.ipc.kinds import Flag, Kind
from appliance.ipc.ring import Ring
from metrics import fast
from metrics import registry as m
from workers.durability import report_disk_full, syncfs
from workers.index.schema import (
    InstanceRecord,
    Outcome,
    is_current_record,
    pack_record,
    unpack_record,
)
from workers.index.writer import IndexWriter

log = structlog.get_logger(component="index_writer")

_POLICIES = [DuplicatePolicy.KEEP, DuplicatePolicy.OVERWRITE, DuplicatePolicy.REJECT]
_BEAT_INTERVAL_S = 0.25  # heartbeat (and orphan check) at least this often while busy
INDEX_FAILED = 0xFFFF  # ack code (outside Outcome) for a record that could not be indexed
INDEX_OUT_OF_RESOURCES = 0xFFFE  # ack code: the commit failed for lack of space (0xA700)
_OUTCOME_LABELS = {int(o): o.name.lower() for o in Outcome}
# Outcome values 0..3, as plain ints: audit_batch counts outcomes in a list indexed by them.
_STORED, _DUPLICATE_KEPT, _OVERWRITTEN, _REJECTED = (int(o) for o in (
    Outcome.STORED, Outcome.DUPLICATE_KEPT, Outcome.OVERWRITTEN, Outcome.REJECTED))


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
        self.data_dir = Path(cfg.storage.data_dir)
        self.mode = cfg.storage.durability
        self.writer = IndexWriter(
            self.data_dir / "index",
            map_size=cfg.storage.index_map_size_bytes,
            sync=self.mode is not Durability.OS,
        )
        self.rings: dict[int, SlotRings] = {}
        self.retired: list[SlotRings] = []
        for slot, gen, idx_fds, ack_fds in slots:
            self.rings[slot] = SlotRings(slot, gen, Ring.attach(idx_fds), Ring.attach(ack_fds))
        self.control = control
        self.heartbeat = heartbeat
        self.stopping = False
        self.commits = 0
        # The metric tallies used per commit, looked up once (metrics/fast.py).
        self._commit_seconds = fast.histogram(m.INDEX_COMMIT)
        self._batch_records = fast.histogram(m.INDEX_BATCH)
        self._record_tallies: defaultdict[int, fast.Tally] = defaultdict(
            lambda: fast.counter(m.INDEX_RECORDS, "failed"))
        for code, label in _OUTCOME_LABELS.items():
            self._record_tallies[code] = fast.counter(m.INDEX_RECORDS, label)

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
        t0 = time.monotonic()
        results: dict[int, tuple[int, str]] = {}
        committed: list[tuple[InstanceRecord, Outcome]] = []
        if self._flush_files(batch, results):
            committed = self._index(batch, results)
        self.commits += 1
        if audit.LOG.enabled and committed:
            audit_batch(committed, self.cfg.network.ae_title)
        self._commit_seconds.observe(time.monotonic() - t0)
        self._batch_records.observe(len(batch))
        tallies = self._record_tallies
        acked: dict[int, SlotRings] = {}
        for i, (sr, token, _, _) in enumerate(batch):
            code, old = results[i]
            tallies[code].inc()
            sr.backlog.append((token, code, old.encode()))
            acked[sr.slot] = sr
        for sr in acked.values():
            self._flush_backlog(sr)

    def _flush_files(self, batch: list[tuple[SlotRings, int, int, bytes]],
                     results: dict[int, tuple[int, str]]) -> bool:
        """batch mode: the batch's files reach the disk before their records; False (and every
        record refused) when the flush reports a writeback error: their data may be lost."""
        if self.mode is not Durability.BATCH:
            return True
        try:
            syncfs(self.data_dir)
        except OSError as exc:
            log.error("index_writer.syncfs_failed", records=len(batch), error=str(exc))
            report_disk_full(self.data_dir, 0)
            results.update((i, (INDEX_OUT_OF_RESOURCES, "flush to disk failed"))
                           for i in range(len(batch)))
            return False
        return True

    def _index(self, batch: list[tuple[SlotRings, int, int, bytes]],
               results: dict[int, tuple[int, str]]) -> list[tuple[InstanceRecord, Outcome]]:
        """One transaction per duplicate policy present; fills ``results``, returns what
        was committed."""
        by_policy: dict[int, list[int]] = {}
        for i, (_, _, policy, _) in enumerate(batch):
            by_policy.setdefault(policy, []).append(i)
        committed: list[tuple[InstanceRecord, Outcome]] = []
        for policy, idxs in by_policy.items():
            if policy >= len(_POLICIES):
                for i in idxs:
                    results[i] = (INDEX_FAILED, f"unknown duplicate policy {policy}")
                continue
            good, records, packed = _decode(batch, idxs, results)
            if not records:
                continue
            try:
                outcomes = self.writer.apply_batch(records, _POLICIES[policy], packed)
            except (lmdb.PanicError, lmdb.CorruptedError):
                raise
            except lmdb.Error as exc:  # MapFullError never gets here: the writer grows the map
                log.error("index_writer.commit_failed", records=len(records), error=str(exc))
                report_disk_full(self.data_dir, 0)
                results.update((i, (INDEX_OUT_OF_RESOURCES, "index write failed (disk full?)"))
                               for i in good)
                continue
            for i, res in zip(good, outcomes, strict=True):
                results[i] = (int(res.outcome), res.old_relpath or "")
            committed += zip(records, (res.outcome for res in outcomes), strict=True)
        return committed

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


def audit_batch(committed: list[tuple[InstanceRecord, Outcome]], our_ae: str) -> None:
    """One INSTANCES_STORED audit event per (calling AE, study) of a committed batch: counts
    and SOP classes (PS3.15 A.5.3.4 participant object: the study), action C, or U when a
    stored copy was replaced. Duplicates kept or rejected are counted, not stored."""
    groups: dict[tuple[str, str], list[tuple[InstanceRecord, Outcome]]] = {}
    for item in committed:
        rec = item[0]
        group = groups.get((rec.calling_ae, rec.study_instance_uid))
        if group is None:
            groups[(rec.calling_ae, rec.study_instance_uid)] = [item]
        else:
            group.append(item)
    log_ = audit.LOG
    for (calling_ae, study_uid), items in groups.items():
        # Counted by Outcome value in a list: enum .name is a descriptor call and dict
        # lookups add up (profiled: this runs once per commit, per object at small batches).
        counts = [0] * len(_OUTCOME_LABELS)
        sop_classes: dict[str, int] = {}
        for rec, outcome in items:
            counts[outcome] += 1
            if outcome in (_STORED, _OVERWRITTEN):
                sop_classes[rec.sop_class_uid] = sop_classes.get(rec.sop_class_uid, 0) + 1
        first = items[0][0]
        replaced = counts[_OVERWRITTEN]
        log_.emit(
            audit.AuditEvent.INSTANCES_STORED,
            action="U" if replaced else "C",
            source_ae=calling_ae, destination_ae=our_ae, study_instance_uid=study_uid,
            instances=counts[_STORED] + replaced, duplicates=counts[_DUPLICATE_KEPT],
            rejected=counts[_REJECTED], replaced=replaced, sop_classes=sop_classes,
            patient={"PatientID": first.patient_id, "PatientName": first.patient_name}
            if log_.patient_values else None,
        )


def _decode(
    batch: list[tuple[SlotRings, int, int, bytes]], idxs: list[int],
    results: dict[int, tuple[int, str]],
) -> tuple[list[int], list[InstanceRecord], list[bytes]]:
    """Unpack the records at ``idxs``; the unusable ones get INDEX_FAILED in ``results``.
    Also returns each record's packed form, to store: the payload itself when it is
    ``pack_record``'s output for this schema (what workers send), so it is not packed again."""
    good: list[int] = []
    records: list[InstanceRecord] = []
    packed: list[bytes] = []
    for i in idxs:
        payload = batch[i][3]
        try:
            rec = unpack_record(payload)
        except (ValueError, TypeError) as exc:
            results[i] = (INDEX_FAILED, f"unreadable index record: {exc}")
            continue
        if not (rec.sop_instance_uid and rec.series_instance_uid and rec.study_instance_uid):
            results[i] = (INDEX_FAILED, "record without UIDs")
            continue
        good.append(i)
        records.append(rec)
        packed.append(payload if is_current_record(payload) else pack_record(rec))
    return good, records, packed


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
