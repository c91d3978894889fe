"""Read side of the index: workers answering queries, the CLI, tests (DESIGN "Index (LMDB)").

Every call begins a fresh read-only transaction, so it sees every commit made before it and
never blocks the writer (LMDB MVCC). Iterators hold their snapshot until exhausted or closed:
consume them promptly, since a long-lived reader keeps the writer from reusing old pages.
If the writer grew the map beyond this process's mapping, LMDB reports MapResizedError at
``begin``; adopting the new size (``set_mapsize(0)``) and retrying is the documented cure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb

from workers.index.schema import (
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


def _dups(txn: lmdb.Transaction, db: Any, k: bytes) -> Iterator[bytes]:
    cursor = txn.cursor(db=db)
    if cursor.set_key(k):
        for value in cursor.iternext_dup(keys=False, values=True):
            yield bytes(value)
