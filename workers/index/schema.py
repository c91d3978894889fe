"""The LMDB index: environment, sub-databases, keys and record packing (DESIGN "Index (LMDB)").

THEORY OF OPERATION
-------------------
One environment at ``<data>/index`` holds named sub-databases:

    meta             b"schema_version" -> b"1"; b"stored_bytes" -> decimal total of size_bytes;
                     b"saved_bytes" -> decimal total saved by compression on ingest
    patients         patient key  -> PatientRecord
    studies          Study UID    -> StudyRecord
    series           Series UID   -> SeriesRecord
    instances        SOP UID      -> InstanceRecord (the full record as indexed)
    study_series     Study UID    -> Series UID        (dupsort)
    series_instances Series UID   -> SOP UID           (dupsort)
    by_patient_id    PatientID    -> Study UID         (dupsort; C-FIND keys, PS3.4 C.6.1.1.3)
    by_patient_name  normalized PatientName -> Study UID
    by_study_date    StudyDate    -> Study UID
    by_accession     AccessionNumber -> Study UID
    by_modality      Modality     -> Study UID         (ModalitiesInStudy)

Values are msgpack arrays in the dataclass field order (a fixed schema: never pickle).
Invariants kept by the writer, in the same transaction as each change:
  - one instance record per SOP Instance UID;
  - a series exists iff it has instances, a study iff it has series, a patient iff it has
    studies; the derived counts (PS3.4 C.3.4 "Number of ... Related ...") equal the records
    below them; secondary entries exist exactly for existing studies and non-empty values;
  - the hierarchy is fixed by the first instance: a series belongs to the study its first
    instance named, a study to that instance's patient (see writer.py).
An environment whose schema version is not ``SCHEMA_VERSION`` is refused (IndexSchemaError).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from enum import IntEnum
from operator import attrgetter
from pathlib import Path
from typing import Any, TypeVar

import lmdb
import msgpack

from appliance.config import DuplicatePolicy
from appliance.errors import IndexSchemaError
from workers.header import IndexAttributes

SCHEMA_VERSION = b"1"
SCHEMA_VERSION_KEY = b"schema_version"
STORED_BYTES_KEY = b"stored_bytes"
SAVED_BYTES_KEY = b"saved_bytes"  # absent in older indexes = 0, which they are
DEFAULT_MAP_SIZE = 64 * 1024**3  # sparse file: costs nothing until used

# The patient key for an empty PatientID: (0010,0020) is type 2, and many objects carry it
# empty. A NUL cannot occur in an LO value (PS3.5 §6.2), so it never collides with a real ID.
# All objects without a PatientID share this one patient record.
EMPTY_PATIENT_KEY = b"\x00"

PRIMARY_DBS = ("meta", "patients", "studies", "series", "instances")
DUPSORT_DBS = ("study_series", "series_instances", "by_patient_id", "by_patient_name",
               "by_study_date", "by_accession", "by_modality")
STUDY_INDEXES = ("by_patient_id", "by_patient_name", "by_study_date", "by_accession")

# LMDB's default maximum key size is 511 bytes, and dupsort values are keys too. UIDs are at
# most 64 bytes (PS3.5 §9.1) but hostile values can be longer: keys over the limit are
# shortened to a prefix plus a digest, still unique and still prefix-searchable.
_MAX_KEY_BYTES = 480


class Outcome(IntEnum):
    """What the index did with one record of a batch."""

    STORED = 0
    DUPLICATE_KEPT = 1  # policy KEEP: the first copy stays indexed
    OVERWRITTEN = 2  # policy OVERWRITE: ``old_relpath`` names the replaced file
    REJECTED = 3  # policy REJECT: answer 0x0111 Duplicate SOP Instance (PS3.7 C.5.6)


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceRecord(IndexAttributes):
    """One stored object: its index attributes plus where and how it was stored."""

    relpath: str  # relative to the data root (workers.layout)
    size_bytes: int  # the Part 10 file, File Meta included
    transfer_syntax_uid: str
    received_at: float  # seconds since the epoch
    calling_ae: str
    # Compressed on ingest (workers/compress.py): the syntax and Part 10 size as received.
    # "" / 0 = stored as received. Appended last: older records, one field shorter, still read.
    received_transfer_syntax_uid: str = ""
    received_size_bytes: int = 0

    @property
    def original_transfer_syntax_uid(self) -> str:
        """The transfer syntax the object was received in."""
        return self.received_transfer_syntax_uid or self.transfer_syntax_uid

    @property
    def saved_bytes(self) -> int:
        """Disk bytes saved by compression on ingest (0 when stored as received)."""
        return self.received_size_bytes - self.size_bytes if self.received_size_bytes else 0

    @classmethod
    def from_attributes(
        cls,
        attrs: IndexAttributes,
        *,
        relpath: str,
        size_bytes: int,
        transfer_syntax_uid: str,
        received_at: float,
        calling_ae: str,
        received_transfer_syntax_uid: str = "",
        received_size_bytes: int = 0,
    ) -> InstanceRecord:
        if cls is not InstanceRecord:
            values = {name: getattr(attrs, name) for name in _ATTRIBUTE_NAMES}
            return cls(**values, relpath=relpath, size_bytes=size_bytes,
                       transfer_syntax_uid=transfer_syntax_uid, received_at=received_at,
                       calling_ae=calling_ae,
                       received_transfer_syntax_uid=received_transfer_syntax_uid,
                       received_size_bytes=received_size_bytes)
        return _record_of((*_get_attributes(attrs), relpath, size_bytes, transfer_syntax_uid,
                           received_at, calling_ae, received_transfer_syntax_uid,
                           received_size_bytes))

    def attributes(self) -> IndexAttributes:
        return IndexAttributes(*(getattr(self, name) for name in _ATTRIBUTE_NAMES))


_ATTRIBUTE_NAMES = tuple(f.name for f in fields(IndexAttributes))
_RECORD_NAMES = tuple(f.name for f in fields(InstanceRecord))
# Records written before compression on ingest existed end at calling_ae.
_V1_RECORD_FIELDS = _RECORD_NAMES.index("calling_ae") + 1


# One record is built, packed and unpacked per stored object (worker and index writer): a
# C-level attrgetter and the slots' own setters instead of 44 getattr calls and the frozen
# dataclass __init__ (one object.__setattr__ per field): ~3x faster each (profiled).
_get_attributes = attrgetter(*_ATTRIBUTE_NAMES)
_get_record = attrgetter(*_RECORD_NAMES)
_RECORD_SETTERS = tuple(getattr(InstanceRecord, name).__set__ for name in _RECORD_NAMES)
_RECORD_DEFAULTS = tuple(f.default for f in fields(InstanceRecord))
_new = object.__new__


def _record_of(values: tuple[Any, ...] | list[Any]) -> InstanceRecord:
    """An InstanceRecord from its field values in order; missing trailing fields (records
    of an older schema) get their defaults."""
    rec: InstanceRecord = _new(InstanceRecord)
    for setter, value in zip(_RECORD_SETTERS, values, strict=False):
        setter(rec, value)
    for i in range(len(values), len(_RECORD_SETTERS)):
        _RECORD_SETTERS[i](rec, _RECORD_DEFAULTS[i])
    return rec


# msgpack.packb builds a Packer per call (a third of packing a record, measured); one
# Packer, reused, gives the same bytes. pack() holds the GIL throughout for these plain
# types (str, int, float, dict, tuple: no Python callbacks), so threads cannot interleave.
_pack = msgpack.Packer(use_bin_type=True).pack


def pack_record(record: InstanceRecord) -> bytes:
    """msgpack array in field order; the form records cross processes and sit in LMDB."""
    packed: bytes = _pack(_get_record(record))  # tuple -> array
    return packed


# pack_record's output starts with this msgpack array header (this schema's field count).
_CURRENT_HEADER = msgpack.Packer().pack_array_header(len(_RECORD_NAMES))


def is_current_record(data: bytes) -> bool:
    """True when ``data``, which ``unpack_record`` read, holds every field of this schema, so
    that it is what ``pack_record`` makes of that record (msgpack packs each value in its
    shortest form) and can be stored as it is."""
    return data.startswith(_CURRENT_HEADER)


def unpack_record(data: bytes | memoryview) -> InstanceRecord:
    values = msgpack.unpackb(data, raw=False, use_list=True)
    if not isinstance(values, list) or len(values) not in (len(_RECORD_NAMES),
                                                          _V1_RECORD_FIELDS):
        raise ValueError("not a packed InstanceRecord of this schema")
    return _record_of(values)


@dataclass(slots=True)
class PatientRecord:
    """Patient level (PS3.4 C.6.1.1.2); attributes from the patient's first instance."""

    patient_id: str
    patient_name: str
    issuer_of_patient_id: str
    patient_birth_date: str
    patient_sex: str
    specific_character_set: str
    number_of_patient_related_studies: int = 0
    number_of_patient_related_series: int = 0
    number_of_patient_related_instances: int = 0


