"""Value-form checks for the workflow records (PS3.5 §6.2), shared by the worklist importer and
the MPPS rules: both must refuse a bad date or UID with a message naming it, before anything
is stored.

``problem(vr, value)`` returns None for a valid value or a short reason; it checks the forms
the workflow attributes use (DA, TM, DT, UI, AE, CS, SH, LO, PN, IS, DS and the long texts),
and accepts every other VR. A value may be multi-valued (backslash-separated); each value is
checked. Empty values are valid here: whether one may be empty is the caller's Type rule.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import TYPE_CHECKING, Final

from pydicom.multival import MultiValue

if TYPE_CHECKING:
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset

_MAX_CHARS: Final = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "UI": 64, "AS": 4}
_TEXT_MAX: Final = {"ST": 1024, "LT": 10240}
_CS_CHARS = re.compile(r"[A-Z0-9 _]*")
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_TM = re.compile(r"(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?")
_DT = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?")
_IS = re.compile(r"[+-]?\d{1,12}")
_DS = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def problem(vr: str, value: str) -> str | None:
    """Why ``value`` is not a valid ``vr`` value, or None when it is."""
    if vr in ("LT", "ST", "UT", "UC", "UR"):
        limit = _TEXT_MAX.get(vr)
        return f"longer than {limit} characters" if limit and len(value) > limit else None
    for one in value.split("\\") if value else ():
        reason = _single(vr, one)
        if reason is not None:
            return reason
    return None


def _single(vr: str, value: str) -> str | None:
    limit = _MAX_CHARS.get(vr)
    if limit is not None and len(value) > limit:
        return f"longer than {limit} characters"
    if any(ord(c) < 0x20 and c != "\x1b" for c in value):
        return "contains control characters"
    check = _CHECKS.get(vr)
    return check(value) if check is not None else None


def _date(value: str) -> str | None:
    if len(value) != 8 or not value.isdigit():
        return "not a DICOM date (YYYYMMDD)"
    try:
        _dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return "not a calendar date"
    return None


def _time(value: str) -> str | None:
    m = _TM.fullmatch(value.strip())
    if m is None:
        return "not a DICOM time (HHMMSS.FFFFFF)"
    hh, mm, ss = (int(g) if g else 0 for g in m.group(1, 2, 3))
    if hh > 23 or mm > 59 or ss > 60:  # 60: a leap second (PS3.5 Table 6.2-1)
        return "hour, minute or second out of range"
    return None


def _datetime(value: str) -> str | None:
    m = _DT.fullmatch(value.strip())
    if m is None:
        return "not a DICOM date-time (YYYYMMDDHHMMSS.FFFFFF&ZZXX)"
    if m.group(3) and _date(value[:8]) is not None:
        return "not a calendar date"
    return None


def _uid(value: str) -> str | None:
    return None if _UID.fullmatch(value) else "not a UID (digits and dots, no leading zeros)"


def _ae(value: str) -> str | None:
    return "AE title cannot be only spaces" if value and not value.strip() else None


def _cs(value: str) -> str | None:
    ok = _CS_CHARS.fullmatch(value)
    return None if ok else "code strings are upper-case letters, digits, space and _"


def _pn(value: str) -> str | None:
    groups = value.split("=")
    if len(groups) > 3:
        return "more than three component groups"
    for group in groups:
        if group.count("^") > 4:
            return "more than five components"
        if len(group) > 64:
            return "a component group is longer than 64 characters"
    return None


def _is(value: str) -> str | None:
    return None if _IS.fullmatch(value.strip()) else "not an integer string"


def _ds(value: str) -> str | None:
    text = value.strip()
    return None if _DS.fullmatch(text) and len(text) <= 16 else "not a decimal string"


_CHECKS = {
    "DA": _date, "TM": _time, "DT": _datetime, "UI": _uid, "AE": _ae, "CS": _cs, "PN": _pn,
    "IS": _is, "DS": _ds,
}

__all__ = ["problem"]


def as_text(elem: DataElement) -> str:
    """An element's value as the stripped text the records keep (multi-values joined by
    backslashes, bytes decoded)."""
    value = elem.value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v).strip() for v in value)
    return str(value).strip()


def text(ds: Dataset, keyword: str) -> str:
    return as_text(ds[keyword]) if keyword in ds else ""
