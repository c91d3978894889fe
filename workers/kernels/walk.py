"""Top-level element walk of a Little Endian data set, compiled (DESIGN "numba", ingest step 3).

THEORY OF OPERATION
-------------------
``walk_le`` is the numba twin of the pure-Python walker in ``workers.header`` (which stays the
reference and the fallback). It reads element headers of a data set as received in C-STORE
(Implicit VR LE, PS3.5 §7.1.3, or Explicit VR LE, §7.1.2), records where the wanted top-level
elements are, and skips everything else by its Value Length; undefined-length sequences and
items (§7.5) are skipped by walking their items with an explicit stack instead of recursion.
It stops at the first tag beyond the last wanted one (so never reaches Pixel Data), or when the
bytes end.

Invariants:
  - Every byte read is preceded by a bounds check against ``len(buf)``: any input, however
    hostile, yields a status code, never an out-of-bounds read (property-tested against the
    Python walker, also with NUMBA_BOUNDSCHECK=1).
  - Results equal the Python walker's on every input: the same rows for the same elements, and
    the same outcome where it raises (``NEED_MORE`` for ``NeedMoreData``, ``ODD`` for its
    internal "let pydicom do it" signal, ``TOO_DEEP`` for its nesting refusal), checked in the
    same order. The Python side turns the status back into those exceptions.
  - Values are never decoded here: the caller gets (tag, VR, value offset, value length) rows
    and decodes only those bytes.

The kernel imports nothing but numpy and numba (tests/unit/test_layering.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Outcome of a walk (the first element of walk_le's result).
OK = 0  # the rows are the wanted elements present
NEED_MORE = 1  # the bytes end too early (inside an element, or before the last wanted tag)
ODD = 2  # something the walker leaves to pydicom (unknown VR, tags out of order, ...)
TOO_DEEP = 3  # undefined-length sequences nested deeper than MAX_DEPTH

MAX_DEPTH = 32  # as the Python walker counts it: sequence = item + 1 = enclosing sequence + 2
UNDEFINED = 0xFFFFFFFF
_ITEM = 0xE000  # (FFFE,E000) Item, PS3.5 §7.5
_ITEM_DELIMITER = 0xE00D  # (FFFE,E00D)
_SEQUENCE_DELIMITER = 0xE0DD  # (FFFE,E0DD)

# Explicit VR (as the little-endian uint16 of its two characters) -> kind, PS3.5 Table 7.1-1/2.
# Kinds from _LONG_UNDEFINED_OK up may have an undefined length.
_UNKNOWN, _SHORT, _LONG, _LONG_UNDEFINED_OK, _UN = 0, 1, 2, 3, 4
_SHORT_VRS = ("AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "PN",
              "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US")
_LONG_VRS = ("OD", "OF", "OL", "OV", "SV", "UC", "UR", "UT", "UV")
# Undefined length is legal on SQ, on UN (PS3.5 §6.2.2) and on encapsulated OB/OW (§A.4).
_LONG_UNDEFINED_OK_VRS = ("OB", "OW", "SQ")


def _vr_kinds() -> np.ndarray:
    kinds = np.zeros(65536, dtype=np.uint8)
    for names, kind in ((_SHORT_VRS, _SHORT), (_LONG_VRS, _LONG),
                        (_LONG_UNDEFINED_OK_VRS, _LONG_UNDEFINED_OK), (("UN",), _UN)):
        for name in names:
            kinds[int.from_bytes(name.encode("ascii"), "little")] = kind
    return kinds


VR_KINDS = _vr_kinds()  # passed to the kernel: one load per element tells the header layout


@njit(cache=True, nogil=True, inline="always")
def _u16(buf, pos):  # type: ignore[no-untyped-def]
    return np.int64(buf[pos]) | (np.int64(buf[pos + 1]) << 8)


@njit(cache=True, nogil=True, inline="always")
def _u32(buf, pos):  # type: ignore[no-untyped-def]
    return (np.int64(buf[pos]) | (np.int64(buf[pos + 1]) << 8)
            | (np.int64(buf[pos + 2]) << 16) | (np.int64(buf[pos + 3]) << 24))


# The element header decode is written out in each loop below rather than called: returning
# it as a tuple from a helper made the top-level walk 4x slower (14.7 vs 3.4 µs for 400
# elements), hence the complexity waivers.


@njit(cache=True, nogil=True)
def _skip_undefined(buf, pos, implicit, kinds):  # type: ignore[no-untyped-def]  # noqa: C901, PLR0915
    """Skip the items of an undefined-length sequence whose first item header is at ``pos``.

    Returns (status, offset): the offset after its (FFFE,E0DD) on OK, else where it failed.
    Frames on the stack alternate sequence, item, sequence ...; frame i is a sequence iff i is
    even, and ``implicit_at[i]`` says how the elements inside it are encoded."""
    n = buf.shape[0]
    implicit_at = np.empty(MAX_DEPTH + 2, dtype=np.bool_)
    implicit_at[0] = implicit
    sp = 1  # frames on the stack; the top one is sp - 1
    while sp > 0:
        if pos + 8 > n:
            return NEED_MORE, pos
        imp = implicit_at[sp - 1]
        group = _u16(buf, pos)
        element = _u16(buf, pos + 2)
        if (sp - 1) % 2 == 0:  # in a sequence: an item (never with a VR, §7.5) or its end
            length = _u32(buf, pos + 4)
            if group != 0xFFFE or element not in (_ITEM, _SEQUENCE_DELIMITER):
                return ODD, pos
            pos += 8
            if element == _SEQUENCE_DELIMITER:
                sp -= 1
            elif length == UNDEFINED:
                implicit_at[sp] = imp
                sp += 1
            else:
                pos += length
                if pos > n:
                    return NEED_MORE, pos
            continue
        # in an undefined-length item: an element or the item delimiter
        if group == 0xFFFE:
            if element != _ITEM_DELIMITER:
                return ODD, pos
            pos += 8
            sp -= 1
            continue
        kind = _UNKNOWN
        if imp:
            size = 8
            length = _u32(buf, pos + 4)
        else:
            kind = kinds[_u16(buf, pos + 4)]
            if kind == _UNKNOWN:
                return ODD, pos
            if kind == _SHORT:
                size = 8
                length = _u16(buf, pos + 6)
            else:
                size = 12
                if pos + 12 > n:
                    return NEED_MORE, pos
                length = _u32(buf, pos + 8)
        if length == UNDEFINED:
            if not (imp or kind >= _LONG_UNDEFINED_OK):
                return ODD, pos
            if sp + 1 > MAX_DEPTH:  # the new sequence's depth, counted as the Python walker does
                return TOO_DEEP, pos + size
            implicit_at[sp] = imp or kind == _UN  # UN contents are Implicit VR LE (§6.2.2)
            sp += 1
            pos += size
        else:
            pos += size + length
            if pos > n:
                return NEED_MORE, pos
    return OK, pos


@njit(cache=True, nogil=True)
def walk_le(buf, implicit, complete, wanted, kinds):  # type: ignore[no-untyped-def]  # noqa: C901
    """Walk the top-level elements of ``buf`` (uint8, Little Endian data set, PS3.5 §7.1).

    ``wanted``: sorted uint32 tags (group << 16 | element). ``kinds``: ``VR_KINDS``.
    ``complete``: ``buf`` is the whole data set (see workers.header's truncation contract).
    Returns (status, offset, rows): rows are int64 (tag, explicit VR as uint16 or 0, value
    offset, value length), one per wanted element present, in tag order; offset locates a
    failure (for messages)."""
    n = buf.shape[0]
    n_wanted = wanted.shape[0]
    rows = np.empty((n_wanted, 4), dtype=np.int64)
    found = 0
    last = np.int64(wanted[n_wanted - 1])
    w = 0  # wanted[w] is the smallest wanted tag not below the previous tag
    prev = np.int64(-1)
    pos = 0
    while pos + 8 <= n:
        tag = (_u16(buf, pos) << 16) | _u16(buf, pos + 2)
        if tag > last:
            return OK, pos, rows[:found]
        if tag <= prev:
            return ODD, pos, rows[:found]
        prev = tag
        kind = _UNKNOWN
        vr16 = np.int64(0)
        if implicit:
            size = 8
            length = _u32(buf, pos + 4)
        else:
            vr16 = _u16(buf, pos + 4)
            kind = kinds[vr16]
            if kind == _UNKNOWN:
                return ODD, pos, rows[:found]
            if kind == _SHORT:
                size = 8
                length = _u16(buf, pos + 6)
            else:
                size = 12
                if pos + 12 > n:
                    return NEED_MORE, pos, rows[:found]
                length = _u32(buf, pos + 8)
        is_wanted = False
        while w < n_wanted:  # tags only grow: a merge against the sorted wanted list
            candidate = np.int64(wanted[w])
            if candidate >= tag:
                is_wanted = candidate == tag
                break
            w += 1
        if length == UNDEFINED:  # a 16-bit Value Length never is
            if is_wanted or not (implicit or kind >= _LONG_UNDEFINED_OK):
                return ODD, pos, rows[:found]
            status, pos = _skip_undefined(buf, pos + size, implicit or kind == _UN, kinds)
            if status != OK:
                return status, pos, rows[:found]
            continue
        if is_wanted:
            rows[found, 0] = tag
            rows[found, 1] = vr16
            rows[found, 2] = pos + size
            rows[found, 3] = length
            found += 1
        pos += size + length
    # The bytes ran out before a tag beyond the last wanted one.
    if pos > n or not (pos == n and complete):
        return NEED_MORE, pos, rows[:found]
    return OK, pos, rows[:found]


_WARM_UP_TAGS = np.array([0x00080018, 0x00100010], dtype=np.uint32)


def warm_up() -> None:
    """Compile (or load from cache) the kernel for the argument types the ingest path uses."""
    # (0008,0018) UI "1", an undefined-length (0008,1140) sequence with one empty item, then
    # (0010,0010): both the flat walk and the sequence skip run.
    implicit = bytes.fromhex("08001800020000003100"
                             "08004011ffffffff" "feff00e0ffffffff" "feff0de000000000"
                             "feffdde000000000" "1000100000000000")
    explicit = b"\x08\x00\x18\x00UI\x02\x001\x00"
    for data, is_implicit in ((implicit, True), (explicit, False)):
        # read-only, as workers.header passes every buffer (numba compiles writable apart)
        walk_le(np.frombuffer(data, dtype=np.uint8), is_implicit, True, _WARM_UP_TAGS,
                VR_KINDS)
