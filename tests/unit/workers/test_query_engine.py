"""workers.query: Identifier decode/encode, model checks, and find/retrieve on a real index."""

from __future__ import annotations

import io
import subprocess
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from appliance.dimse.status import Status
from tests.conftest import require_tool
from workers.header import IndexAttributes
from workers.index.reader import IndexReader, Snapshot
from workers.index.schema import DuplicatePolicy, InstanceRecord
from workers.index.writer import IndexWriter
from workers.query import engine
from workers.query.engine import find, retrieve
from workers.query.identifier import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    Query,
    QueryError,
    QueryKey,
    ResponseEncoder,
    decode_identifier,
    encode_identifier,
    make_query,
)
from workers.query.keys import BY_KEYWORD, KEYS, model_of

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
A900 = Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
C000 = Status.UNABLE_TO_PROCESS

# study uid -> (patient id, patient name, study date, accession, series: [(modality, n)])
STUDIES: dict[str, tuple[str, str, str, str, list[tuple[str, int]]]] = {
    "1.1": ("P1", "Smith^John", "20240105", "ACC1", [("CT", 3), ("MR", 2)]),
    "1.2": ("P1", "Smith^John", "20240210", "ACC2", [("CT", 1)]),
    "1.3": ("P2", "Smithson^Anna", "20240115", "ACC3", [("MR", 4)]),
    "1.4": ("P3", "Doe^Jane", "20231231", "ACC4", [("US", 2), ("US", 1)]),
    "1.5": ("P4", "Müller^Hans", "20240131", "BCC5", [("CT", 2)]),
    "1.6": ("P5", "Γιάννης^Νίκος", "20240201", "ACC6", [("PT", 1)]),
}


def records() -> list[InstanceRecord]:
    out = []
    for study, (pid, name, date, acc, series) in STUDIES.items():
        for s, (modality, n) in enumerate(series, start=1):
            for i in range(1, n + 1):
                sop = f"{study}.{s}.{i}"
                attrs = IndexAttributes(
                    sop_class_uid=MR if modality == "MR" else CT, sop_instance_uid=sop,
                    study_instance_uid=study, series_instance_uid=f"{study}.{s}",
                    patient_id=pid, patient_name=name, patient_sex="F", study_date=date,
                    study_time="101500", accession_number=acc, modality=modality,
                    series_number=str(s), instance_number=str(i), rows="512", columns="256",
                    specific_character_set="ISO_IR 192",
                )
                out.append(InstanceRecord.from_attributes(
                    attrs, relpath=f"o/{sop}", size_bytes=100, received_at=0.0,
                    transfer_syntax_uid=EXPLICIT_VR_LE, calling_ae="SCU"))
    return out


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[IndexReader]:
    w = IndexWriter(tmp_path / "index", map_size=64 * 1024 * 1024, sync=False)
    w.apply_batch(records(), DuplicatePolicy.KEEP)
    yield IndexReader.sharing(w.index)
    w.close()


def tag(keyword: str) -> int:
    return BY_KEYWORD[keyword].tag


def q(model: str, level: str, *, relational: bool = False, **keys: str) -> Query:
    return qd(model, level, keys, relational=relational)


def qd(model: str, level: str, keys: dict[str, str], *, relational: bool = False) -> Query:
    return make_query(model, level, [QueryKey(tag(k), KEYS[tag(k)].vr, v)
                                     for k, v in keys.items()], relational=relational)


def values(results: list[dict[int, str]], keyword: str) -> list[str]:
    return sorted(r[tag(keyword)] for r in results)


def run(query: Query) -> list[dict[int, str]]:
    return [dict(r) for r in find(readers[0], query)]


readers: list[IndexReader] = []


@pytest.fixture(autouse=True)
def _current(reader: IndexReader) -> Iterator[None]:
    readers[:] = [reader]
    yield
    readers.clear()


# ---- models and keys --------------------------------------------------------------------


def test_model_of() -> None:
    assert model_of("1.2.840.10008.5.1.4.1.2.1.1") == ("PATIENT", "FIND")
    assert model_of("1.2.840.10008.5.1.4.1.2.2.2") == ("STUDY", "MOVE")
    assert model_of("1.2.840.10008.5.1.4.1.2.2.3\0") == ("STUDY", "GET")
    assert model_of("1.2.840.10008.5.1.4.31") is None  # Modality Worklist is not ours


