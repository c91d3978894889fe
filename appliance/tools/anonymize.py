"""De-identification per the PS3.15 Annex E Basic Application Level Confidentiality Profile.

Theory of operation. ``Anonymizer.apply(ds)`` walks the data set, nested sequences included,
and gives every element the action Table E.1-1 (``deid_profile.ROWS``) names for it once the
chosen options are applied; elements the table does not name are kept (their sequences are
still walked). On top of the table:

- private elements (odd groups) are removed (PS3.15 E.1-1 "Private attributes": X);
- curve (50xx) and overlay (60xx) repeating groups are removed whole: the table removes
  Curve Data, Overlay Data and Overlay Comments, and an overlay plane without its data is
  malformed, so the rest of the group goes too;
- ``keep`` tags are left untouched and ``replace`` values are written at the top level last;
- Patient Identity Removed (0012,0062) = YES, De-identification Method (0012,0063) and
  De-identification Method Code Sequence (0012,0064) (CID 7050 codes of the profile and of
  each option used) and Longitudinal Temporal Information Modified (0028,0303) are set.

Combined codes. We do not model IOD attribute types, so a combined code takes its last,
always-conformant alternative: Z/D and X/D and X/Z/D -> D, X/Z -> Z. X/Z/U* (Referenced
Image / Source Image Sequence) keeps the sequence and replaces the instance UIDs inside it,
which preserves the references between the de-identified instances. A sequence under D, K or C
is kept with its items processed by the same table.

UIDs (action U). ``UidMap`` replaces an original UID with a new ``2.25.<UUID as integer>``
(PS3.5 B.2), the same one everywhere it occurs, in every file of the batch and, through the
JSON map file, across runs. The File Meta Media Storage SOP Instance UID goes through the same
map, so it stays equal to the SOP Instance UID.

Dates. With Retain Longitudinal Temporal Information with Modified Dates, DA values and the
date part of DT values are shifted by a number of days: the fixed ``date_offset_days`` or, when
it is None, an offset derived per patient from an HMAC of the Patient ID keyed with the map
file's secret salt (so one patient keeps one offset across runs; different patients differ).
Times of day (TM) are kept. Clean (C) on text is a scrub: words of the identifying values of
the same data set (names, IDs, accession number, birth date...) are replaced by ``*``; that is
a heuristic, and PS3.15 E.3.5 expects review of cleaned descriptors.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from appliance.tools.deid_profile import (
    BASIC_PROFILE_CODE,
    CURVE_GROUPS,
    OPTION_CODES,
    OVERLAY_GROUPS,
    ROWS,
    Option,
    action_for,
)

# What a combined code resolves to without IOD type information (see module docstring).
_COMBINED = {"Z/D": "D", "X/D": "D", "X/Z/D": "D", "X/Z": "Z", "X/Z/U*": "K"}
_DUMMY_TEXT = "ANONYMIZED"
_DUMMY_BY_VR: dict[str, object] = {
    "DA": "19000101", "DT": "19000101000000", "TM": "000000", "AS": "000Y",
    "IS": "0", "DS": "0", "CS": "ANONYMIZED", "US": 0, "SS": 0, "UL": 0, "SL": 0,
    "FL": 0.0, "FD": 0.0, "UV": 0, "SV": 0,
}
_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})
_PATIENT_ID = 0x00100020
_OFFSET_RANGE_DAYS = 3650  # derived offsets: -1 .. -3650 days


class MapFileError(Exception):
    """The UID map file cannot be read or is not ours."""


class UidMap:
    """Original UID -> replacement UID, consistent across a batch and, saved, across runs.

    The JSON file holds ``{"version": 1, "salt": hex, "uids": {old: new}}``. It re-identifies:
    keep it as confidential as the originals.
    """

    VERSION = 1

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.uids: dict[str, str] = {}
        self.salt = secrets.token_hex(16)
        self.dirty = False
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if data.get("version") != self.VERSION or not isinstance(data.get("uids"), dict):
                    raise MapFileError(f"{path}: not a version {self.VERSION} UID map")
                self.uids = {str(k): str(v) for k, v in data["uids"].items()}
                self.salt = str(data["salt"])
            except (OSError, ValueError, KeyError) as exc:
                raise MapFileError(f"{path}: {exc}") from exc
        else:
            self.dirty = path is not None

    def map(self, old: str) -> str:
        """The replacement for ``old``, created (``2.25.`` + UUID, PS3.5 B.2) on first use."""
        old = old.strip("\0 ")
        if not old:
            return old
        new = self.uids.get(old)
        if new is None:
            new = f"2.25.{uuid.uuid4().int}"
            self.uids[old] = new
            self.dirty = True
        return new

    def is_replacement(self, value: str) -> bool:
        return value.startswith("2.25.")

    def day_offset(self, patient_id: str) -> int:
        """A per-patient date offset in days, stable for a given map file."""
        digest = hmac.new(self.salt.encode(), patient_id.encode(), hashlib.sha256).digest()
        return -(1 + int.from_bytes(digest[:4], "big") % _OFFSET_RANGE_DAYS)

    def save(self) -> None:
        """Write the map atomically (temp name + rename) if it changed."""
        if self.path is None or not self.dirty:
            return
        payload = {"version": self.VERSION, "salt": self.salt, "uids": self.uids}
        fd, tmp = tempfile.mkstemp(prefix=".map-", dir=self.path.parent or Path("."))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(payload, fh, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.dirty = False


@dataclass(frozen=True)
class Settings:
    """What to do: the options chosen and the user's per-tag overrides."""

    options: frozenset[Option] = frozenset()
    date_offset_days: int | None = None
    keep: frozenset[int] = frozenset()
    replace: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Change:
    """One element changed (reported by --dry-run; values are never reported)."""

    path: str
    action: str

    def __str__(self) -> str:
        return f"{self.path}  {self.action}"


