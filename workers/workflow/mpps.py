"""Modality Performed Procedure Step rules (PS3.4 Annex F.7) and the record we keep, pure.

THEORY OF OPERATION
-------------------
An MPPS SOP Instance is created IN PROGRESS by N-CREATE and moved once, by N-SET, to
COMPLETED or DISCONTINUED; after that it is frozen. ``validate_create`` and ``apply_set`` are
the whole rule book: they take data sets and return the new state or raise ``MppsError``
carrying the PS3.7 status, so the store can run them inside one write transaction (read,
check, write: two SCUs racing on one instance cannot both win).

Rules, with the status each refusal carries:

- N-CREATE (F.7.2.1.3): Performed Procedure Step Status must be IN PROGRESS, otherwise
  0x0106 Invalid Attribute Value. The Type 1 attributes of Table F.7.2-1's N-CREATE column
  must be present (0x0120 Missing Attribute) with a value (0x0121 Missing Attribute Value),
  as must Study Instance UID in each Scheduled Step Attributes Sequence item. An instance
  UID that already exists is 0x0111 Duplicate SOP Instance (PS3.7 10.1.5.1.6; the store
  checks it).
- N-SET (F.7.2.2.3): accepted only while the stored status is IN PROGRESS; otherwise 0x0110
  Processing Failure with the Error Comment "Performed Procedure Step Object may no longer
  be updated" and Error ID A710 (Table F.7.2-2). An attribute Table F.7.2-1 marks "Not
  allowed" for N-SET (the scheduling link, patient identity, the step's ID, station, start
  and modality) may not change: a different value is 0x0105 No Such Attribute (the PS3.7
  status for an attribute the operation may not carry); resending the value already stored
  is accepted, since SCUs commonly repeat the whole data set.
- Status values other than IN PROGRESS, COMPLETED, DISCONTINUED: 0x0106.
- Final state (Table F.7.2-1 "Final State" column), checked when an N-SET moves the step to
  COMPLETED or DISCONTINUED: End Date and End Time need values (0x0121); COMPLETED also
  needs at least one Performed Series Sequence item (0x0121). A DISCONTINUED step may have
  performed no series.
- Performed Series Sequence items need a Series Instance UID (0x0120 / 0x0121).
- Any value of the wrong form (a bad date, time or UID) is 0x0106; a tag no dictionary
  knows, or one of groups 0000, 0002, FFFE or Pixel Data, is 0x0105. Private attributes
  are kept as sent.

Type 2 attributes an SCU leaves out of N-CREATE are added empty, so the stored instance
always holds every attribute of the table (what an N-GET would return).
"""

from __future__ import annotations

import json
from copy import deepcopy
from dataclasses import dataclass
from typing import Any, Final

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from appliance.dimse.status import Status
from workers.workflow.vr import as_text as _as_text
from workers.workflow.vr import problem
from workers.workflow.vr import text as _text

MPPS_SOP_CLASS: Final = "1.2.840.10008.3.1.2.3.3"
IN_PROGRESS: Final = "IN PROGRESS"
COMPLETED: Final = "COMPLETED"
DISCONTINUED: Final = "DISCONTINUED"
FINAL_STATES: Final = frozenset({COMPLETED, DISCONTINUED})
PPS_STATUSES: Final = frozenset({IN_PROGRESS, COMPLETED, DISCONTINUED})
NO_LONGER_UPDATABLE: Final = "Performed Procedure Step Object may no longer be updated"
ERROR_ID_NO_LONGER_UPDATABLE: Final = 0xA710  # Table F.7.2-2 Error ID (0000,0903)

# Table F.7.2-1, N-CREATE column, Type 1.
CREATE_TYPE_1: Final = (
    "ScheduledStepAttributesSequence", "PerformedProcedureStepID", "PerformedStationAETitle",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "PerformedProcedureStepStatus", "Modality",
)
# Table F.7.2-1, N-CREATE column, Type 2 (added empty when absent).
CREATE_TYPE_2: Final = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "ReferencedPatientSequence",
    "PerformedStationName", "PerformedLocation", "PerformedProcedureStepDescription",
    "PerformedProcedureTypeDescription", "ProcedureCodeSequence",
    "PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime", "StudyID",
    "PerformedProtocolCodeSequence", "PerformedSeriesSequence",
)
# Table F.7.2-1, N-SET column "Not allowed".
NOT_SETTABLE: Final = frozenset({
    "ScheduledStepAttributesSequence", "PatientName", "PatientID", "IssuerOfPatientID",
    "PatientBirthDate", "PatientSex", "ReferencedPatientSequence", "AdmissionID",
    "PerformedProcedureStepID", "PerformedStationAETitle", "PerformedStationName",
    "PerformedLocation", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "Modality", "StudyID", "SOPClassUID", "SOPInstanceUID",
})
_FORBIDDEN_GROUPS: Final = frozenset({0x0000, 0x0002, 0xFFFE})
_PIXEL_DATA: Final = 0x7FE00010


