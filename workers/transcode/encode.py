"""An element tree (workers.transcode.parse) -> data set bytes in Implicit or Explicit VR
Little Endian (PS3.5 §7.1.2, §7.1.3, §7.5).

THEORY OF OPERATION
-------------------
Values are copied as they are: a Little Endian source's value bytes come out identical, a Big
Endian source's are byte-swapped per VR (§7.3) and nothing else. What changes is structure:

- element headers (Explicit VR gains the VR from workers.transcode.vr, Implicit VR drops it);
- defined lengths of sequences and items, recomputed from what is written (headers grow or
  shrink between Implicit and Explicit VR); undefined lengths stay undefined, with their
  delimiters;
- Group Length (gggg,0000) values (retired, §7.2, but kept when present), recomputed likewise;
- an Explicit VR value too long for a 16-bit length field is written as UN (§6.2.2).

Output is a list of parts (bytes, or views of the input) joined once at the end, so a large
Pixel Data value is copied exactly once.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from workers.transcode.errors import TranscodeError
from workers.transcode.parse import (
    ITEM,
    ITEM_DELIMITER,
    LONG_VRS,
    SEQUENCE_DELIMITER,
    UNDEFINED,
    Element,
    Item,
)
from workers.transcode.vr import (
    PIXEL_DATA,
    SWAP_WIDTH,
    PixelContext,
    implicit_vr,
    is_private_creator,
    resolve_vr,
)

Part = bytes | memoryview
# Rewrites one data set's elements before they are written (pixel decoding, see pixels.py);
# the flag says whether it is the top-level data set.
DatasetHook = Callable[[list[Element], bool], list[Element]]

_TAG_LEN = struct.Struct("<HHI")
_SHORT = struct.Struct("<HH2sH")
_LONG = struct.Struct("<HH2s2xI")
_U32 = struct.Struct("<I")
_ITEM_DELIMITATION = _TAG_LEN.pack(0xFFFE, ITEM_DELIMITER & 0xFFFF, 0)
_SEQUENCE_DELIMITATION = _TAG_LEN.pack(0xFFFE, SEQUENCE_DELIMITER & 0xFFFF, 0)
_PIXEL_REPRESENTATION = 0x00280103
_BITS_ALLOCATED = 0x00280100


@dataclass(frozen=True, slots=True)
class Target:
    """How to write: the output's VR mode, the source's byte order, the per-data-set hook."""

    implicit: bool
    source_little: bool
    hook: DatasetHook | None = None


def swap(value: memoryview, width: int, tag: int) -> bytes:
    """A Big Endian value as Little Endian, ``width`` bytes per unit (PS3.5 §7.3)."""
    if len(value) % width:
        raise TranscodeError(f"element {tag:08X}: {len(value)} bytes is not a whole number of"
                             f" {width}-byte values")
    return np.frombuffer(value, dtype=f">u{width}").astype(f"<u{width}").tobytes()


def us_value(element: Element | None, little: bool) -> int | None:
    """The first value of a US element, None when absent or empty."""
    if element is None or len(element.value) < 2 or element.items is not None:
        return None
    return int.from_bytes(element.value[:2], "little" if little else "big")


def context(elements: list[Element], parent: PixelContext, little: bool) -> PixelContext:
    """The ambiguous-VR context of a data set, inheriting what it lacks from its parent."""
    found = {e.tag: e for e in elements if e.tag in (_PIXEL_REPRESENTATION, _BITS_ALLOCATED)}
    rep = us_value(found.get(_PIXEL_REPRESENTATION), little)
    bits = us_value(found.get(_BITS_ALLOCATED), little)
    if rep is None and bits is None:
        return parent
    return PixelContext(parent.pixel_representation if rep is None else rep,
                        parent.bits_allocated if bits is None else bits)


def source_value(e: Element, vr: str, source_little: bool, ctx: PixelContext) -> Part:
    """A value's bytes as Little Endian."""
    if source_little:
        return e.value
    width = SWAP_WIDTH.get(vr, 1)
    if vr == "UN":
        known = resolve_vr(implicit_vr(e.tag, {}), e.tag, ctx)
        width = SWAP_WIDTH.get(known, 1) if known != "SQ" else 1
    elif e.tag == PIXEL_DATA and vr == "OW" and ctx.bits_allocated > 16:
        width = ctx.bits_allocated // 8  # a Big Endian pixel cell is one value (PS3.5 A.3)
    return swap(e.value, width, e.tag) if width > 1 else e.value