def tag_label(tag: int) -> str:
    """``(gggg,eeee) Keyword`` for reports."""
    t = BaseTag(tag)
    kw = keyword_for_tag(t) or ("private" if t.is_private else "unknown")
    return f"({t.group:04X},{t.element:04X}) {kw}"


def _resolve(action: str) -> str:
    return _COMBINED.get(action, action)


def _is_repeating_group(tag: BaseTag) -> bool:
    return tag.group in CURVE_GROUPS or tag.group in OVERLAY_GROUPS


def shift_date(value: str, days: int) -> str:
    """Shift a DA (or the date part of a DT) by ``days``; unparseable -> empty."""
    head = value[:8]
    if len(head) < 8 or not head.isdigit():
        return "" if value.strip() else value
    try:
        day = dt.date(int(head[:4]), int(head[4:6]), int(head[6:8]))
        return (day + dt.timedelta(days=days)).strftime("%Y%m%d") + value[8:]
    except (ValueError, OverflowError):
        return ""


class Anonymizer:
    """Applies ``Settings`` to data sets, sharing one ``UidMap`` over a batch."""

    def __init__(self, settings: Settings, uids: UidMap) -> None:
        self.settings = settings
        self.uids = uids
        self._offset = 0
        self._scrub: re.Pattern[str] | None = None

    # ------------------------------------------------------------------ public

    def apply(self, ds: Dataset) -> list[Change]:
        """De-identify ``ds`` in place; returns what changed."""
        opts = self.settings.options
        if Option.RETAIN_MODIFIED_DATES in opts and Option.RETAIN_FULL_DATES not in opts:
            fixed = self.settings.date_offset_days
            self._offset = (
                fixed if fixed is not None else self.uids.day_offset(str(ds.get("PatientID", "")))
            )
        self._scrub = _scrub_pattern(ds) if self._cleans() else None
        changes: list[Change] = []
        self._walk(ds, "", changes)
        meta = getattr(ds, "file_meta", None)
        if meta is not None and Option.RETAIN_UIDS not in opts and 0x00020003 not in \
                self.settings.keep:
            # (0002,0003) is U too; it must stay equal to the (mapped) SOP Instance UID
            if "SOPInstanceUID" in ds:
                meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            elif "MediaStorageSOPInstanceUID" in meta:
                meta.MediaStorageSOPInstanceUID = self.uids.map(meta.MediaStorageSOPInstanceUID)
            changes.append(Change(tag_label(0x00020003), "U"))
        self._mark(ds)
        for tag, value in self.settings.replace.items():
            ds[tag] = _element_with(ds, tag, value)
            changes.append(Change(tag_label(tag), "replace"))
        return changes

    # ------------------------------------------------------------------ walk

    def _cleans(self) -> bool:
        return bool(
            self.settings.options
            & {Option.CLEAN_DESCRIPTORS, Option.RETAIN_PATIENT_CHARACTERISTICS,
               Option.CLEAN_STRUCTURED_CONTENT, Option.CLEAN_GRAPHICS}
        )

    def _walk(self, ds: Dataset, prefix: str, changes: list[Change]) -> None:
        for tag in list(ds.keys()):
            if tag in self.settings.keep:
                continue
            here = prefix + tag_label(tag)
            if tag.is_private or _is_repeating_group(tag):
                del ds[tag]
                changes.append(Change(here, "X"))
                continue
            row = ROWS.get(tag)
            elem = ds[tag]
            if row is None:
                if elem.VR == "SQ":
                    self._walk_items(elem, here, changes)
                continue
            action = _resolve(action_for(row, self.settings.options))
            self._act(ds, elem, action, here, changes)

    def _walk_items(self, elem: DataElement, here: str, changes: list[Change]) -> None:
        for i, item in enumerate(elem.value or []):
            self._walk(item, f"{here}[{i}] > ", changes)

    def _act(
        self, ds: Dataset, elem: DataElement, action: str, here: str, changes: list[Change]
    ) -> None:
        if action == "X":
            del ds[elem.tag]
        elif action == "Z":
            if elem.VR == "SQ":
                elem.value = Sequence()
            elif _is_empty(elem):
                return
            else:
                elem.value = None
        elif action == "U":
            if elem.VR != "UI" or _is_empty(elem):
                return
            elem.value = _map_values(elem.value, self.uids.map)
        elif action == "D":
            if elem.VR == "SQ":
                self._walk_items(elem, here, changes)
                return
            elem.value = _dummy(elem)
        elif action in ("K", "C"):
            if elem.VR == "SQ":
                self._walk_items(elem, here, changes)
                return
            if action == "K" or not self._clean(elem):
                return
        changes.append(Change(here, action))

    def _clean(self, elem: DataElement) -> bool:
        """Clean one non-sequence element; True if its value changed."""
        if _is_empty(elem):
            return False
        if elem.VR in ("DA", "DT"):
            if not self._offset:
                return False
            elem.value = _map_values(elem.value, lambda v: shift_date(v, self._offset))
            return True
        if elem.VR in _TEXT_VRS and self._scrub is not None:
            pattern = self._scrub
            old = elem.value
            elem.value = _map_values(old, lambda v: pattern.sub("*", v))
            return bool(elem.value != old)
        return False

    def _mark(self, ds: Dataset) -> None:
        """PS3.3 C.12.1 SOP Common: Patient Identity Removed and the method used."""
        ds.PatientIdentityRemoved = "YES"
        codes = [BASIC_PROFILE_CODE] + [
            OPTION_CODES[o] for o in sorted(self.settings.options) if o in OPTION_CODES
        ]
        # LO, one value per profile/option (each under 64 characters)
        ds.DeidentificationMethod = [meaning for _, meaning in codes]
        items = []
        for value, meaning in codes:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        opts = self.settings.options
        if Option.RETAIN_FULL_DATES in opts:
            ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
        elif Option.RETAIN_MODIFIED_DATES in opts:
            ds.LongitudinalTemporalInformationModified = "MODIFIED"
        else:
            ds.LongitudinalTemporalInformationModified = "REMOVED"


