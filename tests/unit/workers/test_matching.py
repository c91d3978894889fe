"""workers.query.matching: the PS3.4 C.2.2.2 matching rules, table-driven."""

from __future__ import annotations

import pytest

from workers.query.matching import (
    combined_date_time,
    compile_key,
    date_range,
    is_universal,
    literal_prefix,
    matches,
    person_name_index_key,
)

# (VR, key value, entity value, expected)
CASES: list[tuple[str, str, str, bool]] = [
    # ---- C.2.2.2.3 Universal Matching: zero length matches everything, empty values too
    ("LO", "", "anything", True),
    ("LO", "", "", True),
    ("DA", "", "20240101", True),
    ("UI", "", "1.2.3", True),
    ("PN", "", "", True),
    # C.2.2.2.4 note: "*" alone is Universal Matching (also on an empty value)
    ("LO", "*", "", True),
    ("CS", "*", "CT", True),
    ("PN", "*", "", True),
    ("DA", "*", "20240101", True),  # lenient: a lone "*" on a VR without wild cards
    # ---- C.2.2.2.1 Single Value Matching: exact, case-sensitive except PN
    ("LO", "ABC123", "ABC123", True),
    ("LO", "ABC123", "abc123", False),
    ("LO", "ABC", "ABC123", False),
    ("SH", "A1", "A1", True),
    ("CS", "CT", "CT", True),
    ("CS", "CT", "MR", False),
    ("LO", " ABC ", "ABC", True),  # padding is not significant
    ("LO", "X", "", False),  # a non-universal key never matches an empty value
    # ---- C.2.2.2.4 Wild Card Matching: "*" any sequence, "?" one character, anywhere
    ("LO", "AB*", "AB", True),
    ("LO", "AB*", "ABCDEF", True),
    ("LO", "AB*", "XAB", False),
    ("LO", "*EF", "ABCDEF", True),
    ("LO", "A*F", "ABCDEF", True),
    ("LO", "A*D*F", "ABCDEF", True),
    ("LO", "A*X*F", "ABCDEF", False),
    ("LO", "A?C", "ABC", True),
    ("LO", "A?C", "AC", False),
    ("LO", "A?C", "ABBC", False),
    ("LO", "??", "AB", True),
    ("LO", "??", "ABC", False),
    ("LO", "?*", "A", True),
    ("LO", "?*", "", False),
    ("SH", "ab*", "ABC", False),  # case-sensitive
    ("LO", "a.c*", "abc", False),  # regex metacharacters are literal
    ("LO", "a.c*", "a.cd", True),
    ("LO", "(x)*", "(x)y", True),
    ("AE", "PACS*", "PACS_1", True),
    ("CS", "C?", "CT", True),
    # no wild cards for UI / DA / numbers: "*" and "?" are literal there
    ("UI", "1.2.*", "1.2.3", False),
    ("UI", "1.2.?", "1.2.3", False),
    ("IS", "1?", "12", False),
    # ---- C.2.2.2.2 List of UID Matching
    ("UI", "1.2.3", "1.2.3", True),
    ("UI", "1.2.3", "1.2.30", False),
    ("UI", "1.2.3\\1.2.4\\1.2.5", "1.2.4", True),
    ("UI", "1.2.3\\1.2.4", "1.2.6", False),
    ("UI", "1.2.3\\1.2.4", "1.2.9\\1.2.4", True),  # multi-valued entity (SOP Classes in Study)
    # ---- C.2.2.2.5 Range Matching: DA
    ("DA", "20240101", "20240101", True),
    ("DA", "20240101", "20240102", False),
    ("DA", "20240101-20240131", "20240101", True),
    ("DA", "20240101-20240131", "20240115", True),
    ("DA", "20240101-20240131", "20240131", True),
    ("DA", "20240101-20240131", "20240201", False),
    ("DA", "20240101-20240131", "20231231", False),
    ("DA", "20240101-", "20991231", True),
    ("DA", "20240101-", "20231231", False),
    ("DA", "-20240101", "19000101", True),
    ("DA", "-20240101", "20240101", True),
    ("DA", "-20240101", "20240102", False),
    ("DA", "20240131-20240101", "20240115", False),  # date1 must be <= date2
    ("DA", "20240101-20240131", "", False),
    ("DA", "2024-2024", "20240615", True),  # partial bounds widened
    # ---- TM: ranges within a day, partial values padded
    ("TM", "1030", "103000", True),
    ("TM", "103000", "1030", True),
    ("TM", "1030", "103001", False),
    ("TM", "1000-1200", "1100", True),
    ("TM", "1000-1200", "120000.000000", True),
    ("TM", "1000-1200", "1159", True),
    ("TM", "1000-12", "125959.999999", True),  # "12" as an upper bound: the whole hour
    ("TM", "1000-1200", "1201", False),
    ("TM", "1000-1200", "0959", False),
    ("TM", "1000-", "235959", True),
    ("TM", "-1000", "000000", True),
    ("TM", "2200-0200", "2300", False),  # no range across midnight
    ("TM", "10:00-12:00", "11:30", True),  # ACR-NEMA colons
    # ---- DT
    ("DT", "20240101120000-20240101130000", "20240101123000", True),
    ("DT", "20240101120000-20240101130000", "20240101133000", False),
    ("DT", "2024-", "20250101", True),
    ("DT", "-2023", "20231231235959", True),
    ("DT", "-2023", "20240101", False),
    ("DT", "20240101120000-0500", "20240101120000-0500", True),  # "-0500" is an offset
    # ---- PN: case-insensitive, component groups, padding
    ("PN", "SMITH^JOHN", "Smith^John", True),
    ("PN", "smith^john", "SMITH^JOHN", True),
    ("PN", "SMITH^JOHN", "SMITH^JOHNNY", False),
    ("PN", "SMITH", "SMITH^JOHN", False),  # Single Value Matching is on the whole name
    ("PN", "SMITH^", "SMITH", True),  # trailing empty components are insignificant
    ("PN", "SMITH^JOHN^^^", "SMITH^JOHN", True),
    ("PN", "SMITH ^ JOHN", "SMITH^JOHN", True),  # component padding
    ("PN", "SMI*", "Smith^John", True),
    ("PN", "smi*", "SMITH^JOHN", True),
    ("PN", "*JOHN", "Smith^John", True),
    ("PN", "*^J*", "Smith^John", True),
    ("PN", "SMITH^J*", "Smith^John", True),
    ("PN", "SMITH^J*", "Smith^Anna", False),
    ("PN", "SMITH^*", "Smith", True),  # "Smith" is "Smith^"
    ("PN", "SMITH^?*", "Smith", False),
    ("PN", "S?ITH^JOHN", "Smith^John", True),
    ("PN", "SMITH", "Smithson", False),
    ("PN", "=YAMADA*", "Yamada^Tarou=YAMADA^TAROU", True),  # ideographic group only
    ("PN", "=YAMADA*", "Yamada^Tarou", False),
    ("PN", "Yamada^Tarou", "Yamada^Tarou=山田^太郎=やまだ^たろう", True),
    ("PN", "Yamada^Tarou=山田*", "Yamada^Tarou=山田^太郎", True),
    ("PN", "Yamada^Tarou=山本*", "Yamada^Tarou=山田^太郎", False),
    ("PN", "MÜLLER*", "Müller^Hans", True),  # Unicode case folding, accents kept
    ("PN", "MULLER*", "Müller^Hans", False),
    ("PN", "DOE^JANE", "Smith^John\\Doe^Jane", True),  # multi-valued entity value
    # ---- numbers: single value, numerically
    ("IS", "3", "3", True),
    ("IS", "3", "03", True),
    ("IS", "3", "4", False),
    ("IS", "3", "1\\3", True),
    ("US", "512", "512", True),
    ("DS", "1.5", "1.50", True),
    # ---- several key values: any one may match (e.g. Modalities in Study "CT\MR")
    ("CS", "CT\\MR", "MR", True),
    ("CS", "CT\\MR", "US", False),
    ("CS", "CT\\MR", "PT\\MR", True),  # multi-valued entity value
    ("CS", "CT", "PT\\MR", False),
    ("CS", "C*\\US", "CR", True),
    ("DA", "20240101\\20240301-20240302", "20240302", True),
    ("DA", "20240101\\20240301-20240302", "20240201", False),
]