def _header(tag: int, vr: str, length: int, target: Target) -> tuple[bytes, str]:
    group, elem = tag >> 16, tag & 0xFFFF
    if target.implicit:
        return _TAG_LEN.pack(group, elem, length), vr
    if vr not in LONG_VRS and length > 0xFFFF:
        vr = "UN"  # PS3.5 §6.2.2: a value too long for its VR's 16-bit length field
    if vr in LONG_VRS:
        return _LONG.pack(group, elem, vr.encode("ascii"), length), vr
    return _SHORT.pack(group, elem, vr.encode("ascii"), length), vr


def _encode_element(e: Element, creators: dict[int, str], ctx: PixelContext,
                    target: Target, out: list[Part]) -> int:
    """Append one element's parts to ``out``; its encoded size in bytes."""
    vr = e.vr
    if vr is None:
        vr = "SQ" if e.items is not None else implicit_vr(e.tag, creators)
    vr = resolve_vr(vr, e.tag, ctx)
    if e.items is not None:
        head_at = len(out)
        out.append(b"")
        size = sum(_encode_item(item, ctx, target, out) for item in e.items)
        if e.undefined:
            out.append(_SEQUENCE_DELIMITATION)
            size += 8
        out[head_at], _ = _header(e.tag, "SQ", UNDEFINED if e.undefined else size, target)
        return len(out[head_at]) + size
    value = e.value if e.undefined else source_value(e, vr, target.source_little, ctx)
    head, _ = _header(e.tag, vr, UNDEFINED if e.undefined else len(value), target)
    out.append(head)
    out.append(value)
    return len(head) + len(value)


def _encode_item(item: Item, ctx: PixelContext, target: Target, out: list[Part]) -> int:
    head_at = len(out)
    out.append(b"")
    size = encode_elements(item.elements, ctx, target, out, top=False)
    if item.undefined:
        out.append(_ITEM_DELIMITATION)
        size += 8
    out[head_at] = _TAG_LEN.pack(0xFFFE, ITEM & 0xFFFF, UNDEFINED if item.undefined else size)
    return 8 + size


def encode_elements(elements: list[Element], parent: PixelContext, target: Target,
                    out: list[Part], top: bool = True) -> int:
    """Append one data set's parts to ``out``; the number of bytes appended."""
    if target.hook is not None:
        elements = target.hook(elements, top)
    ctx = context(elements, parent, target.source_little)
    creators: dict[int, str] = {}
    if target.source_little:  # only Implicit VR sources need them, and those are LE
        for e in elements:
            if is_private_creator(e.tag) and e.items is None and not e.undefined:
                creators[e.tag] = bytes(e.value).decode("latin-1").strip(" \x00")
    sizes: list[int] = []
    group_lengths: list[tuple[int, int]] = []  # (index in elements, index of value in out)
    for k, e in enumerate(elements):
        start = len(out)
        sizes.append(_encode_element(e, creators, ctx, target, out))
        if e.tag & 0xFFFF == 0 and e.items is None and not e.undefined and len(e.value) == 4:
            group_lengths.append((k, start + 1))
    for k, at in group_lengths:
        group = elements[k].tag >> 16
        out[at] = _U32.pack(sum(size for e, size in zip(elements[k + 1:], sizes[k + 1:],
                                                        strict=True) if e.tag >> 16 == group))
    return sum(sizes)