# ---------------------------------------------------------------------- verification


def verify(ds: Dataset, settings: Settings, uids: UidMap | None = None) -> list[str]:
    """Identifying content left in ``ds`` per Table E.1-1 and ``settings``; [] when clean.

    Flags: private or curve/overlay elements; X attributes present; Z attributes with a value
    (other than our dummy or a ``replace`` value); U attributes whose UID is not a replacement
    (``2.25.`` root, or a value of the map) unless UIDs are retained; Patient Identity Removed
    not YES.
    """
    problems: list[str] = []
    replaced = set(uids.uids.values()) if uids is not None else set()
    _verify_walk(ds, "", settings, replaced, problems)
    if ds.get("PatientIdentityRemoved") != "YES" and 0x00120062 not in settings.keep:
        problems.append(f"{tag_label(0x00120062)}: not YES")
    return problems


def _verify_walk(
    ds: Dataset, prefix: str, settings: Settings, replaced: set[str], problems: list[str]
) -> None:
    for tag in ds.keys():
        if tag in settings.keep or (not prefix and tag in settings.replace):
            continue
        here = prefix + tag_label(tag)
        if tag.is_private:
            problems.append(f"{here}: private attribute present")
            continue
        if _is_repeating_group(tag):
            problems.append(f"{here}: curve/overlay attribute present")
            continue
        elem = ds[tag]
        row = ROWS.get(tag)
        action = _resolve(action_for(row, settings.options)) if row is not None else "K"
        reason = _verify_one(elem, action, replaced)
        if reason:
            problems.append(f"{here}: {reason}")
        elif elem.VR == "SQ" and action != "X":
            for i, item in enumerate(elem.value or []):
                _verify_walk(item, f"{here}[{i}] > ", settings, replaced, problems)


