"""RLE Lossless (PS3.5 Annex G) encode and decode, compiled: one frame per call.

THEORY OF OPERATION
-------------------
An RLE frame is a 64-byte header (PS3.5 G.5: number of segments, then 15 little-endian uint32
segment offsets) followed by up to 15 segments. Each segment holds one byte plane of the frame,
PackBits-coded (G.3.1): a header byte n in 0..127 is followed by n + 1 literal bytes, n in
-127..-1 by one byte to repeat 1 - n times, and -128 is a no-op. Segments are ordered sample by
sample, and within a sample from the most significant byte to the least (G.2), so 16-bit RGB is
R-MSB, R-LSB, G-MSB, G-LSB, B-MSB, B-LSB. Every segment has an even length (G.5), and the
encoder codes each row separately, never letting a run cross a row boundary (G.3.1).

The decoded side is always the Native layout (PS3.5 8.1.1) with Planar Configuration 0: pixel
interleaved, little endian. Byte k (0 = least significant) of sample s of pixel p sits at
``(p * spp + s) * bps + k`` and belongs to segment ``s * bps + (bps - 1 - k)``, so each segment
is decoded straight into its strided place in the output (and encoded straight from it): no
planar intermediate, no transpose.

Decoding is as lenient as pydicom's own handler on the same input: bytes past the plane's
``rows * cols`` are ignored, a literal run cut short by the end of its segment copies what is
there; a plane that decodes to fewer bytes is an error. Every read and write is bounds-checked
against the arrays, so hostile input gives a status code, never an out-of-bounds access.

Kernels (numpy arrays in, numpy arrays or ints out) import nothing but numpy and numba
(tests/unit/test_layering.py); ``rle_decode_frame`` / ``rle_encode_frame`` are the thin
bytes <-> ndarray wrappers callers use.
"""

from __future__ import annotations

import numpy as np
from numba import njit

HEADER_BYTES = 64  # PS3.5 G.5: 16 uint32
MAX_SEGMENTS = 15

# Decode status codes (decode_frame_into's return value).
OK = 0
SHORT_HEADER = 1
BAD_SEGMENT_COUNT = 2
BAD_OFFSET = 3
SHORT_SEGMENT = 4

_ERRORS = {
    SHORT_HEADER: "RLE frame shorter than its 64-byte header (PS3.5 G.5)",
    BAD_SEGMENT_COUNT: "RLE header's number of segments is not samples x bytes per sample",
    BAD_OFFSET: "RLE segment offset outside the frame",
    SHORT_SEGMENT: "RLE segment decodes to fewer bytes than rows x columns",
}


@njit(cache=True, nogil=True)
def _u32le(src: np.ndarray, pos: int) -> np.int64:
    return (np.int64(src[pos]) | (np.int64(src[pos + 1]) << 8)
            | (np.int64(src[pos + 2]) << 16) | (np.int64(src[pos + 3]) << 24))


@njit(cache=True, nogil=True)
def _decode_segment(src: np.ndarray, start: np.int64, end: np.int64,
                    dst: np.ndarray, base: int, stride: int, count: int) -> np.int64:
    """PackBits-decode src[start:end] into dst[base + i * stride] for i < count; bytes written."""
    pos = np.int64(start)
    out = np.int64(0)
    while pos < end and out < count:
        n = np.int64(src[pos])
        pos += 1
        if n < 128:  # literal: n + 1 bytes
            run = min(n + 1, end - pos, count - out)
            d = base + out * stride
            for i in range(run):
                dst[d] = src[pos + i]
                d += stride
            pos += n + 1
            out += run
        elif n > 128:  # replicate: 257 - n copies of the next byte
            if pos >= end:
                break
            run = min(257 - n, count - out)
            value = src[pos]
            pos += 1
            d = base + out * stride
            for _ in range(run):
                dst[d] = value
                d += stride
            out += run
        # n == 128 (-128): no-op, G.3.1
    return out


@njit(cache=True, nogil=True)
def decode_frame_into(src: np.ndarray, dst: np.ndarray,
                      rows: int, cols: int, spp: int, bps: int) -> int:
    """Decode one RLE frame (uint8 ``src``) into ``dst`` (uint8, rows*cols*spp*bps); a status."""
    n = len(src)
    if n < HEADER_BYTES:
        return SHORT_HEADER
    nseg = _u32le(src, 0)
    if nseg != spp * bps or nseg > MAX_SEGMENTS:
        return BAD_SEGMENT_COUNT
    count = rows * cols
    stride = spp * bps
    if len(dst) < count * stride:
        return SHORT_SEGMENT
    for seg in range(nseg):
        start = _u32le(src, 4 + 4 * seg)
        end = np.int64(n)
        if seg + 1 < nseg:
            nxt = _u32le(src, 8 + 4 * seg)
            if start < nxt <= n:
                end = nxt
        if start < HEADER_BYTES or start > n:
            return BAD_OFFSET
        s = seg // bps
        k = bps - 1 - seg % bps
        if _decode_segment(src, start, end, dst, s * bps + k, stride, count) < count:
            return SHORT_SEGMENT
    return OK


