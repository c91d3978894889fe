"""Modality Worklist items (PS3.4 K.6): the model, and import from JSON files and folders.

THEORY OF OPERATION
-------------------
A ``WorklistItem`` is one Scheduled Procedure Step with its Requested Procedure, Imaging
Service Request, Visit and Patient attributes: exactly the data set one C-FIND response is
cut from (K.6.1.2: one response per Scheduled Procedure Step, its Scheduled Procedure Step
Sequence holding that one step). Its key is ``<Study Instance UID>/<Scheduled Procedure Step
ID>``, which is also how an MPPS names the step it performs (Scheduled Step Attributes
Sequence, F.7.2), so the two link without a second index. Adding an item whose key exists
replaces it.

Two input formats, one object or a list of them per file:

- the flat format, e.g. ``{"patientId": "12345", "patientName": "DOE^JOHN",
  "scheduledProcedureStepStartDate": "20241220", ...}``: each key is a DICOM keyword of the
  worklist attribute table, matched case-insensitively (``patientId`` is PatientID,
  ``scheduledStationAeTitle`` ScheduledStationAETitle); Scheduled Procedure Step attributes
  go into the step's sequence item, the others at the top level. Values are strings (numbers
  for numeric VRs, lists for several values). Sequences need the second format;
- DICOM JSON (PS3.18 F.2), any attributes; an item whose Scheduled Procedure Step Sequence
  has several steps becomes one item per step.

Validation collects every problem of a file, each naming the item and field ("orders.json:
item 2: patientBirthDate: not a calendar date"), and an import stores nothing unless every
item of every file given is valid (``import_paths``: one transaction). Required (the Type 1
return keys of Table K.6-1): Patient ID, Patient's Name, and in the step Scheduled Station
AE Title, Start Date, Start Time, Modality and Scheduled Procedure Step ID, plus a
description (the step's or the requested procedure's, or a code sequence).

Defaults: Scheduled Procedure Step Status SCHEDULED; Requested Procedure ID the Accession
Number, else the step ID; a missing description is copied from the other one. A missing
Study Instance UID is generated as ``2.25.<uuid5>`` (PS3.5 B.2) over Patient ID, Accession
Number and step ID: derived, not random, so importing the same file again replaces the item
instead of duplicating it. Specific Character Set is not stored: values are kept as Unicode
and the response builder declares what it emits.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Sequence
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from workers.workflow.vr import as_text as _as_text
from workers.workflow.vr import problem
from workers.workflow.vr import text as _text

if TYPE_CHECKING:
    from workers.workflow.store import WorkflowStore

# Table K.6-1 attributes inside the Scheduled Procedure Step Sequence (flat format).
SPS_KEYWORDS: Final = (
    "ScheduledStationAETitle", "ScheduledStationName", "ScheduledProcedureStepLocation",
    "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime",
    "ScheduledProcedureStepEndDate", "ScheduledProcedureStepEndTime", "Modality",
    "ScheduledPerformingPhysicianName", "ScheduledProcedureStepDescription",
    "ScheduledProcedureStepID", "ScheduledProcedureStepStatus",
    "CommentsOnTheScheduledProcedureStep", "PreMedication", "RequestedContrastAgent",
)
# Table K.6-1 attributes at the top level: Requested Procedure, Imaging Service Request,
# Visit and Patient modules (flat format; DICOM JSON items may carry any attribute).
ITEM_KEYWORDS: Final = (
    "RequestedProcedureID", "RequestedProcedureDescription", "StudyInstanceUID", "StudyDate",
    "StudyTime", "RequestedProcedurePriority", "PatientTransportArrangements",
    "ReasonForTheRequestedProcedure", "RequestedProcedureComments",
    "RequestedProcedureLocation", "AccessionNumber", "RequestingPhysician",
    "ReferringPhysicianName", "RequestingService", "ReasonForTheImagingServiceRequest",
    "ImagingServiceRequestComments", "PlacerOrderNumberImagingServiceRequest",
    "FillerOrderNumberImagingServiceRequest", "AdmissionID", "CurrentPatientLocation",
    "InstitutionName", "PatientName", "PatientID", "IssuerOfPatientID", "OtherPatientIDs",
    "PatientBirthDate", "PatientBirthTime", "PatientSex", "PatientAge", "PatientWeight",
    "PatientSize", "PatientState", "PregnancyStatus", "MedicalAlerts", "Allergies",
    "SpecialNeeds", "PatientComments", "EthnicGroup", "AdditionalPatientHistory",
    "LastMenstrualDate", "ConfidentialityConstraintOnPatientDataDescription",
)
STEP_STATUSES: Final = frozenset({
    "SCHEDULED", "ARRIVED", "READY", "STARTED", "DEPARTED", "CANCELED", "DISCONTINUED",
    "COMPLETED",
})  # Scheduled Procedure Step Status (0040,0020), PS3.3 C.4.10
_REQUIRED_TOP: Final = ("PatientID", "PatientName")
_REQUIRED_SPS: Final = ("ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
                        "ScheduledProcedureStepStartTime", "Modality",
                        "ScheduledProcedureStepID")
_FLAT: Final = {k.lower(): k for k in (*SPS_KEYWORDS, *ITEM_KEYWORDS)}
_SPS_SET: Final = frozenset(SPS_KEYWORDS)
_NUMERIC_VRS: Final = frozenset({"IS", "DS", "US", "UL", "SS", "SL", "FL", "FD"})
_DICOM_JSON_KEY = re.compile(r"[0-9A-Fa-f]{8}")
# Namespace of the derived Study Instance UIDs (a fixed random UUID; changing it would give
# every re-imported item without a UID a new key).
_STUDY_UID_NAMESPACE: Final = uuid.UUID("6f1f0c3e-8a51-4c8e-9d0b-6b8f2f4a7d15")


class WorklistImportError(ValueError):
    """Every problem found, one line each, naming file, item and field."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True, slots=True, eq=False)