def _verify_one(elem: DataElement, action: str, replaced: set[str]) -> str:
    if action == "X":
        return "present, the profile removes it"
    if action == "Z" and not _is_empty(elem):
        if elem.VR == "SQ":
            return "has items, the profile empties it"
        if elem.value != _dummy(elem):
            return "has a value, the profile empties it"
    if action == "U" and elem.VR == "UI" and not _is_empty(elem):
        values = elem.value if isinstance(elem.value, MultiValue) else [elem.value]
        for v in values:
            if not (str(v).startswith("2.25.") or str(v) in replaced):
                return "UID not replaced"
    return ""


# ---------------------------------------------------------------------- helpers


def _is_empty(elem: DataElement) -> bool:
    value = elem.value
    if value is None or isinstance(value, int | float):
        return value is None
    try:
        return len(value) == 0
    except TypeError:
        return False


def _dummy(elem: DataElement) -> object:
    return _DUMMY_BY_VR.get(elem.VR, _DUMMY_TEXT if elem.VR in _TEXT_VRS else None)


def _map_values(value: object, func: Callable[[str], str]) -> object:
    if isinstance(value, MultiValue | list):
        return [func(str(v)) for v in value]
    return func(str(value))


def _element_with(ds: Dataset, tag: int, value: str) -> DataElement:
    """A new element for ``tag`` holding ``value`` (``\\`` separates multiple values)."""
    from pydicom.datadict import dictionary_VR

    vr = ds[tag].VR if tag in ds else dictionary_VR(tag)
    parsed: object = value.split("\\") if "\\" in value else value
    return DataElement(tag, vr, parsed)


def _identifying_words(ds: Dataset) -> Iterable[str]:
    """Words of the identifiers Table E.1-1 removes or replaces: names, IDs, addresses, dates
    (not the descriptors themselves, which are what gets cleaned)."""
    for tag, row in ROWS.items():
        if row.basic in ("K", "C", "U") or "C" in row.options.values() or tag not in ds:
            continue
        elem = ds[tag]
        if elem.VR not in _TEXT_VRS | {"DA"} or _is_empty(elem):
            continue
        values = elem.value if isinstance(elem.value, MultiValue) else [elem.value]
        for v in values:
            yield from re.split(r"[\^=\s,]+", str(v))


def _scrub_pattern(ds: Dataset) -> re.Pattern[str] | None:
    words = sorted({w for w in _identifying_words(ds) if len(w) >= 3}, key=len, reverse=True)
    if not words:
        return None
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)


def tags_in(ds: Dataset) -> set[int]:
    """Every tag in ``ds``, nested sequences included (for tests and reports)."""
    found: set[int] = set()
    for elem in ds.iterall():
        found.add(int(elem.tag))
    return found


__all__ = [
    "Anonymizer",
    "Change",
    "MapFileError",
    "Settings",
    "UidMap",
    "shift_date",
    "tag_label",
    "tags_in",
    "verify",
]