def test_key_table_agrees_with_the_data_dictionary() -> None:
    from pydicom.datadict import dictionary_VR, keyword_for_tag

    for t, kd in KEYS.items():
        assert keyword_for_tag(t) == kd.keyword
        assert dictionary_VR(t) == kd.vr


# ---- hierarchical / relational checks (C.4.1.2.1, C.4.1.3) --------------------------------


@pytest.mark.parametrize(("model", "level", "keys", "status"), [
    ("STUDY", "", {}, A900),  # no Query/Retrieve Level
    ("STUDY", "PATIENT", {}, A900),  # Study Root has no patient level
    ("STUDY", "FOO", {}, A900),
    ("STUDY", "SERIES", {"Modality": "CT"}, A900),  # StudyInstanceUID missing
    ("STUDY", "SERIES", {"StudyInstanceUID": ""}, A900),  # ... or universal
    ("STUDY", "SERIES", {"StudyInstanceUID": "1.1\\1.2"}, A900),  # ... or a list
    ("STUDY", "IMAGE", {"StudyInstanceUID": "1.1"}, A900),  # SeriesInstanceUID missing
    ("PATIENT", "STUDY", {"StudyDate": "2024-"}, A900),  # PatientID missing
    ("PATIENT", "STUDY", {"PatientID": "P*"}, A900),  # ... or wild-carded
])
def test_hierarchical_failures(model: str, level: str, keys: dict[str, str], status: int) \
        -> None:
    with pytest.raises(QueryError) as info:
        qd(model, level, keys)
    assert info.value.status == status
    assert 0 < len(info.value.comment) <= 64


def test_relational_lifts_the_unique_key_rule() -> None:
    query = q("STUDY", "IMAGE", relational=True, PatientID="P2", SOPInstanceUID="")
    assert values(run(query), "SOPInstanceUID") == ["1.3.1.1", "1.3.1.2", "1.3.1.3", "1.3.1.4"]
    query = q("PATIENT", "SERIES", relational=True, Modality="US", SeriesInstanceUID="")
    assert values(run(query), "SeriesInstanceUID") == ["1.4.1", "1.4.2"]


def test_unsupported_keys_are_reported_and_returned_empty() -> None:
    keys = [
        QueryKey(tag("StudyInstanceUID"), "UI", ""),
        QueryKey(tag("Modality"), "CS", "CT"),  # below the query level
        QueryKey(0x00081080, "LO", "X*"),  # Admitting Diagnoses Description: not indexed
        QueryKey(0x00081032, "SQ", "items"),  # a sequence key with an item
        QueryKey(0x00091010, "LO", "x"),  # private
        QueryKey(tag("PatientSex"), "CS", ""),
    ]
    query = make_query("STUDY", "STUDY", keys)
    assert query.unsupported == (0x00080060, 0x00081032, 0x00081080, 0x00091010)
    results = run(query)
    assert len(results) == len(STUDIES)  # the unsupported keys did not filter
    assert {r[0x00080060] for r in results} == {""}
    assert {r[0x00081080] for r in results} == {""}
    assert 0x00091010 not in results[0]
    assert {r[tag("PatientSex")] for r in results} == {"F"}


# ---- find ------------------------------------------------------------------------------------


