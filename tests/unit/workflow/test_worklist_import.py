"""Worklist item import: the issue's JSON format, DICOM JSON (PS3.18 F), validation messages
naming the field, defaults, and all-or-nothing imports of files and folders."""

from __future__ import annotations

import json
import os
import time
from copy import deepcopy
from pathlib import Path

import pytest

from tests.unit.workflow.conftest import EXAMPLE, example, item
from workers.workflow.store import WorkflowStore
from workers.workflow.vr import problem
from workers.workflow.worklist import (
    WorklistImportError,
    WorklistItem,
    camel,
    derived_study_uid,
    import_folder,
    import_paths,
    load_paths,
    parse_items,
)


def _problems(obj: object) -> list[str]:
    with pytest.raises(WorklistImportError) as info:
        parse_items(obj, "orders.json")
    return info.value.problems


def test_example_format_maps_onto_the_mwl_attributes() -> None:
    it = item()
    ds = it.dataset
    assert ds.PatientID == "12345"
    assert str(ds.PatientName) == "DOE^JOHN"
    assert ds.PatientBirthDate == "19800101" and ds.PatientSex == "M"
    assert ds.StudyInstanceUID == "1.2.3.4.5.6.7.8.9"
    assert ds.AccessionNumber == "ACC001"
    step = ds.ScheduledProcedureStepSequence[0]
    assert len(ds.ScheduledProcedureStepSequence) == 1
    assert step.ScheduledStationAETitle == "CT_01"
    assert step.ScheduledProcedureStepStartDate == "20241220"
    assert step.ScheduledProcedureStepStartTime == "100000"
    assert step.Modality == "CT"
    assert step.ScheduledProcedureStepID == "SPS001"
    assert step.ScheduledProcedureStepDescription == "CT Abdomen"
    # SPS attributes live in the step, not at the top level
    assert "Modality" not in ds and "ScheduledStationAETitle" not in ds
    # defaults: status, Requested Procedure ID (accession), description copied (Type 1C)
    assert step.ScheduledProcedureStepStatus == "SCHEDULED"
    assert ds.RequestedProcedureID == "ACC001"
    assert ds.RequestedProcedureDescription == "CT Abdomen"
    assert it.key == "1.2.3.4.5.6.7.8.9/SPS001"
    assert it.status == "SCHEDULED"


def test_optional_common_fields_are_accepted() -> None:
    it = item(requestedProcedureId="RP7", requestedProcedureDescription="Abdomen CT",
              referringPhysicianName="WHO^DR", scheduledPerformingPhysicianName="HOUSE^G",
              scheduledStationName="CT ROOM 1", admissionId="ADM9")
    ds = it.dataset
    assert ds.RequestedProcedureID == "RP7"
    assert ds.RequestedProcedureDescription == "Abdomen CT"
    assert str(ds.ReferringPhysicianName) == "WHO^DR" and ds.AdmissionID == "ADM9"
    step = ds.ScheduledProcedureStepSequence[0]
    assert str(step.ScheduledPerformingPhysicianName) == "HOUSE^G"
    assert step.ScheduledStationName == "CT ROOM 1"


def test_a_file_may_hold_a_list() -> None:
    items = parse_items([example(), example(scheduledProcedureStepId="SPS002")], "f.json")
    assert [i.sps_id for i in items] == ["SPS001", "SPS002"]


