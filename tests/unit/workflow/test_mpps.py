"""MPPS N-CREATE / N-SET rules (PS3.4 F.7.2) through the store, with every refusal's status."""

from __future__ import annotations

import warnings
from copy import deepcopy
from typing import Any

import pytest
from pydicom.dataset import Dataset

from appliance.dimse.status import Status
from tests.unit.workflow.conftest import item
from workers.workflow.mpps import (
    CREATE_TYPE_1,
    ERROR_ID_NO_LONGER_UPDATABLE,
    NO_LONGER_UPDATABLE,
    MppsError,
    MppsRecord,
)
from workers.workflow.mwl_match import find_worklist
from workers.workflow.store import WorkflowStore

UID = "1.2.826.0.1.3680043.9.7.1"
STUDY = "1.2.3.4.5.6.7.8.9"
SERIES = "1.2.826.0.1.3680043.9.7.2"


def create_ds(**changes: Any) -> Dataset:
    """An N-CREATE Attribute List as a modality sends it for the example worklist step."""
    ds = Dataset()
    step = Dataset()
    step.StudyInstanceUID = STUDY
    step.AccessionNumber = "ACC001"
    step.RequestedProcedureID = "ACC001"
    step.ScheduledProcedureStepID = "SPS001"
    step.ScheduledProcedureStepDescription = "CT Abdomen"
    step.ScheduledProtocolCodeSequence = []
    step.ReferencedStudySequence = []
    step.RequestedProcedureDescription = "CT Abdomen"
    ds.ScheduledStepAttributesSequence = [step]
    ds.PatientName = "DOE^JOHN"
    ds.PatientID = "12345"
    ds.PatientBirthDate = "19800101"
    ds.PatientSex = "M"
    ds.PerformedProcedureStepID = "PPS001"
    ds.PerformedStationAETitle = "CT_01"
    ds.PerformedStationName = "CT ROOM 1"
    ds.PerformedProcedureStepStartDate = "20241220"
    ds.PerformedProcedureStepStartTime = "101500"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepDescription = "CT Abdomen"
    ds.Modality = "CT"
    ds.StudyID = "1"
    ds.PerformedSeriesSequence = []
    for key, value in changes.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    return ds


def series_item(uid: str = SERIES) -> Dataset:
    s = Dataset()
    s.SeriesInstanceUID = uid
    s.ProtocolName = "ABD"
    s.PerformingPhysicianName = ""
    s.OperatorsName = ""
    s.SeriesDescription = ""
    s.RetrieveAETitle = ""
    s.ReferencedImageSequence = []
    return s


def final_ds(status: str = "COMPLETED", series: bool = True, **changes: Any) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20241220"
    ds.PerformedProcedureStepEndTime = "103000"
    if series:
        ds.PerformedSeriesSequence = [series_item()]
    for key, value in changes.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    return ds


@pytest.fixture
def scheduled(store: WorkflowStore) -> WorkflowStore:
    store.put_items([item()])
    return store


def refused(call: Any, *args: Any) -> MppsError:
    with pytest.raises(MppsError) as info:
        call(*args)
    return info.value


def step_status(store: WorkflowStore) -> str:
    found = store.get_item(f"{STUDY}/SPS001")
    assert found is not None
    return found.status


# ---- N-CREATE ---------------------------------------------------------------------------


def test_create_stores_in_progress_with_links(scheduled: WorkflowStore) -> None:
    scheduled.create_mpps(UID, create_ds(), "CT_01")
    rec = scheduled.get_mpps(UID)
    assert rec is not None
    assert rec.status == "IN PROGRESS" and rec.calling_ae == "CT_01"
    assert rec.steps == ((STUDY, "SPS001"),) and rec.series_uids == ()
    assert rec.dataset.SOPInstanceUID == UID
    assert rec.dataset.SOPClassUID == "1.2.840.10008.3.1.2.3.3"
    assert rec.dataset["PerformedProcedureStepEndDate"].is_empty  # Type 2 kept, empty
    assert rec.created_at == rec.updated_at > 0
    assert step_status(scheduled) == "STARTED"


def test_missing_type_2_attributes_are_added_empty(store: WorkflowStore) -> None:
    store.create_mpps(UID, create_ds(PerformedStationName=None, StudyID=None,
                                     PerformedSeriesSequence=None), "AE")
    rec = store.get_mpps(UID)
    assert rec is not None
    assert rec.dataset["PerformedStationName"].is_empty
    assert rec.dataset["StudyID"].is_empty
    assert rec.dataset.PerformedSeriesSequence == []