class WorklistItem:
    """One Scheduled Procedure Step with its context: the data set responses are cut from."""

    dataset: Dataset
    source: str = ""  # file it came from
    added_at: float = 0.0  # epoch seconds

    @property
    def step(self) -> Dataset:
        seq = self.dataset.get("ScheduledProcedureStepSequence")
        return seq[0] if seq else Dataset()

    @property
    def study_instance_uid(self) -> str:
        return _text(self.dataset, "StudyInstanceUID")

    @property
    def sps_id(self) -> str:
        return _text(self.step, "ScheduledProcedureStepID")

    @property
    def key(self) -> str:
        return item_key(self.study_instance_uid, self.sps_id)

    @property
    def status(self) -> str:
        return _text(self.step, "ScheduledProcedureStepStatus") or "SCHEDULED"

    def with_status(self, status: str) -> WorklistItem:
        ds = deepcopy(self.dataset)
        ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus = status
        return WorklistItem(ds, self.source, self.added_at)

    def to_json(self) -> bytes:
        return json.dumps({"v": 1, "source": self.source, "added_at": self.added_at,
                           "dataset": self.dataset.to_json_dict()},
                          separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> WorklistItem:
        obj: dict[str, Any] = json.loads(raw)
        return cls(Dataset.from_json(obj["dataset"]), obj.get("source", ""),
                   float(obj.get("added_at", 0.0)))

    def flat(self) -> dict[str, Any]:
        """The item in the flat format's vocabulary (for listing), plus its key and status."""
        out: dict[str, Any] = {"key": self.key}
        for ds in (self.dataset, self.step):
            for elem in ds:
                if elem.VR != "SQ" and elem.keyword in _FLAT.values():
                    out[camel(elem.keyword)] = _as_text(elem)
        out["scheduledProcedureStepStatus"] = self.status
        return out


def item_key(study_instance_uid: str, sps_id: str) -> str:
    """``<Study Instance UID>/<SPS ID>``: UIDs hold no ``/``, so the split is unambiguous."""
    return f"{study_instance_uid}/{sps_id}"


def camel(keyword: str) -> str:
    """The flat format's spelling of a keyword: PatientID -> patientId, ...AETitle -> AeTitle."""
    name = keyword.replace("UID", "Uid").replace("ID", "Id").replace("AETitle", "AeTitle")
    return name[0].lower() + name[1:]


# ---- parsing ------------------------------------------------------------------------------


def parse_items(obj: Any, source: str, *, now: float | None = None) -> list[WorklistItem]:
    """Items from one decoded JSON document (an object or a list); WorklistImportError
    lists every problem."""
    entries = obj if isinstance(obj, list) else [obj]
    problems: list[str] = []
    items: list[WorklistItem] = []
    stamp = time.time() if now is None else now
    for n, entry in enumerate(entries, 1):
        where = f"{source}: item {n}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: not a JSON object")
            continue
        errors: list[str] = []
        naming: Callable[[str], str]
        if entry and all(_DICOM_JSON_KEY.fullmatch(k) for k in entry):
            ds, naming = _from_dicom_json(entry, errors), _tag_name
        else:
            ds, naming = _from_flat(entry, errors), _camel_name(entry)
        if ds is not None:  # required fields too, so that one pass reports everything
            for step_ds in _split_steps(ds):
                _complete(step_ds, errors, naming)
                items.append(WorklistItem(step_ds, source, stamp))
        problems.extend(f"{where}: {e}" for e in errors)
    if problems:
        raise WorklistImportError(problems)
    return items


