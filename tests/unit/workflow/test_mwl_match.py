"""Modality Worklist C-FIND matching and responses (PS3.4 K.6.1.2, C.2.2.2), table-driven."""

from __future__ import annotations

import io
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomFileLike
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from tests.unit.workflow.conftest import item
from workers.workflow.mwl_match import find_worklist, matches, response
from workers.workflow.store import WorkflowStore

WORKLIST: list[dict[str, Any]] = [
    dict(patientId="12345", patientName="DOE^JOHN", accessionNumber="ACC001",
         studyInstanceUid="1.2.1", requestedProcedureId="RP1", scheduledStationAeTitle="CT_01",
         scheduledProcedureStepStartDate="20241220", scheduledProcedureStepStartTime="100000",
         modality="CT", scheduledProcedureStepId="SPS001",
         scheduledPerformingPhysicianName="HOUSE^GREGORY"),
    dict(patientId="222", patientName="SMITH^ANNA", accessionNumber="ACC002",
         studyInstanceUid="1.2.2", requestedProcedureId="RP2", scheduledStationAeTitle="MR_01",
         scheduledProcedureStepStartDate="20241220", scheduledProcedureStepStartTime="143000",
         modality="MR", scheduledProcedureStepId="SPS002", patientBirthDate=None),
    dict(patientId="333", patientName="DOE^JANE", accessionNumber="ACC003",
         studyInstanceUid="1.2.3", scheduledStationAeTitle="CT_01",
         scheduledProcedureStepStartDate="20241221", scheduledProcedureStepStartTime="0900",
         modality="CT", scheduledProcedureStepId="SPS003"),
    dict(patientId="444", patientName="MÜLLER^JÖRG", accessionNumber="ACC004",
         studyInstanceUid="1.2.4", scheduledStationAeTitle="CT_02",
         scheduledProcedureStepStartDate="20241222", scheduledProcedureStepStartTime="235900",
         modality="CT", scheduledProcedureStepId="SPS004"),
]
ALL = ["SPS001", "SPS002", "SPS003", "SPS004"]


@pytest.fixture
def loaded(store: WorkflowStore) -> WorkflowStore:
    store.put_items([item(**w) for w in WORKLIST])
    return store


def query(top: dict[str, Any] | None = None, sps: dict[str, Any] | None = None) -> Dataset:
    ds = Dataset()
    for k, v in (top or {}).items():
        setattr(ds, k, v)
    if sps is not None:
        step = Dataset()
        for k, v in sps.items():
            setattr(step, k, v)
        ds.ScheduledProcedureStepSequence = [step]
    return ds


def found(store: WorkflowStore, q: Dataset, **kw: Any) -> list[str]:
    kw.setdefault("hide_completed", True)
    return [r.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID
            if "ScheduledProcedureStepSequence" in r and r.ScheduledProcedureStepSequence
            else r.AccessionNumber
            for r in find_worklist(store, _with_ids(q), **kw)]


def _with_ids(q: Dataset) -> Dataset:
    """Ask for the step ID too, so each response says which step it is."""
    if "ScheduledProcedureStepSequence" not in q:
        q.ScheduledProcedureStepSequence = [Dataset()]
    seq = q.ScheduledProcedureStepSequence
    if seq and "ScheduledProcedureStepID" not in seq[0]:
        seq[0].ScheduledProcedureStepID = ""
    elif not seq:
        q.AccessionNumber = ""
    return q