@pytest.mark.parametrize(("changes", "expected"), [
    ({"patientBirthDate": "1980-01-01"}, "patientBirthDate: '1980-01-01': not a DICOM date"),
    ({"patientBirthDate": "19801301"}, "patientBirthDate: '19801301': not a calendar date"),
    ({"scheduledProcedureStepStartDate": "20240230"},
     "scheduledProcedureStepStartDate: '20240230': not a calendar date"),
    ({"scheduledProcedureStepStartTime": "250000"},
     "scheduledProcedureStepStartTime: '250000': hour, minute or second out of range"),
    ({"scheduledProcedureStepStartTime": "10:00"},
     "scheduledProcedureStepStartTime: '10:00': not a DICOM time"),
    ({"studyInstanceUid": "1.2.03.4"}, "studyInstanceUid: '1.2.03.4': not a UID"),
    ({"studyInstanceUid": "1.2.abc"}, "studyInstanceUid: '1.2.abc': not a UID"),
    ({"studyInstanceUid": "1." + "2" * 70}, "studyInstanceUid: '1.222"),
    ({"scheduledStationAeTitle": "A_VERY_LONG_AE_TITLE"},
     "scheduledStationAeTitle: 'A_VERY_LONG_AE_TITLE': longer than 16 characters"),
    ({"modality": "ct"}, "modality: 'ct': code strings are upper-case"),
    ({"patientSex": "X"}, "patientSex: 'X': must be M, F or O"),
    ({"patientId": None}, "patientId: required"),
    ({"patientName": ""}, "patientName: required"),
    ({"scheduledStationAeTitle": None}, "scheduledStationAeTitle: required"),
    ({"scheduledProcedureStepStartDate": None}, "scheduledProcedureStepStartDate: required"),
    ({"scheduledProcedureStepStartTime": None}, "scheduledProcedureStepStartTime: required"),
    ({"modality": None}, "modality: required"),
    ({"scheduledProcedureStepId": None}, "scheduledProcedureStepId: required"),
    ({"scheduledProcedureStepDescription": None},
     "scheduledProcedureStepDescription: required (or requestedProcedureDescription)"),
    ({"favouriteColour": "blue"}, "favouriteColour: unknown key"),
    ({"scheduledProtocolCodeSequence": []},
     "scheduledProtocolCodeSequence: unknown key (sequences need a DICOM JSON item)"),
    ({"patientId": {"a": 1}}, "patientId: must be a string"),
    ({"accessionNumber": 17}, "accessionNumber: must be a string"),
    ({"scheduledProcedureStepStatus": "DONE"}, "scheduledProcedureStepStatus: 'DONE': not one"),
])
def test_bad_fields_are_named(changes: dict[str, object], expected: str) -> None:
    problems = _problems(example(**changes))
    assert len(problems) == 1, problems
    assert problems[0].startswith("orders.json: item 1: " + expected), problems


def test_every_problem_of_every_item_is_reported() -> None:
    problems = _problems([example(), example(patientBirthDate="x", modality=None), "nope"])
    assert problems == [
        "orders.json: item 2: patientBirthDate: 'x': not a DICOM date (YYYYMMDD)",
        "orders.json: item 2: modality: required",
        "orders.json: item 3: not a JSON object",
    ]


def test_keys_are_matched_case_insensitively_and_named_as_written() -> None:
    it = parse_items(example(patientId=None, PATIENTID="777"), "f.json")[0]
    assert it.dataset.PatientID == "777"
    problems = _problems(example(patientBirthDate=None, PatientBirthDate="bad"))
    assert problems[0].startswith("orders.json: item 1: PatientBirthDate: 'bad'")


def test_numeric_vrs_take_numbers() -> None:
    it = item(patientWeight=72.5)
    assert float(it.dataset.PatientWeight) == 72.5


def test_missing_study_uid_is_derived_stably() -> None:
    a = item(studyInstanceUid=None)
    b = item(studyInstanceUid=None)
    c = item(studyInstanceUid=None, scheduledProcedureStepId="SPS002")
    uid = a.study_instance_uid
    assert uid.startswith("2.25.") and problem("UI", uid) is None and len(uid) <= 64
    assert b.study_instance_uid == uid  # re-import replaces instead of duplicating
    assert c.study_instance_uid != uid
    assert uid == derived_study_uid("12345", "ACC001", "SPS001")


def test_non_ascii_values_are_kept_as_unicode() -> None:
    it = item(patientName="MÜLLER^JÖRG")
    assert str(it.dataset.PatientName) == "MÜLLER^JÖRG"
    again = WorklistItem.from_json(it.to_json())
    assert str(again.dataset.PatientName) == "MÜLLER^JÖRG"
    assert "SpecificCharacterSet" not in again.dataset


def _dicom_json(**extra: object) -> dict[str, object]:
    ds = item().dataset
    out: dict[str, object] = ds.to_json_dict()
    out.update(extra)
    return out


def test_dicom_json_items_are_accepted() -> None:
    obj = _dicom_json()
    (it,) = parse_items(obj, "dj.json")
    assert it.key == "1.2.3.4.5.6.7.8.9/SPS001"
    assert it.dataset.ScheduledProcedureStepSequence[0].Modality == "CT"


def test_dicom_json_item_with_two_steps_becomes_two_items() -> None:
    ds = item().dataset
    second = deepcopy(ds.ScheduledProcedureStepSequence[0])
    second.ScheduledProcedureStepID = "SPS002"
    second.Modality = "MR"
    ds.ScheduledProcedureStepSequence.append(second)
    items = parse_items(ds.to_json_dict(), "dj.json")
    assert [(i.sps_id, i.step.Modality) for i in items] == [("SPS001", "CT"), ("SPS002", "MR")]
    assert all(len(i.dataset.ScheduledProcedureStepSequence) == 1 for i in items)


