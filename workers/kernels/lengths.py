"""Walk a data set's element lengths to its end, compiled (workers/completeness.py).

``walk_lengths`` is the numba twin of ``workers.completeness._Walk`` (the reference, kept in
Python and property-tested equal): it jumps from element header to element header by the
declared Value Lengths, follows undefined-length sequences, items and encapsulated Pixel Data
(PS3.5 §7.5) with an explicit stack, and reports whether the elements end exactly at the
data set's last byte. It reads only the bytes of ``buf``, which holds the data set's bytes
``[base, base + len(buf))``; when the next header lies outside, it returns ``NEED`` with the
position to read from, and the caller calls again with a buffer there and the same stack.

Every byte read is preceded by a bounds check against ``len(buf)``. The kernel imports
nothing but numpy and numba (tests/unit/test_layering.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit

WHOLE = 0  # the elements end exactly at the last byte, every container closed
NEED = 1  # the next header is outside ``buf``: call again with bytes at the returned pos
SHORT_HEADER = 2  # the data set ends inside an element header
TOO_LONG = 3  # an element declares more bytes than remain
OPEN = 4  # the data set ends inside an undefined-length sequence or item
BAD_DELIMITER = 5  # an item or delimiter tag where none belongs
NOT_ITEM = 6  # an element where a sequence item belongs
TOO_DEEP = 7  # undefined-length containers nested deeper than MAX_DEPTH

MAX_DEPTH = 64
UNDEFINED = 0xFFFFFFFF


@njit(cache=True)
def _u16(buf, i, little):  # type: ignore[no-untyped-def]
    a, b = np.int64(buf[i]), np.int64(buf[i + 1])  # int64 throughout: no float unification
    if little:
        return a | b << 8
    return a << 8 | b


@njit(cache=True)
def _u32(buf, i, little):  # type: ignore[no-untyped-def]
    a, b = np.int64(buf[i]), np.int64(buf[i + 1])
    c, d = np.int64(buf[i + 2]), np.int64(buf[i + 3])
    if little:
        return a | b << 8 | c << 16 | d << 24
    return a << 24 | b << 16 | c << 8 | d


@njit(cache=True)
def _long_vr(a, b):  # type: ignore[no-untyped-def]
    """OB OD OF OL OV OW SQ SV UC UN UR UT UV: 2 reserved bytes and a 4-byte length."""
    if a == 79:  # O
        return b == 66 or b == 68 or b == 70 or b == 76 or b == 86 or b == 87  # noqa: PLR1714
    if a == 83:  # S
        return b == 81 or b == 86  # noqa: PLR1714
    if a == 85:  # U
        return b == 67 or b == 78 or b == 82 or b == 84 or b == 86  # noqa: PLR1714
    return False


@njit(cache=True)
def walk_lengths(  # type: ignore[no-untyped-def]  # noqa: C901, PLR0915 - one loop, compiled
    buf, base, pos, total, little, top_explicit, holds_items, explicit_in, depth,
):
    """(status, pos, depth, group, element, length); see the module docstring."""
    end = base + len(buf)
    while pos < total:
        if total - pos < 8:
            return SHORT_HEADER, pos, depth, 0, 0, 0
        if pos < base or pos + 8 > end:
            return NEED, pos, depth, 0, 0, 0
        i = pos - base
        group = _u16(buf, i, little)
        element = _u16(buf, i + 2, little)
        if group == 0xFFFE:  # items and delimiters: tag and 4-byte length in every syntax
            length = _u32(buf, i + 4, little)
            in_sequence = depth > 0 and holds_items[depth - 1]
            if element == 0xE000 and in_sequence:
                if length == UNDEFINED:
                    if depth == MAX_DEPTH:
                        return TOO_DEEP, pos, depth, group, element, length
                    holds_items[depth] = False
                    explicit_in[depth] = explicit_in[depth - 1]
                    depth += 1
                    pos += 8
                else:
                    pos += 8 + length
            elif (element == 0xE00D and depth > 0 and not holds_items[depth - 1]) or (
                    element == 0xE0DD and in_sequence):
                depth -= 1
                pos += 8
            else:
                return BAD_DELIMITER, pos, depth, group, element, length
            continue
        if depth > 0 and holds_items[depth - 1]:
            return NOT_ITEM, pos, depth, group, element, 0
        explicit = explicit_in[depth - 1] if depth > 0 else top_explicit
        nested = explicit
        if not explicit:
            length = _u32(buf, i + 4, little)
            size = 8
        elif _long_vr(np.int64(buf[i + 4]), np.int64(buf[i + 5])):
            if total - pos < 12:
                return SHORT_HEADER, pos, depth, 0, 0, 0
            if pos + 12 > end:
                return NEED, pos, depth, 0, 0, 0
            length = _u32(buf, i + 8, little)
            size = 12
            if buf[i + 4] == 85 and buf[i + 5] == 78:  # UN: implicit VR LE inside (§6.2.2)
                nested = False
        else:
            length = _u16(buf, i + 6, little)
            size = 8
        if length == UNDEFINED:
            if depth == MAX_DEPTH:
                return TOO_DEEP, pos, depth, group, element, length
            holds_items[depth] = True
            explicit_in[depth] = nested
            depth += 1
            pos += size
        elif pos + size + length > total:
            return TOO_LONG, pos, depth, group, element, length
        else:
            pos += size + length
    if depth > 0:
        return OPEN, pos, depth, 0, 0, 0
    return WHOLE, pos, depth, 0, 0, 0


def warm_up() -> None:
    stack_items = np.zeros(MAX_DEPTH, dtype=np.bool_)
    stack_explicit = np.zeros(MAX_DEPTH, dtype=np.bool_)
    data = np.frombuffer(b"\x08\x00\x16\x00UI\x02\x001\x00", dtype=np.uint8)
    walk_lengths(data, 0, 0, len(data), True, True, stack_items, stack_explicit, 0)
