"""Read side of the index: workers answering queries, the CLI, tests (DESIGN "Index (LMDB)").

Every call begins a fresh read-only transaction, so it sees every commit made before it and
never blocks the writer (LMDB MVCC). Iterators hold their snapshot until exhausted or closed:
consume them promptly, since a long-lived reader keeps the writer from reusing old pages.
If the writer grew the map beyond this process's mapping, LMDB reports MapResizedError at
``begin``; adopting the new size (``set_mapsize(0)``) and retrying is the documented cure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb

from workers.index.schema import (
    SAVED_BYTES_KEY,
    STORED_BYTES_KEY,
    IndexEnv,
    InstanceRecord,
    PatientRecord,
    SeriesRecord,
    StudyRecord,
    key,
    normalize_person_name,
    open_index,
    patient_key,
    unpack,
    unpack_record,
)


@dataclass(frozen=True, slots=True)
class IndexStats:
    patients: int
    studies: int
    series: int
    instances: int
    stored_bytes: int
    saved_bytes: int = 0  # disk bytes saved by compression on ingest (workers/compress.py)


# Secondary index name -> how a query value is turned into its key.
def _verbatim(value: str) -> str:
    return value.strip()


_SECONDARY: dict[str, tuple[str, Callable[[str], str]]] = {
    "patient_id": ("by_patient_id", _verbatim),
    "patient_name": ("by_patient_name", normalize_person_name),
    "study_date": ("by_study_date", _verbatim),
    "accession_number": ("by_accession", _verbatim),
    "modality": ("by_modality", _verbatim),
}


class IndexReader:
    """Read-only access; open one per process after fork (LMDB envs are not fork-safe)."""

    def __init__(self, path: str | Path) -> None:
        self._index: IndexEnv = open_index(path, readonly=True, map_size=0)
        self._owns_env = True

    @classmethod
    def sharing(cls, index: IndexEnv) -> IndexReader:
        """A reader on an environment this process already has open (LMDB forbids opening
        one environment twice in a process): single-process tools and tests."""
        reader = cls.__new__(cls)
        reader._index = index
        reader._owns_env = False
        return reader

    def close(self) -> None:
        if self._owns_env:
            self._index.env.close()

    def _begin(self) -> lmdb.Transaction:
        try:
            return self._index.env.begin()
        except lmdb.MapResizedError:
            self._index.env.set_mapsize(0)
            return self._index.env.begin()

    def _db(self, name: str) -> Any:
        return self._index.dbs[name]

    # ---- point lookups ---------------------------------------------------------------

    def get_instance(self, sop_instance_uid: str) -> InstanceRecord | None:
        with self._begin() as txn:
            raw = txn.get(key(sop_instance_uid), db=self._db("instances"))
        return unpack_record(raw) if raw is not None else None

    def get_study(self, study_instance_uid: str) -> StudyRecord | None:
        with self._begin() as txn:
            raw = txn.get(key(study_instance_uid), db=self._db("studies"))
        return unpack(StudyRecord, raw) if raw is not None else None

    def get_series(self, series_instance_uid: str) -> SeriesRecord | None:
        with self._begin() as txn:
            raw = txn.get(key(series_instance_uid), db=self._db("series"))
        return unpack(SeriesRecord, raw) if raw is not None else None

    def get_patient(self, patient_id: str) -> PatientRecord | None:
        with self._begin() as txn:
            raw = txn.get(patient_key(patient_id), db=self._db("patients"))
        return unpack(PatientRecord, raw) if raw is not None else None

    def stats(self) -> IndexStats:
        with self._begin() as txn:
            def entries(name: str) -> int:
                return int(txn.stat(self._db(name))["entries"])

            return IndexStats(
                patients=entries("patients"), studies=entries("studies"),
                series=entries("series"), instances=entries("instances"),
                stored_bytes=int(bytes(txn.get(STORED_BYTES_KEY, b"0", db=self._db("meta")))),
                saved_bytes=int(bytes(txn.get(SAVED_BYTES_KEY, b"0", db=self._db("meta")))),
            )

    # ---- scans -----------------------------------------------------------------------

    def studies(self) -> Iterator[StudyRecord]:
        with self._begin() as txn:
            for _, raw in txn.cursor(db=self._db("studies")):
                yield unpack(StudyRecord, raw)

    def series_of(self, study_instance_uid: str) -> Iterator[SeriesRecord]:
        with self._begin() as txn:
            series_db = self._db("series")
            for uid in _dups(txn, self._db("study_series"), key(study_instance_uid)):
                raw = txn.get(uid, db=series_db)
                if raw is not None:
                    yield unpack(SeriesRecord, raw)

    def instances_of(self, series_instance_uid: str) -> Iterator[InstanceRecord]:
        with self._begin() as txn:
            instances = self._db("instances")
            for uid in _dups(txn, self._db("series_instances"), key(series_instance_uid)):
                raw = txn.get(uid, db=instances)
                if raw is not None:
                    yield unpack_record(raw)

    def study_uids_matching(self, attribute: str, value: str) -> list[str]:
        """Study UIDs whose ``attribute`` equals ``value`` (single value matching,
        PS3.4 C.2.2.2.1) through the secondary index; ``attribute`` is one of patient_id,
        patient_name (normalized first), study_date, accession_number, modality."""
        db, normalize = _SECONDARY[attribute]
        k = normalize(value)
        if not k:
            return []
        with self._begin() as txn:
            return [bytes(uid).decode() for uid in _dups(txn, self._db(db), key(k))]

    # ---- query support (workers.query) -----------------------------------------------

    @contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """One read-only transaction for a bounded piece of work (a page of C-FIND matches):
        callers must not keep it across I/O, since an open reader pins old pages."""
        with self._begin() as txn:
            yield Snapshot(txn, self._index.dbs)


def _dups(txn: lmdb.Transaction, db: Any, k: bytes) -> Iterator[bytes]:
    cursor = txn.cursor(db=db)
    if cursor.set_key(k):
        for value in cursor.iternext_dup(keys=False, values=True):
            yield bytes(value)


class Snapshot:
    """Typed reads inside one read-only transaction: record gets by raw key, duplicate
    counts, and resumable scans of the primary and secondary (dupsort) sub-databases.

    Scans take a ``start`` position (inclusive) so that a long scan can be split over several
    short transactions: the caller remembers the last position it consumed and resumes there.
    """

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, Any]) -> None:
        self._txn = txn
        self._dbs = dbs

    def get(self, db: str, k: bytes) -> bytes | None:
        raw = self._txn.get(k, db=self._dbs[db])
        return bytes(raw) if raw is not None else None

    def patient(self, k: bytes) -> PatientRecord | None:
        raw = self._txn.get(k, db=self._dbs["patients"])
        return unpack(PatientRecord, raw) if raw is not None else None

    def study(self, k: bytes) -> StudyRecord | None:
        raw = self._txn.get(k, db=self._dbs["studies"])
        return unpack(StudyRecord, raw) if raw is not None else None

    def series(self, k: bytes) -> SeriesRecord | None:
        raw = self._txn.get(k, db=self._dbs["series"])
        return unpack(SeriesRecord, raw) if raw is not None else None

    def instance(self, k: bytes) -> InstanceRecord | None:
        raw = self._txn.get(k, db=self._dbs["instances"])
        return unpack_record(raw) if raw is not None else None

    def dup_count(self, db: str, k: bytes) -> int:
        """Number of values under ``k`` in a dupsort sub-database (0 when absent)."""
        cursor = self._txn.cursor(db=self._dbs[db])
        return int(cursor.count()) if cursor.set_key(k) else 0

    def dups(self, db: str, k: bytes, start: bytes | None = None) -> Iterator[bytes]:
        """Values under ``k`` in order, from the first one >= ``start``."""
        cursor = self._txn.cursor(db=self._dbs[db])
        found = cursor.set_range_dup(k, start) if start is not None else cursor.set_key(k)
        if not found:
            return
        yield bytes(cursor.value())
        while cursor.next_dup():
            yield bytes(cursor.value())

    def keys(self, db: str, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of a primary sub-database in key order, from the first key >= start."""
        cursor = self._txn.cursor(db=self._dbs[db])
        found = cursor.set_range(start) if start is not None else cursor.first()
        while found:
            yield bytes(cursor.key()), bytes(cursor.value())
            found = cursor.next()

    def range(
        self,
        db: str,
        low: bytes,
        high: bytes | None,
        *,
        prefix: bool = False,
        start: tuple[bytes, bytes] | None = None,
        unique_keys: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs of a dupsort sub-database with ``low <= key <= high`` (``high``
        None: no upper bound), or with keys starting with ``low`` when ``prefix``; in (key,
        value) order from ``start`` (inclusive). ``unique_keys`` yields each key once, with
        its first value (``start`` is then compared on the key only)."""
        cursor = self._txn.cursor(db=self._dbs[db])
        if start is None:
            found = cursor.set_range(low)
        elif unique_keys or not cursor.set_range_dup(*start):
            found = cursor.set_range(start[0])
            if found and not unique_keys and cursor.key() == start[0]:
                found = cursor.next_nodup()  # every value of this key is below start
        else:
            found = True
        step = cursor.next_nodup if unique_keys else cursor.next
        while found:
            k = bytes(cursor.key())
            if (not k.startswith(low)) if prefix else (high is not None and k > high):
                return
            yield k, bytes(cursor.value())
            found = step()