def test_study_level_return_keys_and_derived_attributes() -> None:
    keys = dict(StudyInstanceUID="1.1", PatientName="", PatientID="", StudyDate="",
                ModalitiesInStudy="", SOPClassesInStudy="", NumberOfStudyRelatedSeries="",
                NumberOfStudyRelatedInstances="", NumberOfPatientRelatedStudies="",
                NumberOfPatientRelatedSeries="", NumberOfPatientRelatedInstances="",
                AccessionNumber="")
    query = make_query("STUDY", "STUDY", [
        *(QueryKey(tag(k), KEYS[tag(k)].vr, v) for k, v in keys.items()),
        QueryKey(0x00080056, "CS", ""), QueryKey(0x00081080, "LO", "")])
    [r] = run(query)
    assert r[tag("PatientName")] == "Smith^John"
    assert r[tag("ModalitiesInStudy")] == "CT\\MR"
    assert r[tag("SOPClassesInStudy")] == f"{CT}\\{MR}"
    assert r[tag("NumberOfStudyRelatedSeries")] == "2"
    assert r[tag("NumberOfStudyRelatedInstances")] == "5"
    assert r[tag("NumberOfPatientRelatedStudies")] == "2"
    assert r[tag("NumberOfPatientRelatedSeries")] == "3"
    assert r[tag("NumberOfPatientRelatedInstances")] == "6"
    assert r[0x00080056] == "ONLINE"
    assert r[0x00081080] == ""  # unknown to the index: zero length (C.4.1.1.3.2)


@pytest.mark.parametrize(("keys", "expected"), [
    ({"PatientID": "P1"}, ["1.1", "1.2"]),
    ({"PatientID": "P1\\P3"}, ["1.1", "1.2", "1.4"]),
    ({"PatientID": "P*"}, ["1.1", "1.2", "1.3", "1.4", "1.5", "1.6"]),
    ({"PatientName": "SMI*"}, ["1.1", "1.2", "1.3"]),
    ({"PatientName": "smith^*"}, ["1.1", "1.2"]),
    ({"PatientName": "Smith^John"}, ["1.1", "1.2"]),
    ({"PatientName": "*SON*"}, ["1.3"]),
    ({"PatientName": "MÜLLER*"}, ["1.5"]),
    ({"PatientName": "γιάννης*"}, ["1.6"]),
    ({"StudyDate": "20240101-20240131"}, ["1.1", "1.3", "1.5"]),
    ({"StudyDate": "-20240101"}, ["1.4"]),
    ({"StudyDate": "20240201-"}, ["1.2", "1.6"]),
    ({"StudyDate": "20240210"}, ["1.2"]),
    ({"AccessionNumber": "ACC3"}, ["1.3"]),
    ({"AccessionNumber": "B*"}, ["1.5"]),
    ({"ModalitiesInStudy": "MR"}, ["1.1", "1.3"]),
    ({"ModalitiesInStudy": "CT\\PT"}, ["1.1", "1.2", "1.5", "1.6"]),
    ({"StudyInstanceUID": "1.4\\1.2\\9.9"}, ["1.2", "1.4"]),
    ({"PatientID": "P1", "StudyDate": "20240201-"}, ["1.2"]),
    ({"PatientName": "SMI*", "ModalitiesInStudy": "MR", "StudyDate": "-20240110"}, ["1.1"]),
    ({"StudyTime": "1000-1100"}, ["1.1", "1.2", "1.3", "1.4", "1.5", "1.6"]),
    ({"StudyTime": "1100-"}, []),
    ({"PatientID": "nobody"}, []),
])
def test_study_level_matching(keys: dict[str, str], expected: list[str]) -> None:
    query = qd("STUDY", "STUDY", {"StudyInstanceUID": "", **keys})
    assert values(run(query), "StudyInstanceUID") == expected


def test_patient_level() -> None:
    results = run(q("PATIENT", "PATIENT", PatientID="", PatientName="SMITH*",
                    NumberOfPatientRelatedStudies=""))
    # P1 has two studies named Smith^John: still one patient
    assert sorted((r[tag("PatientID")], r[tag("NumberOfPatientRelatedStudies")])
                  for r in results) == [("P1", "2"), ("P2", "1")]
    assert values(run(q("PATIENT", "PATIENT", PatientID="P3\\P4")), "PatientID") == ["P3", "P4"]
    assert values(run(q("PATIENT", "PATIENT", PatientID="P*")), "PatientID") == \
        ["P1", "P2", "P3", "P4", "P5"]
    assert values(run(q("PATIENT", "PATIENT", PatientID="", PatientSex="F")), "PatientID") == \
        ["P1", "P2", "P3", "P4", "P5"]


