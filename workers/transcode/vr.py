"""Value Representations for re-encoding: what Implicit VR leaves out, and how Big Endian
values are swapped (PS3.5 §6.2, §7.1.3, §7.3).

An Implicit VR data set carries no VRs, so writing it as Explicit VR takes them from the data
dictionary (pydicom's, including its private dictionaries keyed by Private Creator, PS3.5
§7.8.1). Tags nobody knows become UN (§6.2.2), which is always valid: a UN value is exactly its
Implicit VR LE bytes. VRs the dictionary leaves ambiguous are resolved the way PS3.5 and PS3.3
say, by the attributes they depend on (Pixel Representation, Bits Allocated); in Little Endian
every choice keeps the value's bytes, only the label differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from pydicom.datadict import dictionary_VR, private_dictionary_VR

PIXEL_DATA = 0x7FE00010

# Bytes per swapped unit of each binary VR (PS3.5 §7.3): everything else is a byte stream.
SWAP_WIDTH = {
    "AT": 2, "OW": 2, "SS": 2, "US": 2,
    "FL": 4, "OF": 4, "OL": 4, "SL": 4, "UL": 4,
    "FD": 8, "OD": 8, "OV": 8, "SV": 8, "UV": 8,
}

# 'US or SS' attributes that follow Pixel Representation (PS3.3 C.7.6.3.1, C.11 ...).
_US_OR_SS_BY_PIXEL_REPRESENTATION = frozenset({
    0x00189810, 0x00221452, 0x00280104, 0x00280105, 0x00280106, 0x00280107, 0x00280108,
    0x00280109, 0x00280110, 0x00280111, 0x00280120, 0x00280121, 0x00281101, 0x00281102,
    0x00281103, 0x00283002, 0x00409211, 0x00409216, 0x00603004, 0x00603006,
})


@dataclass(frozen=True, slots=True)
class PixelContext:
    """The attributes ambiguous VRs depend on, from the nearest data set that has them."""

    pixel_representation: int = 0
    bits_allocated: int = 16


def private_creator_key(tag: int) -> int:
    """Tag of the Private Creator element that reserves ``tag``'s block (PS3.5 §7.8.1)."""
    return (tag & 0xFFFF0000) | ((tag >> 8) & 0xFF)


def is_private_creator(tag: int) -> bool:
    return bool(tag & 0x00010000) and 0x10 <= (tag & 0xFFFF) <= 0xFF


def implicit_vr(tag: int, creators: dict[int, str]) -> str:
    """The dictionary VR of a tag read from Implicit VR, possibly ambiguous ('US or SS');
    'UN' when unknown."""
    creator = creators.get(private_creator_key(tag), "") if tag & 0x00010000 else ""
    return _dictionary_vr(tag, creator)


@lru_cache(maxsize=8192)
def _dictionary_vr(tag: int, creator: str) -> str:
    """pydicom's dictionaries, memoised: its private lookups cost ~7 us each."""
    element = tag & 0xFFFF
    if element == 0:
        return "UL"  # Group Length (PS3.5 §7.2)
    if tag & 0x00010000:  # odd group: private
        if element < 0x10:
            return "UN"
        if element <= 0xFF:
            return "LO"  # Private Creator
        if creator:
            try:
                return str(private_dictionary_VR(tag, creator))
            except KeyError:
                pass
        return "UN"
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def resolve_vr(vr: str, tag: int, ctx: PixelContext) -> str:
    """One VR for an ambiguous dictionary VR (PS3.5 §8.1.1, §8.1.2; PS3.3 C.7.6.3.1.*)."""
    if " or " not in vr:
        return vr
    if tag == PIXEL_DATA:
        return "OW" if ctx.bits_allocated > 8 else "OB"
    if vr.startswith("US or SS"):
        if tag in _US_OR_SS_BY_PIXEL_REPRESENTATION or vr == "US or SS":
            return "SS" if ctx.pixel_representation == 1 else "US"
        return "OW"
    if "OW" in vr:
        return "OW"  # Overlay Data, Waveform Data, LUT Data...: OW holds any of them
    return vr.split(" or ", maxsplit=1)[0]
