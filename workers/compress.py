"""Ingest-time RLE Lossless compression, and the exact way back (``[storage] compress_on_ingest``).

THEORY OF OPERATION
-------------------
With ``compress_on_ingest = "rle"`` a worker stores an uncompressed image object as RLE
Lossless (PS3.5 Annex G, A.4.2) when that saves space. The File Meta group of the stored file
says RLE Lossless (it must not lie about the bytes that follow); the index record keeps the
transfer syntax the object was received in (``InstanceRecord.received_transfer_syntax_uid``)
and its size as received. A retrieve peer that accepts RLE gets the file as stored; one that
accepts only the received syntax gets ``restore_dataset``: the data set as received, byte for
byte.

The promise "byte for byte" is checked, not assumed: ``compress_dataset`` restores what it
produced and compares it with the input before it says yes. Anything that would not come back
identical is stored as received, e.g. 8-bit Pixel Data declared OW in Explicit VR (restoration
writes OB, PS3.5 A.2), a missing or wrong Planar Configuration, trailing bytes after the last
frame, or a non-zero pad byte. The check costs one RLE decode (the numba/pylibjpeg-rle
kernels, over 1 GB/s; see the README "Compression on ingest" for µs per object).

Which objects are candidates (everything else is stored as received, never refused):
  - Implicit VR LE and Explicit VR LE data sets. Explicit VR Big Endian is retired (PS3.5
    A.3) and rare, and Deflated is already compressed and its deflate stream cannot be
    reproduced byte for byte on the way back: both are left alone;
  - top-level native Pixel Data of defined length, Bits Allocated 8, 16 or 32, Samples per
    Pixel 1 or 3, any Number of Frames, Planar Configuration 0 (colour-by-pixel) for colour,
    not YBR_FULL_422 (RLE has no subsampled layout, so it could not be restored);
  - the RLE data set must be smaller than the received one.
Sequences (nested data sets, e.g. an Icon Image Sequence) are kept as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from workers.transcode import TranscodeError, transcode_dataset
from workers.transcode.encode import Target, encode_elements
from workers.transcode.parse import PIXEL_DATA, Element, parse_dataset
from workers.transcode.pixels import image_pixel
from workers.transcode.rle_target import compress_elements
from workers.transcode.syntaxes import EXPLICIT_VR_LE, IMPLICIT_VR_LE, RLE_LOSSLESS
from workers.transcode.vr import PixelContext

COMPRESSIBLE = frozenset({IMPLICIT_VR_LE, EXPLICIT_VR_LE})


class Decision(StrEnum):
    """What ``compress_dataset`` did; also the label of ``pacs_store_compression_total``."""

    COMPRESSED = "compressed"
    NOT_SMALLER = "not_smaller"  # RLE would not save space (noise, tiny images)
    UNSUPPORTED = "unsupported"  # syntax, no Pixel Data, or a layout RLE cannot hold
    NOT_RESTORABLE = "not_restorable"  # the way back would not give the same bytes


@dataclass(frozen=True, slots=True)
class Compressed:
    """The outcome: ``dataset`` (RLE Lossless) is set only for ``Decision.COMPRESSED``."""

    decision: Decision
    dataset: bytes | None = None
    reason: str = ""


def _unsupported(reason: str) -> Compressed:
    return Compressed(Decision.UNSUPPORTED, None, reason)


def _check_layout(elements: list[Element]) -> str:
    """'' when the top-level Pixel Data is one RLE can hold and give back; else why not."""
    pixel = next((e for e in elements if e.tag == PIXEL_DATA), None)
    if pixel is None:
        return "no Pixel Data"
    if pixel.undefined or pixel.items is not None:
        return "Pixel Data of undefined length"
    info = image_pixel(elements)
    if info.bits_allocated not in (8, 16, 32):
        return f"Bits Allocated {info.bits_allocated}"
    if info.samples_per_pixel not in (1, 3):
        return f"Samples per Pixel {info.samples_per_pixel}"
    if info.samples_per_pixel > 1 and info.planar_configuration != 0:
        return "Planar Configuration 1"
    if info.photometric_interpretation == "YBR_FULL_422":
        return "YBR_FULL_422"
    native = (info.rows * info.columns * info.samples_per_pixel * info.number_of_frames
              * info.bits_allocated // 8)
    if native == 0:
        return "empty image"
    length = len(pixel.value)
    if length != native + native % 2 or (native % 2 and pixel.value[-1] != 0):
        return f"Pixel Data has {length} bytes for {native} bytes of frames"
    if pixel.vr is not None and pixel.vr != ("OB" if info.bits_allocated <= 8 else "OW"):
        return f"Pixel Data VR {pixel.vr} for Bits Allocated {info.bits_allocated}"
    return ""


def _encode_rle(elements: list[Element]) -> bytes:
    """The data set in RLE Lossless: Explicit VR LE, top-level Pixel Data encapsulated."""

    def hook(found: list[Element], top: bool) -> list[Element]:
        return compress_elements(found, True) if top else found

    parts: list[bytes | memoryview] = []
    encode_elements(elements, PixelContext(), Target(implicit=False, source_little=True,
                                                     hook=hook), parts)
    return b"".join(parts)


def compress_dataset(dataset: bytes | memoryview, transfer_syntax_uid: str) -> Compressed:
    """RLE Lossless form of a received data set (the bytes after the File Meta group), when
    it is smaller and ``restore_dataset`` gives ``dataset`` back exactly."""
    if transfer_syntax_uid not in COMPRESSIBLE:
        return _unsupported(f"transfer syntax {transfer_syntax_uid}")
    view = memoryview(dataset)
    try:
        elements = parse_dataset(view, transfer_syntax_uid == IMPLICIT_VR_LE, True)
        reason = _check_layout(elements)
        if reason:
            return _unsupported(reason)
        encoded = _encode_rle(elements)
    except TranscodeError as exc:
        return _unsupported(str(exc))
    if len(encoded) >= len(view):
        return Compressed(Decision.NOT_SMALLER, None, f"{len(encoded)} >= {len(view)} bytes")
    try:
        # bytes == bytes is a memcmp; bytes == memoryview compares item by item (20x slower)
        original = dataset if isinstance(dataset, bytes) else view.tobytes()
        same = restore_dataset(encoded, transfer_syntax_uid) == original
    except TranscodeError as exc:
        return Compressed(Decision.NOT_RESTORABLE, None, str(exc))
    if not same:
        return Compressed(Decision.NOT_RESTORABLE, None, "restored bytes differ")
    return Compressed(Decision.COMPRESSED, encoded)


def restore_dataset(stored: bytes | memoryview, received_transfer_syntax_uid: str) -> bytes:
    """A data set stored by ``compress_dataset`` as it was received. Raises TranscodeError."""
    if received_transfer_syntax_uid not in COMPRESSIBLE:
        raise TranscodeError(f"not compressed on ingest from {received_transfer_syntax_uid}")
    return transcode_dataset(stored, RLE_LOSSLESS, received_transfer_syntax_uid)


__all__ = ["COMPRESSIBLE", "RLE_LOSSLESS", "Compressed", "Decision", "compress_dataset",
           "restore_dataset"]
