"""The numba RLE Lossless kernel (PS3.5 Annex G) against pydicom's RLE decoder, pylibjpeg-rle
and itself, on pydicom's bundled RLE files and on hypothesis-generated frames."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import RLELossless
from rle.rle import decode_frame as prle_decode_frame

from workers.kernels import KERNEL_MODULES
from workers.kernels.rle import rle_decode_frame, rle_encode_frame, warm_up

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
RLE_FILES = sorted(p for p in TEST_FILES.glob("*.dcm") if "rle" in p.name.lower())


def _pydicom_decode(frame: bytes, rows: int, cols: int, bits: int, spp: int) -> np.ndarray:
    """pydicom's own pure-Python RLE decoder (not the pylibjpeg plugin), one frame."""
    options: dict[str, Any] = {
        "rows": rows, "columns": cols, "samples_per_pixel": spp, "bits_allocated": bits,
        "bits_stored": bits, "pixel_representation": 0, "planar_configuration": 0,
        "photometric_interpretation": "MONOCHROME2" if spp == 1 else "RGB",
        "number_of_frames": 1,
    }
    arr, _ = get_decoder(RLELossless).as_array(encapsulate([frame]), decoding_plugin="pydicom",
                                               **options)
    return arr


def _prle_decode(frame: bytes, rows: int, cols: int, bits: int, spp: int) -> np.ndarray:
    planes = np.frombuffer(prle_decode_frame(frame, rows * cols, bits, "<"), f"<u{bits // 8}")
    if spp == 1:
        return planes.reshape(rows, cols)
    return planes.reshape(spp, rows, cols).transpose(1, 2, 0)


def test_bundled_rle_files_are_present() -> None:
    assert len(RLE_FILES) >= 5, "pydicom's bundled RLE test files are missing"


@pytest.mark.parametrize("path", RLE_FILES, ids=lambda p: p.name)
def test_decode_bundled_files_matches_pydicom_and_pylibjpeg(path: Path) -> None:
    ds = dcmread(path)
    rows, cols, bits, spp = ds.Rows, ds.Columns, ds.BitsAllocated, ds.SamplesPerPixel
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    frames = list(generate_frames(ds.PixelData, number_of_frames=nframes))
    assert len(frames) == nframes
    for frame in frames:
        ours = rle_decode_frame(frame, rows, cols, bits, spp)
        assert ours.dtype == np.dtype(f"<u{bits // 8}")
        assert ours.shape == ((rows, cols) if spp == 1 else (rows, cols, spp))
        assert np.array_equal(ours, _pydicom_decode(frame, rows, cols, bits, spp))
        assert np.array_equal(ours, _prle_decode(frame, rows, cols, bits, spp))
        # And what we encode from it decodes back, by us and by pydicom.
        encoded = rle_encode_frame(ours, bits, spp)
        assert np.array_equal(rle_decode_frame(encoded, rows, cols, bits, spp), ours)
        assert np.array_equal(_pydicom_decode(encoded, rows, cols, bits, spp), ours)
    whole = [rle_decode_frame(f, rows, cols, bits, spp) for f in frames]
    stacked = np.stack(whole) if nframes > 1 else whole[0]
    assert np.array_equal(stacked.view(ds.pixel_array.dtype), ds.pixel_array)


def _packbits(values: list[int]) -> bytes:
    """Literal-only PackBits, for hand-made frames."""
    return bytes([len(values) - 1, *values])


def _frame(segments: list[bytes]) -> bytes:
    padded = [s + b"\x00" if len(s) % 2 else s for s in segments]
    offsets, at = [], 64
    for s in padded:
        offsets.append(at)
        at += len(s)
    header = struct.pack("<16I", len(segments), *offsets, *([0] * (15 - len(segments))))
    return header + b"".join(padded)


def test_segment_order_is_most_significant_byte_first() -> None:
    # PS3.5 G.2: 16-bit RGB segments are R-MSB, R-LSB, G-MSB, G-LSB, B-MSB, B-LSB.
    pixels = np.array([[[0x0102, 0x0304, 0x0506], [0x0708, 0x090A, 0x0B0C]]], dtype="<u2")
    segments = [_packbits([pixels[0, p, s] >> 8 for p in range(2)]) if k == 0 else
                _packbits([pixels[0, p, s] & 0xFF for p in range(2)])
                for s in range(3) for k in range(2)]
    frame = _frame(segments)
    assert np.array_equal(rle_decode_frame(frame, 1, 2, 16, 3), pixels)
    assert rle_encode_frame(pixels, 16, 3) == frame


def test_replicate_and_noop_runs() -> None:
    # -3 (0xFD) repeats the next byte 4 times; -128 (0x80) is a no-op (G.3.1).
    frame = _frame([bytes([0xFD, 7, 0x80, 0x01, 1, 2])])
    assert rle_decode_frame(frame, 2, 3, 8, 1).tolist() == [[7, 7, 7], [7, 1, 2]]


def _runs_respect_rows(segment: bytes, cols: int, rows: int) -> bool:
    """True when no PackBits run crosses a row boundary and the rows are all there."""
    pos, out = 0, 0
    while out < rows * cols:
        n = segment[pos]
        count = n + 1 if n < 128 else 257 - n if n > 128 else 0
        pos += 1 + (count if n < 128 else 1 if n > 128 else 0)
        if count and out // cols != (out + count - 1) // cols:
            return False
        out += count
    return out == rows * cols and len(segment) - pos <= 1


