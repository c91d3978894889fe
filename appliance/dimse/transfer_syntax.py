"""Transfer Syntax UIDs (PS3.6 Annex A) and how each one encodes a data set (PS3.5 §10, Annex A).

The one home of these UIDs for the server, the workers and the SCUs (the negotiation's lists,
generated from pydicom's registry into ``appliance.negotiation.sop_classes``, aside). A transfer
syntax governs only the data set of a DIMSE message, never its command set, which is always
Implicit VR Little Endian (PS3.5 §10, PS3.7 §6.3.1; ``dimse.command``). Stdlib only: the ingest
hot path (``workers.header``) reads it without importing pydicom.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

# Native encodings (PS3.5 A.1, A.2, A.3) and Deflated (A.5).
IMPLICIT_VR_LE: Final = "1.2.840.10008.1.2"
EXPLICIT_VR_LE: Final = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LE: Final = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BE: Final = "1.2.840.10008.1.2.2"  # retired
# Encapsulated (A.4) syntaxes that the code names.
JPEG_BASELINE_8BIT: Final = "1.2.840.10008.1.2.4.50"  # Process 1
JPEG_EXTENDED_12BIT: Final = "1.2.840.10008.1.2.4.51"  # Process 2 and 4
JPEG_LS_NEAR_LOSSLESS: Final = "1.2.840.10008.1.2.4.81"
JPEG_2000: Final = "1.2.840.10008.1.2.4.91"  # lossless or lossy: the codestream tells (A.4.4)
HTJ2K: Final = "1.2.840.10008.1.2.4.203"  # likewise
RLE_LOSSLESS: Final = "1.2.840.10008.1.2.5"
# Pixel data referenced by URL (JPIP); these data sets are deflated as in A.5 (A.7, A.12).
JPIP_REFERENCED_DEFLATE: Final = "1.2.840.10008.1.2.4.95"
JPIP_HTJ2K_REFERENCED_DEFLATE: Final = "1.2.840.10008.1.2.4.205"
# Every syntax whose whole data set is a deflate stream (PS3.5 A.5, A.7, A.12).
DEFLATED_SYNTAXES: Final = frozenset({DEFLATED_EXPLICIT_VR_LE, JPIP_REFERENCED_DEFLATE,
                                      JPIP_HTJ2K_REFERENCED_DEFLATE})


@dataclass(frozen=True, slots=True)
class Encoding:
    """How a data set's bytes are laid out (PS3.5 §7.1, A.4, A.5)."""

    implicit: bool
    little: bool
    deflated: bool
    encapsulated: bool


NATIVE_ENCODINGS: Final[Mapping[str, Encoding]] = {
    IMPLICIT_VR_LE: Encoding(implicit=True, little=True, deflated=False, encapsulated=False),
    EXPLICIT_VR_LE: Encoding(implicit=False, little=True, deflated=False, encapsulated=False),
    EXPLICIT_VR_BE: Encoding(implicit=False, little=False, deflated=False, encapsulated=False),
    DEFLATED_EXPLICIT_VR_LE: Encoding(implicit=False, little=True, deflated=True,
                                      encapsulated=False),
}
# Every encapsulated syntax encodes its data set as Explicit VR Little Endian (A.4).
ENCAPSULATED: Final = Encoding(implicit=False, little=True, deflated=False, encapsulated=True)


def data_set_encoding(transfer_syntax_uid: str) -> Encoding:
    """How to read or write a data set in ``transfer_syntax_uid`` with no registry at hand.

    The native syntaxes as tabled, the JPIP Referenced Deflate ones as Deflated; any other syntax,
    standard or private, as Explicit VR Little Endian, flagged ``encapsulated`` as every
    standard one of those is. Whether an unknown UID is a transfer syntax at all needs a
    registry: ``workers.transcode.syntaxes.encoding_of`` asks pydicom's.
    """
    found = NATIVE_ENCODINGS.get(transfer_syntax_uid)
    if found is not None:
        return found
    if transfer_syntax_uid in DEFLATED_SYNTAXES:
        return NATIVE_ENCODINGS[DEFLATED_EXPLICIT_VR_LE]
    return ENCAPSULATED


__all__ = [
    "DEFLATED_EXPLICIT_VR_LE", "DEFLATED_SYNTAXES", "ENCAPSULATED", "EXPLICIT_VR_BE",
    "EXPLICIT_VR_LE", "HTJ2K",
    "IMPLICIT_VR_LE", "JPEG_2000", "JPEG_BASELINE_8BIT", "JPEG_EXTENDED_12BIT",
    "JPEG_LS_NEAR_LOSSLESS", "JPIP_HTJ2K_REFERENCED_DEFLATE", "JPIP_REFERENCED_DEFLATE",
    "NATIVE_ENCODINGS", "RLE_LOSSLESS",
    "Encoding", "data_set_encoding",
]
