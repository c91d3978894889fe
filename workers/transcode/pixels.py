"""Encapsulated Pixel Data -> native Pixel Data, with the Image Pixel attributes fixed up
(PS3.5 §8.1.1, §8.2, A.4; PS3.3 C.7.6.3).

Decoding goes through pydicom 3's pixel decoders (JPEG, JPEG-LS, JPEG 2000, HTJ2K through the
pylibjpeg plugins), except RLE Lossless, which uses whichever of our numba kernel and
pylibjpeg-rle measured faster for the frame's layout (``python -m bench.micro.rle`` on the
2-core Xeon, 512x512 frames, MB/s of decoded bytes, medians):

    ==================  =====  =============  ==================  ===============
    frame               numba  pylibjpeg-rle  both, to native     pydicom's own
                                              bytes (*): numba /  pure-Python
                                              pylibjpeg-rle       decoder
    ==================  =====  =============  ==================  ===============
    16-bit monochrome   1426   1732           1359 / 1642         262
    8-bit RGB           795    1389 (planar)  764 / 442           150
    ==================  =====  =============  ==================  ===============

    (*) interleaved little-endian bytes (Planar Configuration 0), what a native data set
    holds: pylibjpeg-rle's planar output must be transposed for RGB.

so one sample per pixel goes to pylibjpeg-rle and several to the numba kernel, which writes
the interleaved layout directly. Both are checked bit-exact against pydicom's own decoder
(tests/unit/workers/test_rle_kernel.py).

After decoding, what PS3.3 C.7.6.3 and PS3.5 require of native data is made true:
Photometric Interpretation as decoded (YBR_FULL/YBR_FULL_422 JPEG and YBR_ICT/YBR_RCT JPEG 2000
come out RGB), Planar Configuration 0 (pydicom's decoders and ours interleave), Bits Allocated 1
re-packed, Pixel Data OB (Bits Allocated <= 8) or OW with an even length, the Extended Offset
Table (7FE0,0001/0002) dropped (encapsulated only), and Lossy Image Compression (0028,2110)
"01" with its Method and Ratio when the source was lossy (C.7.6.1.1.5: once "01", always "01").
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.encaps import generate_frames
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import pack_bits

from workers.kernels.rle import rle_decode_frame
from workers.transcode.errors import TranscodeError
from workers.transcode.parse import PIXEL_DATA, Element
from workers.transcode.syntaxes import HTJ2K, JPEG_2000, LOSSY_METHOD, RLE_LOSSLESS, is_lossy

try:
    from rle.rle import decode_frame as _prle_decode_frame
except ImportError:  # pragma: no cover - pylibjpeg-rle is a dependency; the kernel suffices
    _prle_decode_frame = None

SAMPLES_PER_PIXEL = 0x00280002
PHOTOMETRIC_INTERPRETATION = 0x00280004
PLANAR_CONFIGURATION = 0x00280006
NUMBER_OF_FRAMES = 0x00280008
ROWS = 0x00280010
COLUMNS = 0x00280011
BITS_ALLOCATED = 0x00280100
BITS_STORED = 0x00280101
PIXEL_REPRESENTATION = 0x00280103
LOSSY_IMAGE_COMPRESSION = 0x00282110
LOSSY_IMAGE_COMPRESSION_RATIO = 0x00282112
LOSSY_IMAGE_COMPRESSION_METHOD = 0x00282114
EXTENDED_OFFSET_TABLE = 0x7FE00001
EXTENDED_OFFSET_TABLE_LENGTHS = 0x7FE00002

# What a third-party decoder raises on data it cannot decode (pydicom and the pylibjpeg
# plugins use all of these); anything else is a bug and propagates.
_DECODER_ERRORS = (ValueError, RuntimeError, NotImplementedError, KeyError, IndexError,
                   TypeError, AttributeError, struct.error)


@dataclass(frozen=True, slots=True)
class ImagePixel:
    """The Image Pixel attributes (PS3.3 C.7.6.3) a decoder needs."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    planar_configuration: int
    number_of_frames: int

    def decoder_options(self) -> dict[str, Any]:
        return {
            "rows": self.rows, "columns": self.columns,
            "samples_per_pixel": self.samples_per_pixel,
            "bits_allocated": self.bits_allocated, "bits_stored": self.bits_stored,
            "pixel_representation": self.pixel_representation,
            "photometric_interpretation": self.photometric_interpretation,
            "planar_configuration": self.planar_configuration,
            "number_of_frames": self.number_of_frames,
        }


def _text(element: Element | None) -> str:
    if element is None:
        return ""
    return bytes(element.value).decode("ascii", "replace").strip(" \x00")


