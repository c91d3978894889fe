"""workers.index: counts, duplicate policies, overwrite moves, schema refusal, map growth."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import FrozenInstanceError, fields, replace
from pathlib import Path

import lmdb
import msgpack
import pytest

from appliance.errors import IndexSchemaError
from workers.header import IndexAttributes
from workers.index.reader import IndexReader
from workers.index.schema import (
    DuplicatePolicy,
    InstanceRecord,
    Outcome,
    normalize_person_name,
    pack_record,
    unpack_record,
)
from workers.index.writer import IndexWriter

KEEP, OVERWRITE, REJECT = DuplicatePolicy.KEEP, DuplicatePolicy.OVERWRITE, DuplicatePolicy.REJECT


def rec(
    sop: str,
    series: str = "1.1",
    study: str = "1",
    *,
    patient: str = "P1",
    modality: str = "CT",
    size: int = 100,
    relpath: str | None = None,
    **kw: str,
) -> InstanceRecord:
    attrs = IndexAttributes(
        sop_class_uid=kw.pop("sop_class_uid", "1.2.840.10008.5.1.4.1.1.2"),
        sop_instance_uid=sop,
        study_instance_uid=study,
        series_instance_uid=series,
        patient_id=patient,
        patient_name=kw.pop("patient_name", "Doe^Jane"),
        modality=modality,
        study_date=kw.pop("study_date", "20240102"),
        accession_number=kw.pop("accession_number", "A1"),
        **kw,
    )
    return InstanceRecord.from_attributes(
        attrs,
        relpath=relpath or f"objects/{sop}.dcm",
        size_bytes=size,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        received_at=1700000000.5,
        calling_ae="SCU",
    )


@pytest.fixture
def writer(tmp_path: Path) -> IndexWriter:
    w = IndexWriter(tmp_path / "index", map_size=64 * 1024 * 1024, sync=False)
    yield w
    w.close()


def reader_of(w: IndexWriter, tmp_path: Path) -> IndexReader:
    return IndexReader.sharing(w.index)  # LMDB: one open per environment per process


READER_SCRIPT = """
import json, sys
from workers.index.reader import IndexReader
r = IndexReader(sys.argv[1])
s = r.stats()
print(json.dumps([s.patients, s.studies, s.series, s.instances, s.stored_bytes,
                  r.get_instance(sys.argv[2]) is not None]))
