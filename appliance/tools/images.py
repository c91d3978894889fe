"""Pixel Data to and from ordinary images: ``pacs extract`` and ``pacs img2dcm``.

extract: one frame of a DICOM image -> PNG / JPEG / PGM (8-bit, for display) or RAW (the
stored values, little endian, untouched). The display path is PS3.3 C.11: Modality LUT
(Rescale Slope/Intercept), then the VOI window (given, else the file's first Window
Center/Width, else the frame's min..max), then MONOCHROME1 inverted so that display is
always "low = dark". The three steps are the numpy functions ``modality_lut``,
``voi_window_to_uint8`` and ``invert_monochrome1`` below; when the numba pixel kernels
(``workers/kernels/pixels.py``) land, these are the functions to switch over.

img2dcm: a JPEG is wrapped as JPEG Baseline (1.2.840.10008.1.2.4.50) *without* recompression:
its bytes become the single fragment of encapsulated Pixel Data (PS3.5 A.4); three-component
JPEGs are YCbCr (JFIF), so Photometric Interpretation is YBR_FULL_422 when the chroma is
subsampled and YBR_FULL when it is not (PS3.5 8.2.1), RGB for an Adobe JPEG without colour
transform. Only 8-bit sequential Huffman JPEGs (SOF0/SOF1) qualify; others are refused. A PNG
is decoded (Pillow) and stored uncompressed in Explicit VR Little Endian. The result is a
Secondary Capture Image Storage instance (PS3.3 A.8.1).
"""

from __future__ import annotations

import datetime as dt
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.multival import MultiValue
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
    generate_uid,
)

OUTPUT_FORMATS = (".png", ".jpg", ".jpeg", ".pgm", ".raw")


class ImageError(Exception):
    """The image cannot be converted (unsupported input or options)."""


# ---------------------------------------------------------------------- display pipeline


def modality_lut(frame: NDArray[np.generic], ds: Dataset) -> NDArray[np.float64]:
    """Stored values -> modality values (PS3.3 C.11.1, linear Rescale only)."""
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return frame.astype(np.float64) * slope + intercept