def _us(found: dict[int, Element], tag: int, name: str, default: int | None = None,
        little: bool = True) -> int:
    element = found.get(tag)
    if element is None or len(element.value) < 2:
        if default is None:
            raise TranscodeError(f"cannot decode Pixel Data without {name} ({tag >> 16:04X},"
                                 f"{tag & 0xFFFF:04X})")
        return default
    return int.from_bytes(element.value[:2], "little" if little else "big")


def image_pixel(elements: list[Element], little: bool = True) -> ImagePixel:
    """Read the Image Pixel attributes of one data set."""
    found = {e.tag: e for e in elements if e.tag >> 16 == 0x0028 and e.items is None}
    bits_allocated = _us(found, BITS_ALLOCATED, "Bits Allocated", little=little)
    frames_text = _text(found.get(NUMBER_OF_FRAMES))
    try:
        frames = int(frames_text) if frames_text else 1
    except ValueError:
        raise TranscodeError(f"Number of Frames {frames_text!r} is not an integer") from None
    return ImagePixel(
        rows=_us(found, ROWS, "Rows", little=little),
        columns=_us(found, COLUMNS, "Columns", little=little),
        samples_per_pixel=_us(found, SAMPLES_PER_PIXEL, "Samples per Pixel", 1, little=little),
        bits_allocated=bits_allocated,
        bits_stored=_us(found, BITS_STORED, "Bits Stored", bits_allocated, little=little),
        pixel_representation=_us(found, PIXEL_REPRESENTATION, "Pixel Representation", 0,
                                 little=little),
        photometric_interpretation=_text(found.get(PHOTOMETRIC_INTERPRETATION)) or "MONOCHROME2",
        planar_configuration=_us(found, PLANAR_CONFIGURATION, "Planar Configuration", 0,
                                 little=little),
        number_of_frames=max(frames, 1),
    )


def _rle_frames(value: bytes, info: ImagePixel) -> np.ndarray:
    """Every RLE frame (one per fragment, PS3.5 A.4.2) decoded, stacked when multi-frame."""
    bps = info.bits_allocated // 8
    rows, cols, spp = info.rows, info.columns, info.samples_per_pixel
    decoded = []
    for frame in generate_frames(value, number_of_frames=info.number_of_frames):
        if spp == 1 and _prle_decode_frame is not None:
            plane = _prle_decode_frame(frame, rows * cols, info.bits_allocated, "<")
            decoded.append(np.frombuffer(plane, dtype=f"<u{bps}").reshape(rows, cols))
        else:
            decoded.append(rle_decode_frame(frame, rows, cols, info.bits_allocated, spp))
    if len(decoded) != info.number_of_frames:
        raise TranscodeError(f"{len(decoded)} RLE frames for Number of Frames"
                             f" {info.number_of_frames}")
    return np.stack(decoded) if len(decoded) > 1 else decoded[0]


def decode(value: bytes, transfer_syntax_uid: str,
           info: ImagePixel) -> tuple[np.ndarray, str]:
    """All frames of encapsulated Pixel Data as one array, and the decoded Photometric
    Interpretation. Raises TranscodeError on anything the decoders refuse."""
    try:
        if transfer_syntax_uid == RLE_LOSSLESS and info.bits_allocated in (8, 16, 32, 64) \
                and info.samples_per_pixel * info.bits_allocated // 8 <= 15:
            return _rle_frames(value, info), info.photometric_interpretation
        decoder = get_decoder(transfer_syntax_uid)
        if not decoder.is_available:
            missing = "; ".join(decoder.missing_dependencies)
            raise TranscodeError(f"no decoder for {decoder.UID.name} ({missing})")
        options = {**info.decoder_options(), "as_rgb": True}
        arr, props = decoder.as_array(value, **options)
    except NotImplementedError as exc:
        raise TranscodeError(f"no decoder for {transfer_syntax_uid}: {exc}") from exc
    except _DECODER_ERRORS as exc:
        raise TranscodeError(f"cannot decode {transfer_syntax_uid} Pixel Data: {exc}") from exc
    return arr, str(props.get("photometric_interpretation", info.photometric_interpretation))


def native_bytes(arr: np.ndarray, info: ImagePixel) -> bytes | memoryview:
    """Native Pixel Data (PS3.5 §8.1.1): little endian, bit-packed for Bits Allocated 1,
    padded to an even length."""
    if info.bits_allocated == 1:
        data: bytes | memoryview = pack_bits(arr, pad=False)
    else:
        if arr.dtype.itemsize * 8 != info.bits_allocated:
            raise TranscodeError(f"decoder returned {arr.dtype} for Bits Allocated"
                                 f" {info.bits_allocated}")
        # A view of the (little-endian, contiguous) array: the writer's join copies it once.
        flat = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).reshape(-1)
        data = flat.view(np.uint8).data
    expected = info.rows * info.columns * info.samples_per_pixel * info.number_of_frames
    expected = (expected + 7) // 8 if info.bits_allocated == 1 else \
        expected * info.bits_allocated // 8
    if len(data) != expected:
        raise TranscodeError(f"decoded {len(data)} bytes of pixels, expected {expected}")
    return bytes(data) + b"\x00" if len(data) % 2 else data


