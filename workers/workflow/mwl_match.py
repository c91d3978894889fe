"""Modality Worklist C-FIND matching and responses (PS3.4 K.6.1.2), pure over data sets.

THEORY OF OPERATION
-------------------
The worklist is small (hundreds to a few thousand steps), so a query reads every item in one
read transaction and filters in memory; each item is one Scheduled Procedure Step, so each
match is one response (K.6.1.2: one C-FIND response per step).

Matching (attribute rules from ``workers.query.matching``, PS3.4 C.2.2.2):

- A key of Table K.6-1 (the attributes ``worklist.ITEM_KEYWORDS`` and ``SPS_KEYWORDS`` name,
  and the sequences below) with a value is matched; a key outside the table is not a
  matching key here and matches anything. Universal Matching (empty or ``*``) and a
  non-universal key never matching an absent or empty value are as C.2.2.2.3 says.
- Patient's Name and Scheduled Performing Physician's Name are PN: case-insensitive, with
  ``*`` / ``?`` wild cards per component group; Patient ID, Accession Number, Requested
  Procedure ID, AE titles, Modality: Single Value or Wild Card Matching (case-sensitive).
- Sequence Matching (C.2.2.2.6): a sequence key with one item matches when some item of the
  stored sequence matches every key of that item; an empty sequence key, or an item of
  universal keys only, is universal. The Scheduled Procedure Step Sequence keys (Scheduled
  Station AE Title, Modality, Start Date/Time, Performing Physician, Step ID, Status, ...)
  are matched this way against the item's one step.
- Scheduled Procedure Step Start Date and Start Time, both given, are matched as one
  date-time range when ``combined_datetime`` (the default; C.2.2.2.5.1): ``20241220-20241221``
  with ``1000-1800`` is 20 December 10:00 to 21 December 18:00. Otherwise each on its own.

Responses (K.6.1.2.2): every key of the identifier comes back, at its place, nested keys in
their sequence items, with the stored value or zero length when the item has none (also for
keys outside the table, which are not matched). A sequence key with no item returns the
whole stored sequence. Specific Character Set (0008,0005) is ``ISO_IR 192`` when a returned
value is not ASCII, and absent (default repertoire) otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from copy import deepcopy
from typing import TYPE_CHECKING, Final

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from workers.query.matching import combined_date_time, compile_key
from workers.workflow.worklist import ITEM_KEYWORDS, SPS_KEYWORDS, WorklistItem

if TYPE_CHECKING:
    from workers.workflow.store import WorkflowStore

HIDDEN_WHEN_DONE: Final = frozenset({"COMPLETED", "DISCONTINUED"})
TOP_SEQUENCES: Final = (
    "ScheduledProcedureStepSequence", "RequestedProcedureCodeSequence",
    "ReferencedStudySequence", "ReferencedPatientSequence", "IssuerOfAccessionNumberSequence",
    "IssuerOfPatientIDQualifiersSequence",
)
SPS_SEQUENCES: Final = ("ScheduledProtocolCodeSequence", "ScheduledStationNameCodeSequence")
_TOP_KEYS: Final = frozenset((*ITEM_KEYWORDS, *TOP_SEQUENCES))
_SPS_KEYS: Final = frozenset((*SPS_KEYWORDS, *SPS_SEQUENCES))
_SKIP: Final = frozenset({0x00080005, 0x00080052})  # Specific Character Set, Q/R Level
_SPS_SEQ: Final = 0x00400100
_SPS_DATE: Final = 0x00400002
_SPS_TIME: Final = 0x00400003
_UTF8: Final = "ISO_IR 192"


def find_worklist(store: WorkflowStore, identifier: Dataset, *, hide_completed: bool,
                  combined_datetime: bool = True) -> Iterator[Dataset]:
    """The C-FIND responses for ``identifier``, ordered by step start date and time."""
    for item in sorted(store.items(), key=_order):
        if hide_completed and item.status in HIDDEN_WHEN_DONE:
            continue
        if matches(identifier, item.dataset, combined_datetime=combined_datetime):
            yield response(identifier, item.dataset)


def _order(item: WorklistItem) -> tuple[str, str, str]:
    step = item.step
    return (_text(step.get(_SPS_DATE)), _text(step.get(_SPS_TIME)).ljust(6, "0"), item.key)


# ---- matching -----------------------------------------------------------------------------


def matches(identifier: Dataset, item: Dataset, *, combined_datetime: bool = True) -> bool:
    """Does the worklist ``item`` match every matching key of ``identifier``?"""
    return _match(identifier, item, _TOP_KEYS, combined_datetime, depth=0)


def _match(keys: Dataset, item: Dataset, known: frozenset[str] | None, combined: bool,
           depth: int) -> bool:
    skip: set[int] = set()
    if known is _SPS_KEYS and combined and _SPS_DATE in keys and _SPS_TIME in keys:
        both = combined_date_time(_text(keys[_SPS_DATE]), _text(keys[_SPS_TIME]))
        if both is not None:
            if not both(_text(item.get(_SPS_DATE)), _text(item.get(_SPS_TIME))):
                return False
            skip = {_SPS_DATE, _SPS_TIME}
    for key in keys:
        tag = int(key.tag)
        if tag in skip or tag in _SKIP or key.tag.element == 0 or key.tag.is_private:
            continue
        if known is not None and key.keyword not in known:
            continue  # not a matching key of Table K.6-1: return key only
        if key.VR == "SQ":
            if not _match_sequence(key, item.get(tag), combined, depth):
                return False
            continue
        matcher = compile_key(key.VR, _text(key))
        if matcher is not None and not matcher(_text(item.get(tag))):
            return False
    return True


def _match_sequence(key: DataElement, value: DataElement | None, combined: bool,
                    depth: int) -> bool:
    key_items = key.value or []
    if not key_items or depth > 4:
        return True
    key_item = key_items[0]
    if _universal(key_item):
        return True
    known = _SPS_KEYS if int(key.tag) == _SPS_SEQ and depth == 0 else None
    stored = value.value if value is not None and value.VR == "SQ" else None
    return any(_match(key_item, v, known, combined, depth + 1) for v in stored or ())


def _universal(key_item: Dataset) -> bool:
    for key in key_item:
        if key.VR == "SQ":
            if key.value and not _universal(key.value[0]):
                return False
        elif compile_key(key.VR, _text(key)) is not None:
            return False
    return True


# ---- responses ----------------------------------------------------------------------------


def response(identifier: Dataset, item: Dataset) -> Dataset:
    """The C-FIND response identifier for one matching item (K.6.1.2.2)."""
    out = _project(identifier, item, depth=0)
    if any(_non_ascii(e) for e in out.iterall()):
        out.SpecificCharacterSet = _UTF8
    return out


def _project(keys: Dataset, item: Dataset, depth: int) -> Dataset:
    out = Dataset()
    for key in keys:
        tag = int(key.tag)
        if tag in _SKIP or key.tag.element == 0:
            continue
        stored = item.get(tag)
        if key.VR == "SQ":
            out[tag] = DataElement(tag, "SQ", _project_sequence(key, stored, depth))
        elif stored is not None and stored.VR != "SQ":
            out[tag] = deepcopy(stored)
        else:
            out[tag] = DataElement(tag, key.VR, None)
    return out


def _project_sequence(key: DataElement, stored: DataElement | None,
                      depth: int) -> Sequence:
    if stored is None or stored.VR != "SQ" or not stored.value:
        return Sequence([])
    if not key.value:
        return Sequence([deepcopy(v) for v in stored.value])  # the whole stored sequence
    key_item = key.value[0]
    known = _SPS_KEYS if int(key.tag) == _SPS_SEQ and depth == 0 else None
    kept = [v for v in stored.value if _match(key_item, v, known, True, depth + 1)]
    return Sequence([_project(key_item, v, depth + 1) for v in kept or stored.value])


# ---- values -------------------------------------------------------------------------------


def _text(elem: DataElement | None) -> str:
    """An element's value as ``workers.query.matching`` expects it: stripped, ``''`` when
    empty, several values backslash-separated."""
    if elem is None or elem.value is None:
        return ""
    value = elem.value
    if isinstance(value, bytes):
        return value.decode(errors="replace").strip()
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v).strip() for v in value)
    return str(value).strip()


def _non_ascii(elem: DataElement) -> bool:
    if elem.VR == "SQ" or elem.value is None:
        return False
    return not _text(elem).isascii()


__all__ = ["HIDDEN_WHEN_DONE", "find_worklist", "matches", "response"]