@njit(cache=True, nogil=True)
def _encode_row(src: np.ndarray, base: int, stride: int, n: int,
                dst: np.ndarray, pos: int) -> int:
    """PackBits-encode n bytes src[base + i * stride] at dst[pos:]; the new end position, or
    -1 if dst might overflow.

    Runs of three or more equal bytes become replicate runs (two cost as much as they save
    inside a literal run); runs and literals are at most 128 bytes (G.3.1).
    """
    i = 0
    while i < n:
        if pos + 130 > len(dst):  # room for the longest run: never write past dst
            return -1
        v = src[base + i * stride]
        j = i + 1
        while j < n and j - i < 128 and src[base + j * stride] == v:
            j += 1
        if j - i >= 3:
            dst[pos] = 257 - (j - i)
            dst[pos + 1] = v
            pos += 2
            i = j
            continue
        start = i
        head = pos
        pos += 1
        while i < n and i - start < 128:
            if (i + 2 < n and src[base + (i + 1) * stride] == src[base + i * stride]
                    and src[base + (i + 2) * stride] == src[base + i * stride]):
                break
            dst[pos] = src[base + i * stride]
            pos += 1
            i += 1
        dst[head] = i - start - 1
    return pos


@njit(cache=True, nogil=True)
def encode_frame_into(src: np.ndarray, dst: np.ndarray,
                      rows: int, cols: int, spp: int, bps: int) -> int:
    """RLE-encode one native frame (uint8 ``src``, pixel interleaved, little endian) into
    ``dst`` (at least ``max_encoded_bytes`` long); the number of bytes written, -1 when
    ``src`` or ``dst`` is too small."""
    nseg = spp * bps
    stride = spp * bps
    if len(src) < rows * cols * stride or len(dst) < HEADER_BYTES:
        return -1
    for i in range(HEADER_BYTES):
        dst[i] = 0
    dst[0] = nseg
    pos = HEADER_BYTES
    for seg in range(nseg):
        for b in range(4):
            dst[4 + 4 * seg + b] = (pos >> (8 * b)) & 0xFF
        s = seg // bps
        k = bps - 1 - seg % bps
        for r in range(rows):
            pos = _encode_row(src, (r * cols * spp + s) * bps + k, stride, cols, dst, pos)
            if pos < 0:
                return -1
        if pos & 1:  # G.5: segments are padded to an even length
            dst[pos] = 0
            pos += 1
    return pos


def max_encoded_bytes(rows: int, cols: int, spp: int, bps: int) -> int:
    """Worst-case RLE frame size: header, one header byte per 128 literal bytes, padding,
    and the slack _encode_row's bounds check wants."""
    per_row = cols + (cols + 127) // 128
    return HEADER_BYTES + spp * bps * (rows * per_row + 1) + 130


def _check_geometry(rows: int, cols: int, bits_allocated: int, samples_per_pixel: int) -> int:
    if bits_allocated not in (8, 16, 32, 64):
        raise ValueError(f"RLE supports Bits Allocated 8, 16, 32 or 64, not {bits_allocated}")
    bps = bits_allocated // 8
    if samples_per_pixel < 1 or samples_per_pixel * bps > MAX_SEGMENTS:
        raise ValueError(f"RLE cannot hold {samples_per_pixel} samples of {bits_allocated} bits"
                         f" (at most {MAX_SEGMENTS} segments, PS3.5 G.2)")
    if rows < 1 or cols < 1:
        raise ValueError(f"bad frame size {rows} x {cols}")
    return bps


def rle_decode_frame(data: bytes | bytearray | memoryview | np.ndarray, rows: int, cols: int,
                     bits_allocated: int, samples_per_pixel: int) -> np.ndarray:
    """One RLE frame -> unsigned little-endian array (rows, cols) or (rows, cols, samples).

    Raises ValueError when the frame is not RLE of that geometry (PS3.5 Annex G).
    """
    bps = _check_geometry(rows, cols, bits_allocated, samples_per_pixel)
    src = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    out = np.empty(rows * cols * samples_per_pixel * bps, dtype=np.uint8)
    status = decode_frame_into(src, out, rows, cols, samples_per_pixel, bps)
    if status != OK:
        raise ValueError(_ERRORS[status])
    shape = (rows, cols) if samples_per_pixel == 1 else (rows, cols, samples_per_pixel)
    return out.view(f"<u{bps}").reshape(shape)


def rle_encode_frame(arr: np.ndarray, bits_allocated: int, samples_per_pixel: int) -> bytes:
    """One frame, (rows, cols) or (rows, cols, samples) of ``bits_allocated``-bit integers,
    -> an RLE frame (header + even-length segments, PS3.5 G.5)."""
    bps = _check_geometry(arr.shape[0] if arr.ndim else 0, arr.shape[1] if arr.ndim > 1 else 0,
                          bits_allocated, samples_per_pixel)
    want = 2 if samples_per_pixel == 1 else 3
    if arr.ndim != want or (want == 3 and arr.shape[2] != samples_per_pixel):
        raise ValueError(f"expected a (rows, cols{', samples' if want == 3 else ''}) array,"
                         f" got shape {arr.shape}")
    if arr.dtype.itemsize != bps or arr.dtype.kind not in "ui":
        raise ValueError(f"expected {bits_allocated}-bit integers, got {arr.dtype}")
    rows, cols = int(arr.shape[0]), int(arr.shape[1])
    flat = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).view(np.uint8).ravel()
    dst = np.empty(max_encoded_bytes(rows, cols, samples_per_pixel, bps), dtype=np.uint8)
    end = encode_frame_into(flat, dst, rows, cols, samples_per_pixel, bps)
    if end < 0:
        raise RuntimeError("RLE encoder overran its worst-case output size")  # a bug
    return dst[:end].tobytes()


def warm_up() -> None:
    """Compile (or load from numba's cache) both kernels on a tiny frame."""
    frame = np.arange(12, dtype=np.uint16).reshape(2, 2, 3)
    encoded = rle_encode_frame(frame, 16, 3)
    if not np.array_equal(rle_decode_frame(encoded, 2, 2, 16, 3), frame):
        raise RuntimeError("RLE kernel warm-up round trip failed")