@dataclass(slots=True)
class StudyRecord:
    """Study level (PS3.4 C.6.1.1.3) with the patient attributes C-FIND returns with it."""

    study_instance_uid: str
    patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    issuer_of_patient_id: str
    study_date: str
    study_time: str
    accession_number: str
    referring_physician_name: str
    study_id: str
    study_description: str
    institution_name: str
    specific_character_set: str
    # Instances per Modality / SOP Class: ModalitiesInStudy (0008,0061) and
    # SOPClassesInStudy (0008,0062) are the keys; the counts let removal be exact.
    modalities: dict[str, int] = field(default_factory=dict)
    sop_classes: dict[str, int] = field(default_factory=dict)
    number_of_study_related_series: int = 0
    number_of_study_related_instances: int = 0
    stored_bytes: int = 0

    @property
    def modalities_in_study(self) -> list[str]:
        return sorted(self.modalities)

    @property
    def sop_classes_in_study(self) -> list[str]:
        return sorted(self.sop_classes)


@dataclass(slots=True)
class SeriesRecord:
    """Series level (PS3.4 C.6.1.1.4)."""

    series_instance_uid: str
    study_instance_uid: str
    modality: str
    series_number: str
    series_description: str
    series_date: str
    series_time: str
    body_part_examined: str
    protocol_name: str
    station_name: str
    performed_procedure_step_start_date: str
    performed_procedure_step_start_time: str
    number_of_series_related_instances: int = 0
    stored_bytes: int = 0


