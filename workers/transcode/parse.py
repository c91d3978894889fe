"""Data set bytes -> a tree of elements whose values are views of the input (PS3.5 §7).

THEORY OF OPERATION
-------------------
``parse_dataset`` walks a data set in one native encoding (Implicit VR LE §7.1.3, Explicit VR
LE or BE §7.1.2) and returns its elements in file order. Nothing is decoded: a value is a
memoryview of the input, so the writer can copy it byte for byte (or byte-swap it) later.

- Sequences (§7.5) become ``Element.items``: explicit VR SQ, and in Implicit VR any element of
  undefined length or whose dictionary VR is SQ. Item lengths, defined or undefined, are
  remembered so that the writer keeps undefined lengths undefined.
- An element of undefined length that is not a sequence we re-encode keeps its whole content,
  up to and including the Sequence Delimitation Item, as one opaque ``value`` with
  ``undefined=True``: encapsulated Pixel Data (A.4: fragments), and UN of undefined length
  (§6.2.2: its items are Implicit VR LE whatever the transfer syntax, so they are copied as is).
- Nesting deeper than ``MAX_DEPTH`` or any element running past its container raises
  ``TranscodeError``: the input is never trusted.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from workers.transcode.errors import TranscodeError
from workers.transcode.vr import implicit_vr, is_private_creator

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000  # PS3.5 §7.5
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
MAX_DEPTH = 64

# Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 Table 7.1-1).
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT",
                      "UV"})


@dataclass(slots=True)
class Item:
    """One sequence item (PS3.5 §7.5.1)."""

    elements: list[Element]
    undefined: bool


@dataclass(slots=True)
class Element:
    """One data element. ``vr`` is None when it came from Implicit VR."""

    tag: int
    vr: str | None
    value: memoryview = field(default_factory=lambda: memoryview(b""))
    items: list[Item] | None = None  # a sequence
    undefined: bool = False  # undefined length (sequences and opaque values alike)


class _Reader:
    """The walk over one buffer in one encoding; positions are absolute offsets."""

    def __init__(self, buf: memoryview, implicit: bool, little: bool) -> None:
        self.buf = buf
        self.implicit = implicit
        order = "<" if little else ">"
        self.tag_len = struct.Struct(order + "HHI")  # tag + 32-bit length (implicit, items)
        self.short = struct.Struct(order + "HH2sH")  # explicit, 16-bit length
        self.long_len = struct.Struct(order + "I")

    def header(self, pos: int, end: int) -> tuple[int, str | None, int, int]:
        """(tag, vr, length, value offset) of the element at ``pos``."""
        if pos + 8 > end:
            raise TranscodeError(f"element header at offset {pos} runs past its container")
        if self.implicit:
            group, elem, length = self.tag_len.unpack_from(self.buf, pos)
            return (group << 16) | elem, None, length, pos + 8
        group, elem, vr_bytes, length = self.short.unpack_from(self.buf, pos)
        tag = (group << 16) | elem
        if group == 0xFFFE:  # item and delimiters carry no VR (§7.5)
            return tag, None, self.tag_len.unpack_from(self.buf, pos)[2], pos + 8
        try:
            vr = vr_bytes.decode("ascii")
        except UnicodeDecodeError:
            vr = ""
        if not (len(vr) == 2 and vr.isalpha() and vr.isupper()):
            raise TranscodeError(f"element {tag:08X} at offset {pos} has no valid VR")
        if vr in LONG_VRS:
            if pos + 12 > end:
                raise TranscodeError(f"element header at offset {pos} runs past its container")
            return tag, vr, self.long_len.unpack_from(self.buf, pos + 8)[0], pos + 12
        return tag, vr, length, pos + 8

    def elements(self, pos: int, end: int, depth: int,
                 in_item: bool) -> tuple[list[Element], int]:
        """Elements from ``pos`` up to ``end`` or, when ``in_item`` is undefined-length, up to
        and including the Item Delimitation Item; returns them and the position after."""
        if depth > MAX_DEPTH:
            raise TranscodeError(f"sequences nested deeper than {MAX_DEPTH}")
        out: list[Element] = []
        creators: dict[int, str] = {}
        while pos < end:
            tag, vr, length, vpos = self.header(pos, end)
            if tag == ITEM_DELIMITER and in_item:
                return out, vpos
            if tag >> 16 == 0xFFFE:
                raise TranscodeError(f"unexpected {tag:08X} at offset {pos}")
            vr_hint = implicit_vr(tag, creators) if vr is None else vr
            if length == UNDEFINED:
                element, pos = self.undefined(tag, vr, vpos, end, depth)
            else:
                if vpos + length > end:
                    raise TranscodeError(f"element {tag:08X} at offset {pos} runs past its"
                                         f" container ({length} bytes)")
                element = Element(tag, vr, self.buf[vpos:vpos + length])
                if vr_hint == "SQ":
                    self.defined_sequence(element, vpos, vpos + length, depth)
                pos = vpos + length
            if is_private_creator(tag) and element.items is None and not element.undefined:
                creators[tag] = bytes(element.value).decode("latin-1").strip(" \x00")
            out.append(element)
        if in_item:
            raise TranscodeError("undefined-length item without an Item Delimitation Item")
        return out, pos

    def undefined(self, tag: int, vr: str | None, pos: int, end: int,
                  depth: int) -> tuple[Element, int]:
        """An element of undefined length starting at value offset ``pos``."""
        if tag == PIXEL_DATA or vr in ("OB", "OW"):
            stop = skip_fragments(self.buf, pos, end)
            return Element(tag, vr, self.buf[pos:stop], undefined=True), stop
        if vr == "UN":
            _, stop = _Reader(self.buf, implicit=True, little=True).sequence(pos, end, depth)
            return Element(tag, vr, self.buf[pos:stop], undefined=True), stop
        if vr is not None and vr != "SQ":
            raise TranscodeError(f"element {tag:08X} with VR {vr} has undefined length")
        # In Implicit VR only a sequence may have an undefined length (PS3.5 §7.5.1).
        items, stop = self.sequence(pos, end, depth)
        return Element(tag, "SQ", items=items, undefined=True), stop

    def defined_sequence(self, element: Element, pos: int, end: int, depth: int) -> None:
        """Items of a defined-length sequence value buf[pos:end]. A value that only the
        dictionary calls SQ (Implicit VR) and that does not parse as items stays opaque."""
        items: list[Item] = []
        try:
            while pos < end:
                item, pos = self.item(pos, end, depth)
                items.append(item)
        except TranscodeError:
            if element.vr == "SQ":
                raise
            return
        element.vr = "SQ"
        element.items = items

    def sequence(self, pos: int, end: int, depth: int) -> tuple[list[Item], int]:
        """Items of an undefined-length sequence, through its Sequence Delimitation Item."""
        items: list[Item] = []
        while True:
            if pos + 8 > end:
                raise TranscodeError("sequence without a Sequence Delimitation Item")
            tag = self._tag(pos)
            if tag == SEQUENCE_DELIMITER:
                return items, pos + 8
            item, pos = self.item(pos, end, depth)
            items.append(item)

    def item(self, pos: int, end: int, depth: int) -> tuple[Item, int]:
        if pos + 8 > end:
            raise TranscodeError(f"item header at offset {pos} runs past its sequence")
        group, elem, length = self.tag_len.unpack_from(self.buf, pos)
        if (group << 16) | elem != ITEM:
            raise TranscodeError(f"expected an Item at offset {pos}, found {group:04X}{elem:04X}")
        if length == UNDEFINED:
            elements, stop = self.elements(pos + 8, end, depth + 1, in_item=True)
            return Item(elements, undefined=True), stop
        stop = pos + 8 + length
        if stop > end:
            raise TranscodeError(f"item at offset {pos} runs past its sequence")
        elements, _ = self.elements(pos + 8, stop, depth + 1, in_item=False)
        return Item(elements, undefined=False), stop

    def _tag(self, pos: int) -> int:
        group, elem, _ = self.tag_len.unpack_from(self.buf, pos)
        return int((group << 16) | elem)


def skip_fragments(buf: memoryview, pos: int, end: int) -> int:
    """End of encapsulated Pixel Data (PS3.5 A.4): Items of defined length (the Basic Offset
    Table, then the fragments), then the Sequence Delimitation Item."""
    item = struct.Struct("<HHI")
    while pos + 8 <= end:
        group, elem, length = item.unpack_from(buf, pos)
        tag = (group << 16) | elem
        if tag == SEQUENCE_DELIMITER:
            return pos + 8
        if tag != ITEM or length == UNDEFINED or pos + 8 + length > end:
            raise TranscodeError(f"malformed encapsulated Pixel Data at offset {pos}")
        pos += 8 + length
    raise TranscodeError("encapsulated Pixel Data without a Sequence Delimitation Item")


def parse_dataset(buf: memoryview, implicit: bool, little: bool) -> list[Element]:
    """Every top-level element of a data set in a native encoding.

    A Little Endian data set said to be Explicit VR whose first element has no VR is read as
    Implicit VR, as pydicom and DCMTK do with such mislabelled objects.
    """
    if not implicit and little and len(buf) >= 6 and not bytes(buf[4:6]).isalpha():
        implicit = True
    elements, _ = _Reader(buf, implicit, little).elements(0, len(buf), 0, in_item=False)
    return elements
