"""C-FIND attribute matching (PS3.4 C.2.2.2), pure: a key value compiles to a predicate.

``compile_key(vr, key_value)`` returns None for Universal Matching, else a function of one
entity value (a ``str`` as the index keeps it: stripped, ``''`` when empty, multiple values
backslash-separated). The rules, per the type of the key value:

- zero length, or only ``*``: Universal Matching (C.2.2.2.3; C.2.2.2.4 says ``*`` is the same
  for the VRs that allow wild cards; a lone ``*`` on any other VR is treated so too, since an
  SCU sending it can mean nothing else);
- UI: List of UID Matching (C.2.2.2.2): backslash-separated UIDs, any one may match; a single
  UID is the one-element list. No wild cards for UI;
- DA, TM, DT: Single Value Matching or Range Matching (C.2.2.2.5): ``a-b``, ``a-``, ``-b``
  inclusive. A bound with fewer components than the VR is widened (``2024`` as an upper date
  bound is ``20249999``, ``10`` as an upper time bound is the whole hour). ``a > b`` matches
  nothing ("<date1> is less or equal to <date2>"; TM ranges never cross midnight). DA is
  compared as the stripped string, which for valid YYYYMMDD values is chronological and is
  exactly how the by_study_date index orders it. TM is compared after padding to
  HHMMSS.FFFFFF (ACR-NEMA colons removed), so ``1030`` equals ``103000``. DT offsets from UTC
  are not normalised (the index keeps no DT attribute);
- AE, CS, LO, LT, PN, SH, ST, UC, UR, UT: Wild Card Matching when ``*`` or ``?`` occurs
  (C.2.2.2.4: ``*`` any sequence, ``?`` one character), else Single Value Matching
  (C.2.2.2.1); both case-sensitive except for PN;
- PN: C.2.2.2.1 lets literal matching of PN be "insensitive to some or all aspects of case,
  position, accent"; C.2.2.2.4 leaves PN wild cards to the Conformance Statement. Our rule:
  each component group (alphabetic, ideographic, phonetic) given in the key is compared with
  the same group of the value, both in the form the by_patient_name index uses
  (``schema.normalize_person_name``: components stripped, upper-cased, trailing empty
  components dropped), so matching is case-insensitive and ``SMITH^JOHN`` equals
  ``smith ^ john^^``. An empty key group constrains nothing (``=YAMADA*`` matches on the
  ideographic group only). A value with fewer components than the pattern spells out is
  padded (``SMITH^*`` matches ``SMITH``). Accents are not folded. Fuzzy semantic matching of
  person names (C.2.2.2.1.1) is an Extended Negotiation option we decline, so it never
  applies;
- IS, DS, US, SS, UL, SL, FL, FD, SV, UV: Single Value Matching, numerically when both sides
  parse as numbers;
- SQ: Sequence Matching (C.2.2.2.6) needs attributes inside sequences, which the index does
  not keep; the caller treats a sequence key as an unsupported optional key (universal).

A key with several values (backslash) other than UI matches when any of them matches (as for
UID lists; used by SCUs for e.g. Modalities in Study ``CT\\MR``). A multi-valued entity value
matches when any of its values matches (e.g. Modalities in Study, SOP Classes in Study). A
non-universal key never matches an empty entity value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from workers.index.schema import normalize_person_name

Matcher = Callable[[str], bool]

WILDCARD_VRS: Final = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
RANGE_VRS: Final = frozenset({"DA", "TM", "DT"})
NUMERIC_VRS: Final = frozenset({"IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "SV", "UV"})
_WILD = re.compile(r"[*?]")


def is_universal(vr: str, key_value: str) -> bool:
    """Universal Matching (C.2.2.2.3), or a key value of only ``*`` (C.2.2.2.4 note)."""
    values = [v.strip() for v in key_value.split("\\")]
    return all(not v or set(v) == {"*"} for v in values) or vr == "SQ"


def compile_key(vr: str, key_value: str) -> Matcher | None:
    """A predicate over one entity value, or None for Universal Matching."""
    if is_universal(vr, key_value):
        return None
    values = [v.strip() for v in key_value.split("\\") if v.strip()]
    if vr == "UI":
        return _uid_list(frozenset(values))
    single = [_compile_single(vr, v) for v in values]
    if len(single) == 1:
        one = single[0]
        return lambda value: any(one(v) for v in _values(value))
    return lambda value: any(m(v) for v in _values(value) for m in single)


def matches(vr: str, key_value: str, value: str) -> bool:
    """Does the entity ``value`` match ``key_value`` (convenience over ``compile_key``)?"""
    m = compile_key(vr, key_value)
    return True if m is None else m(value)


def _values(value: str) -> list[str]:
    return [v for v in value.split("\\") if v] if value else []


def _uid_list(uids: frozenset[str]) -> Matcher:
    def match(value: str) -> bool:
        if "\\" not in value:
            return value in uids
        return any(v in uids for v in value.split("\\"))

    return match


def _compile_single(vr: str, kv: str) -> Matcher:
    if vr == "PN":
        return _person_name(kv)
    if vr in RANGE_VRS:
        return _date_time(vr, kv)
    if vr in WILDCARD_VRS and _WILD.search(kv):
        rx = wildcard_regex(kv)
        return lambda v: rx.fullmatch(v) is not None
    if vr in NUMERIC_VRS:
        return _numeric(kv)
    return kv.__eq__


def wildcard_regex(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """``*`` any sequence (also empty), ``?`` exactly one character; the rest literal."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), flags | re.DOTALL)