R = TypeVar("R", PatientRecord, StudyRecord, SeriesRecord)


_NAMES: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in (PatientRecord, StudyRecord, SeriesRecord)
}


_GETTERS: dict[type[Any], attrgetter[Any]] = {cls: attrgetter(*names)
                                              for cls, names in _NAMES.items()}


def pack(obj: PatientRecord | StudyRecord | SeriesRecord) -> bytes:
    packed: bytes = _pack(_GETTERS[type(obj)](obj))  # tuple: array
    return packed


def unpack(cls: type[R], data: bytes | memoryview) -> R:
    values = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False)
    return cls(*values)


def patient_from(r: IndexAttributes) -> PatientRecord:
    return PatientRecord(r.patient_id, r.patient_name, r.issuer_of_patient_id,
                         r.patient_birth_date, r.patient_sex, r.specific_character_set)


def study_from(r: IndexAttributes) -> StudyRecord:
    return StudyRecord(r.study_instance_uid, r.patient_id, r.patient_name, r.patient_birth_date,
                       r.patient_sex, r.issuer_of_patient_id, r.study_date, r.study_time,
                       r.accession_number, r.referring_physician_name, r.study_id,
                       r.study_description, r.institution_name, r.specific_character_set)


def series_from(r: IndexAttributes) -> SeriesRecord:
    return SeriesRecord(r.series_instance_uid, r.study_instance_uid, r.modality,
                        r.series_number, r.series_description, r.series_date, r.series_time,
                        r.body_part_examined, r.protocol_name, r.station_name,
                        r.performed_procedure_step_start_date,
                        r.performed_procedure_step_start_time)


# ------------------------------------------------------------------------------------ keys


def key(value: str) -> bytes:
    """An LMDB key for a UID or attribute value (bounded length, see ``_MAX_KEY_BYTES``)."""
    raw = value.encode("utf-8", "surrogateescape")
    if len(raw) <= _MAX_KEY_BYTES:
        return raw
    return raw[: _MAX_KEY_BYTES - 41] + b"#" + hashlib.sha1(raw).hexdigest().encode()