CASES: list[tuple[str, dict[str, Any], dict[str, Any] | None, list[str]]] = [
    ("empty identifier", {}, None, ALL),
    ("universal keys", {"PatientName": "", "PatientID": "", "AccessionNumber": ""},
     {"Modality": "", "ScheduledStationAETitle": ""}, ALL),
    ("lone * is universal", {"PatientName": "*", "PatientID": "*"}, {"Modality": "*"}, ALL),
    ("Patient ID single value", {"PatientID": "12345"}, None, ["SPS001"]),
    ("Patient ID is not a prefix match", {"PatientID": "1234"}, None, []),
    ("Patient ID * wild card", {"PatientID": "*3"}, None, ["SPS003"]),
    ("Patient ID ? wild card", {"PatientID": "?2?"}, None, ["SPS002"]),
    ("Patient ID is case-sensitive", {"PatientID": "acc*"}, None, []),
    ("Patient's Name wild card, case-insensitive", {"PatientName": "doe*"}, None,
     ["SPS001", "SPS003"]),
    ("Patient's Name component wild card", {"PatientName": "DOE^J*"}, None,
     ["SPS001", "SPS003"]),
    ("Patient's Name exact, any case", {"PatientName": "doe^john"}, None, ["SPS001"]),
    ("Patient's Name non-ASCII", {"PatientName": "MÜLLER*"}, None, ["SPS004"]),
    ("Accession Number", {"AccessionNumber": "ACC002"}, None, ["SPS002"]),
    ("Accession Number wild card", {"AccessionNumber": "ACC00?"}, None, ALL),
    ("Requested Procedure ID", {"RequestedProcedureID": "RP1"}, None, ["SPS001"]),
    ("Requested Procedure ID defaulted from accession", {"RequestedProcedureID": "ACC003"},
     None, ["SPS003"]),
    ("Study Instance UID list", {"StudyInstanceUID": "1.2.2\\1.2.4"}, None,
     ["SPS002", "SPS004"]),
    ("Scheduled Station AE Title", {}, {"ScheduledStationAETitle": "CT_01"},
     ["SPS001", "SPS003"]),
    ("Scheduled Station AE Title wild card", {}, {"ScheduledStationAETitle": "CT*"},
     ["SPS001", "SPS003", "SPS004"]),
    ("Modality", {}, {"Modality": "MR"}, ["SPS002"]),
    ("Modality list", {}, {"Modality": "MR\\XA"}, ["SPS002"]),
    ("SPS Start Date single", {}, {"ScheduledProcedureStepStartDate": "20241220"},
     ["SPS001", "SPS002"]),
    ("SPS Start Date open end", {}, {"ScheduledProcedureStepStartDate": "20241221-"},
     ["SPS003", "SPS004"]),
    ("SPS Start Date open start", {}, {"ScheduledProcedureStepStartDate": "-20241220"},
     ["SPS001", "SPS002"]),
    ("SPS Start Date closed range", {},
     {"ScheduledProcedureStepStartDate": "20241220-20241221"}, ["SPS001", "SPS002", "SPS003"]),
    ("SPS Start Date range matching nothing", {},
     {"ScheduledProcedureStepStartDate": "20250101-20250131"}, []),
    ("SPS Start Time range alone (HHMM stored time padded)", {},
     {"ScheduledProcedureStepStartTime": "0900-1200"}, ["SPS001", "SPS003"]),
    ("SPS Start Date + Time range", {},
     {"ScheduledProcedureStepStartDate": "20241220",
      "ScheduledProcedureStepStartTime": "1200-1500"}, ["SPS002"]),
    ("SPS Start Date/Time combined across days", {},
     {"ScheduledProcedureStepStartDate": "20241220-20241221",
      "ScheduledProcedureStepStartTime": "1200-1000"}, ["SPS002", "SPS003"]),
    ("SPS Start Date/Time combined, open end", {},
     {"ScheduledProcedureStepStartDate": "20241222-",
      "ScheduledProcedureStepStartTime": "2300-"}, ["SPS004"]),
    ("Scheduled Performing Physician's Name wild card", {},
     {"ScheduledPerformingPhysicianName": "house*"}, ["SPS001"]),
    ("Scheduled Performing Physician's Name absent never matches a value", {},
     {"ScheduledPerformingPhysicianName": "SMITH*"}, []),
    ("Scheduled Procedure Step ID", {}, {"ScheduledProcedureStepID": "SPS004"}, ["SPS004"]),
    ("Scheduled Procedure Step Status", {}, {"ScheduledProcedureStepStatus": "SCHEDULED"}, ALL),
    ("sequence item of several keys", {},
     {"Modality": "CT", "ScheduledStationAETitle": "CT_02"}, ["SPS004"]),
    ("top and sequence keys together",
     {"PatientName": "DOE*"},
     {"Modality": "CT", "ScheduledStationAETitle": "CT_01",
      "ScheduledProcedureStepStartDate": "20241221"}, ["SPS003"]),
    ("empty sequence key is universal", {}, {}, ALL),
    ("a key outside Table K.6-1 is not matched", {"OperatorsName": "SOMEONE"}, None, ALL),
    ("an optional key the items lack matches nothing", {"PatientWeight": "70"}, None, []),
    ("Patient's Birth Date (optional key)", {"PatientBirthDate": "19800101"}, None,
     ["SPS001", "SPS003", "SPS004"]),
    ("Patient's Birth Date range", {"PatientBirthDate": "19700101-19791231"}, None, []),
]