@pytest.mark.parametrize(("vr", "key", "value", "expected"), CASES)
def test_matching_rules(vr: str, key: str, value: str, expected: bool) -> None:
    assert matches(vr, key, value) is expected


@pytest.mark.parametrize(("vr", "key", "universal"), [
    ("LO", "", True), ("LO", "   ", True), ("LO", "*", True), ("LO", "**", True),
    ("LO", "\\", True), ("LO", "*\\", True), ("SQ", "items", True), ("LO", "A", False),
    ("LO", "*A", False), ("DA", "-", False), ("UI", "1.2", False),
])
def test_universal(vr: str, key: str, universal: bool) -> None:
    assert is_universal(vr, key) is universal
    assert (compile_key(vr, key) is None) is universal


def test_literal_prefix() -> None:
    assert literal_prefix("SMI*") == "SMI"
    assert literal_prefix("S?I*") == "S"
    assert literal_prefix("*X") == ""
    assert literal_prefix("ABC") == "ABC"


@pytest.mark.parametrize(("key", "expected"), [
    ("Smith^John", ("SMITH^JOHN", False)),
    ("smith ^ john ^^", ("SMITH^JOHN", False)),
    ("SMI*", ("SMI", True)),
    ("smith^j*", ("SMITH^J", True)),
    ("SMITH^*", ("SMITH", True)),  # the key "SMITH" must be scanned too
    ("*SMITH", None),
    ("*", None),
    ("", None),
    ("=YAMADA", None),  # only the alphabetic group is indexed
    ("Smith^John=山田", ("SMITH^JOHN", False)),
    ("A\\B", None),
])
def test_person_name_index_key(key: str, expected: tuple[str, bool] | None) -> None:
    assert person_name_index_key(key) == expected