def literal_prefix(pattern: str) -> str:
    """The characters before the first wild card (the whole value when there is none)."""
    m = _WILD.search(pattern)
    return pattern if m is None else pattern[: m.start()]


def _numeric(kv: str) -> Matcher:
    try:
        number = float(kv)
    except ValueError:
        return kv.__eq__

    def match(v: str) -> bool:
        try:
            return float(v) == number
        except ValueError:
            return v == kv

    return match


# ---- PN ---------------------------------------------------------------------------------


def _person_name(kv: str) -> Matcher:
    groups: list[tuple[int, Matcher]] = []
    for i, group in enumerate(kv.split("=")[:3]):
        norm = normalize_person_name(group)
        if not norm or set(norm) == {"*"}:
            continue  # this group constrains nothing
        groups.append((i, _pn_group(norm)))
    if not groups:
        return lambda v: True

    def match(value: str) -> bool:
        parts = value.split("=")
        for i, group_match in groups:
            got = normalize_person_name(parts[i]) if i < len(parts) else ""
            if not group_match(got):
                return False
        return True

    return match


def _pn_group(norm: str) -> Matcher:
    if not _WILD.search(norm):
        return norm.__eq__
    rx = wildcard_regex(norm)
    carets = norm.count("^")

    def match(v: str) -> bool:
        if rx.fullmatch(v) is not None:
            return True
        missing = carets - v.count("^")  # "SMITH" is "SMITH^" (trailing empty components)
        return missing > 0 and rx.fullmatch(v + "^" * missing) is not None

    return match


def person_name_index_key(key_value: str) -> tuple[str, bool] | None:
    """What the by_patient_name index can answer for a PN key: (normalized alphabetic group,
    False) for an exact lookup, (literal prefix, True) for a prefix scan, None when the
    alphabetic group is unconstrained or starts with a wild card (or several values are
    given). Every name ``compile_key`` accepts lies under the key or prefix returned."""
    if "\\" in key_value:
        return None
    norm = normalize_person_name(key_value.split("=", 1)[0])
    if not norm or set(norm) == {"*"}:
        return None
    if not _WILD.search(norm):
        return norm, False
    # Trailing carets of the prefix are dropped: "SMITH^*" also matches the key "SMITH".
    prefix = literal_prefix(norm).rstrip("^")
    return (prefix, True) if prefix else None


