"""Pixel kernels for display and thumbnails (tools and retrieve paths; DESIGN "numba").

THEORY OF OPERATION
-------------------
The grayscale pipeline of PS3.4 N.2.1 (Modality LUT -> VOI LUT -> Presentation LUT), the way a
viewer or a thumbnail needs it, on stored values as pydicom's ``pixel_array`` gives them
(8 or 16 bits, signed or unsigned, one frame or many; any array shape):

  - ``rescale``: Modality LUT by Rescale Slope/Intercept, PS3.3 C.11.1.1.2: m * SV + b, to
    float32, or to int32 when m and b are integers (exact).
  - ``window``: Modality LUT and VOI window (Window Center/Width, PS3.3 C.11.2.1.2) to 8 bits
    in one pass; LINEAR (C.11.2.1.2.1) and LINEAR_EXACT (C.11.2.1.3.2) exactly as the standard
    writes them, y rounded half up; ``invert`` applies MONOCHROME1 (C.7.6.3.1.2: minimum is
    white) to the 8-bit output.
  - ``invert``: MONOCHROME1 -> MONOCHROME2 on stored values themselves: the value range of
    Bits Stored is reflected (unsigned: 2^n - 1 - x; signed: -1 - x).
  - ``thumbnail``: area-average (box) downsample by the smallest integer factor that brings
    both Rows and Columns within ``max_dim``; edge blocks average the pixels they have.
    Integer results are rounded half up, exactly (integer arithmetic).

Arithmetic is float64 per pixel in the order the standard writes it, never fast-math, so the
results equal a numpy transcription bit for bit (tests/unit/workers/test_pixel_kernels.py).
Kernels take C-contiguous arrays in native byte order; the wrappers make them so. Imports:
numpy and numba only (tests/unit/test_layering.py).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# What 8/16-bit stored values decode to; warm_up compiles for these, and for float32 (what
# rescale returns) where a kernel takes it.
STORED_DTYPES: tuple[type[np.generic], ...] = (np.uint8, np.int8, np.uint16, np.int16)
_Y_MIN, _Y_MAX = 0.0, 255.0  # 8-bit output range of the VOI LUT


@njit(cache=True, nogil=True, error_model="numpy")
def _rescale_float32(src, slope, intercept, out):  # type: ignore[no-untyped-def]
    for i in range(src.shape[0]):
        out[i] = np.float32(np.float64(src[i]) * slope + intercept)


@njit(cache=True, nogil=True, error_model="numpy")
def _rescale_int32(src, slope, intercept, out):  # type: ignore[no-untyped-def]
    for i in range(src.shape[0]):
        out[i] = np.int32(np.int64(src[i]) * slope + intercept)


@njit(cache=True, nogil=True, error_model="numpy")
def _window(src, slope, intercept, center, width, invert, out):  # type: ignore[no-untyped-def]
    # Both VOI LUT functions have the shape: x <= center - width/2 -> ymin; x > center +
    # width/2 -> ymax; else y = ((x - center) / width + 0.5) * (ymax - ymin) + ymin, where
    # LINEAR (C.11.2.1.2.1) passes center = c - 0.5, width = w - 1 and LINEAR_EXACT
    # (C.11.2.1.3.2) passes c and w; Python evaluates c - 0.5 - (w-1)/2 as (c - 0.5) - (w-1)/2,
    # so the thresholds are the standard's to the last bit. Width 0 (LINEAR, w = 1) never
    # reaches the division: every x is below or above the single threshold.
    low = center - width / 2.0
    high = center + width / 2.0
    for i in range(src.shape[0]):
        x = np.float64(src[i]) * slope + intercept
        if x <= low:
            y = _Y_MIN
        elif x > high:
            y = _Y_MAX
        else:
            y = ((x - center) / width + 0.5) * (_Y_MAX - _Y_MIN) + _Y_MIN
        v = np.uint8(math.floor(y + 0.5))
        out[i] = np.uint8(255) - v if invert else v


@njit(cache=True, nogil=True, error_model="numpy")
def _invert(src, top, out):  # type: ignore[no-untyped-def]
    # top = largest + smallest value of the Bits Stored range; computed in int64, cast back.
    for i in range(src.shape[0]):
        out[i] = top - np.int64(src[i])


@njit(cache=True, nogil=True, error_model="numpy")
def _thumbnail(src, factor, acc, rounded, out):  # type: ignore[no-untyped-def]
    """Box average of ``factor`` x ``factor`` blocks; src and out are (frames, rows, cols,
    samples). ``acc`` (out cols, samples) is int64 with ``rounded`` for integer pixels (the
    mean rounded half up in integer arithmetic), else float64."""
    frames, rows, cols, samples = src.shape
    for f in range(frames):
        for orow in range(out.shape[1]):
            r0 = orow * factor
            r1 = min(r0 + factor, rows)
            acc[:] = 0
            for r in range(r0, r1):
                for ocol in range(out.shape[2]):
                    for c in range(ocol * factor, min(ocol * factor + factor, cols)):
                        for s in range(samples):
                            acc[ocol, s] += src[f, r, c, s]
            for ocol in range(out.shape[2]):
                count = (r1 - r0) * (min(ocol * factor + factor, cols) - ocol * factor)
                for s in range(samples):
                    if rounded:
                        out[f, orow, ocol, s] = (2 * acc[ocol, s] + count) // (2 * count)
                    else:
                        out[f, orow, ocol, s] = acc[ocol, s] / count


def _flat(pixels: np.ndarray) -> np.ndarray:
    """A C-contiguous 1-D view (or copy) in native byte order."""
    return np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("=")).reshape(-1)


def _check_integer(pixels: np.ndarray, what: str) -> None:
    if pixels.dtype.kind not in "ui":
        raise TypeError(f"{what} needs integer stored values, not {pixels.dtype}")


def rescale(pixels: np.ndarray, slope: float = 1.0, intercept: float = 0.0,
            dtype: type[np.generic] = np.float32) -> np.ndarray:
    """Modality LUT, PS3.3 C.11.1.1.2: ``slope * pixels + intercept`` as float32 or int32.

    int32 needs integral slope and intercept (ValueError otherwise); results are exact and wrap
    like int32 arithmetic would if they do not fit."""
    _check_integer(pixels, "rescale")
    src = _flat(pixels)
    if dtype is np.float32:
        out = np.empty(src.shape[0], dtype=np.float32)
        _rescale_float32(src, float(slope), float(intercept), out)
    elif dtype is np.int32:
        if slope != int(slope) or intercept != int(intercept):
            raise ValueError(f"int32 output needs integral slope and intercept, not "
                             f"{slope}, {intercept}")
        out = np.empty(src.shape[0], dtype=np.int32)
        _rescale_int32(src, int(slope), int(intercept), out)
    else:
        raise ValueError(f"rescale gives float32 or int32, not {dtype}")
    return out.reshape(pixels.shape)


def window(pixels: np.ndarray, center: float, width: float, *, slope: float = 1.0,
           intercept: float = 0.0, function: str = "LINEAR", invert: bool = False) -> np.ndarray:
    """Stored values -> Modality LUT -> VOI window -> uint8 (PS3.3 C.11.2.1.2).

    ``function``: VOI LUT Function (0028,1056), LINEAR (width >= 1) or LINEAR_EXACT
    (width > 0). ``invert``: MONOCHROME1, 255 - y. Also takes float input (already rescaled,
    then leave slope 1 and intercept 0)."""
    if pixels.dtype.kind not in "uif":
        raise TypeError(f"window needs numeric pixels, not {pixels.dtype}")
    src = _flat(pixels)
    out = np.empty(src.shape[0], dtype=np.uint8)
    c, w = float(center), float(width)
    if function == "LINEAR":
        if not w >= 1.0:
            raise ValueError(f"LINEAR needs Window Width >= 1, not {width}")
        c, w = c - 0.5, w - 1.0
    elif function == "LINEAR_EXACT":
        if not w > 0.0:
            raise ValueError(f"LINEAR_EXACT needs Window Width > 0, not {width}")
    else:
        raise ValueError(f"VOI LUT Function {function!r} is not LINEAR or LINEAR_EXACT")
    _window(src, float(slope), float(intercept), c, w, bool(invert), out)
    return out.reshape(pixels.shape)


def invert(pixels: np.ndarray, bits_stored: int) -> np.ndarray:
    """MONOCHROME1 -> MONOCHROME2 on stored values (PS3.3 C.7.6.3.1.2), same dtype."""
    _check_integer(pixels, "invert")
    if not 1 <= bits_stored <= pixels.dtype.itemsize * 8:
        raise ValueError(f"Bits Stored {bits_stored} does not fit {pixels.dtype}")
    top = -1 if pixels.dtype.kind == "i" else (1 << bits_stored) - 1
    src = _flat(pixels)
    out = np.empty_like(src)
    _invert(src, top, out)
    return out.reshape(pixels.shape)


def thumbnail(pixels: np.ndarray, max_dim: int, *, samples: bool = False) -> np.ndarray:
    """Area-average downsample so that rows and columns are both <= ``max_dim``.

    ``pixels``: (rows, cols) or (frames, rows, cols); with ``samples`` a last axis of samples
    per pixel (RGB). Same dtype out; integers rounded half up. The factor is
    ceil(max(rows, cols) / max_dim); an image already small enough comes back unchanged."""
    if max_dim < 1:
        raise ValueError(f"max_dim must be >= 1, not {max_dim}")
    spatial = pixels.ndim - (1 if samples else 0)
    if spatial not in (2, 3) or pixels.dtype.kind not in "uif":
        raise ValueError(f"thumbnail takes numeric (frames,) rows, cols (, samples), "
                         f"not {pixels.shape} {pixels.dtype}")
    src = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("="))
    if not samples:
        src = src[..., np.newaxis]
    if spatial == 2:
        src = src[np.newaxis]
    frames, rows, cols, n_samples = src.shape
    factor = max(1, -(-max(rows, cols) // max_dim))
    out = np.empty((frames, -(-rows // factor), -(-cols // factor), n_samples), dtype=src.dtype)
    if out.size:
        rounded = src.dtype.kind != "f"
        acc = np.empty((out.shape[2], n_samples), dtype=np.int64 if rounded else np.float64)
        _thumbnail(src, factor, acc, rounded, out)
    shape = out.shape[1:3]
    return out.reshape(((frames,) if spatial == 3 else ()) + shape
                       + ((n_samples,) if samples else ()))


def warm_up() -> None:
    """Compile (or load from cache) every kernel for the stored-value dtypes and float32."""
    for dtype in (*STORED_DTYPES, np.float32):
        tiny: np.ndarray = np.zeros((2, 3), dtype=dtype)
        window(tiny, 40.0, 400.0)
        window(tiny, 40.0, 400.0, function="LINEAR_EXACT")
        thumbnail(tiny, 1)
        if dtype is not np.float32:
            rescale(tiny, 1.0, -1024.0)
            rescale(tiny, 1, -1024, np.int32)
            invert(tiny, 8)