def test_series_level_hierarchical_returns_upper_level_attributes() -> None:
    results = run(q("STUDY", "SERIES", StudyInstanceUID="1.1", SeriesInstanceUID="",
                    Modality="", PatientName="", NumberOfSeriesRelatedInstances=""))
    assert [(r[tag("SeriesInstanceUID")], r[tag("Modality")],
             r[tag("NumberOfSeriesRelatedInstances")], r[tag("PatientName")])
            for r in results] == [("1.1.1", "CT", "3", "Smith^John"),
                                  ("1.1.2", "MR", "2", "Smith^John")]
    assert run(q("STUDY", "SERIES", StudyInstanceUID="1.1", Modality="US")) == []
    # an upper-level non-unique key is matched against the parent
    assert run(q("STUDY", "SERIES", StudyInstanceUID="1.1", PatientName="DOE*")) == []


def test_patient_root_image_level() -> None:
    results = run(q("PATIENT", "IMAGE", PatientID="P3", StudyInstanceUID="1.4",
                    SeriesInstanceUID="1.4.1", SOPInstanceUID="", InstanceNumber="",
                    Rows="", StudyDate=""))
    assert [(r[tag("SOPInstanceUID")], r[tag("Rows")], r[tag("StudyDate")]) for r in results] \
        == [("1.4.1.1", "512", "20231231"), ("1.4.1.2", "512", "20231231")]
    # the PatientID above must match the study's patient
    assert run(q("PATIENT", "IMAGE", PatientID="P1", StudyInstanceUID="1.4",
                 SeriesInstanceUID="1.4.1")) == []


def test_combined_date_time_when_granted() -> None:
    keys = [QueryKey(tag("StudyDate"), "DA", "20240104-20240105"),
            QueryKey(tag("StudyTime"), "TM", "1200-"), QueryKey(tag("StudyInstanceUID"), "UI")]
    separate = make_query("STUDY", "STUDY", keys)
    combined = make_query("STUDY", "STUDY", keys, combined_datetime=True)
    assert run(separate) == []  # 10:15 is before 12:00
    assert values(run(combined), "StudyInstanceUID") == ["1.1"]  # 5 Jan 10:15 > 4 Jan 12:00


def test_instance_availability_matching() -> None:
    def with_availability(value: str) -> Query:
        return make_query("STUDY", "STUDY", [QueryKey(tag("StudyInstanceUID"), "UI", "1.1"),
                                             QueryKey(0x00080056, "CS", value)])

    assert len(run(with_availability("ONLINE"))) == 1
    assert run(with_availability("OFFLINE")) == []


# ---- index use, laziness, short transactions ------------------------------------------------


