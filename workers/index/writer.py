"""The only LMDB writer: a batch of records in one write transaction (DESIGN step 6).

THEORY OF OPERATION
-------------------
``apply_batch`` runs the whole batch in ONE write transaction (group commit): its cost is one
commit (one fsync pair with ``sync=True``) however many records it holds. Records apply in
order, each seeing the effects of those before it, so two records with one SOP Instance UID
behave exactly as if they had arrived in two batches.

Within the transaction the patient / study / series records touched are cached and written
back once at the end (a batch of one series' instances rewrites that series once, not per
instance). Secondary (dupsort) entries and instance records are written as they change.

Duplicates (same SOP Instance UID already indexed), per ``DuplicatePolicy``:
  KEEP      -> DUPLICATE_KEPT, the index is unchanged;
  REJECT    -> REJECTED, the index is unchanged;
  OVERWRITE -> OVERWRITTEN: the old instance is removed and the new one inserted, with every
               count on both sides updated, so an instance re-sent under another series or
               study moves there (a delete followed by an insert).
``old_relpath`` is the relative path of the record that was in the index: the caller deletes
that file after an overwrite when it differs from the new one, or the new file after KEEP /
REJECT when *that* differs.

The hierarchy is fixed by the first instance (schema.py): an instance counts under the study
its series record names, and under the patient its study record names, even when the instance
itself claims otherwise; removal follows the same records, so counts always balance.

Between transactions the writer keeps the parent records (and the meta totals) the last
commits wrote, up to ``_CARRY_MAX`` per level, so that one-record commits (``os`` durability,
one object per association in flight) do not read and unpack the same series, study and
patient again each time. The carry is valid only for the state it was taken from: a write
transaction's id is the last committed id + 1 (LMDB serialises writers), so a new transaction
uses it only when its id follows the commit that left it (any other writer's commit in
between, e.g. ``pacs db repair``, makes the carry stale and it is dropped). A transaction
takes the carried records it uses out of the carry and changes them in place; only its
successful commit puts them back, so an aborted one (an exception, MapFullError) leaves the
carry as the last commit left it.

MapFullError aborts the transaction; the map is doubled (``set_mapsize``, allowed because no
transaction of ours is open) and the batch is retried from the start. Growing costs nothing
until pages are written (the file is sparse); readers in other processes adopt the new size
when their next transaction reports MapResizedError (reader.py); so does a writer whose map
another writer grew (the transaction is begun again). If the volume itself is full,
the commit fails with an lmdb.Error (EIO for the short write) and the transaction is aborted:
LMDB writes only to free pages and switches the meta page last, so the index stays as the last
successful commit left it (the index writer refuses that batch, workers/indexer.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import lmdb
import structlog

from appliance.config import DuplicatePolicy
from workers.index.schema import (
    DEFAULT_MAP_SIZE,
    SAVED_BYTES_KEY,
    STORED_BYTES_KEY,
    IndexEnv,
    InstanceRecord,
    Outcome,
    PatientRecord,
    SeriesRecord,
    StudyRecord,
    key,
    open_index,
    pack,
    pack_record,
    patient_from,
    patient_key,
    series_from,
    study_from,
    study_index_values,
    unpack,
    unpack_record,
)

R = TypeVar("R", PatientRecord, StudyRecord, SeriesRecord)
T = TypeVar("T")

_CARRY_MAX = 256  # parent records per level carried between transactions (LRU)

log = structlog.get_logger(component="index_writer")


@dataclass(frozen=True, slots=True)
class ApplyResult:
    outcome: Outcome
    old_relpath: str | None  # relpath of the record already indexed (None when STORED)


_STORED = ApplyResult(Outcome.STORED, None)  # immutable: one object for every new instance


class _Carry:
    """Parent records and meta totals as of the commit ``txn_id`` (see the module doc)."""

    __slots__ = ("txn_id", "patients", "studies", "series", "stored_bytes", "saved_bytes")

    def __init__(self) -> None:
        self.patients: dict[bytes, PatientRecord | None] = {}
        self.studies: dict[bytes, StudyRecord | None] = {}
        self.series: dict[bytes, SeriesRecord | None] = {}
        self.reset(-2)

    def reset(self, txn_id: int) -> None:
        """Forget everything; what is read from now on reflects commit ``txn_id``."""
        self.txn_id = txn_id
        self.patients.clear()
        self.studies.clear()
        self.series.clear()
        self.stored_bytes: int | None = None
        self.saved_bytes: int | None = None

    def keep(self, batch: _Batch, txn_id: int) -> None:
        """After ``batch`` committed as ``txn_id``: its records are the newest (LRU order)."""
        self.txn_id = txn_id
        _newest(self.patients, batch.patients)
        _newest(self.studies, batch.studies)
        _newest(self.series, batch.series)
        self.stored_bytes = batch.stored_bytes
        self.saved_bytes = batch.saved_bytes


class IndexWriter:
    """Owns the write side of the environment; one per appliance (the index writer process)."""

    def __init__(self, path: str | Path, map_size: int = DEFAULT_MAP_SIZE, sync: bool = True):
        self._index: IndexEnv = open_index(path, readonly=False, map_size=map_size, sync=sync)
        self.map_growths = 0
        self._carry = _Carry()

    @property
    def env(self) -> lmdb.Environment:
        return self._index.env

    @property
    def index(self) -> IndexEnv:
        """The open environment, for ``IndexReader.sharing`` in the same process."""
        return self._index

    def close(self) -> None:
        self._index.env.close()

    def apply_batch(
        self, records: Sequence[InstanceRecord], policy: DuplicatePolicy,
        packed: Sequence[bytes] | None = None,
    ) -> list[ApplyResult]:
        """Index ``records`` in one transaction; one result per record, in order.

        ``packed``: each record's ``pack_record()`` bytes when the caller has them (the index
        writer receives records packed), stored as they are instead of packed again.
        Raises ValueError (before touching the index) for a record without SOP Instance,
        Series or Study UID: callers validate with ``header.validate_against_command`` first.
        """
        for r in records:
            if not (r.sop_instance_uid and r.series_instance_uid and r.study_instance_uid):
                raise ValueError(f"record without UIDs cannot be indexed: {r.relpath!r}")
        if packed is not None and len(packed) != len(records):
            raise ValueError("packed must hold one value per record")

        def run(batch: _Batch) -> list[ApplyResult]:
            if packed is None:
                return [batch.apply(r, policy, None) for r in records]
            return [batch.apply(r, policy, v) for r, v in zip(records, packed, strict=True)]

        return self._write(run)

    def delete_instance(self, sop_instance_uid: str) -> InstanceRecord | None:
        """Remove one instance (counts and empty parents too); returns the removed record."""

        def run(batch: _Batch) -> InstanceRecord | None:
            return batch.delete(sop_instance_uid)

        return self._write(run)

    def _write(self, run: Callable[[_Batch], T]) -> T:
        carry = self._carry
        while True:
            try:
                with self._index.env.begin(write=True) as txn:
                    txn_id = txn.id()
                    if txn_id != carry.txn_id + 1:  # another writer committed since
                        carry.reset(txn_id - 1)
                    batch = _Batch(txn, self._index.dbs, carry)
                    result = run(batch)
                    batch.flush()
            except lmdb.MapFullError:
                self._grow()
                continue
            except lmdb.MapResizedError:
                # Another process (`pacs ingest` beside `pacs serve`, `pacs db repair`) grew
                # the map past ours: adopt its size (0 = the size in the file) and retry.
                self._index.env.set_mapsize(0)
                continue
            if batch.dirty:
                carry.keep(batch, txn_id)
            # else nothing was written: LMDB committed nothing and the id was not used
            return result

    def _grow(self) -> None:
        env = self._index.env
        size = env.info()["map_size"] * 2
        env.set_mapsize(size)
        self.map_growths += 1
        log.info("index.map_grown", map_size_bytes=size)


class _Batch:
    """One write transaction's view: cached parent records, written back by ``flush``."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, Any], carry: _Carry) -> None:
        self.txn = txn
        self.dbs = dbs
        self.carry = carry
        # key -> record, or None for "absent / deleted" (flush deletes it)
        self.patients: dict[bytes, PatientRecord | None] = {}
        self.studies: dict[bytes, StudyRecord | None] = {}
        self.series: dict[bytes, SeriesRecord | None] = {}
        self.stored_bytes_delta = 0
        self.saved_bytes_delta = 0  # compression on ingest (InstanceRecord.saved_bytes)
        self.stored_bytes = carry.stored_bytes  # the totals after flush (None: not read)
        self.saved_bytes = carry.saved_bytes
        self.dirty = False  # something was put or deleted (LMDB will commit a new txn id)

    def _get(self, cache: dict[bytes, R | None], carried: dict[bytes, R | None], db: str,
             cls: type[R], k: bytes) -> R | None:
        if k in cache:
            return cache[k]
        rec: R | None
        if k in carried:
            rec = carried.pop(k)  # Carry.keep puts it back, as the newest
        else:
            raw = self.txn.get(k, db=self.dbs[db])
            rec = unpack(cls, raw) if raw is not None else None
        cache[k] = rec
        return rec

    # ---- operations ------------------------------------------------------------------

    def apply(self, r: InstanceRecord, policy: DuplicatePolicy, packed: bytes | None
              ) -> ApplyResult:
        sop = key(r.sop_instance_uid)
        old_raw = self.txn.get(sop, db=self.dbs["instances"])
        if old_raw is None:
            self._insert(r, sop, packed)
            return _STORED
        old = unpack_record(old_raw)
        if policy == DuplicatePolicy.KEEP:
            return ApplyResult(Outcome.DUPLICATE_KEPT, old.relpath)
        if policy == DuplicatePolicy.REJECT:
            return ApplyResult(Outcome.REJECTED, old.relpath)
        self._remove(old, sop)
        self._insert(r, sop, packed)
        return ApplyResult(Outcome.OVERWRITTEN, old.relpath)

    def delete(self, sop_instance_uid: str) -> InstanceRecord | None:
        sop = key(sop_instance_uid)
        old_raw = self.txn.get(sop, db=self.dbs["instances"])
        if old_raw is None:
            return None
        old = unpack_record(old_raw)
        self._remove(old, sop)
        return old

    def _insert(self, r: InstanceRecord, sop: bytes, packed: bytes | None) -> None:
        txn, dbs, carry = self.txn, self.dbs, self.carry
        self.dirty = True
        txn.put(sop, pack_record(r) if packed is None else packed, db=dbs["instances"])
        se_k = key(r.series_instance_uid)
        series = self._get(self.series, carry.series, "series", SeriesRecord, se_k)
        new_series = series is None
        if series is None:
            series = self.series[se_k] = series_from(r)
        st_k = key(series.study_instance_uid)
        study = self._get(self.studies, carry.studies, "studies", StudyRecord, st_k)
        new_study = study is None
        if study is None:
            study = self.studies[st_k] = study_from(r)
            for db, value in study_index_values(study).items():
                if value:
                    txn.put(key(value), st_k, db=dbs[db])
        p_k = patient_key(study.patient_id)
        patient = self._get(self.patients, carry.patients, "patients", PatientRecord, p_k)
        if patient is None:
            patient = self.patients[p_k] = patient_from(r)
        if new_study:
            patient.number_of_patient_related_studies += 1
        if new_series:
            study.number_of_study_related_series += 1
            patient.number_of_patient_related_series += 1
            txn.put(st_k, se_k, db=dbs["study_series"])
        txn.put(se_k, sop, db=dbs["series_instances"])
        series.number_of_series_related_instances += 1
        study.number_of_study_related_instances += 1
        patient.number_of_patient_related_instances += 1
        series.stored_bytes += r.size_bytes
        study.stored_bytes += r.size_bytes
        self.stored_bytes_delta += r.size_bytes
        self.saved_bytes_delta += r.saved_bytes
        if r.modality and _count_up(study.modalities, r.modality):
            txn.put(key(r.modality), st_k, db=dbs["by_modality"])
        if r.sop_class_uid:
            _count_up(study.sop_classes, r.sop_class_uid)

    def _remove(self, old: InstanceRecord, sop: bytes) -> None:
        txn, dbs, carry = self.txn, self.dbs, self.carry
        self.dirty = True  # the instance record exists (just read): deleting it writes
        txn.delete(sop, db=dbs["instances"])
        se_k = key(old.series_instance_uid)
        txn.delete(se_k, sop, db=dbs["series_instances"])
        self.stored_bytes_delta -= old.size_bytes
        self.saved_bytes_delta -= old.saved_bytes
        series = self._get(self.series, carry.series, "series", SeriesRecord, se_k)
        study = patient = None
        st_k = p_k = b""
        if series is not None:
            st_k = key(series.study_instance_uid)
            study = self._get(self.studies, carry.studies, "studies", StudyRecord, st_k)
        if study is not None:
            p_k = patient_key(study.patient_id)
            patient = self._get(self.patients, carry.patients, "patients", PatientRecord, p_k)
        if series is None or study is None or patient is None:
            return  # cannot happen while the schema invariants hold; nothing left to count
        series.number_of_series_related_instances -= 1
        study.number_of_study_related_instances -= 1
        patient.number_of_patient_related_instances -= 1
        series.stored_bytes -= old.size_bytes
        study.stored_bytes -= old.size_bytes
        if old.modality and _count_down(study.modalities, old.modality):
            txn.delete(key(old.modality), st_k, db=dbs["by_modality"])
        if old.sop_class_uid:
            _count_down(study.sop_classes, old.sop_class_uid)
        if series.number_of_series_related_instances <= 0:
            self.series[se_k] = None
            txn.delete(st_k, se_k, db=dbs["study_series"])
            study.number_of_study_related_series -= 1
            patient.number_of_patient_related_series -= 1
        if study.number_of_study_related_instances <= 0:
            self.studies[st_k] = None
            for db, value in study_index_values(study).items():
                if value:
                    txn.delete(key(value), st_k, db=dbs[db])
            patient.number_of_patient_related_studies -= 1
        if patient.number_of_patient_related_instances <= 0:
            self.patients[p_k] = None

    # ---- write-back ------------------------------------------------------------------

    def flush(self) -> None:
        txn, dbs = self.txn, self.dbs
        caches: tuple[tuple[str, dict[bytes, Any]], ...] = (
            ("patients", self.patients), ("studies", self.studies), ("series", self.series))
        for db, cache in caches:
            for k, rec in cache.items():
                if rec is None:
                    txn.delete(k, db=dbs[db])
                else:
                    txn.put(k, pack(rec), db=dbs[db])
        if self.stored_bytes_delta:
            meta = dbs["meta"]
            total = self.stored_bytes
            if total is None:
                total = int(txn.get(STORED_BYTES_KEY, b"0", db=meta))
            self.stored_bytes = total = total + self.stored_bytes_delta
            txn.put(STORED_BYTES_KEY, str(total).encode(), db=meta)
        if self.saved_bytes_delta:
            meta = dbs["meta"]
            saved = self.saved_bytes
            if saved is None:
                saved = int(txn.get(SAVED_BYTES_KEY, b"0", db=meta))
            self.saved_bytes = saved = saved + self.saved_bytes_delta
            txn.put(SAVED_BYTES_KEY, str(saved).encode(), db=meta)


def _newest(carried: dict[bytes, R | None], touched: dict[bytes, R | None]) -> None:
    """Add a committed batch's records as the most recent (``_Batch._get`` popped the carried
    ones it used), dropping the least recently used beyond ``_CARRY_MAX``."""
    carried.update(touched)
    while len(carried) > _CARRY_MAX:
        del carried[next(iter(carried))]


def _count_up(counts: dict[str, int], value: str) -> bool:
    """Increment; True when ``value`` is new (its secondary entry must be added)."""
    n = counts.get(value, 0)
    counts[value] = n + 1
    return n == 0


def _count_down(counts: dict[str, int], value: str) -> bool:
    """Decrement; True when ``value`` is gone (its secondary entry must be removed)."""
    n = counts.get(value, 0)
    if n <= 1:
        counts.pop(value, None)
        return True
    counts[value] = n - 1
    return False