def _j2k_irreversible(frame: bytes) -> bool:
    """True when a JPEG 2000 codestream uses the 9-7 irreversible wavelet (15444-1 A.6.1),
    i.e. it is lossy whatever its quality layers say."""
    pos = frame.find(b"\xff\x4f\xff\x51")  # SOC then SIZ; skips a JP2 wrapper if present
    if pos < 0:
        return False
    pos += 2
    while pos + 4 <= len(frame):
        marker, length = struct.unpack_from(">HH", frame, pos)
        if marker == 0xFF52:  # COD: Scod, SGcod (4 bytes), then SPcod; transform is 5th
            return pos + 13 < len(frame) and frame[pos + 13] == 0
        if marker == 0xFF90:  # SOT: the main header ended without a COD
            return False
        pos += 2 + length
    return False


def _source_was_lossy(value: bytes, transfer_syntax_uid: str, info: ImagePixel) -> bool:
    if is_lossy(transfer_syntax_uid):
        return True
    if transfer_syntax_uid in (JPEG_2000, HTJ2K):
        first = next(generate_frames(value, number_of_frames=info.number_of_frames), b"")
        return _j2k_irreversible(first)
    return False


def cs_element(tag: int, text: str) -> Element:
    raw = text.encode("ascii")
    return Element(tag, "CS", memoryview(raw + b" " if len(raw) % 2 else raw))


def merge(elements: list[Element], replace: dict[int, Element],
           remove: set[int]) -> list[Element]:
    """``elements`` with tags replaced, removed or inserted in ascending tag order."""
    out = [replace.pop(e.tag, e) for e in elements if e.tag not in remove]
    for tag in sorted(replace):
        out.insert(bisect_left([e.tag for e in out], tag), replace[tag])
    return out


def _lossy_elements(found: dict[int, Element], transfer_syntax_uid: str, compressed: int,
                    native: int) -> dict[int, Element]:
    if _text(found.get(LOSSY_IMAGE_COMPRESSION)) == "01":
        return {}
    out = {LOSSY_IMAGE_COMPRESSION: cs_element(LOSSY_IMAGE_COMPRESSION, "01")}
    method = LOSSY_METHOD.get(transfer_syntax_uid)
    if method and LOSSY_IMAGE_COMPRESSION_METHOD not in found:
        out[LOSSY_IMAGE_COMPRESSION_METHOD] = cs_element(LOSSY_IMAGE_COMPRESSION_METHOD, method)
        if LOSSY_IMAGE_COMPRESSION_RATIO not in found and compressed:
            ratio = f"{native / compressed:.4f}"[:16].encode("ascii")
            out[LOSSY_IMAGE_COMPRESSION_RATIO] = Element(
                LOSSY_IMAGE_COMPRESSION_RATIO, "DS",
                memoryview(ratio + b" " if len(ratio) % 2 else ratio))
    return out


def decompress_elements(elements: list[Element], transfer_syntax_uid: str) -> list[Element]:
    """One data set's elements with its encapsulated Pixel Data (if any) made native."""
    pixel = next((e for e in elements if e.tag == PIXEL_DATA), None)
    if pixel is None or not pixel.undefined:
        return elements
    info = image_pixel(elements)
    value = bytes(pixel.value)
    arr, photometric = decode(value, transfer_syntax_uid, info)
    data = native_bytes(arr, info)
    found = {e.tag: e for e in elements}
    replace = {PIXEL_DATA: Element(PIXEL_DATA, "OB" if info.bits_allocated <= 8 else "OW",
                                   memoryview(data))}
    if photometric != info.photometric_interpretation:
        replace[PHOTOMETRIC_INTERPRETATION] = cs_element(PHOTOMETRIC_INTERPRETATION, photometric)
    if info.samples_per_pixel > 1:
        replace[PLANAR_CONFIGURATION] = Element(PLANAR_CONFIGURATION, "US",
                                                memoryview(b"\x00\x00"))
    if _source_was_lossy(value, transfer_syntax_uid, info):
        replace.update(_lossy_elements(found, transfer_syntax_uid, len(value), len(data)))
    return merge(elements, replace, {EXTENDED_OFFSET_TABLE, EXTENDED_OFFSET_TABLE_LENGTHS})