@contextmanager
def forbid_scans(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def no_scan(self: Snapshot, db: str, start: bytes | None = None) -> Iterator[object]:
        raise AssertionError(f"full scan of {db}")

    with monkeypatch.context() as m:
        m.setattr(Snapshot, "keys", no_scan)
        yield


@pytest.mark.parametrize(("level", "keys"), [
    ("STUDY", {"PatientID": "P1"}),
    ("STUDY", {"PatientName": "SMI*"}),
    ("STUDY", {"StudyDate": "20240101-20240131"}),
    ("STUDY", {"AccessionNumber": "ACC2"}),
    ("STUDY", {"ModalitiesInStudy": "US"}),
    ("STUDY", {"StudyInstanceUID": "1.1\\1.3"}),
    ("SERIES", {"StudyInstanceUID": "1.1"}),
    ("IMAGE", {"StudyInstanceUID": "1.1", "SeriesInstanceUID": "1.1.1"}),
])
def test_narrowing_keys_use_the_index(monkeypatch: pytest.MonkeyPatch, level: str,
                                      keys: dict[str, str]) -> None:
    with forbid_scans(monkeypatch):
        assert run(qd("STUDY", level, keys))
    with pytest.raises(AssertionError, match="full scan"), forbid_scans(monkeypatch):
        run(q("STUDY", "STUDY", StudyDescription="x"))


def test_pages_resume_in_fresh_transactions(monkeypatch: pytest.MonkeyPatch,
                                            reader: IndexReader) -> None:
    open_now = [0]
    opened = [0]
    real = IndexReader.snapshot

    @contextmanager
    def counting(self: IndexReader) -> Iterator[Snapshot]:
        open_now[0] += 1
        opened[0] += 1
        with real(self) as snap:
            yield snap
        open_now[0] -= 1

    queries = [
        q("STUDY", "IMAGE", relational=True, SOPInstanceUID=""),  # full scan
        q("STUDY", "IMAGE", relational=True, PatientName="SMI*", SOPInstanceUID=""),  # nested
        q("PATIENT", "PATIENT", PatientName="S*", PatientID=""),
        q("STUDY", "STUDY", StudyDate="2023-", StudyInstanceUID=""),
        q("STUDY", "STUDY", PatientID="P1\\P2\\P3", StudyInstanceUID=""),
    ]
    whole = [run(query) for query in queries]
    monkeypatch.setattr(engine, "PAGE_MATCHES", 2)
    monkeypatch.setattr(engine, "PAGE_EXAMINED", 3)
    monkeypatch.setattr(IndexReader, "snapshot", counting)
    for query, expected in zip(queries, whole, strict=True):
        opened[0] = 0
        got = []
        for result in find(reader, query):
            assert open_now[0] == 0  # no transaction is held while the caller has a result
            # Regression: a nested source that restarted its children on resume repeated
            # matches forever; fail on the first repeat instead of hanging.
            assert dict(result) not in got
            got.append(dict(result))
        assert got == expected  # same results, same order, no duplicates
        assert opened[0] > len(expected) // 2  # ... over several transactions


def test_find_is_lazy(monkeypatch: pytest.MonkeyPatch, reader: IndexReader) -> None:
    monkeypatch.setattr(engine, "PAGE_MATCHES", 1)
    opened = [0]
    real = IndexReader.snapshot

    @contextmanager
    def counting(self: IndexReader) -> Iterator[Snapshot]:
        opened[0] += 1
        with real(self) as snap:
            yield snap

    monkeypatch.setattr(IndexReader, "snapshot", counting)
    results = find(reader, q("STUDY", "IMAGE", relational=True, SOPInstanceUID=""))
    first = opened[0]  # planning
    next(results)
    assert opened[0] == first + 1  # one page for the first match, not all 17 instances


# ---- retrieve ----------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "level", "keys", "expected"), [
    ("PATIENT", "PATIENT", {"PatientID": "P1"}, 6),
    ("PATIENT", "PATIENT", {"PatientID": "P1\\P2"}, 10),
    ("PATIENT", "STUDY", {"PatientID": "P1", "StudyInstanceUID": "1.2"}, 1),
    ("PATIENT", "STUDY", {"PatientID": "P2", "StudyInstanceUID": "1.2"}, 0),  # wrong patient
    ("STUDY", "STUDY", {"StudyInstanceUID": "1.1\\1.4"}, 8),
    ("STUDY", "STUDY", {"StudyInstanceUID": "1.1", "PatientName": "nobody"}, 5),  # ignored
    ("STUDY", "SERIES", {"StudyInstanceUID": "1.1", "SeriesInstanceUID": "1.1.2\\1.1.1"}, 5),
    ("STUDY", "IMAGE", {"StudyInstanceUID": "1.1", "SeriesInstanceUID": "1.1.1",
                        "SOPInstanceUID": "1.1.1.2\\1.1.1.3\\1.1.2.1"}, 2),
])
def test_retrieve(reader: IndexReader, model: str, level: str, keys: dict[str, str],
                  expected: int) -> None:
    found = list(retrieve(reader, qd(model, level, keys)))
    assert len(found) == expected == len({r.sop_instance_uid for r in found})
    assert all(isinstance(r, InstanceRecord) for r in found)


def test_retrieve_relational_and_failures(reader: IndexReader) -> None:
    found = list(retrieve(reader, q("STUDY", "SERIES", relational=True,
                                    SeriesInstanceUID="1.4.2")))
    assert [r.sop_instance_uid for r in found] == ["1.4.2.1"]
    with pytest.raises(QueryError) as info:
        retrieve(reader, q("STUDY", "STUDY", PatientID="P1"))
    assert info.value.status == A900
    with pytest.raises(QueryError):
        retrieve(reader, q("STUDY", "SERIES", StudyInstanceUID="1.1", SeriesInstanceUID=""))