@pytest.mark.parametrize(("top", "sps", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_matching(loaded: WorkflowStore, top: dict[str, Any], sps: dict[str, Any] | None,
                  expected: list[str]) -> None:
    assert found(loaded, query(top, sps)) == expected


def test_combined_matching_can_be_turned_off(loaded: WorkflowStore) -> None:
    q = query(None, {"ScheduledProcedureStepStartDate": "20241220-20241221",
                     "ScheduledProcedureStepStartTime": "1200-1000"})
    assert found(loaded, q, combined_datetime=False) == []  # each key on its own: none
    q = query(None, {"ScheduledProcedureStepStartDate": "20241220-20241221",
                     "ScheduledProcedureStepStartTime": "0800-1100"})
    assert found(loaded, q, combined_datetime=False) == ["SPS001", "SPS003"]


def test_sequence_matching_on_nested_code_sequences() -> None:
    ds = item().dataset
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "A1", "99X", "Abdomen"
    ds.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence = [code]
    key = Dataset()
    key.CodeValue = "A1"
    q = query(None, {"ScheduledProtocolCodeSequence": [key]})
    assert matches(q, ds)
    key.CodeValue = "B2"
    assert not matches(q, ds)


# ---- responses ------------------------------------------------------------------------


def test_response_holds_exactly_the_requested_keys(loaded: WorkflowStore) -> None:
    q = query({"PatientName": "SMITH*", "PatientID": "", "PatientBirthDate": "",
               "PatientWeight": "", "AccessionNumber": "", "StudyInstanceUID": ""},
              {"Modality": "", "ScheduledProcedureStepStartDate": "",
               "ScheduledPerformingPhysicianName": "", "ScheduledProcedureStepStatus": ""})
    (r,) = list(find_worklist(loaded, q, hide_completed=True))
    assert [e.keyword for e in r] == [
        "AccessionNumber", "PatientName", "PatientID", "PatientBirthDate", "PatientWeight",
        "StudyInstanceUID", "ScheduledProcedureStepSequence"]
    assert str(r.PatientName) == "SMITH^ANNA" and r.PatientID == "222"
    assert r.AccessionNumber == "ACC002" and r.StudyInstanceUID == "1.2.2"
    assert r["PatientBirthDate"].is_empty and r["PatientWeight"].is_empty  # no value held
    assert len(r.ScheduledProcedureStepSequence) == 1
    step = r.ScheduledProcedureStepSequence[0]
    assert [e.keyword for e in step] == [
        "Modality", "ScheduledProcedureStepStartDate", "ScheduledPerformingPhysicianName",
        "ScheduledProcedureStepStatus"]
    assert step.Modality == "MR" and step.ScheduledProcedureStepStartDate == "20241220"
    assert step["ScheduledPerformingPhysicianName"].is_empty
    assert step.ScheduledProcedureStepStatus == "SCHEDULED"
    assert "SpecificCharacterSet" not in r


def test_empty_sequence_key_returns_the_whole_step(loaded: WorkflowStore) -> None:
    q = query({"PatientID": "12345"})
    q.ScheduledProcedureStepSequence = []
    (r,) = list(find_worklist(loaded, q, hide_completed=True))
    step = r.ScheduledProcedureStepSequence[0]
    assert step.ScheduledStationAETitle == "CT_01"
    assert step.ScheduledProcedureStepStartTime == "100000"
    assert str(step.ScheduledPerformingPhysicianName) == "HOUSE^GREGORY"
    assert step.ScheduledProcedureStepID == "SPS001"


def test_unknown_and_private_keys_come_back_empty() -> None:
    q = query({"PatientID": "", "OperatorsName": "SOMEONE"})
    q.add_new(0x00091010, "LO", "")
    r = response(q, item().dataset)
    assert r.PatientID == "12345"
    assert r["OperatorsName"].is_empty and r[0x00091010].is_empty


def test_non_ascii_response_declares_utf8_and_survives_encoding(loaded: WorkflowStore) -> None:
    # The query arrives in Latin-1 (ISO_IR 100), as bytes on the wire.
    q = query({"SpecificCharacterSet": "ISO_IR 100", "PatientName": "MÜLLER*", "PatientID": ""})
    wire = read_dataset(io.BytesIO(_encode(q)), True, True)
    (r,) = list(find_worklist(loaded, wire, hide_completed=True))
    assert r.SpecificCharacterSet == "ISO_IR 192"
    back = read_dataset(io.BytesIO(_encode(r)), True, True)
    assert str(back.PatientName) == "MÜLLER^JÖRG"


def _encode(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    fp = DicomFileLike(buf)
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, ds)
    return buf.getvalue()


def test_completed_steps_are_hidden_when_configured(loaded: WorkflowStore) -> None:
    assert loaded.mark_step("1.2.1", "SPS001", "COMPLETED")
    assert loaded.mark_step("1.2.2", "SPS002", "DISCONTINUED")
    assert loaded.mark_step("1.2.3", "SPS003", "STARTED")
    assert not loaded.mark_step("1.2.9", "SPS001", "COMPLETED")
    assert found(loaded, query()) == ["SPS003", "SPS004"]
    q = query(None, {"ScheduledProcedureStepStatus": ""})
    shown = list(find_worklist(loaded, _with_ids(q), hide_completed=False))
    assert [(r.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID,
             r.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus)
            for r in shown] == [("SPS001", "COMPLETED"), ("SPS002", "DISCONTINUED"),
                                ("SPS003", "STARTED"), ("SPS004", "SCHEDULED")]


def test_responses_are_ordered_by_start_date_and_time(store: WorkflowStore) -> None:
    store.put_items([item(scheduledProcedureStepId=f"S{i}",
                          scheduledProcedureStepStartDate=d,
                          scheduledProcedureStepStartTime=t)
                     for i, (d, t) in enumerate([("20241221", "0800"), ("20241220", "1500"),
                                                 ("20241220", "093000")])])
    assert found(store, query()) == ["S2", "S1", "S0"]