def _from_flat(entry: dict[str, Any], errors: list[str]) -> Dataset | None:
    top, step = Dataset(), Dataset()
    for key, value in entry.items():
        keyword = _FLAT.get(key.lower()) if isinstance(key, str) else None
        if keyword is None:
            seq = tag_for_keyword(_camel_to_keyword(key)) if isinstance(key, str) else None
            hint = " (sequences need a DICOM JSON item)" if seq is not None else ""
            errors.append(f"{key}: unknown key{hint}")
            continue
        vr = dictionary_VR(keyword)
        text = _flat_value(value, vr)
        if text is None:
            errors.append(f"{key}: must be a string{' or a number' if vr in _NUMERIC_VRS else ''}"
                          " (or a list of them)")
            continue
        reason = problem(vr, text)
        if reason is not None:
            errors.append(f"{key}: {text!r}: {reason}")
            continue
        target = step if keyword in _SPS_SET else top
        target[keyword] = DataElement(keyword, vr, text.split("\\")
                                      if "\\" in text else text)
    top.ScheduledProcedureStepSequence = [step]
    return top


def _camel_to_keyword(key: str) -> str:
    return key[:1].upper() + key[1:]


def _flat_value(value: Any, vr: str) -> str | None:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip() if vr not in ("LT", "ST", "UT") else value
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and vr in _NUMERIC_VRS:
        return str(value)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return "\\".join(v.strip() for v in value)
    return None


def _from_dicom_json(entry: dict[str, Any], errors: list[str]) -> Dataset | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's warnings: we report our own problems
            ds = Dataset.from_json(entry)
            for elem in ds.iterall():  # values decode lazily: force them now, inside the try
                _ = elem.value
    except (ValueError, TypeError, KeyError, AttributeError, NotImplementedError) as exc:
        errors.append(f"not valid DICOM JSON (PS3.18 F.2): {exc}")
        return None
    _check_forms(ds, errors, "")
    if "ScheduledProcedureStepSequence" not in ds or not ds.ScheduledProcedureStepSequence:
        errors.append("ScheduledProcedureStepSequence (0040,0100): missing or empty")
        return None
    return ds