# ---- identifiers: decode, encode, character sets ----------------------------------------------


def identifier(ds: Dataset, ts: str) -> bytes:
    buf = DicomBytesIO()
    buf.is_implicit_VR, buf.is_little_endian = ts == IMPLICIT_VR_LE, ts != EXPLICIT_VR_BE
    write_dataset(buf, ds)
    data = buf.getvalue()
    if ts == DEFLATED_EXPLICIT_VR_LE:
        return zlib.compress(data)[2:-4]
    return data


def read_response(data: bytes, ts: str) -> Dataset:
    if ts == DEFLATED_EXPLICIT_VR_LE:
        data = zlib.decompress(data, -15)
    ds = read_dataset(io.BytesIO(data), ts == IMPLICIT_VR_LE, ts != EXPLICIT_VR_BE)
    ds.decode()
    return ds


def study_request(name: str, charset: str | None) -> Dataset:
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientName = name
    ds.StudyInstanceUID = ""
    ds.ModalitiesInStudy = ""
    ds.NumberOfStudyRelatedInstances = ""
    ds.Rows = None
    ds.ReferencedStudySequence = Sequence()
    ds.InstanceAvailability = ""
    return ds


ALL_TS = [IMPLICIT_VR_LE, EXPLICIT_VR_LE, EXPLICIT_VR_BE, DEFLATED_EXPLICIT_VR_LE]


@pytest.mark.parametrize("ts", ALL_TS)
def test_decode_find_encode_roundtrip(reader: IndexReader, ts: str) -> None:
    request = study_request("MÜLLER*", "ISO_IR 100")
    query = decode_identifier(identifier(request, ts), ts, "STUDY")
    assert query.level == "STUDY" and query.character_set == ("ISO_IR 100",)
    assert query.keys[tag("PatientName")].value == "MÜLLER*"
    assert query.keys[0x00081110].vr == "SQ" and query.unsupported == ()
    [result] = find(reader, query)
    response = read_response(encode_identifier(result, query, ts, "PACS"), ts)
    assert response.SpecificCharacterSet == "ISO_IR 100"  # it can represent "Müller"
    assert str(response.PatientName) == "Müller^Hans"
    assert response.QueryRetrieveLevel == "STUDY"
    assert response.RetrieveAETitle == "PACS"
    assert response.StudyInstanceUID == "1.5"
    assert response.ModalitiesInStudy == "CT"
    assert response.NumberOfStudyRelatedInstances == 2
    assert response.InstanceAvailability == "ONLINE"
    assert response.ReferencedStudySequence == []
    assert "Rows" in response and response["Rows"].value is None  # not a study-level key
    assert sorted(response.keys()) == list(response.keys())


@pytest.mark.parametrize(("charset", "name", "expected"), [
    (None, "*", ["", "ISO_IR 192"]),  # Greek and Umlaut names need a character set
    ("ISO_IR 100", "M*", ["ISO_IR 100"]),  # Latin-1 can represent "Müller"
    ("ISO_IR 100", "*", ["ISO_IR 100", "ISO_IR 192"]),  # ... not Greek: UTF-8
    ("ISO_IR 126", "Γ*", ["ISO_IR 126"]),  # the Greek set can
    ("ISO_IR 192", "D*", ["ISO_IR 192"]),  # ASCII values: the request's set is echoed
])
def test_response_character_set(reader: IndexReader, charset: str | None, name: str,
                                expected: list[str]) -> None:
    request = study_request(name, charset)
    query = decode_identifier(identifier(request, EXPLICIT_VR_LE), EXPLICIT_VR_LE, "STUDY")
    seen = set()
    for result in find(reader, query):
        response = read_response(encode_identifier(result, query, EXPLICIT_VR_LE),
                                 EXPLICIT_VR_LE)
        seen.add(response.get("SpecificCharacterSet", ""))
        assert str(response.PatientName) == STUDIES[response.StudyInstanceUID][1]
    assert sorted(seen) == expected