"""


def other_process_view(path: Path, sop: str) -> list[object]:
    """What a reader in another process (a worker) sees right now."""
    cp = subprocess.run(
        [sys.executable, "-c", READER_SCRIPT, str(path), sop],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[3],
    )
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


def counts(r: IndexReader) -> tuple[int, int, int, int, int]:
    s = r.stats()
    return s.patients, s.studies, s.series, s.instances, s.stored_bytes


def check_consistent(r: IndexReader) -> None:
    """Every derived count equals what is below it (the schema's invariant)."""
    total_instances = 0
    for study in r.studies():
        series = list(r.series_of(study.study_instance_uid))
        assert study.number_of_study_related_series == len(series) > 0
        n = 0
        mods: dict[str, int] = {}
        for se in series:
            inst = list(r.instances_of(se.series_instance_uid))
            assert se.number_of_series_related_instances == len(inst) > 0
            assert se.stored_bytes == sum(i.size_bytes for i in inst)
            for i in inst:
                if i.modality:
                    mods[i.modality] = mods.get(i.modality, 0) + 1
            n += len(inst)
        assert study.number_of_study_related_instances == n
        assert study.modalities == mods
        for m in mods:
            assert study.study_instance_uid in r.study_uids_matching("modality", m)
        total_instances += n
    assert total_instances == r.stats().instances


def test_pack_roundtrip() -> None:
    r = rec("1.2.3", patient_name="Ünïcode^Name")
    assert unpack_record(pack_record(r)) == r
    assert r.attributes().patient_name == "Ünïcode^Name"
    with pytest.raises(ValueError):
        unpack_record(b"\x93\x01\x02\x03")


def test_counts_after_inserts(writer: IndexWriter, tmp_path: Path) -> None:
    batch = [
        rec(
            f"1.{st}.{se}.{i}",
            f"1.{st}.{se}",
            f"1.{st}",
            patient=f"P{st % 2}",
            modality="MR" if se == 2 else "CT",
        )
        for st in range(3)
        for se in range(3)
        for i in range(4)
    ]
    out = writer.apply_batch(batch, KEEP)
    assert {o.outcome for o in out} == {Outcome.STORED} and all(o.old_relpath is None for o in out)
    r = reader_of(writer, tmp_path)
    assert counts(r) == (2, 3, 9, 36, 3600)
    study = r.get_study("1.0")
    assert study is not None
    assert study.modalities_in_study == ["CT", "MR"] and study.number_of_study_related_series == 3
    assert study.sop_classes_in_study == ["1.2.840.10008.5.1.4.1.1.2"]
    p0 = r.get_patient("P0")
    assert p0 is not None
    assert (
        p0.number_of_patient_related_studies,
        p0.number_of_patient_related_series,
        p0.number_of_patient_related_instances,
    ) == (2, 6, 24)
    assert sorted(r.study_uids_matching("patient_id", "P0")) == ["1.0", "1.2"]
    assert sorted(r.study_uids_matching("patient_name", "doe^jane^^")) == ["1.0", "1.1", "1.2"]
    assert sorted(r.study_uids_matching("modality", "MR")) == ["1.0", "1.1", "1.2"]
    assert r.study_uids_matching("study_date", "20240102") == ["1.0", "1.1", "1.2"]
    assert r.study_uids_matching("accession_number", "nope") == []
    got = r.get_instance("1.1.2.3")
    assert got == batch[1 * 12 + 2 * 4 + 3]
    check_consistent(r)


@pytest.mark.parametrize(
    ("policy", "outcome"), [(KEEP, Outcome.DUPLICATE_KEPT), (REJECT, Outcome.REJECTED)]
)
def test_duplicates_keep_or_reject(
    writer: IndexWriter, tmp_path: Path, policy: DuplicatePolicy, outcome: Outcome
) -> None:
    writer.apply_batch([rec("9", size=10, relpath="objects/first")], policy)
    out = writer.apply_batch([rec("9", size=999, relpath="objects/second")], policy)
    assert out[0].outcome is outcome and out[0].old_relpath == "objects/first"
    r = reader_of(writer, tmp_path)
    got = r.get_instance("9")
    assert got is not None and got.relpath == "objects/first"
    assert counts(r) == (1, 1, 1, 1, 10)


def test_duplicates_within_one_batch_are_sequential(writer: IndexWriter, tmp_path: Path) -> None:
    out = writer.apply_batch([rec("9", size=10), rec("9", size=20, relpath="objects/b")], OVERWRITE)
    assert [o.outcome for o in out] == [Outcome.STORED, Outcome.OVERWRITTEN]
    assert out[1].old_relpath == "objects/9.dcm"
    out = writer.apply_batch([rec("8"), rec("8")], REJECT)
    assert [o.outcome for o in out] == [Outcome.STORED, Outcome.REJECTED]
    r = reader_of(writer, tmp_path)
    assert counts(r) == (1, 1, 1, 2, 120)
    check_consistent(r)


def test_overwrite_same_place_keeps_counts(writer: IndexWriter, tmp_path: Path) -> None:
    writer.apply_batch([rec(str(i)) for i in range(5)], KEEP)
    out = writer.apply_batch([rec("3", size=500, relpath="objects/new")], OVERWRITE)
    assert out[0].outcome is Outcome.OVERWRITTEN and out[0].old_relpath == "objects/3.dcm"
    r = reader_of(writer, tmp_path)
    assert counts(r) == (1, 1, 1, 5, 900)
    got = r.get_instance("3")
    assert got is not None and got.relpath == "objects/new" and got.size_bytes == 500
    check_consistent(r)


def test_overwrite_moving_series_study_and_patient(writer: IndexWriter, tmp_path: Path) -> None:
    writer.apply_batch([rec("a", "S1", "T1"), rec("b", "S1", "T1", modality="MR")], KEEP)
    # "b" re-sent under another study of another patient: old series keeps "a" only
    writer.apply_batch([rec("b", "S2", "T2", patient="P2", modality="PT")], OVERWRITE)
    r = reader_of(writer, tmp_path)
    assert counts(r) == (2, 2, 2, 2, 200)
    t1 = r.get_study("T1")
    assert t1 is not None and t1.modalities_in_study == ["CT"]
    assert r.study_uids_matching("modality", "MR") == []
    check_consistent(r)
    # and "a" moved away too: T1, S1 and patient P1 disappear with their secondary entries
    writer.apply_batch([rec("a", "S2", "T2", patient="P2")], OVERWRITE)
    assert counts(r) == (1, 1, 1, 2, 200)
    assert r.get_study("T1") is None and r.get_series("S1") is None and r.get_patient("P1") is None
    assert r.study_uids_matching("patient_id", "P1") == [] and r.study_uids_matching(
        "modality", "CT"
    ) == ["T2"]
    check_consistent(r)


def test_delete_instance(writer: IndexWriter, tmp_path: Path) -> None:
    writer.apply_batch([rec("a"), rec("b", "S9")], KEEP)
    removed = writer.delete_instance("a")
    assert removed is not None and removed.sop_instance_uid == "a"
    assert writer.delete_instance("a") is None
    r = reader_of(writer, tmp_path)
    assert counts(r) == (1, 1, 1, 1, 100)
    writer.delete_instance("b")
    assert counts(r) == (0, 0, 0, 0, 0)
    assert r.study_uids_matching("patient_name", "Doe^Jane") == []


def test_empty_patient_id_uses_placeholder(writer: IndexWriter, tmp_path: Path) -> None:
    writer.apply_batch([rec("a", "S1", "T1", patient=""), rec("b", "S2", "T2", patient="")], KEEP)
    r = reader_of(writer, tmp_path)
    p = r.get_patient("")
    assert p is not None and p.number_of_patient_related_studies == 2
    assert counts(r)[0] == 1 and r.study_uids_matching("patient_id", "") == []


def test_records_without_uids_are_refused(writer: IndexWriter) -> None:
    with pytest.raises(ValueError):
        writer.apply_batch([rec("ok"), rec("")], KEEP)
    r_ok = writer.apply_batch([rec("ok")], KEEP)  # nothing of the refused batch was applied
    assert r_ok[0].outcome is Outcome.STORED


def test_oversized_values_are_bounded_keys(writer: IndexWriter, tmp_path: Path) -> None:
    long_id = "X" * 2000
    writer.apply_batch([rec("a", patient=long_id, accession_number="B" * 900)], KEEP)
    r = reader_of(writer, tmp_path)
    assert r.study_uids_matching("patient_id", long_id) == ["1"]
    assert r.get_patient(long_id) is not None


def test_readers_see_commits(writer: IndexWriter, tmp_path: Path) -> None:
    r = reader_of(writer, tmp_path)
    assert r.get_instance("x") is None
    assert other_process_view(tmp_path / "index", "x") == [0, 0, 0, 0, 0, False]
    writer.apply_batch([rec("x")], KEEP)
    assert r.get_instance("x") is not None  # same reader object, new transaction per call
    # a read-only env in another process, while the writer keeps its env open
    assert other_process_view(tmp_path / "index", "x") == [1, 1, 1, 1, 100, True]


def test_reopen_and_schema_refusal(tmp_path: Path) -> None:
    path = tmp_path / "index"
    w = IndexWriter(path, map_size=16 * 1024 * 1024, sync=True)
    w.apply_batch([rec("a")], KEEP)
    w.close()
    w = IndexWriter(path, map_size=16 * 1024 * 1024, sync=True)  # reopen: data still there
    assert IndexReader.sharing(w.index).get_instance("a") is not None
    with w.env.begin(write=True) as txn:
        txn.put(b"schema_version", b"99", db=w.index.dbs["meta"])
    w.close()
    with pytest.raises(IndexSchemaError, match="schema version 99"):
        IndexWriter(path, map_size=16 * 1024 * 1024)
    with pytest.raises(IndexSchemaError, match="schema version 99"):
        IndexReader(path)
    with pytest.raises(IndexSchemaError, match="no index"):
        IndexReader(tmp_path / "missing")


def test_map_grows_on_map_full(tmp_path: Path) -> None:
    path = tmp_path / "index"
    w = IndexWriter(path, map_size=256 * 1024, sync=False)
    r = IndexReader.sharing(w.index)
    for b in range(10):
        w.apply_batch(
            [rec(f"{b}.{i}", f"S{b}", f"T{b}", patient=f"P{b}", size=1) for i in range(200)], KEEP
        )
    assert w.map_growths >= 1
    assert w.env.info()["map_size"] > 256 * 1024
    assert counts(r) == (10, 10, 10, 2000, 2000)
    assert r.get_instance("9.199") is not None
    check_consistent(r)
    # a reader process maps the grown file (LMDB adopts the size recorded in it)
    assert other_process_view(path, "9.199") == [10, 10, 10, 2000, 2000, True]
    w.close()


def test_normalize_person_name() -> None:
    assert normalize_person_name(" doe ^ john ^^^=DOE^J") == "DOE^JOHN"
    assert normalize_person_name("") == ""


def test_record_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec("a").relpath = "x"  # type: ignore[misc]


def test_lmdb_error_type_is_what_we_handle() -> None:
    assert issubclass(lmdb.MapFullError, lmdb.Error)


def test_record_built_fast_equals_dataclass_constructor() -> None:
    """from_attributes / unpack_record bypass the dataclass __init__ (schema._record_of):
    the result is the same record, and a record of the older, shorter schema unpacks with
    the defaults of the fields it lacks."""
    r = rec("1.2.3", patient_name="Doe^J")
    r = replace(r, received_transfer_syntax_uid="1.2.840.10008.1.2", received_size_bytes=99)
    names = [f.name for f in fields(InstanceRecord)]
    ref = InstanceRecord(**{n: getattr(r, n) for n in names})
    again = InstanceRecord.from_attributes(
        r.attributes(), relpath=r.relpath, size_bytes=r.size_bytes,
        transfer_syntax_uid=r.transfer_syntax_uid, received_at=r.received_at,
        calling_ae=r.calling_ae, received_transfer_syntax_uid="1.2.840.10008.1.2",
        received_size_bytes=99)
    assert again == ref == unpack_record(pack_record(r)) and hash(again) == hash(ref)
    assert pack_record(r) == msgpack.packb([getattr(r, n) for n in names], use_bin_type=True)
    v1 = msgpack.packb([getattr(r, n) for n in names][:names.index("calling_ae") + 1],
                       use_bin_type=True)
    old = unpack_record(v1)
    assert old == replace(r, received_transfer_syntax_uid="", received_size_bytes=0)
    with pytest.raises(FrozenInstanceError):
        old.relpath = "x"  # type: ignore[misc]