frames = st.tuples(
    st.integers(1, 12), st.integers(1, 300), st.sampled_from([8, 16, 32]), st.sampled_from([1, 3]),
    st.integers(0, 2**32 - 1), st.sampled_from(["runs", "noise", "mixed"]),
).map(lambda t: _make_frame(*t))


def _make_frame(rows: int, cols: int, bits: int, spp: int, seed: int, kind: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (rows, cols) if spp == 1 else (rows, cols, spp)
    dtype = np.dtype(f"<u{bits // 8}")
    if kind == "noise":
        return rng.integers(0, 2**bits, size=shape, dtype=np.uint64).astype(dtype)
    # Runs of random length (some over 128) of a few values: exercises replicate runs.
    flat = np.repeat(rng.integers(0, 4, size=rows * cols * spp),
                     rng.integers(1, 200, size=rows * cols * spp))[: rows * cols * spp]
    flat = np.resize(flat, rows * cols * spp).astype(dtype)
    if kind == "mixed":
        flat[rng.random(flat.size) < 0.2] = rng.integers(0, 2**min(bits, 16), dtype=np.int64)
    return flat.reshape(shape)


@settings(max_examples=60)
@given(frames)
def test_round_trip_and_pydicom_decodes_our_encoding(arr: np.ndarray) -> None:
    rows, cols = arr.shape[:2]
    spp = 1 if arr.ndim == 2 else arr.shape[2]
    bits = arr.dtype.itemsize * 8
    encoded = rle_encode_frame(arr, bits, spp)
    nseg, *offsets = struct.unpack_from("<16I", encoded)
    assert nseg == spp * bits // 8 and len(encoded) % 2 == 0
    bounds = [*offsets[:nseg], len(encoded)]
    for start, end in zip(bounds, bounds[1:], strict=False):
        assert (end - start) % 2 == 0  # G.5: even-length segments
        assert _runs_respect_rows(encoded[start:end], cols, rows)  # G.3.1
    assert np.array_equal(rle_decode_frame(encoded, rows, cols, bits, spp), arr)
    assert np.array_equal(_pydicom_decode(encoded, rows, cols, bits, spp), arr)
    assert np.array_equal(_prle_decode(encoded, rows, cols, bits, spp), arr)


@settings(max_examples=60)
@given(frames)
def test_decode_agrees_with_pydicom_on_pylibjpeg_encodings(arr: np.ndarray) -> None:
    from rle.utils import encode_pixel_data

    rows, cols = arr.shape[:2]
    spp = 1 if arr.ndim == 2 else arr.shape[2]
    bits = arr.dtype.itemsize * 8
    theirs = encode_pixel_data(arr.tobytes(), rows=rows, columns=cols, samples_per_pixel=spp,
                               bits_allocated=bits, byteorder="<")
    ours = rle_decode_frame(theirs, rows, cols, bits, spp)
    assert np.array_equal(ours, arr)
    assert np.array_equal(ours, _pydicom_decode(theirs, rows, cols, bits, spp))


def test_signed_input_is_encoded_as_its_bits() -> None:
    arr = np.array([[-1, 0, 1, -32768]], dtype=np.int16)
    decoded = rle_decode_frame(rle_encode_frame(arr, 16, 1), 1, 4, 16, 1)
    assert np.array_equal(decoded.view(np.int16), arr)


@pytest.mark.parametrize(("frame", "message"), [
    (b"\x01\x00\x00\x00" + b"\x00" * 20, "shorter than its 64-byte header"),
    (_frame([b"\x00\x05", b"\x00\x06"]), "number of segments"),
    (struct.pack("<16I", 1, 4096, *[0] * 14) + b"\x00\x01", "offset outside"),
    (_frame([b"\x00\x05"]), "fewer bytes"),
])
def test_malformed_frames_raise_value_error(frame: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rle_decode_frame(frame, 1, 2, 8, 1)


@settings(max_examples=100)
@given(st.binary(min_size=0, max_size=300), st.integers(1, 8), st.integers(1, 8),
       st.sampled_from([(8, 1), (16, 1), (8, 3), (32, 3)]))
def test_arbitrary_bytes_decode_or_raise_value_error(data: bytes, rows: int, cols: int,
                                                     layout: tuple[int, int]) -> None:
    bits, spp = layout
    # Half the cases get a plausible header so the segment decoder sees hostile data too.
    header = struct.pack("<16I", spp * bits // 8, *[64 + i for i in range(spp * bits // 8)],
                         *[0] * (15 - spp * bits // 8))
    for frame in (data, header + data):
        try:
            out = rle_decode_frame(frame, rows, cols, bits, spp)
        except ValueError:
            continue
        assert out.shape[:2] == (rows, cols)


def test_bad_geometry_is_refused() -> None:
    with pytest.raises(ValueError, match="Bits Allocated"):
        rle_encode_frame(np.zeros((2, 2), np.uint8), 12, 1)
    with pytest.raises(ValueError, match="segments"):
        rle_encode_frame(np.zeros((2, 2, 3), np.uint64), 64, 3)
    with pytest.raises(ValueError, match="expected 16-bit"):
        rle_encode_frame(np.zeros((2, 2), np.uint8), 16, 1)
    with pytest.raises(ValueError, match="shape"):
        rle_encode_frame(np.zeros((2, 2), np.uint8), 8, 3)


def test_warm_up_compiles_and_is_registered() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numba would warn on a failed cache write
        warm_up()
    assert "workers.kernels.rle" in KERNEL_MODULES  # so that workers.kernels.warm_up runs it
