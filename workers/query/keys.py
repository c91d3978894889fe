"""Query/Retrieve Information Models: which attribute is a key at which level (PS3.4 C.6).

Two models are served, Patient Root (C.6.1) and Study Root (C.6.2), each with FIND, MOVE and
GET (Patient/Study Only is retired). An attribute has a *home level*, the entity it describes:
Patient, Study, Series or Composite Object Instance ("IMAGE"). In Study Root there is no
patient level: the patient attributes are keys of the STUDY level (PS3.4 Table C.6-5), so
``level_of`` maps them there.

Only the attributes the index keeps (``workers.header.IndexAttributes`` and the derived
counts of ``workers.index.schema``) are listed: every other attribute of a request Identifier
is returned zero length (PS3.4 C.4.1.1.3.2) and never matched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

PATIENT: Final = "PATIENT"
STUDY: Final = "STUDY"
SERIES: Final = "SERIES"
IMAGE: Final = "IMAGE"

# Model -> its levels, top down (PS3.4 C.6.1.1.1, C.6.2.1.1).
MODEL_LEVELS: dict[str, tuple[str, ...]] = {
    PATIENT: (PATIENT, STUDY, SERIES, IMAGE),
    STUDY: (STUDY, SERIES, IMAGE),
}

FIND: Final = "FIND"
MOVE: Final = "MOVE"
GET: Final = "GET"

# SOP Class UID -> (model, operation), PS3.4 C.6.1.3 / C.6.2.3.
_SOP_CLASSES: dict[str, tuple[str, str]] = {
    "1.2.840.10008.5.1.4.1.2.1.1": (PATIENT, FIND),
    "1.2.840.10008.5.1.4.1.2.1.2": (PATIENT, MOVE),
    "1.2.840.10008.5.1.4.1.2.1.3": (PATIENT, GET),
    "1.2.840.10008.5.1.4.1.2.2.1": (STUDY, FIND),
    "1.2.840.10008.5.1.4.1.2.2.2": (STUDY, MOVE),
    "1.2.840.10008.5.1.4.1.2.2.3": (STUDY, GET),
}


def model_of(sop_class_uid: str) -> tuple[str, str] | None:
    """(model, operation) for a Patient Root or Study Root Q/R SOP Class, else None."""
    return _SOP_CLASSES.get(sop_class_uid.rstrip("\0 "))


# ---- attributes that are not matched keys ---------------------------------------------

SPECIFIC_CHARACTER_SET: Final = 0x00080005
QUERY_RETRIEVE_LEVEL: Final = 0x00080052
RETRIEVE_AE_TITLE: Final = 0x00080054
INSTANCE_AVAILABILITY: Final = 0x00080056


@dataclass(frozen=True, slots=True)
class KeyDef:
    """One key attribute of the model.

    ``field`` names the attribute in the index records of ``home`` (PatientRecord for
    PATIENT, StudyRecord for STUDY and the patient attributes a study record repeats,
    SeriesRecord, InstanceRecord); ``derived`` keys are computed from those records."""

    tag: int
    keyword: str
    vr: str
    home: str
    field: str
    unique: bool = False
    derived: bool = False


_TABLE: tuple[KeyDef, ...] = (
    # ---- Patient level, PS3.4 Table C.6-1 (Study Root: study level, Table C.6-5) ----
    KeyDef(0x00100010, "PatientName", "PN", PATIENT, "patient_name"),
    KeyDef(0x00100020, "PatientID", "LO", PATIENT, "patient_id", unique=True),
    KeyDef(0x00100021, "IssuerOfPatientID", "LO", PATIENT, "issuer_of_patient_id"),
    KeyDef(0x00100030, "PatientBirthDate", "DA", PATIENT, "patient_birth_date"),
    KeyDef(0x00100040, "PatientSex", "CS", PATIENT, "patient_sex"),
    KeyDef(0x00201200, "NumberOfPatientRelatedStudies", "IS", PATIENT,
           "number_of_patient_related_studies", derived=True),
    KeyDef(0x00201202, "NumberOfPatientRelatedSeries", "IS", PATIENT,
           "number_of_patient_related_series", derived=True),
    KeyDef(0x00201204, "NumberOfPatientRelatedInstances", "IS", PATIENT,
           "number_of_patient_related_instances", derived=True),
    # ---- Study level, Tables C.6-2 / C.6-5 ----
    KeyDef(0x0020000D, "StudyInstanceUID", "UI", STUDY, "study_instance_uid", unique=True),
    KeyDef(0x00080020, "StudyDate", "DA", STUDY, "study_date"),
    KeyDef(0x00080030, "StudyTime", "TM", STUDY, "study_time"),
    KeyDef(0x00080050, "AccessionNumber", "SH", STUDY, "accession_number"),
    KeyDef(0x00080090, "ReferringPhysicianName", "PN", STUDY, "referring_physician_name"),
    KeyDef(0x00200010, "StudyID", "SH", STUDY, "study_id"),
    KeyDef(0x00081030, "StudyDescription", "LO", STUDY, "study_description"),
    # Not in the tables ("all other attributes at study level"): the index keeps it per study.
    KeyDef(0x00080080, "InstitutionName", "LO", STUDY, "institution_name"),
    KeyDef(0x00080061, "ModalitiesInStudy", "CS", STUDY, "modalities_in_study", derived=True),
    KeyDef(0x00080062, "SOPClassesInStudy", "UI", STUDY, "sop_classes_in_study", derived=True),
    KeyDef(0x00201206, "NumberOfStudyRelatedSeries", "IS", STUDY,
           "number_of_study_related_series", derived=True),
    KeyDef(0x00201208, "NumberOfStudyRelatedInstances", "IS", STUDY,
           "number_of_study_related_instances", derived=True),
    # ---- Series level, Tables C.6-3 / C.6-6 ----
    KeyDef(0x0020000E, "SeriesInstanceUID", "UI", SERIES, "series_instance_uid", unique=True),
    KeyDef(0x00080060, "Modality", "CS", SERIES, "modality"),
    KeyDef(0x00200011, "SeriesNumber", "IS", SERIES, "series_number"),
    KeyDef(0x0008103E, "SeriesDescription", "LO", SERIES, "series_description"),
    KeyDef(0x00080021, "SeriesDate", "DA", SERIES, "series_date"),
    KeyDef(0x00080031, "SeriesTime", "TM", SERIES, "series_time"),
    KeyDef(0x00180015, "BodyPartExamined", "CS", SERIES, "body_part_examined"),
    KeyDef(0x00181030, "ProtocolName", "LO", SERIES, "protocol_name"),
    KeyDef(0x00081010, "StationName", "SH", SERIES, "station_name"),
    KeyDef(0x00400244, "PerformedProcedureStepStartDate", "DA", SERIES,
           "performed_procedure_step_start_date"),
    KeyDef(0x00400245, "PerformedProcedureStepStartTime", "TM", SERIES,
           "performed_procedure_step_start_time"),
    KeyDef(0x00201209, "NumberOfSeriesRelatedInstances", "IS", SERIES,
           "number_of_series_related_instances", derived=True),
    # ---- Composite Object Instance level, Tables C.6-4 / C.6-7 ----
    KeyDef(0x00080018, "SOPInstanceUID", "UI", IMAGE, "sop_instance_uid", unique=True),
    KeyDef(0x00080016, "SOPClassUID", "UI", IMAGE, "sop_class_uid"),
    KeyDef(0x00200013, "InstanceNumber", "IS", IMAGE, "instance_number"),
    KeyDef(0x00080023, "ContentDate", "DA", IMAGE, "content_date"),
    KeyDef(0x00080033, "ContentTime", "TM", IMAGE, "content_time"),
    KeyDef(0x00280008, "NumberOfFrames", "IS", IMAGE, "number_of_frames"),
    KeyDef(0x00280010, "Rows", "US", IMAGE, "rows"),
    KeyDef(0x00280011, "Columns", "US", IMAGE, "columns"),
)

KEYS: dict[int, KeyDef] = {k.tag: k for k in _TABLE}
BY_KEYWORD: dict[str, KeyDef] = {k.keyword: k for k in _TABLE}

# Level -> its Unique Key (PS3.4 C.6.1.1.2-5: Patient ID, Study/Series/SOP Instance UID).
UNIQUE_KEY: dict[str, int] = {k.home: k.tag for k in _TABLE if k.unique}

# Attributes the SCP supplies rather than matches (PS3.4 C.4.1.1.3.2, C.6.1.1.5.1): returned
# at every level when asked, never used for matching beyond their fixed values.
RESPONSE_ONLY: dict[int, str] = {RETRIEVE_AE_TITLE: "AE", INSTANCE_AVAILABILITY: "CS"}
ONLINE: Final = "ONLINE"  # Instance Availability: every indexed object is on local disk


def level_of(tag: int, model: str) -> str | None:
    """The level of ``model`` at which ``tag`` is a key; None when the index does not keep it.

    Study Root has no patient level: patient attributes are study-level keys (Table C.6-5)."""
    kd = KEYS.get(tag)
    if kd is None:
        return None
    if kd.home == PATIENT and model == STUDY:
        return STUDY
    return kd.home


def depth(model: str, level: str) -> int:
    """Position of ``level`` in ``model`` (0 = top); ValueError for a level the model lacks."""
    return MODEL_LEVELS[model].index(level)


def vr_of(tag: int) -> str | None:
    kd = KEYS.get(tag)
    if kd is not None:
        return kd.vr
    return RESPONSE_ONLY.get(tag)


__all__ = [
    "BY_KEYWORD", "FIND", "GET", "IMAGE", "INSTANCE_AVAILABILITY", "KEYS", "KeyDef",
    "MODEL_LEVELS", "MOVE", "ONLINE", "PATIENT", "QUERY_RETRIEVE_LEVEL", "RESPONSE_ONLY",
    "RETRIEVE_AE_TITLE", "SERIES", "SPECIFIC_CHARACTER_SET", "STUDY", "UNIQUE_KEY", "depth",
    "level_of", "model_of", "vr_of",
]