@pytest.mark.parametrize(("name", "pattern"), [
    ("Smith^John", "SMI*"), ("Smith", "SMITH^*"), ("smith^anna", "SMITH^A?NA"),
    ("Smith ^John", "SMITH^J*"), ("Smith^John^^^", "SMITH^JOHN"),
])
def test_person_name_index_key_covers_matches(name: str, pattern: str) -> None:
    """Whatever PN matching accepts lies under the index key or prefix (engine relies on it)."""
    from workers.index.schema import normalize_person_name

    assert matches("PN", pattern, name)
    found = person_name_index_key(pattern)
    assert found is not None
    k, is_prefix = found
    indexed = normalize_person_name(name)
    assert indexed.startswith(k) if is_prefix else indexed == k


def test_date_range_bounds() -> None:
    assert date_range("DA", "20240101") is None
    assert date_range("DA", "20240101-20240131") == ("20240101", "20240131")
    assert date_range("DA", "20240101-") == ("20240101", "\uffff")
    assert date_range("DA", "-20240131") == ("", "20240131")
    assert date_range("DT", "20240101120000-0500") is None


@pytest.mark.parametrize(("date", "time", "d", "t", "expected"), [
    # C.2.2.2.5.1: 20240105-20240107 with 1000-1800 is 5 Jan 10:00 .. 7 Jan 18:00
    ("20240105-20240107", "1000-1800", "20240106", "0300", True),
    ("20240105-20240107", "1000-1800", "20240105", "0900", False),
    ("20240105-20240107", "1000-1800", "20240105", "2300", True),
    ("20240105-20240107", "1000-1800", "20240107", "1900", False),
    ("20240105-20240107", "1000-1800", "20240107", "1800", True),
    ("20240105", "1000-", "20240105", "2359", True),
    ("20240105", "1000-", "20240106", "0100", False),
    ("20240105-", "1000-", "20300101", "0000", True),
    ("20240105-20240107", "1000-1800", "", "1200", False),
])
def test_combined_date_time(date: str, time: str, d: str, t: str, expected: bool) -> None:
    match = combined_date_time(date, time)
    assert match is not None
    assert match(d, t) is expected


def test_combined_date_time_needs_both() -> None:
    assert combined_date_time("", "1000-1200") is None
    assert combined_date_time("20240101", "") is None
