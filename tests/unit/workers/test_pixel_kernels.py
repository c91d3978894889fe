"""workers.kernels.pixels against numpy transcriptions of PS3.3 (hypothesis arrays).

The references below are written from the standard's text, element-wise with np.where, in the
same float64 operation order; integer and 8-bit results must be equal bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from workers import kernels
from workers.kernels import pixels

STORED: list[type[np.generic]] = [np.uint8, np.int8, np.uint16, np.int16]


def stored_arrays(max_dims: int = 3,
                  dtypes: list[type[np.generic]] = STORED) -> st.SearchStrategy[np.ndarray]:
    """Stored values of one frame or several (any shape up to ``max_dims``), full range."""
    return st.sampled_from(dtypes).flatmap(
        lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=1, max_dims=max_dims, min_side=0,
                                                   max_side=24)))


# ------------------------------------------------------------------------- references


def ref_rescale(a: np.ndarray, slope: float, intercept: float, dtype: type) -> np.ndarray:
    if dtype is np.int32:  # PS3.3 C.11.1.1.2: m * SV + b
        return (a.astype(np.int64) * int(slope) + int(intercept)).astype(np.int32)
    return (a.astype(np.float64) * slope + intercept).astype(np.float32)


def ref_window(a: np.ndarray, c: float, w: float, slope: float, intercept: float,
               function: str, invert: bool) -> np.ndarray:
    x = a.astype(np.float64) * slope + intercept
    ymin, ymax = 0.0, 255.0
    with np.errstate(divide="ignore", invalid="ignore"):
        if function == "LINEAR":  # PS3.3 C.11.2.1.2.1
            y = np.where(x <= c - 0.5 - (w - 1) / 2, ymin,
                         np.where(x > c - 0.5 + (w - 1) / 2, ymax,
                                  ((x - (c - 0.5)) / (w - 1) + 0.5) * (ymax - ymin) + ymin))
        else:  # LINEAR_EXACT, PS3.3 C.11.2.1.3.2
            y = np.where(x <= c - w / 2, ymin,
                         np.where(x > c + w / 2, ymax,
                                  ((x - c) / w + 0.5) * (ymax - ymin) + ymin))
    out = np.floor(y + 0.5).astype(np.uint8)
    return (255 - out).astype(np.uint8) if invert else out


def ref_invert(a: np.ndarray, bits: int) -> np.ndarray:
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if a.dtype.kind == "i" else \
        (0, (1 << bits) - 1)
    return (hi + lo - a.astype(np.int64)).astype(a.dtype)


def ref_thumbnail(a: np.ndarray, max_dim: int, samples: bool) -> np.ndarray:
    arr = a if samples else a[..., None]
    if arr.ndim == 3:
        arr = arr[None]
    frames, rows, cols, n = arr.shape
    f = max(1, math.ceil(max(rows, cols) / max_dim))
    orows, ocols = math.ceil(rows / f), math.ceil(cols / f)
    acc = np.float64 if a.dtype.kind == "f" else np.int64
    padded = np.zeros((frames, orows * f, ocols * f, n), dtype=acc)
    padded[:, :rows, :cols] = arr
    ones = np.zeros((orows * f, ocols * f), dtype=np.int64)
    ones[:rows, :cols] = 1
    sums = padded.reshape(frames, orows, f, ocols, f, n).sum(axis=(2, 4))
    counts = ones.reshape(orows, f, ocols, f).sum(axis=(1, 3))[None, :, :, None]
    mean = sums / counts if acc is np.float64 else (2 * sums + counts) // (2 * counts)
    out = mean.astype(a.dtype)
    if not samples:
        out = out[..., 0]
    result: np.ndarray = out[0] if a.ndim == (3 if samples else 2) else out
    return result


# ------------------------------------------------------------------------- properties

slopes = st.sampled_from([1.0, 2.0, 0.5, -1.0, 0.001]) | st.floats(-64, 64, allow_nan=False)
intercepts = st.sampled_from([0.0, -1024.0, 32768.0]) | st.floats(-1e5, 1e5, allow_nan=False)


@settings(max_examples=150)
@given(stored_arrays(), slopes, intercepts)
def test_rescale_float32(a: np.ndarray, slope: float, intercept: float) -> None:
    got = pixels.rescale(a, slope, intercept)
    assert got.dtype == np.float32 and got.shape == a.shape
    np.testing.assert_array_equal(got, ref_rescale(a, slope, intercept, np.float32))


@settings(max_examples=100)
@given(stored_arrays(), st.integers(-8, 8), st.integers(-70000, 70000))
def test_rescale_int32(a: np.ndarray, slope: int, intercept: int) -> None:
    got = pixels.rescale(a, slope, intercept, np.int32)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, ref_rescale(a, slope, intercept, np.int32))


def test_rescale_refuses_fractional_int32_and_other_dtypes() -> None:
    a = np.arange(4, dtype=np.uint16)
    with pytest.raises(ValueError):
        pixels.rescale(a, 0.5, 0, np.int32)
    with pytest.raises(ValueError):
        pixels.rescale(a, 1, 0, np.float64)
    with pytest.raises(TypeError):
        pixels.rescale(a.astype(np.float32), 1, 0)


@settings(max_examples=250)
@given(stored_arrays(), st.floats(-3e4, 3e4, allow_nan=False),
       st.sampled_from([1.0, 2.0, 256.0, 400.0, 4096.0]) | st.floats(1, 7e4), slopes, intercepts,
       st.sampled_from(["LINEAR", "LINEAR_EXACT"]), st.booleans())
def test_window(a: np.ndarray, center: float, width: float, slope: float, intercept: float,
                function: str, invert: bool) -> None:
    got = pixels.window(a, center, width, slope=slope, intercept=intercept, function=function,
                        invert=invert)
    assert got.dtype == np.uint8 and got.shape == a.shape
    np.testing.assert_array_equal(
        got, ref_window(a, center, width, slope, intercept, function, invert))


@settings(max_examples=60)
@given(hnp.arrays(np.float32, hnp.array_shapes(max_dims=3, max_side=16),
                  elements=st.floats(-5000, 5000, width=32)),
       st.floats(-1000, 1000), st.floats(0.01, 5000))
def test_window_on_rescaled_float32(a: np.ndarray, center: float, width: float) -> None:
    np.testing.assert_array_equal(pixels.window(a, center, width, function="LINEAR_EXACT"),
                                  ref_window(a, center, width, 1.0, 0.0, "LINEAR_EXACT", False))


def test_window_matches_the_standards_worked_example() -> None:
    # PS3.3 C.11.2.1.2.1: c = 2048, w = 4096 to 0..255: x <= 0 -> 0; x > 4095 -> 255;
    # else ((x - 2047.5) / 4095 + 0.5) * 255.
    x = np.array([0, 1, 2047, 2048, 4094, 4095, 4096], dtype=np.uint16)
    expected = [0, 0, 127, 128, 255, 255, 255]
    assert pixels.window(x, 2048, 4096).tolist() == expected
    assert pixels.window(x, 2048, 4096, invert=True).tolist() == [255 - v for v in expected]
    # width 1: a threshold at c - 0.5, no division (LINEAR); LINEAR_EXACT has no such floor
    assert pixels.window(np.array([-1, 0, 1], np.int8), 0.5, 1).tolist() == [0, 0, 255]
    assert pixels.window(np.array([99, 100, 101], np.int16), 100, 2,
                         function="LINEAR_EXACT").tolist() == [0, 128, 255]


@pytest.mark.parametrize(("function", "width"), [("LINEAR", 0.5), ("LINEAR_EXACT", 0.0),
                                                 ("SIGMOID", 10.0)])
def test_window_refuses_what_the_standard_does_not_define(function: str, width: float) -> None:
    with pytest.raises(ValueError):
        pixels.window(np.zeros(3, np.uint16), 0, width, function=function)


@settings(max_examples=100)
@given(stored_arrays(), st.data())
def test_invert(a: np.ndarray, data: st.DataObject) -> None:
    bits = data.draw(st.integers(1, a.dtype.itemsize * 8))
    got = pixels.invert(a, bits)
    assert got.dtype == a.dtype
    np.testing.assert_array_equal(got, ref_invert(a, bits))


def test_invert_examples() -> None:
    assert pixels.invert(np.array([0, 4095], np.uint16), 12).tolist() == [4095, 0]
    assert pixels.invert(np.array([-2048, 2047, 0], np.int16), 12).tolist() == [2047, -2048, -1]
    with pytest.raises(ValueError):
        pixels.invert(np.zeros(2, np.uint8), 9)


@settings(max_examples=120)
@given(st.sampled_from([*STORED, np.float32]), st.integers(1, 3), st.integers(1, 40),
       st.integers(1, 40), st.integers(1, 3), st.booleans(), st.integers(1, 50), st.data())
def test_thumbnail(dtype: type, frames: int, rows: int, cols: int, n: int, samples: bool,
                   max_dim: int, data: st.DataObject) -> None:
    shape = (frames, rows, cols) + ((n,) if samples else ())
    if frames == 1 and data.draw(st.booleans()):
        shape = shape[1:]  # a single frame without the frame axis
    elements = st.floats(-1e4, 1e4, width=32) if dtype is np.float32 else None
    a = data.draw(hnp.arrays(dtype, shape, elements=elements))
    got = pixels.thumbnail(a, max_dim, samples=samples)
    expected = ref_thumbnail(a, max_dim, samples)
    assert got.dtype == a.dtype and got.shape == expected.shape
    spatial = got.shape[-3:-1] if samples else got.shape[-2:]
    assert max(spatial) <= max_dim or max_dim == 0
    if dtype is np.float32:  # summation order differs: equal to float32 rounding
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-2)
    else:
        np.testing.assert_array_equal(got, expected)


def test_thumbnail_examples() -> None:
    a = np.arange(16, dtype=np.uint16).reshape(4, 4)
    assert pixels.thumbnail(a, 2).tolist() == [[3, 5], [11, 13]]  # 2.5 -> 3, 4.5 -> 5 ...
    assert pixels.thumbnail(a, 4) is not a and (pixels.thumbnail(a, 4) == a).all()
    odd = np.array([[0, 2, 9]], dtype=np.int16)  # edge block holds 1 pixel: its own value
    assert pixels.thumbnail(odd, 2).tolist() == [[1, 9]]
    assert pixels.thumbnail(np.array([[-1, -2]], np.int8), 1).tolist() == [[-1]]  # -1.5 -> -1
    ct = np.zeros((3, 512, 512), np.int16)  # multi-frame keeps its frames
    assert pixels.thumbnail(ct, 128).shape == (3, 128, 128)
    with pytest.raises(ValueError):
        pixels.thumbnail(np.zeros(5, np.uint8), 2)


def test_big_endian_and_strided_input() -> None:
    a = np.arange(-50, 50, dtype=">i2").reshape(10, 10)[:, ::2]
    np.testing.assert_array_equal(pixels.window(a, 0, 50),
                                  ref_window(a.astype(np.int16), 0, 50, 1, 0, "LINEAR", False))
    np.testing.assert_array_equal(pixels.invert(a, 16), ref_invert(a.astype(np.int16), 16))


def test_registered_and_warm_up_runs() -> None:
    assert "workers.kernels.pixels" in kernels.KERNEL_MODULES
    pixels.warm_up()
