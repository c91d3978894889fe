"""One group commit of index records (DESIGN step 6-7), wherever the LMDB writer runs.

THEORY OF OPERATION
-------------------
The index writer process (workers/indexer.py) commits what every worker sends it; a lone
worker commits its own records in place (workers/inline_index.py). Both call ``commit`` with
the records of one batch, each as ``(duplicate policy code, packed record, record or None)``,
and get one ``(code, old relpath)`` per record back, in order:

  batch mode: syncfs(data dir)   - every object file of the batch (and its directory entry)
                                   reaches the disk in one flush;
              commit, synced     - the records become durable together;
  fsync mode: the workers already fsync'd each file; commit, synced;
  os mode:    commit without sync (survives our crash, not power loss);

``code`` is an ``Outcome`` value, ``INDEX_FAILED`` (a record that cannot be indexed: the worker
answers 0xC000) or ``INDEX_OUT_OF_RESOURCES`` (the flush or the commit failed for lack of
space: the worker removes the file and answers 0xA700). Only after ``commit`` returns may a
Success response go out. After each commit the audit trail gets one "DICOM Instances
Transferred" event (PS3.15 A.5.3.4) per calling AE and study: what is audited is what was made
durable.

A flush or commit that fails refuses that batch only: readiness is told the disk is full and
the next batch tries again. LMDB never overwrites pages a committed transaction uses, so a
failed commit leaves the index as the last one left it. ``lmdb.PanicError`` and
``CorruptedError`` propagate: the process exits and its supervisor deals with it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import lmdb
import structlog

from appliance import audit
from appliance.config import Config, DuplicatePolicy, Durability
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

INDEX_FAILED = 0xFFFF  # ack code (outside Outcome) for a record that could not be indexed
INDEX_OUT_OF_RESOURCES = 0xFFFE  # ack code: the commit failed for lack of space (0xA700)
POLICY_CODES = {DuplicatePolicy.KEEP: 0, DuplicatePolicy.OVERWRITE: 1, DuplicatePolicy.REJECT: 2}
_POLICIES = [DuplicatePolicy.KEEP, DuplicatePolicy.OVERWRITE, DuplicatePolicy.REJECT]
_OUTCOME_LABELS = {int(o): o.name.lower() for o in Outcome}
# Outcome values 0..3, as plain ints: audit_batch counts outcomes in a list indexed by them.
_STORED, _DUPLICATE_KEPT, _OVERWRITTEN, _REJECTED = (int(o) for o in (
    Outcome.STORED, Outcome.DUPLICATE_KEPT, Outcome.OVERWRITTEN, Outcome.REJECTED))

# (policy code, packed record, the record itself when the caller has it unpacked)
Item = tuple[int, bytes, InstanceRecord | None]
Result = tuple[int, str]  # (Outcome value or INDEX_* code, old relpath or reason)


def open_writer(cfg: Config) -> IndexWriter:
    """The index's LMDB writer as the durability mode wants it: commits synced unless `os`
    (for the index writer process and for workers committing their own records)."""
    return IndexWriter(Path(cfg.storage.data_dir) / "index",
                       map_size=cfg.storage.index_map_size_bytes,
                       sync=cfg.storage.durability is not Durability.OS)


class GroupCommit:
    def __init__(self, cfg: Config, writer: IndexWriter) -> None:
        self.cfg = cfg
        self.writer = writer
        self.data_dir = Path(cfg.storage.data_dir)
        self.mode = cfg.storage.durability
        self.commits = 0
        # The metric tallies used per commit, looked up once (metrics/fast.py).
        self._commit_seconds = fast.histogram(m.INDEX_COMMIT)
        self._batch_records = fast.histogram(m.INDEX_BATCH)
        self._record_tallies: defaultdict[int, fast.Tally] = defaultdict(
            lambda: fast.counter(m.INDEX_RECORDS, "failed"))
        for code, label in _OUTCOME_LABELS.items():
            self._record_tallies[code] = fast.counter(m.INDEX_RECORDS, label)

    def commit(self, batch: Sequence[Item]) -> list[Result]:
        t0 = time.monotonic()
        results: dict[int, Result] = {}
        committed: list[tuple[InstanceRecord, Outcome]] = []
        if self._flush_files(batch, results):
            committed = self._index(batch, results)
        self.commits += 1
        if audit.LOG.enabled and committed:
            audit_batch(committed, self.cfg.network.ae_title)
        self._commit_seconds.observe(time.monotonic() - t0)
        self._batch_records.observe(len(batch))
        tallies = self._record_tallies
        out = [results[i] for i in range(len(batch))]
        for code, _ in out:
            tallies[code].inc()
        return out

    def _flush_files(self, batch: Sequence[Item], results: dict[int, Result]) -> bool:
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

    def _index(self, batch: Sequence[Item], results: dict[int, Result]
               ) -> list[tuple[InstanceRecord, Outcome]]:
        """One transaction per duplicate policy present; fills ``results``, returns what
        was committed."""
        by_policy: dict[int, list[int]] = {}
        for i, item in enumerate(batch):
            by_policy.setdefault(item[0], []).append(i)
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


def _decode(batch: Sequence[Item], idxs: list[int], results: dict[int, Result]
            ) -> tuple[list[int], list[InstanceRecord], list[bytes]]:
    """The records at ``idxs`` (unpacked unless the caller passed them); the unusable ones get
    INDEX_FAILED in ``results``. Also returns each record's packed form, to store: the payload
    itself when it is ``pack_record``'s output for this schema (what workers send), so it is
    not packed again."""
    good: list[int] = []
    records: list[InstanceRecord] = []
    packed: list[bytes] = []
    for i in idxs:
        _, payload, rec = batch[i]
        if rec is None:
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