def voi_window_to_uint8(
    values: NDArray[np.float64], center: float | None, width: float | None
) -> NDArray[np.uint8]:
    """VOI LINEAR window (PS3.3 C.11.2.1.2.1) onto 0..255; min..max when no window."""
    if center is None or width is None:
        lo, hi = float(values.min()), float(values.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        return np.clip((values - lo) * scale, 0, 255).round().astype(np.uint8)
    width = max(width, 1.0)
    out = ((values - (center - 0.5)) / (width - 1.0) + 0.5) * 255.0
    out[values <= center - 0.5 - (width - 1.0) / 2] = 0.0
    out[values > center - 0.5 + (width - 1.0) / 2] = 255.0
    return np.clip(out, 0, 255).round().astype(np.uint8)


def invert_monochrome1(pixels: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """MONOCHROME1 shows low values bright; flip so that 0 is black."""
    return np.asarray(255 - pixels, dtype=np.uint8)


@dataclass(frozen=True)
class Frame:
    """One frame ready to write: 8-bit display pixels and the stored values."""

    display: NDArray[np.uint8]  # (rows, cols) or (rows, cols, 3)
    stored: NDArray[np.generic]


def render_frame(
    ds: Dataset, frame_number: int = 1, window: tuple[float, float] | None = None
) -> Frame:
    """Frame ``frame_number`` (1-based) of ``ds`` for display and as stored."""
    if "PixelData" not in ds:
        raise ImageError("no Pixel Data in this file")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not 1 <= frame_number <= frames:
        raise ImageError(f"frame {frame_number} out of range 1..{frames}")
    try:
        arr = ds.pixel_array
    except Exception as exc:  # decoders raise many types; all mean "cannot decode"
        raise ImageError(f"cannot decode Pixel Data: {exc}") from exc
    samples = int(ds.get("SamplesPerPixel", 1))
    if frames > 1:
        arr = arr[frame_number - 1]
    if samples == 3:
        # pydicom returns RGB for colour (YBR converted), usually already 8-bit
        if arr.dtype != np.uint8:
            arr8 = voi_window_to_uint8(arr.astype(np.float64), None, None)
        else:
            arr8 = arr
        return Frame(np.ascontiguousarray(arr8), arr)
    if samples != 1:
        raise ImageError(f"Samples per Pixel {samples} not supported")
    values = modality_lut(arr, ds)
    if window is None and "WindowCenter" in ds and "WindowWidth" in ds:
        window = (_first(ds.WindowCenter), _first(ds.WindowWidth))
    center, width = window if window is not None else (None, None)
    display = voi_window_to_uint8(values, center, width)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        display = invert_monochrome1(display)
    return Frame(display, arr)


def _first(value: object) -> float:
    if isinstance(value, MultiValue | list | tuple):
        return float(value[0])
    return float(str(value))


# ---------------------------------------------------------------------- writers


def encode_png(pixels: NDArray[np.uint8]) -> bytes:
    """8-bit greyscale or RGB PNG (filter 0 on every row, zlib), no dependency."""
    rows, cols = pixels.shape[:2]
    colour = 2 if pixels.ndim == 3 else 0
    raw = np.ascontiguousarray(pixels).reshape(rows, -1)
    body = b"".join(b"\x00" + raw[r].tobytes() for r in range(rows))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", cols, rows, 8, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(body, 6)) + chunk(b"IEND", b""))


def encode_pgm(pixels: NDArray[np.uint8]) -> bytes:
    """Binary PGM (P5, maxval 255); colour frames are refused."""
    if pixels.ndim != 2:
        raise ImageError("PGM is greyscale only; write .png or .jpg for a colour image")
    rows, cols = pixels.shape
    return f"P5\n{cols} {rows}\n255\n".encode() + np.ascontiguousarray(pixels).tobytes()


def encode_jpeg(pixels: NDArray[np.uint8], quality: int = 90) -> bytes:
    """Baseline JPEG through Pillow."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_frame(frame: Frame, suffix: str) -> bytes:
    """The bytes of the output file for ``suffix`` (one of OUTPUT_FORMATS)."""
    suffix = suffix.lower()
    if suffix == ".png":
        return encode_png(frame.display)
    if suffix in (".jpg", ".jpeg"):
        return encode_jpeg(frame.display)
    if suffix == ".pgm":
        return encode_pgm(frame.display)
    if suffix == ".raw":
        return np.ascontiguousarray(frame.stored).astype(frame.stored.dtype.newbyteorder("<"))\
            .tobytes()
    raise ImageError(f"unknown output format {suffix!r}; use one of {', '.join(OUTPUT_FORMATS)}")


# ---------------------------------------------------------------------- img2dcm


@dataclass(frozen=True)
class JpegInfo:
    """What a JPEG's SOF segment says (ITU-T T.81 B.2.2)."""

    rows: int
    columns: int
    components: int
    precision: int
    sof: int
    subsampled: bool
    adobe_transform: int | None


def jpeg_info(data: bytes) -> JpegInfo:
    """Read the frame header of a JPEG stream; ImageError when it is not a JPEG."""
    if data[:2] != b"\xff\xd8":
        raise ImageError("not a JPEG file (no SOI marker)")
    pos, adobe = 2, None
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ImageError("corrupt JPEG: marker expected")
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        segment = data[pos + 4:pos + 2 + length]
        if marker == 0xEE and segment[:5] == b"Adobe" and len(segment) >= 12:
            adobe = segment[11]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                      0xCF):
            precision, rows, cols, ncomp = struct.unpack(">BHHB", segment[:6])
            factors = [segment[6 + 3 * i + 1] for i in range(ncomp)]
            subsampled = ncomp == 3 and factors[0] != factors[1]
            return JpegInfo(rows, cols, ncomp, precision, marker, subsampled, adobe)
        if marker == 0xDA:
            break
        pos += 2 + length
    raise ImageError("corrupt JPEG: no frame header (SOF) before the scan")


@dataclass(frozen=True)
class Identity:
    """Patient and study identity for the new instance; UIDs generated when None."""

    patient_id: str = ""
    patient_name: str = ""
    study_uid: str | None = None
    series_uid: str | None = None


def image_to_dataset(image: Path, identity: Identity) -> Dataset:
    """A Secondary Capture Image Storage data set (with File Meta) holding ``image``."""
    data = image.read_bytes()
    ds = _secondary_capture(identity)
    if data[:2] == b"\xff\xd8":
        info = jpeg_info(data)
        if info.sof not in (0xC0, 0xC1) or info.precision != 8:
            raise ImageError("only 8-bit baseline/extended sequential JPEGs are stored as "
                             f"JPEG Baseline (this one has SOF{info.sof - 0xC0}, "
                             f"{info.precision} bits)")
        if info.components not in (1, 3):
            raise ImageError(f"{info.components}-component JPEG not supported")
        _pixel_module(ds, info.rows, info.columns, info.components)
        if info.components == 3:
            if info.adobe_transform == 0:
                ds.PhotometricInterpretation = "RGB"
            else:
                ds.PhotometricInterpretation = "YBR_FULL_422" if info.subsampled else "YBR_FULL"
        ds.PixelData = encapsulate([data])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        return ds
    pixels = _decode_with_pillow(image)
    rows, cols = pixels.shape[:2]
    _pixel_module(ds, rows, cols, 3 if pixels.ndim == 3 else 1)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _decode_with_pillow(image: Path) -> NDArray[np.uint8]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image) as im:
            im.load()
            mode = "L" if im.mode in ("1", "L", "P", "LA", "I;16", "I") and not _has_palette(im) \
                else "RGB"
            if im.mode in ("I;16", "I"):
                raise ImageError("16-bit images are not supported; convert to 8-bit first")
            return np.asarray(im.convert(mode), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageError(f"not a JPEG or PNG image ({exc})") from exc


def _has_palette(im: object) -> bool:
    return getattr(im, "mode", "") == "P"


def _secondary_capture(identity: Identity) -> Dataset:
    now = dt.datetime.now()
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.PatientName = identity.patient_name
    ds.PatientID = identity.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = identity.study_uid or generate_uid()
    ds.StudyDate = now.strftime("%Y%m%d")
    ds.StudyTime = now.strftime("%H%M%S")
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.SeriesInstanceUID = identity.series_uid or generate_uid()
    ds.Modality = "OT"
    ds.SeriesNumber = 1
    ds.ConversionType = "WSD"  # SC Equipment: workstation
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = ds.StudyTime
    ds.InstanceCreationDate = ds.StudyDate
    ds.InstanceCreationTime = ds.StudyTime
    return ds


def _pixel_module(ds: Dataset, rows: int, cols: int, samples: int) -> None:
    """PS3.3 C.7.6.3 Image Pixel, 8 bits unsigned."""
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "MONOCHROME2" if samples == 1 else "RGB"
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
