"""Property: the numba element walk equals the Python walker on every input (workers.header).

Generated data sets are element sequences as senders write them and as they go wrong: wanted
and unwanted tags, right and wrong and unknown VRs, odd lengths, sequences of defined and
undefined length with items of both kinds nested a few levels, undefined-length UN (implicit
inside), encapsulated-style OB, deep nesting past the walker's limit, tags out of order, lying
lengths, flipped bytes and truncation anywhere, in both Little Endian encodings. For each, both
walkers must give the same rows or raise the same exception with the same status.
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.errors import IngestError
from workers import header

WANTED = [(tag, vr) for tag, _, vr in header._WANTED_TABLE]
OTHER_TAGS = [0x00080008, 0x00080070, 0x00081140, 0x00082112, 0x00101010, 0x00180050,
              0x00200032, 0x00280002, 0x00291010, 0x00400275, 0x0040A730, 0x00400246,
              0x7FE00010, 0xFFFEE000, 0x00000000]
SHORT_VRS = ["AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "PN", "SH",
             "SL", "SS", "ST", "TM", "UI", "UL", "US"]
LONG_VRS = ["OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"]
ODD_VRS = ["XX", "ss", "\x00\x00", "  "]
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQ_END = 0xE000, 0xE00D, 0xE0DD


def element(tag: int, vr: str, value: bytes, implicit: bool, length: int | None = None) -> bytes:
    n = len(value) if length is None else length
    if implicit:
        return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, n) + value
    if vr in LONG_VRS:
        return struct.pack("<HH2sxxI", tag >> 16, tag & 0xFFFF, vr.encode("latin-1"), n) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode("latin-1"),
                       n & 0xFFFF) + value


def delimiter(element_number: int, length: int = 0) -> bytes:
    return struct.pack("<HHI", 0xFFFE, element_number, length)


@st.composite
def items(draw: st.DrawFn, implicit: bool, depth: int) -> bytes:
    """The items of a sequence (PS3.5 §7.5), each of defined or undefined length."""
    out = b""
    for _ in range(draw(st.integers(0, 3))):
        body = b"".join(draw(st.lists(nested_element(implicit, depth), max_size=4)))
        if draw(st.booleans()):
            out += delimiter(ITEM, UNDEFINED) + body + delimiter(ITEM_END)
        else:
            out += delimiter(ITEM, len(body)) + body
    return out


@st.composite
def nested_element(draw: st.DrawFn, implicit: bool, depth: int) -> bytes:
    tag = draw(st.sampled_from([t for t, _ in WANTED] + OTHER_TAGS))
    return draw(value_of(tag, implicit, depth, wanted_vr=None))


@st.composite
def value_of(draw: st.DrawFn, tag: int, implicit: bool, depth: int, wanted_vr: str | None) -> bytes:
    nested = ["sq", "sq_undefined", "un_undefined", "ob_undefined"] if depth > 0 else []
    kind = draw(st.sampled_from((["plain"] * 30 if wanted_vr else ["plain"] * 4) + nested))
    if kind == "plain":  # mostly well formed: one oddity in a data set decides the outcome
        roll = draw(st.integers(0, 99))
        vr = (wanted_vr if wanted_vr and roll < 85 else
              draw(st.sampled_from(ODD_VRS)) if roll >= 97 else
              draw(st.sampled_from(SHORT_VRS + LONG_VRS)))
        value = draw(st.binary(max_size=12) | st.sampled_from([b"1.2.3\x00", b"CT", b"\x00\x02"]))
        roll = draw(st.integers(0, 99))
        length = None if roll < 97 else UNDEFINED if roll == 99 else draw(st.integers(0, 40))
        return element(tag, vr, value, implicit, length)
    if kind in ("sq", "sq_undefined"):
        body = draw(items(implicit, depth - 1))
        if kind == "sq":
            return element(tag, "SQ", body, implicit)
        return element(tag, "SQ", b"", implicit, UNDEFINED) + body + delimiter(SEQ_END)
    if kind == "un_undefined":  # contents are Implicit VR LE whatever the transfer syntax
        body = draw(items(True, depth - 1))
        return element(tag, "UN", b"", implicit, UNDEFINED) + body + delimiter(SEQ_END)
    fragments = b"".join(delimiter(ITEM, 4) + b"\x01\x02\x03\x04"
                         for _ in range(draw(st.integers(0, 2))))
    return element(tag, "OB", b"", implicit, UNDEFINED) + fragments + delimiter(SEQ_END)


@st.composite
def data_sets(draw: st.DrawFn) -> tuple[bytes, bool, bool]:
    implicit = draw(st.booleans())
    chosen = draw(st.lists(st.sampled_from(WANTED), max_size=14, unique=True))
    others = draw(st.lists(st.sampled_from(OTHER_TAGS), max_size=5, unique=True))
    tagged = sorted([(t, vr) for t, vr in chosen] + [(t, None) for t in others])
    if tagged and draw(st.integers(0, 9)) == 0:  # a sender that does not sort its tags
        i, j = draw(st.integers(0, len(tagged) - 1)), draw(st.integers(0, len(tagged) - 1))
        tagged[i], tagged[j] = tagged[j], tagged[i]
    if tagged and draw(st.integers(0, 9)) == 0:  # or repeats one
        i = draw(st.integers(0, len(tagged) - 1))
        tagged.insert(i, tagged[i])
    depth = draw(st.integers(0, 3))
    data = b"".join(draw(value_of(t, implicit, depth, vr)) for t, vr in tagged)
    if draw(st.booleans()):
        data += element(0x7FE00010, "OW", b"\x00\x01", implicit)
    if draw(st.integers(0, 5)) == 0 and data:
        mutable = bytearray(data)
        for where, byte in draw(st.lists(st.tuples(st.integers(0), st.integers(0, 255)),
                                         max_size=3)):
            mutable[where % len(mutable)] = byte
        data = bytes(mutable)
    if draw(st.integers(0, 2)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return data, implicit, draw(st.booleans())


def outcome(walk: Any, data: bytes, implicit: bool, complete: bool) -> tuple[Any, ...]:
    try:
        rows = walk(data, implicit, complete)
    except header.NeedMoreData as exc:
        return ("need more", exc.status)
    except IngestError as exc:
        return ("refused", exc.status)
    except header._Odd:
        return ("odd",)
    return ("ok", [tuple(r) for r in rows])


def same(data: bytes, implicit: bool, complete: bool) -> tuple[Any, ...]:
    expected = outcome(header._walk_python, data, implicit, complete)
    assert outcome(header._walk_numba, data, implicit, complete) == expected
    return expected


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow,
                                                   HealthCheck.data_too_large])
@given(data_sets())
def test_numba_walk_equals_python_walk(case: tuple[bytes, bool, bool]) -> None:
    same(*case)


@settings(max_examples=300)
@given(st.binary(max_size=200), st.booleans(), st.booleans())
def test_arbitrary_bytes(data: bytes, implicit: bool, complete: bool) -> None:
    same(data, implicit, complete)


def nest(levels: int, implicit: bool, un_at: int, defined_item_at: int) -> bytes:
    """``levels`` undefined-length sequences inside one another, one item each; level 0 is the
    innermost. The one at ``un_at`` is UN (Implicit VR LE inside), the item at
    ``defined_item_at`` has a defined length (so the walk skips what it holds)."""
    parent_implicit = [implicit] * (levels + 1)  # how level i's own header is encoded
    for level in range(levels - 1, 0, -1):
        parent_implicit[level - 1] = parent_implicit[level] or level == un_at
    inner = parent_implicit[0] or un_at == 0 if levels else implicit
    body = element(0x00080100, "SH", b"X ", inner)
    for level in range(levels):
        if level == defined_item_at:
            item = delimiter(ITEM, len(body)) + body
        else:
            item = delimiter(ITEM, UNDEFINED) + body + delimiter(ITEM_END)
        body = (element(0x00081140, "UN" if level == un_at else "SQ", b"",
                        parent_implicit[level], UNDEFINED) + item + delimiter(SEQ_END))
    return body


@settings(max_examples=150)
@given(st.integers(0, 20), st.booleans(), st.integers(0, 25), st.integers(0, 25),
       st.integers(0, 10**6), st.booleans())
def test_deep_nesting(levels: int, implicit: bool, un_at: int, defined_item_at: int,
                      cut: int, complete: bool) -> None:
    data = (element(0x00080018, "UI", b"1.2\x00", implicit)
            + nest(levels, implicit, un_at, defined_item_at)
            + element(0x00100010, "PN", b"A^B ", implicit))
    if cut % 3 == 0:
        data = data[: cut % (len(data) + 1)]
    result = same(data, implicit, complete)
    if cut % 3 and complete and defined_item_at >= levels:  # whole, every level walked
        if levels >= 17:  # the innermost sequence has depth 33 > 32 as the walker counts
            assert result == ("refused", 0xC000)
        else:
            assert result[0] == "ok"
            assert [row[0] for row in result[1]] == [0x00080018, 0x00100010]


def read(data: bytes, ts: str, complete: bool, walker: header.Walker) -> Any:
    try:
        return header.read_index_attributes(data, ts, complete=complete, walker=walker)
    except IngestError as exc:
        return (type(exc), exc.status)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow,
                                                   HealthCheck.data_too_large])
@given(data_sets())
def test_read_index_attributes_same_with_either_walker(case: tuple[bytes, bool, bool]) -> None:
    # the whole read: value decoding, charset handling and the pydicom fallback on top
    data, implicit, complete = case
    ts = "1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1"
    assert read(data, ts, complete, "numba") == read(data, ts, complete, "python")