def test_duplicate_instance_is_refused(scheduled: WorkflowStore) -> None:
    scheduled.create_mpps(UID, create_ds(), "CT_01")
    err = refused(scheduled.create_mpps, UID, create_ds(PatientName="OTHER"), "CT_02")
    assert err.status == 0x0111 == int(Status.DUPLICATE_SOP_INSTANCE)
    rec = scheduled.get_mpps(UID)
    assert rec is not None and str(rec.dataset.PatientName) == "DOE^JOHN"


@pytest.mark.parametrize("status", ["COMPLETED", "DISCONTINUED", "SCHEDULED"])
def test_create_must_start_in_progress(store: WorkflowStore, status: str) -> None:
    err = refused(store.create_mpps, UID, create_ds(PerformedProcedureStepStatus=status), "A")
    assert err.status == 0x0106 == int(Status.INVALID_ATTRIBUTE_VALUE)
    assert err.tags == (0x00400252,)
    assert store.get_mpps(UID) is None


@pytest.mark.parametrize("keyword", CREATE_TYPE_1)
def test_create_type_1_missing(store: WorkflowStore, keyword: str) -> None:
    err = refused(store.create_mpps, UID, create_ds(**{keyword: None}), "A")
    assert err.status == 0x0120 == int(Status.MISSING_ATTRIBUTE)
    assert keyword in err.comment
    assert store.get_mpps(UID) is None


@pytest.mark.parametrize("keyword", CREATE_TYPE_1)
def test_create_type_1_empty(store: WorkflowStore, keyword: str) -> None:
    ds = create_ds()
    ds[keyword].value = [] if ds[keyword].VR == "SQ" else ""
    err = refused(store.create_mpps, UID, ds, "A")
    assert err.status == 0x0121 == int(Status.MISSING_ATTRIBUTE_VALUE)
    assert keyword in err.comment


def test_create_needs_study_uid_in_each_scheduled_step_item(store: WorkflowStore) -> None:
    ds = create_ds()
    del ds.ScheduledStepAttributesSequence[0].StudyInstanceUID
    assert refused(store.create_mpps, UID, ds, "A").status == Status.MISSING_ATTRIBUTE
    ds.ScheduledStepAttributesSequence[0].StudyInstanceUID = ""
    assert refused(store.create_mpps, UID, ds, "A").status == Status.MISSING_ATTRIBUTE_VALUE


@pytest.mark.parametrize(("changes", "field"), [
    ({"PerformedProcedureStepStartDate": "2024-12-20"}, "PerformedProcedureStepStartDate"),
    ({"PerformedProcedureStepStartTime": "256000"}, "PerformedProcedureStepStartTime"),
    ({"PerformedStationAETitle": "AN_AE_TITLE_TOO_LONG"}, "PerformedStationAETitle"),
])
def test_create_bad_value_forms(store: WorkflowStore, changes: dict[str, str],
                                field: str) -> None:
    err = refused(store.create_mpps, UID, create_ds(**changes), "A")
    assert err.status == Status.INVALID_ATTRIBUTE_VALUE
    assert err.comment.startswith(field)


def test_create_bad_uid_inside_sequence(store: WorkflowStore) -> None:
    ds = create_ds()
    ds.ScheduledStepAttributesSequence[0].StudyInstanceUID = "1.2.003"
    err = refused(store.create_mpps, UID, ds, "A")
    assert err.status == Status.INVALID_ATTRIBUTE_VALUE and "StudyInstanceUID" in err.comment


def test_create_bad_affected_uid_and_mismatched_sop_instance(store: WorkflowStore) -> None:
    assert refused(store.create_mpps, "not.a.uid", create_ds(), "A").status == 0x0106
    err = refused(store.create_mpps, UID, create_ds(SOPInstanceUID="1.2.3"), "A")
    assert err.status == Status.INVALID_ATTRIBUTE_VALUE


@pytest.mark.parametrize("tag", [0x00409999, 0x7FE00010, 0x00020010])
def test_create_no_such_attribute(store: WorkflowStore, tag: int) -> None:
    ds = create_ds()
    ds.add_new(tag, "OB" if tag == 0x7FE00010 else "LO", b"\0\0" if tag == 0x7FE00010 else "x")
    err = refused(store.create_mpps, UID, ds, "A")
    assert err.status == 0x0105 == int(Status.NO_SUCH_ATTRIBUTE) and err.tags == (tag,)