class MppsError(Exception):
    """A refused N-CREATE/N-SET: ``status`` (PS3.7 Annex C), ``comment`` for Error Comment
    (0000,0902, at most 64 characters), ``error_id`` for Error ID (0000,0903) when the
    standard names one, ``tags`` for the Attribute Identifier List (0000,1005)."""

    def __init__(self, status: int, comment: str, *, error_id: int | None = None,
                 tags: tuple[int, ...] = ()) -> None:
        super().__init__(f"0x{status:04X}: {comment}")
        self.status = status
        self.comment = comment[:64]
        self.error_id = error_id
        self.tags = tags


# ---- the record ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class MppsRecord:
    """One MPPS SOP Instance as stored: its full current data set and where it links."""

    sop_instance_uid: str
    status: str  # Performed Procedure Step Status
    calling_ae: str
    created_at: float  # epoch seconds
    updated_at: float
    dataset: Dataset
    steps: tuple[tuple[str, str], ...]  # (Study Instance UID, Scheduled Procedure Step ID)
    series_uids: tuple[str, ...]  # Performed Series Sequence > Series Instance UID

    @classmethod
    def build(cls, sop_instance_uid: str, ds: Dataset, calling_ae: str, created_at: float,
              updated_at: float) -> MppsRecord:
        return cls(sop_instance_uid, _text(ds, "PerformedProcedureStepStatus"), calling_ae,
                   created_at, updated_at, ds, scheduled_steps(ds), performed_series(ds))

    def to_json(self) -> bytes:
        return json.dumps({
            "v": 1, "uid": self.sop_instance_uid, "calling_ae": self.calling_ae,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "dataset": self.dataset.to_json_dict(),
        }, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> MppsRecord:
        obj: dict[str, Any] = json.loads(raw)
        ds = Dataset.from_json(obj["dataset"])
        return cls.build(obj["uid"], ds, obj["calling_ae"], obj["created_at"],
                         obj["updated_at"])


def scheduled_steps(ds: Dataset) -> tuple[tuple[str, str], ...]:
    """(Study Instance UID, Scheduled Procedure Step ID) of each Scheduled Step Attributes
    Sequence item that names a step (an unscheduled MPPS, F.7.2 note, names none)."""
    out = []
    for item in ds.get("ScheduledStepAttributesSequence") or ():
        study, step = _text(item, "StudyInstanceUID"), _text(item, "ScheduledProcedureStepID")
        if study and step:
            out.append((study, step))
    return tuple(out)


def performed_series(ds: Dataset) -> tuple[str, ...]:
    return tuple(uid for item in ds.get("PerformedSeriesSequence") or ()
                 if (uid := _text(item, "SeriesInstanceUID")))


def step_status(pps_status: str) -> str:
    """The Scheduled Procedure Step Status (0040,0020) an MPPS status implies."""
    return {IN_PROGRESS: "STARTED"}.get(pps_status, pps_status)


# ---- N-CREATE -----------------------------------------------------------------------------


def validate_create(sop_instance_uid: str, ds: Dataset) -> Dataset:
    """The state to store for an N-CREATE Attribute List, or MppsError (F.7.2.1.3)."""
    if problem("UI", sop_instance_uid) or not sop_instance_uid:
        raise MppsError(Status.INVALID_ATTRIBUTE_VALUE, "Affected SOP Instance UID is not a UID",
                        tags=(0x00080018,))
    _check_known(ds)
    for keyword in CREATE_TYPE_1:
        _require_value(ds, keyword)
    status = _text(ds, "PerformedProcedureStepStatus")
    if status != IN_PROGRESS:
        raise MppsError(Status.INVALID_ATTRIBUTE_VALUE,
                        f"Performed Procedure Step Status must be IN PROGRESS, not {status!r}",
                        tags=(0x00400252,))
    for item in ds.ScheduledStepAttributesSequence:
        _require_value(item, "StudyInstanceUID", "Scheduled Step Attributes Sequence > ")
    given = _text(ds, "SOPInstanceUID")
    if given and given != sop_instance_uid:
        raise MppsError(Status.INVALID_ATTRIBUTE_VALUE,
                        "SOP Instance UID differs from the Affected SOP Instance UID",
                        tags=(0x00080018,))
    _check_forms(ds)
    _check_series(ds)
    state = _without_group_lengths(ds)
    for keyword in CREATE_TYPE_2:
        if keyword not in state:
            state[keyword] = DataElement(Tag(keyword), dictionary_VR(keyword),
                                         [] if dictionary_VR(keyword) == "SQ" else None)
    state.SOPClassUID = MPPS_SOP_CLASS
    state.SOPInstanceUID = sop_instance_uid
    return state


# ---- N-SET --------------------------------------------------------------------------------


def apply_set(current: Dataset, modification: Dataset) -> Dataset:
    """The new state after an N-SET Modification List, or MppsError (F.7.2.2.3)."""
    if _text(current, "PerformedProcedureStepStatus") != IN_PROGRESS:
        raise MppsError(Status.PROCESSING_FAILURE, NO_LONGER_UPDATABLE,
                        error_id=ERROR_ID_NO_LONGER_UPDATABLE)
    _check_known(modification)
    for elem in modification:
        if elem.keyword in NOT_SETTABLE and not _same(elem, current.get(elem.tag)):
            raise MppsError(Status.NO_SUCH_ATTRIBUTE,
                            f"{elem.keyword} may not be changed by N-SET", tags=(int(elem.tag),))
    if "PerformedProcedureStepStatus" in modification:
        status = _text(modification, "PerformedProcedureStepStatus")
        if status not in PPS_STATUSES:
            raise MppsError(Status.INVALID_ATTRIBUTE_VALUE,
                            f"Performed Procedure Step Status {status!r} is not defined",
                            tags=(0x00400252,))
    _check_forms(modification)
    state = deepcopy(current)
    for elem in _without_group_lengths(modification):
        state[elem.tag] = elem
    _check_series(state)
    if _text(state, "PerformedProcedureStepStatus") in FINAL_STATES:
        _check_final(state)
    return state


def _without_group_lengths(ds: Dataset) -> Dataset:
    out = deepcopy(ds)
    for tag in [t for t in out.keys() if t.element == 0]:
        del out[tag]
    return out


def _check_final(state: Dataset) -> None:
    for keyword in ("PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime"):
        _require_value(state, keyword, "final state: ")
    if _text(state, "PerformedProcedureStepStatus") == COMPLETED:
        _require_value(state, "PerformedSeriesSequence", "COMPLETED: ")


# ---- checks -------------------------------------------------------------------------------


def _check_known(ds: Dataset) -> None:
    for elem in ds:
        tag = int(elem.tag)
        if elem.tag.is_private or elem.tag.element == 0:
            continue  # group lengths (retired) are dropped, not refused
        if (tag >> 16) in _FORBIDDEN_GROUPS or tag == _PIXEL_DATA or not keyword_for_tag(tag):
            raise MppsError(Status.NO_SUCH_ATTRIBUTE,
                            f"({tag >> 16:04X},{tag & 0xFFFF:04X}) is not an MPPS attribute",
                            tags=(tag,))


def _require_value(ds: Dataset, keyword: str, where: str = "") -> None:
    tag = int(Tag(keyword))
    if keyword not in ds:
        raise MppsError(Status.MISSING_ATTRIBUTE, f"{where}{keyword} missing", tags=(tag,))
    value = ds[keyword]
    if value.is_empty or (value.VR != "SQ" and not str(value.value).strip()):
        raise MppsError(Status.MISSING_ATTRIBUTE_VALUE, f"{where}{keyword} is empty",
                        tags=(tag,))


def _check_forms(ds: Dataset, depth: int = 0) -> None:
    for elem in ds:
        if elem.VR == "SQ":
            if depth < 4:
                for item in elem.value or ():
                    _check_forms(item, depth + 1)
            continue
        if elem.tag.is_private or elem.is_empty:
            continue
        reason = problem(elem.VR, _as_text(elem))
        if reason is not None:
            raise MppsError(Status.INVALID_ATTRIBUTE_VALUE,
                            f"{elem.keyword or elem.tag}: {reason}", tags=(int(elem.tag),))


def _check_series(ds: Dataset) -> None:
    for item in ds.get("PerformedSeriesSequence") or ():
        _require_value(item, "SeriesInstanceUID", "Performed Series Sequence > ")


def _same(elem: DataElement, other: DataElement | None) -> bool:
    if other is None:
        return elem.is_empty
    if elem.VR == "SQ":
        return bool(_json(elem) == _json(other))
    return _as_text(elem) == _as_text(other)


def _json(elem: DataElement) -> Any:
    return elem.to_json_dict(None, 1 << 30).get("Value", [])


__all__ = [
    "COMPLETED", "CREATE_TYPE_1", "CREATE_TYPE_2", "DISCONTINUED", "ERROR_ID_NO_LONGER_UPDATABLE",
    "FINAL_STATES", "IN_PROGRESS", "MPPS_SOP_CLASS", "MppsError", "MppsRecord",
    "NOT_SETTABLE", "NO_LONGER_UPDATABLE", "apply_set", "performed_series", "scheduled_steps",
    "step_status", "validate_create",
]