def patient_key(patient_id: str) -> bytes:
    return key(patient_id) if patient_id else EMPTY_PATIENT_KEY


def normalize_person_name(name: str) -> str:
    """The form PatientName is indexed under: the alphabetic group (PS3.5 §6.2.1.1),
    components stripped and upper-cased, trailing empty components dropped. C-FIND matching
    (PS3.4 C.2.2.2.1) applies the same to the query value."""
    alphabetic = name.split("\\", 1)[0].split("=", 1)[0]
    parts = [p.strip().upper() for p in alphabetic.split("^")]
    while parts and not parts[-1]:
        parts.pop()
    return "^".join(parts)


def study_index_values(study: StudyRecord) -> dict[str, str]:
    """Secondary index name -> indexed value for a study (empty values are not indexed)."""
    return {
        "by_patient_id": study.patient_id,
        "by_patient_name": normalize_person_name(study.patient_name),
        "by_study_date": study.study_date,
        "by_accession": study.accession_number,
    }


# ------------------------------------------------------------------------------ environment


@dataclass(frozen=True, slots=True)
class IndexEnv:
    env: lmdb.Environment
    dbs: dict[str, Any]  # name -> lmdb._Database


def open_index(
    path: str | Path, *, readonly: bool, map_size: int = DEFAULT_MAP_SIZE, sync: bool = True
) -> IndexEnv:
    """Open (the writer: create) the environment and check the schema version.

    Readers open with ``readonly=True`` and ``lock=True``: LMDB readers register in the lock
    file's reader table, which is what keeps the writer from reusing pages they still see.
    ``sync=False`` commits without fsync (durability mode ``os``: survives our crash, not a
    power loss). Raises IndexSchemaError for another schema version or a missing index.
    """
    path = Path(path)
    if readonly and not (path / "data.mdb").exists():
        raise IndexSchemaError(f"no index at {path}")
    if not readonly:
        path.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(
        str(path), map_size=map_size, subdir=True, readonly=readonly, lock=True,
        max_dbs=len(PRIMARY_DBS) + len(DUPSORT_DBS) + 4,
        sync=sync, metasync=sync, readahead=False, max_readers=512,
    )
    try:
        # The version is checked before any other sub-database is created, so a writer never
        # adds tables to an index of another schema.
        dbs: dict[str, Any] = {"meta": env.open_db(b"meta", create=not readonly)}
        _check_version(env, dbs["meta"], readonly, path)
        for name in (*PRIMARY_DBS[1:], *DUPSORT_DBS):
            dbs[name] = env.open_db(name.encode(), create=not readonly,
                                    dupsort=name in DUPSORT_DBS)
    except lmdb.NotFoundError as exc:
        env.close()
        raise IndexSchemaError(f"index at {path} lacks a sub-database: {exc}") from exc
    except BaseException:
        env.close()
        raise
    return IndexEnv(env, dbs)


def _check_version(env: lmdb.Environment, meta: Any, readonly: bool, path: Path) -> None:
    with env.begin(write=not readonly) as txn:
        found = txn.get(SCHEMA_VERSION_KEY, db=meta)
        if found is None and not readonly:
            txn.put(SCHEMA_VERSION_KEY, SCHEMA_VERSION, db=meta)
            return
    if found != SCHEMA_VERSION:
        shown = found.decode(errors="replace") if found is not None else "none"
        raise IndexSchemaError(
            f"index at {path} has schema version {shown}; this build reads version "
            f"{SCHEMA_VERSION.decode()} only (migrate or move the index aside)"
        )


__all__ = [  # DuplicatePolicy is re-exported: the writer's callers need it with Outcome
    "DuplicatePolicy", "Outcome", "EMPTY_PATIENT_KEY", "IndexEnv", "InstanceRecord",
    "PatientRecord", "SCHEMA_VERSION", "SeriesRecord", "StudyRecord", "normalize_person_name",
    "is_current_record", "open_index", "pack_record", "unpack_record",
]
