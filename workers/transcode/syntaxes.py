"""Transfer syntaxes as the transcoder sees them: how each is encoded, what we can read and
write, and which target to pick for a peer that did not accept the stored one (PS3.5 §10, A).

Readable: the native syntaxes (Implicit VR LE, Explicit VR LE, Explicit VR BE), Deflated
Explicit VR LE, and every encapsulated syntax for which pydicom has a working pixel decoder
(JPEG, JPEG-LS, JPEG 2000, RLE, ... through the pylibjpeg plugins; RLE through our kernel).
Writable: Explicit VR LE, Implicit VR LE, Deflated Explicit VR LE and RLE Lossless.
"""

from __future__ import annotations

from collections.abc import Collection

from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID

from appliance.dimse.transfer_syntax import (
    DEFLATED_EXPLICIT_VR_LE,
    ENCAPSULATED,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    HTJ2K,
    IMPLICIT_VR_LE,
    JPEG_2000,
    JPEG_BASELINE_8BIT,
    JPEG_EXTENDED_12BIT,
    JPEG_LS_NEAR_LOSSLESS,
    NATIVE_ENCODINGS,
    RLE_LOSSLESS,
    Encoding,
)

# Syntaxes whose encoding is lossy by definition (PS3.5 §8.2): JPEG processes 2 and 4 (baseline
# and extended, A.4.1) and JPEG-LS near-lossless (A.4.3, conservatively: NEAR may be 0).
LOSSY = frozenset({JPEG_BASELINE_8BIT, JPEG_EXTENDED_12BIT, JPEG_LS_NEAR_LOSSLESS})
# (0028,2114) Lossy Image Compression Method per syntax family (PS3.3 C.7.6.1.1.5.1).
LOSSY_METHOD = {
    JPEG_BASELINE_8BIT: "ISO_10918_1", JPEG_EXTENDED_12BIT: "ISO_10918_1",
    JPEG_LS_NEAR_LOSSLESS: "ISO_14495_1", JPEG_2000: "ISO_15444_1", HTJ2K: "ISO_15444_15",
}

# What we write, in the order choose_transfer_syntax prefers it.
PRODUCIBLE = (EXPLICIT_VR_LE, IMPLICIT_VR_LE, DEFLATED_EXPLICIT_VR_LE, RLE_LOSSLESS)


def encoding_of(transfer_syntax_uid: str) -> Encoding | None:
    """The encoding of a syntax, None for one we do not know (private, or not a syntax): unlike
    ``data_set_encoding``, which assumes, this asks pydicom's registry."""
    found = NATIVE_ENCODINGS.get(transfer_syntax_uid)
    if found is not None:
        return found
    uid = UID(transfer_syntax_uid)
    if uid.is_transfer_syntax and uid.is_encapsulated and not uid.is_deflated:
        return ENCAPSULATED  # every encapsulated syntax is Explicit VR LE (PS3.5 A.4)
    return None


def can_decode(transfer_syntax_uid: str) -> bool:
    """True when we can turn a data set in this syntax into native pixels."""
    if transfer_syntax_uid in NATIVE_ENCODINGS:
        return True
    if encoding_of(transfer_syntax_uid) is None:
        return False
    if transfer_syntax_uid == RLE_LOSSLESS:
        return True  # our numba kernel needs nothing else
    try:
        return bool(get_decoder(transfer_syntax_uid).is_available)
    except NotImplementedError:  # pydicom has no decoder for it at all (MPEG, JPIP, ...)
        return False


def can_encode(transfer_syntax_uid: str) -> bool:
    """True when we can write a data set in this syntax."""
    return transfer_syntax_uid in PRODUCIBLE


def choose_transfer_syntax(stored_ts: str, accepted: Collection[str]) -> str | None:
    """``stored_ts`` if accepted; otherwise the best syntax in ``accepted`` we can convert to
    (Explicit VR LE, then Implicit VR LE, then Deflated, then RLE); None when there is none."""
    if stored_ts in accepted:
        return stored_ts
    if not can_decode(stored_ts):
        return None
    for candidate in PRODUCIBLE:
        if candidate in accepted:
            return candidate
    return None


def is_lossy(transfer_syntax_uid: str) -> bool:
    """True for syntaxes that are lossy whatever the codestream says."""
    return transfer_syntax_uid in LOSSY


__all__ = [  # the UIDs too: the transcoder and workers.compress import them from here
    "DEFLATED_EXPLICIT_VR_LE", "EXPLICIT_VR_BE", "EXPLICIT_VR_LE", "HTJ2K", "IMPLICIT_VR_LE",
    "JPEG_2000", "LOSSY", "LOSSY_METHOD", "PRODUCIBLE", "RLE_LOSSLESS", "Encoding",
    "can_decode", "can_encode", "choose_transfer_syntax", "encoding_of", "is_lossy",
]