def test_decode_greek_query_in_its_character_set(reader: IndexReader) -> None:
    request = study_request("Γιάννης*", "ISO_IR 126")
    data = identifier(request, EXPLICIT_VR_LE)
    assert "Γιάννης".encode("iso8859_7") in data
    query = decode_identifier(data, EXPLICIT_VR_LE, "STUDY")
    assert values(run(query), "StudyInstanceUID") == ["1.6"]


def test_decode_failures() -> None:
    with pytest.raises(QueryError) as info:
        decode_identifier(b"\x08\x00\x52\x00ZZ\x02\x00AB", EXPLICIT_VR_LE, "STUDY")
    assert info.value.status == C000
    with pytest.raises(QueryError) as info:
        decode_identifier(b"not deflate", DEFLATED_EXPLICIT_VR_LE, "STUDY")
    assert info.value.status == C000
    ds = Dataset()
    ds.PatientName = "X"  # no Query/Retrieve Level
    with pytest.raises(QueryError) as info:
        decode_identifier(identifier(ds, EXPLICIT_VR_LE), EXPLICIT_VR_LE, "STUDY")
    assert info.value.status == A900


def test_encoder_binary_and_padding() -> None:
    query = make_query("STUDY", "IMAGE", [
        QueryKey(tag("Rows"), "US", ""), QueryKey(tag("SOPInstanceUID"), "UI", ""),
        QueryKey(tag("StudyInstanceUID"), "UI", "1.1"),
        QueryKey(tag("SeriesInstanceUID"), "UI", "1.1.1")], relational=True)
    for ts in ALL_TS:
        data = ResponseEncoder(query, ts).encode({tag("Rows"): "512",
                                                  tag("SOPInstanceUID"): "1.2.3"})
        ds = read_response(data, ts)
        assert ds.Rows == 512
        assert ds.SOPInstanceUID == "1.2.3"
        assert "SpecificCharacterSet" not in ds and "RetrieveAETitle" not in ds
    raw = ResponseEncoder(query, IMPLICIT_VR_LE).encode({tag("SOPInstanceUID"): "1.2.3"})
    assert b"1.2.3\0" in raw  # UI padded with NUL (PS3.5 §6.2)


def test_dcmdump_reads_our_responses(reader: IndexReader, tmp_path: Path) -> None:
    dcmdump = require_tool("dcmdump")
    request = study_request("*", None)
    for ts, flag in ((IMPLICIT_VR_LE, "-ti"), (EXPLICIT_VR_LE, "-te"), (EXPLICIT_VR_BE, "-tb")):
        query = decode_identifier(identifier(request, ts), ts, "STUDY")
        result = next(r for r in find(reader, query) if r[tag("StudyInstanceUID")] == "1.6")
        path = tmp_path / "response.dcm"
        path.write_bytes(encode_identifier(result, query, ts, "PACS"))
        out = subprocess.run([dcmdump, "-f", flag, "+U8", str(path)], capture_output=True,
                             text=True, check=False, timeout=30)
        assert out.returncode == 0, out.stderr
        assert "W:" not in out.stderr and "E:" not in out.stderr, out.stderr
        assert "[ISO_IR 192]" in out.stdout
        assert "Γιάννης^Νίκος" in out.stdout
        assert "(0008,0052) CS [STUDY]" in out.stdout
        assert "(0020,1208) IS [1]" in out.stdout


def test_dcmtk_made_identifier_decodes(reader: IndexReader, tmp_path: Path) -> None:
    dump2dcm = require_tool("dump2dcm")
    dump = tmp_path / "q.dump"
    dump.write_text("(0008,0052) CS [SERIES]\n(0020,000d) UI [1.1]\n(0020,000e) UI []\n"
                    "(0008,0060) CS [MR]\n(0010,0010) PN []\n")
    for flag, ts in (("+ti", IMPLICIT_VR_LE), ("+te", EXPLICIT_VR_LE), ("+tb", EXPLICIT_VR_BE)):
        out = tmp_path / f"q{flag}.dcm"
        subprocess.run([dump2dcm, "-F", flag, str(dump), str(out)], check=True, timeout=30)
        query = decode_identifier(out.read_bytes(), ts, "STUDY")
        [result] = find(reader, query)
        assert result[tag("SeriesInstanceUID")] == "1.1.2"
        assert result[tag("PatientName")] == "Smith^John"