def test_dicom_json_problems_name_keyword_and_tag() -> None:
    problems = _problems(_dicom_json(**{"00100030": {"vr": "DA", "Value": ["1980-1-1"]}}))
    assert problems == ["orders.json: item 1: PatientBirthDate (0010,0030): '1980-1-1': "
                        "not a DICOM date (YYYYMMDD)"]
    obj = _dicom_json()
    del obj["00100020"]
    assert _problems(obj) == ["orders.json: item 1: PatientID (0010,0020): required"]
    obj = _dicom_json()
    del obj["00400100"]
    assert _problems(obj) == ["orders.json: item 1: ScheduledProcedureStepSequence "
                              "(0040,0100): missing or empty"]
    bad = _problems({"00100020": {"vr": "LO", "Value": "not a list"}})
    assert bad[0].startswith("orders.json: item 1: not valid DICOM JSON"), bad


def test_camel_spelling() -> None:
    assert camel("PatientID") == "patientId"
    assert camel("StudyInstanceUID") == "studyInstanceUid"
    assert camel("ScheduledStationAETitle") == "scheduledStationAeTitle"
    assert all(camel(k[:1].upper() + k[1:]) == k for k in EXAMPLE if k != "patientId")


# ---- files, folders, all-or-nothing ---------------------------------------------------


def _write(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def test_folder_import_is_recursive_and_sorted(tmp_path: Path, store: WorkflowStore) -> None:
    _write(tmp_path / "in" / "b.json", example(scheduledProcedureStepId="B"))
    _write(tmp_path / "in" / "sub" / "a.json", [example(scheduledProcedureStepId="A1"),
                                                 example(scheduledProcedureStepId="A2")])
    (tmp_path / "in" / "notes.txt").write_text("ignored")
    items = import_paths(store, [tmp_path / "in"])
    assert [i.sps_id for i in items] == ["B", "A1", "A2"]
    assert sorted(i.sps_id for i in store.items()) == ["A1", "A2", "B"]


def test_one_bad_item_imports_nothing(tmp_path: Path, store: WorkflowStore) -> None:
    _write(tmp_path / "in" / "a.json", example(scheduledProcedureStepId="A"))
    _write(tmp_path / "in" / "b.json", [example(scheduledProcedureStepId="B"),
                                         example(scheduledProcedureStepId="C",
                                                 patientBirthDate="yesterday")])
    with pytest.raises(WorklistImportError) as info:
        import_paths(store, [tmp_path / "in"])
    assert info.value.problems == [
        f"{tmp_path / 'in' / 'b.json'}: item 2: patientBirthDate: 'yesterday': "
        "not a DICOM date (YYYYMMDD)"]
    assert list(store.items()) == []


def test_not_json_and_missing_paths(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(WorklistImportError) as info:
        load_paths([bad])
    assert info.value.problems[0].startswith(f"{bad}: not JSON")
    with pytest.raises(FileNotFoundError):
        load_paths([tmp_path / "absent.json"])


def test_two_items_with_one_key_are_refused(tmp_path: Path) -> None:
    _write(tmp_path / "a.json", example())
    _write(tmp_path / "b.json", example(patientName="OTHER^NAME"))
    with pytest.raises(WorklistImportError) as info:
        load_paths([tmp_path / "a.json", tmp_path / "b.json"])
    assert info.value.problems == [
        f"{tmp_path / 'b.json'}: item key 1.2.3.4.5.6.7.8.9/SPS001 is also in "
        f"{tmp_path / 'a.json'}"]


def test_adding_an_existing_key_replaces_it(store: WorkflowStore) -> None:
    store.put_items([item()])
    store.put_items([item(patientName="DOE^JANE")])
    (only,) = list(store.items())
    assert str(only.dataset.PatientName) == "DOE^JANE"


def test_watched_folder_pass(tmp_path: Path, store: WorkflowStore) -> None:
    folder = tmp_path / "watch"
    good = _write(folder / "good.json", example())
    bad = _write(folder / "bad.json", example(scheduledProcedureStepId="X", modality="ct"))
    fresh = _write(folder / "fresh.json", example(scheduledProcedureStepId="F"))
    old = time.time() - 60
    for p in (good, bad):
        os.utime(p, (old, old))
    results = import_folder(store, folder, settle_s=5.0)
    assert sorted((r.path.parent.name, r.path.name, r.items) for r in results) == [
        ("imported", "good.json", 1), ("rejected", "bad.json", 0)]
    error = (folder / "rejected" / "bad.json.error.txt").read_text()
    assert "modality: 'ct'" in error
    assert fresh.exists()  # still being written, perhaps: next pass
    assert [i.sps_id for i in store.items()] == ["SPS001"]
    results = import_folder(store, folder, settle_s=0.0)
    assert [(r.path.name, r.items) for r in results] == [("fresh.json", 1)]
    assert sorted(i.sps_id for i in store.items()) == ["F", "SPS001"]
