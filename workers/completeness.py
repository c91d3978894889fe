"""Is a received data set whole? (PS3.5 §7.1 data elements, §7.5 nesting of data sets)

A peer that stops sending in the middle of a value still ends its last P-DATA fragment with
the "last" bit set; nothing in the Upper Layer or DIMSE says the data set is short. Walked
by their declared lengths, the elements of a whole data set end exactly at its last byte,
with every undefined-length sequence, item and encapsulated Pixel Data closed by its
delimiter. ``incomplete`` checks that without decoding a single value: it jumps from element
header to element header, so a 0.5 MB CT costs one pass over its ≈100 header elements and one
jump over the pixels.

Headers inside the first bytes already held in memory are read from there; any beyond
(elements after a large value, fragments of an encapsulated multi-frame object) are read from
the spool file with ``pread``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

import numpy as np

from appliance.dimse.transfer_syntax import DEFLATED_SYNTAXES, data_set_encoding
from workers.header import LONG_VR_NAMES

UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xE000, 0xE00D, 0xE0DD
_LONG_VRS = frozenset(vr.encode("ascii") for vr in LONG_VR_NAMES)  # 4-byte Value Length

ReadAt = Callable[[int, int], bytes]


class _Walk:
    """One pass over a data set's element headers; ``run`` says why it is not whole. The
    reference for the compiled ``workers.kernels.lengths.walk_lengths`` (property-tested
    equal); production uses the kernel."""

    def __init__(self, little: bool, explicit: bool, total: int,
                 head: bytes | bytearray | memoryview, read_at: ReadAt) -> None:
        self.u16 = struct.Struct("<H" if little else ">H").unpack_from
        self.u32 = struct.Struct("<I" if little else ">I").unpack_from
        self.tag_of = struct.Struct("<HH" if little else ">HH").unpack_from
        self.top_explicit = explicit
        self.total = total
        self.head = head
        self.read_at = read_at
        # Open undefined-length containers, innermost last: (holds items, explicit VR inside).
        self.stack: list[tuple[bool, bool]] = []
        self.pos = 0

    def _bytes(self, n: int) -> tuple[bytes | bytearray | memoryview, int]:
        """``n`` header bytes at ``pos``: from memory when there, else from the file."""
        if self.pos + n <= len(self.head):
            return self.head, self.pos
        return self.read_at(self.pos, n), 0

    def run(self) -> str | None:
        while self.pos < self.total:
            if self.total - self.pos < 8:
                if not self.stack and _zero_tail(self.head, self.read_at, self.pos, self.total):
                    return None
                return f"data set ends inside an element header at byte {self.pos}"
            buf, at = self._bytes(8)
            group, element = self.tag_of(buf, at)
            why = (self._delimiter(element, self.u32(buf, at + 4)[0]) if group == 0xFFFE
                   else self._element(group, element, buf, at))
            if why is not None:
                return why
        if self.stack:
            return "data set ends inside an undefined-length sequence or item"
        return None

    def _delimiter(self, element: int, length: int) -> str | None:
        """Items and delimiters: tag and 4-byte length in every syntax (PS3.5 §7.5)."""
        stack = self.stack
        in_sequence = bool(stack) and stack[-1][0]
        self.pos += 8
        if element == _ITEM and in_sequence:
            if length == UNDEFINED:
                stack.append((False, stack[-1][1]))
            else:
                self.pos += length
        elif (element == _ITEM_END and stack and not stack[-1][0]) or (
                element == _SEQUENCE_END and in_sequence):
            stack.pop()
        else:
            return f"unexpected (FFFE,{element:04X}) at byte {self.pos - 8}"
        return None

    def _element(self, group: int, element: int, buf: bytes | bytearray | memoryview,
                 at: int) -> str | None:
        stack = self.stack
        if stack and stack[-1][0]:
            return f"({group:04X},{element:04X}) at byte {self.pos} where a sequence item belongs"
        explicit = nested_explicit = stack[-1][1] if stack else self.top_explicit
        if not explicit:
            length, size = self.u32(buf, at + 4)[0], 8
        elif bytes(buf[at + 4:at + 6]) in _LONG_VRS:
            if self.total - self.pos < 12:
                return f"data set ends inside an element header at byte {self.pos}"
            # PS3.5 §6.2.2: an undefined-length UN holds implicit VR Little Endian
            nested_explicit = bytes(buf[at + 4:at + 6]) != b"UN"
            buf, at = self._bytes(12)
            length, size = self.u32(buf, at + 8)[0], 12
        else:
            length, size = self.u16(buf, at + 6)[0], 8
        self.pos += size
        if length == UNDEFINED:
            stack.append((True, nested_explicit))
        elif self.pos + length > self.total:
            left = self.total - self.pos
            return f"({group:04X},{element:04X}) declares {length} bytes, {left} arrived"
        else:
            self.pos += length
        return None


def _encoding(transfer_syntax_uid: str, head: bytes | bytearray | memoryview) -> tuple[bool, bool]:
    """(little endian, explicit VR) of the data set. Like pydicom, an "explicit" data set
    whose first element has no VR letters is read as implicit VR (some senders mislabel)."""
    encoding = data_set_encoding(transfer_syntax_uid)
    little, explicit = encoding.little, not encoding.implicit
    if explicit and len(head) >= 6 and not (
            65 <= head[4] <= 90 and 65 <= head[5] <= 90):
        explicit = False
    return little, explicit


def reference_incomplete(transfer_syntax_uid: str, total: int,
                         head: bytes | bytearray | memoryview, read_at: ReadAt) -> str | None:
    """``incomplete`` in pure Python (the reference the kernel is tested against)."""
    if transfer_syntax_uid in DEFLATED_SYNTAXES:  # a zlib stream: not walked
        return None
    little, explicit = _encoding(transfer_syntax_uid, head)
    return _Walk(little, explicit, total, head, read_at).run()


_WINDOW = 4096  # bytes read from the spool file per header outside ``head``


def _zero_tail(head: bytes | bytearray | memoryview, read_at: ReadAt, pos: int,
               total: int) -> bool:
    """Fewer than 8 bytes left at top level, all zero: padding some senders add, which
    pydicom ignores too; accepted as the end of the data set."""
    tail = head[pos:total] if total <= len(head) else read_at(pos, total - pos)
    return len(tail) == total - pos and not any(tail)


def incomplete(transfer_syntax_uid: str, total: int, head: bytes | bytearray | memoryview,
               read_at: ReadAt) -> str | None:
    """Why the ``total``-byte data set (first bytes ``head``) is not whole, or None if it is.
    A deflated data set is not checked (its bytes are a zlib stream, not elements)."""
    if transfer_syntax_uid in DEFLATED_SYNTAXES:  # a zlib stream: not walked
        return None
    from workers.kernels import lengths as k

    little, explicit = _encoding(transfer_syntax_uid, head)
    holds_items = np.zeros(k.MAX_DEPTH, dtype=np.bool_)
    explicit_in = np.zeros(k.MAX_DEPTH, dtype=np.bool_)
    buf = np.frombuffer(head, dtype=np.uint8)
    base = pos = depth = 0
    while True:
        status, pos, depth, group, element, length = k.walk_lengths(
            buf, base, pos, total, little, explicit, holds_items, explicit_in, depth)
        if status != k.NEED:
            break
        chunk = read_at(pos, min(_WINDOW, total - pos))
        if len(chunk) < min(12, total - pos):
            return f"spool file ends before byte {pos + len(chunk)} of the data set"
        buf, base = np.frombuffer(chunk, dtype=np.uint8), pos
    if (status == k.SHORT_HEADER and depth == 0 and total - pos < 8
            and _zero_tail(head, read_at, pos, total)):
        return None
    tag = f"({group:04X},{element:04X})"
    return {
        k.WHOLE: None,
        k.SHORT_HEADER: f"data set ends inside an element header at byte {pos}",
        k.TOO_LONG: f"{tag} declares {length} bytes, fewer arrived",
        k.OPEN: "data set ends inside an undefined-length sequence or item",
        k.BAD_DELIMITER: f"unexpected {tag} at byte {pos}",
        k.NOT_ITEM: f"{tag} at byte {pos} where a sequence item belongs",
        k.TOO_DEEP: f"sequences nested deeper than {k.MAX_DEPTH} at byte {pos}",
    }[status]


class SpoolReader:
    """``read_at`` over a spool file whose data set starts at ``offset``; the file is opened
    on the first read only (most data sets are checked from memory) and closed by ``close``."""

    def __init__(self, path: str, offset: int) -> None:
        self.path = path
        self.offset = offset
        self._fd: int | None = None

    def read_at(self, pos: int, n: int) -> bytes:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        return os.pread(self._fd, n, self.offset + pos)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