def test_group_lengths_are_dropped(store: WorkflowStore) -> None:
    ds = create_ds()
    ds.add_new(0x00400000, "UL", 1234)
    store.create_mpps(UID, ds, "A")
    mod = final_ds()
    mod.add_new(0x00400000, "UL", 99)
    state = store.set_mpps(UID, mod)
    assert 0x00400000 not in state and state.PerformedProcedureStepStatus == "COMPLETED"


def test_private_attributes_are_kept(store: WorkflowStore) -> None:
    ds = create_ds()
    ds.add_new(0x00090010, "LO", "ACME")
    ds.add_new(0x00091001, "LO", "vendor value")
    store.create_mpps(UID, ds, "A")
    rec = store.get_mpps(UID)
    assert rec is not None and rec.dataset[0x00091001].value == "vendor value"


def test_unscheduled_mpps_links_no_step(scheduled: WorkflowStore) -> None:
    ds = create_ds()
    ds.ScheduledStepAttributesSequence[0].ScheduledProcedureStepID = ""
    scheduled.create_mpps(UID, ds, "A")
    rec = scheduled.get_mpps(UID)
    assert rec is not None and rec.steps == ()
    assert step_status(scheduled) == "SCHEDULED"


# ---- N-SET ------------------------------------------------------------------------------


def test_set_in_progress_then_completed(scheduled: WorkflowStore) -> None:
    scheduled.create_mpps(UID, create_ds(), "CT_01")
    update = Dataset()
    update.PerformedProcedureStepDescription = "CT Abdomen with contrast"
    state = scheduled.set_mpps(UID, update)
    assert state.PerformedProcedureStepStatus == "IN PROGRESS"
    assert state.PerformedProcedureStepDescription == "CT Abdomen with contrast"
    assert step_status(scheduled) == "STARTED"
    state = scheduled.set_mpps(UID, final_ds())
    assert state.PerformedProcedureStepStatus == "COMPLETED"
    rec = scheduled.get_mpps(UID)
    assert rec is not None
    assert rec.status == "COMPLETED" and rec.series_uids == (SERIES,)
    assert rec.updated_at >= rec.created_at
    assert rec.dataset.PerformedProcedureStepDescription == "CT Abdomen with contrast"
    assert step_status(scheduled) == "COMPLETED"
    assert list(find_worklist(scheduled, Dataset(), hide_completed=True)) == []
    assert len(list(find_worklist(scheduled, Dataset(), hide_completed=False))) == 1


def test_set_discontinued_needs_no_series(scheduled: WorkflowStore) -> None:
    scheduled.create_mpps(UID, create_ds(), "CT_01")
    scheduled.set_mpps(UID, final_ds("DISCONTINUED", series=False))
    assert step_status(scheduled) == "DISCONTINUED"


def test_set_unknown_instance(store: WorkflowStore) -> None:
    err = refused(store.set_mpps, UID, final_ds())
    assert err.status == 0x0112 == int(Status.NO_SUCH_OBJECT_INSTANCE)


@pytest.mark.parametrize("final", ["COMPLETED", "DISCONTINUED"])
@pytest.mark.parametrize("second", [
    "same final again", "back to IN PROGRESS", "other final", "description only"])
def test_no_update_after_a_final_state(scheduled: WorkflowStore, final: str,
                                       second: str) -> None:
    scheduled.create_mpps(UID, create_ds(), "CT_01")
    scheduled.set_mpps(UID, final_ds(final))
    before = scheduled.get_mpps(UID)
    other = "DISCONTINUED" if final == "COMPLETED" else "COMPLETED"
    mod = {"same final again": final_ds(final),
           "back to IN PROGRESS": final_ds("IN PROGRESS"),
           "other final": final_ds(other),
           "description only": final_ds(final, series=False,
                                        PerformedProcedureStepStatus=None,
                                        PerformedProcedureStepDescription="x")}[second]
    err = refused(scheduled.set_mpps, UID, mod)
    assert err.status == 0x0110 == int(Status.PROCESSING_FAILURE)
    assert err.comment == NO_LONGER_UPDATABLE == \
        "Performed Procedure Step Object may no longer be updated"
    assert err.error_id == ERROR_ID_NO_LONGER_UPDATABLE == 0xA710
    after = scheduled.get_mpps(UID)
    assert before is not None and after is not None
    assert after.to_json() == before.to_json()
    assert step_status(scheduled) == final


with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # pydicom warns about the bad date we mean to send
    BAD_END_DATE = final_ds(PerformedProcedureStepEndDate="20241320")