def _check_forms(ds: Dataset, errors: list[str], prefix: str) -> None:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or ():
                _check_forms(item, errors, f"{prefix}{elem.keyword} > ")
            continue
        if elem.tag.is_private or elem.is_empty:
            continue
        reason = problem(elem.VR, _as_text(elem))
        if reason is not None:
            errors.append(f"{prefix}{_tag_name(elem.keyword or str(elem.tag))}: "
                          f"{_as_text(elem)!r}: {reason}")


def _split_steps(ds: Dataset) -> list[Dataset]:
    steps = list(ds.ScheduledProcedureStepSequence)
    if len(steps) == 1:
        return [ds]
    out = []
    for step in steps:
        one = deepcopy(ds)
        one.ScheduledProcedureStepSequence = [deepcopy(step)]
        out.append(one)
    return out


def _complete(ds: Dataset, errors: list[str], name: Callable[[str], str]) -> None:
    """Required attributes, enumerated values and defaults, in place (K.6.1.2.2)."""
    _check_required(ds, errors, name)
    step = ds.ScheduledProcedureStepSequence[0]
    step.ScheduledProcedureStepStatus = _text(step, "ScheduledProcedureStepStatus") or "SCHEDULED"
    sps_desc = _text(step, "ScheduledProcedureStepDescription")
    rp_desc = _text(ds, "RequestedProcedureDescription")
    if sps_desc and not rp_desc and "RequestedProcedureCodeSequence" not in ds:
        ds.RequestedProcedureDescription = sps_desc
    if rp_desc and not sps_desc and "ScheduledProtocolCodeSequence" not in step:
        step.ScheduledProcedureStepDescription = rp_desc
    sps_id = _text(step, "ScheduledProcedureStepID")
    if not _text(ds, "RequestedProcedureID"):
        ds.RequestedProcedureID = _text(ds, "AccessionNumber") or sps_id
    if not _text(ds, "StudyInstanceUID"):
        ds.StudyInstanceUID = derived_study_uid(_text(ds, "PatientID"),
                                                _text(ds, "AccessionNumber"), sps_id)
    if "SpecificCharacterSet" in ds:
        del ds.SpecificCharacterSet  # values are Unicode now; the response declares its own


def _check_required(ds: Dataset, errors: list[str], name: Callable[[str], str]) -> None:
    step = ds.ScheduledProcedureStepSequence[0]
    named = {e.partition(":")[0] for e in errors}  # a value already refused is not "missing"
    for keyword in _REQUIRED_TOP:
        if not _text(ds, keyword) and name(keyword) not in named:
            errors.append(f"{name(keyword)}: required")
    for keyword in _REQUIRED_SPS:
        if not _text(step, keyword) and name(keyword) not in named:
            errors.append(f"{name(keyword)}: required")
    sex = _text(ds, "PatientSex")
    if sex not in ("", "M", "F", "O"):
        errors.append(f"{name('PatientSex')}: {sex!r}: must be M, F or O")
    status = _text(step, "ScheduledProcedureStepStatus") or "SCHEDULED"
    if status not in STEP_STATUSES:
        errors.append(f"{name('ScheduledProcedureStepStatus')}: {status!r}: not one of "
                      + ", ".join(sorted(STEP_STATUSES)))
    has_codes = "ScheduledProtocolCodeSequence" in step or "RequestedProcedureCodeSequence" in ds
    if not (_text(step, "ScheduledProcedureStepDescription")
            or _text(ds, "RequestedProcedureDescription") or has_codes):
        errors.append(f"{name('ScheduledProcedureStepDescription')}: required (or "
                      f"{name('RequestedProcedureDescription')})")


def derived_study_uid(patient_id: str, accession_number: str, sps_id: str) -> str:
    """A stable ``2.25`` UID (PS3.5 B.2) for an item imported without a Study Instance UID."""
    name = "\\".join((patient_id, accession_number, sps_id))
    return f"2.25.{uuid.uuid5(_STUDY_UID_NAMESPACE, name).int}"