# ---- DA / TM / DT -------------------------------------------------------------------------

_WIDTH = {"DA": 8, "DT": 14}


def _pad(vr: str, text: str, fill: str) -> str:
    """Fill the missing trailing components of a DA/TM/DT bound or value."""
    if vr == "TM":
        text = text.replace(":", "")
        main, _, frac = text.partition(".")
        return main.ljust(6, fill) + "." + frac.ljust(6, fill)
    if vr == "DT":
        text = re.sub(r"[+-]\d{4}$", "", text) if len(text) > 5 else text
        main, _, frac = text.partition(".")
        return main.ljust(14, fill) + "." + frac.ljust(6, fill)
    return text.ljust(_WIDTH["DA"], fill)


def date_range(vr: str, kv: str) -> tuple[str, str] | None:
    """(lower, upper) inclusive bounds of a DA/TM/DT key value in comparable form, or None
    for a single value. ``-`` alone gives the unbounded range."""
    if vr == "DT":
        lo, hi, is_range = _split_dt(kv)
    else:
        lo, sep, hi = kv.partition("-")
        is_range = bool(sep)
    if not is_range:
        return None
    lower = _pad(vr, lo.strip(), "0") if lo.strip() else ""
    upper = _pad(vr, hi.strip(), "9") if hi.strip() else "\uffff"
    return lower, upper


_DT = r"\d{4,14}(?:\.\d{1,6})?(?:[+-]\d{4})?"
_DT_SINGLE = re.compile(_DT)
_DT_RANGE = re.compile(rf"({_DT})?-({_DT})?")


def _split_dt(kv: str) -> tuple[str, str, bool]:
    if _DT_SINGLE.fullmatch(kv):
        return kv, "", False  # a '-' here is a UTC offset, not a range
    m = _DT_RANGE.fullmatch(kv)
    if m is None:
        lo, sep, hi = kv.partition("-")
        return lo, hi, bool(sep)
    return m.group(1) or "", m.group(2) or "", True


def _date_time(vr: str, kv: str) -> Matcher:
    bounds = date_range(vr, kv)
    if vr == "DA":
        if bounds is None:
            return kv.__eq__
        lower, upper = bounds
        return lambda v: lower <= v <= upper
    if bounds is None:
        single = _pad(vr, kv, "0")
        return lambda v: _pad(vr, v, "0") == single
    lower, upper = bounds
    return lambda v: lower <= _pad(vr, v, "0") <= upper


def combined_date_time(date_key: str, time_key: str) -> Callable[[str, str], bool] | None:
    """Combined Date and Time Range Matching (PS3.4 C.2.2.2.5.1, only when granted by
    Extended Negotiation): a DA key and its TM key form one date-time range, e.g.
    ``20240105-20240107`` with ``1000-1800`` is 5 January 10:00 to 7 January 18:00.
    None when either key is universal or multi-valued (then each is matched on its own)."""
    if is_universal("DA", date_key) or is_universal("TM", time_key):
        return None
    if "\\" in date_key or "\\" in time_key:
        return None
    d = date_range("DA", date_key) or (date_key, date_key)
    t = date_range("TM", time_key)
    if t is None:
        t = (_pad("TM", time_key, "0"), _pad("TM", time_key, "0"))
    lower = _pad("DA", d[0], "0") + t[0] if d[0] else ""
    upper = _pad("DA", d[1], "9") + (t[1] if t[1] != "\uffff" else "999999.999999")
    if d[1] == "\uffff":
        upper = "\uffff"

    def match(date: str, time: str) -> bool:
        if not date:
            return False
        stamp = date + _pad("TM", time, "0")
        return lower <= stamp <= upper

    return match


__all__ = [
    "Matcher", "NUMERIC_VRS", "RANGE_VRS", "WILDCARD_VRS", "combined_date_time", "compile_key",
    "date_range", "is_universal", "literal_prefix", "matches", "person_name_index_key",
    "wildcard_regex",
]