@pytest.mark.parametrize(("mod", "status", "word"), [
    (final_ds(PerformedProcedureStepEndDate=None), 0x0121, "PerformedProcedureStepEndDate"),
    (final_ds(PerformedProcedureStepEndTime=""), 0x0121, "PerformedProcedureStepEndTime"),
    (final_ds("DISCONTINUED", PerformedProcedureStepEndTime=None), 0x0121,
     "PerformedProcedureStepEndTime"),
    (final_ds(series=False), 0x0121, "PerformedSeriesSequence"),
    (final_ds(PerformedSeriesSequence=[]), 0x0121, "PerformedSeriesSequence"),
    (final_ds("FINISHED"), 0x0106, "FINISHED"),
    (final_ds(""), 0x0106, "Status"),
    (BAD_END_DATE, 0x0106, "PerformedProcedureStepEndDate"),
])
def test_set_refusals_leave_the_instance_unchanged(scheduled: WorkflowStore, mod: Dataset,
                                                   status: int, word: str) -> None:
    scheduled.create_mpps(UID, create_ds(), "CT_01")
    before = scheduled.get_mpps(UID)
    err = refused(scheduled.set_mpps, UID, mod)
    assert err.status == status and word in err.comment, err
    after = scheduled.get_mpps(UID)
    assert before is not None and after is not None
    assert after.to_json() == before.to_json()
    assert step_status(scheduled) == "STARTED"


def test_series_item_needs_a_series_uid(store: WorkflowStore) -> None:
    store.create_mpps(UID, create_ds(), "A")
    bad = series_item()
    del bad.SeriesInstanceUID
    err = refused(store.set_mpps, UID, final_ds(PerformedSeriesSequence=[bad]))
    assert err.status == Status.MISSING_ATTRIBUTE


NOT_SETTABLE_CHANGES = [
    ("PatientName", "OTHER^NAME"), ("PatientID", "999"), ("PatientBirthDate", "19900101"),
    ("PatientSex", "F"), ("PerformedProcedureStepID", "PPS999"),
    ("PerformedStationAETitle", "CT_99"), ("PerformedStationName", "ELSEWHERE"),
    ("PerformedProcedureStepStartDate", "20241221"),
    ("PerformedProcedureStepStartTime", "120000"), ("Modality", "MR"), ("StudyID", "2"),
]


@pytest.mark.parametrize(("keyword", "value"), NOT_SETTABLE_CHANGES)
def test_set_may_not_change_create_only_attributes(store: WorkflowStore, keyword: str,
                                                   value: str) -> None:
    store.create_mpps(UID, create_ds(), "A")
    mod = Dataset()
    setattr(mod, keyword, value)
    err = refused(store.set_mpps, UID, mod)
    assert err.status == 0x0105 == int(Status.NO_SUCH_ATTRIBUTE) and keyword in err.comment


def test_set_may_not_change_the_scheduled_step_link(store: WorkflowStore) -> None:
    store.create_mpps(UID, create_ds(), "A")
    mod = Dataset()
    mod.ScheduledStepAttributesSequence = deepcopy(create_ds().ScheduledStepAttributesSequence)
    mod.ScheduledStepAttributesSequence[0].ScheduledProcedureStepID = "SPS999"
    err = refused(store.set_mpps, UID, mod)
    assert err.status == Status.NO_SUCH_ATTRIBUTE


def test_set_may_repeat_create_only_attributes_unchanged(scheduled: WorkflowStore) -> None:
    scheduled.create_mpps(UID, create_ds(), "A")
    mod = create_ds(PerformedProcedureStepStatus="COMPLETED")  # the whole set again
    mod.PerformedProcedureStepEndDate = "20241220"
    mod.PerformedProcedureStepEndTime = "103000"
    mod.PerformedSeriesSequence = [series_item()]
    state = scheduled.set_mpps(UID, mod)
    assert state.PerformedProcedureStepStatus == "COMPLETED"


def test_record_json_round_trip(store: WorkflowStore) -> None:
    store.create_mpps(UID, create_ds(), "A")
    rec = store.get_mpps(UID)
    assert rec is not None
    again = MppsRecord.from_json(rec.to_json())
    assert again.to_json() == rec.to_json() and again.steps == rec.steps


def test_list_mpps_oldest_first(store: WorkflowStore) -> None:
    for n in (3, 1, 2):
        store.create_mpps(f"1.2.3.{n}", create_ds(), "A")
    assert [r.sop_instance_uid for r in store.list_mpps()] == ["1.2.3.3", "1.2.3.1", "1.2.3.2"]