def _camel_name(entry: dict[str, Any]) -> Callable[[str], str]:
    given = {_FLAT.get(k.lower()): k for k in entry if isinstance(k, str)}

    def name(keyword: str) -> str:
        return given.get(keyword) or camel(keyword)

    return name


def _tag_name(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:
        return keyword
    return f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


# ---- files and folders --------------------------------------------------------------------


def load_file(path: Path) -> list[WorklistItem]:
    """The items of one JSON file; WorklistImportError for a bad file or item, OSError when
    it cannot be read."""
    raw = path.read_bytes()
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WorklistImportError([f"{path}: not JSON: {exc}"]) from exc
    return parse_items(obj, str(path))


def json_files(paths: Iterable[Path]) -> list[Path]:
    """Files named directly, and every ``*.json`` under named folders (sorted, recursive);
    FileNotFoundError for a path that does not exist."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*.json") if p.is_file()))
        elif path.exists():
            out.append(path)
        else:
            raise FileNotFoundError(str(path))
    return out


def load_paths(paths: Iterable[Path]) -> list[WorklistItem]:
    """Every item of every file, or WorklistImportError with all problems of all files
    (including two items with one key)."""
    problems: list[str] = []
    items: list[WorklistItem] = []
    for path in json_files(paths):
        try:
            items.extend(load_file(path))
        except WorklistImportError as exc:
            problems.extend(exc.problems)
    seen: dict[str, str] = {}
    for item in items:
        if item.key in seen:
            problems.append(f"{item.source}: item key {item.key} is also in {seen[item.key]}")
        seen.setdefault(item.key, item.source)
    if problems:
        raise WorklistImportError(problems)
    return items


def import_paths(store: WorkflowStore, paths: Iterable[Path]) -> list[WorklistItem]:
    """All-or-nothing import of files and folders: one write transaction, or nothing."""
    items = load_paths(paths)
    store.put_items(items)
    return items


@dataclass(frozen=True, slots=True)
class FolderResult:
    path: Path  # where the file went (imported/ or rejected/)
    items: int
    error: str | None


def import_folder(store: WorkflowStore, folder: Path, *, settle_s: float = 1.0,
                  now: float | None = None) -> list[FolderResult]:
    """One pass over a watched folder: each ``*.json`` file directly in it that has not been
    modified for ``settle_s`` is imported on its own (all-or-nothing per file) and moved to
    ``imported/``, or moved to ``rejected/`` with the reasons in ``<name>.error.txt``.
    Writers should still create files under another name and rename them into place."""
    stamp = time.time() if now is None else now
    results: list[FolderResult] = []
    for path in sorted(folder.glob("*.json")):
        try:
            if not path.is_file() or stamp - path.stat().st_mtime < settle_s:
                continue
            items = load_file(path)
        except FileNotFoundError:
            continue  # taken by another pass
        except (WorklistImportError, OSError) as exc:
            results.append(FolderResult(_move(path, folder / "rejected", str(exc)), 0,
                                        str(exc)))
            continue
        store.put_items(items)
        results.append(FolderResult(_move(path, folder / "imported", None), len(items), None))
    return results


def _move(path: Path, target_dir: Path, error: str | None) -> Path:
    target_dir.mkdir(exist_ok=True)
    target = target_dir / path.name
    if target.exists():
        target = target_dir / f"{path.stem}.{time.time_ns()}{path.suffix}"
    os.replace(path, target)
    if error is not None:
        target.with_name(target.name + ".error.txt").write_text(error + "\n", encoding="utf-8")
    return target


# ---- values -------------------------------------------------------------------------------


__all__ = [
    "ITEM_KEYWORDS", "SPS_KEYWORDS", "STEP_STATUSES", "FolderResult", "WorklistImportError",
    "WorklistItem", "camel", "derived_study_uid", "import_folder", "import_paths",
    "item_key", "json_files", "load_file", "load_paths", "parse_items",
]
