"""Pixel-kernel micro-benchmark: prints one JSON object (STYLE 2.10: never gated on wall time).

    python -m bench.micro.pixels [--quick]

MB/s of stored-value input (median of repeated calls) for each kernel of
``workers.kernels.pixels`` and for a vectorised numpy equivalent, on:

- ``ct_int16``: one 512×512 signed 16-bit CT frame (Rescale Intercept -1024);
- ``mf_uint16``: 16 frames of 512×512 unsigned 16-bit (a multi-frame object);
- ``cr_uint8``: one 2048×2048 unsigned 8-bit frame.

The numpy versions are what one would write without numba (clip for the window, reshape-sum
for the thumbnail); they compute the same values.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.micro.ring import cpu_model, git_sha
from workers.kernels import pixels

CENTER, WIDTH, SLOPE, INTERCEPT = 40.0, 400.0, 1.0, -1024.0


def np_rescale_f32(a: np.ndarray) -> np.ndarray:
    return (a.astype(np.float64) * SLOPE + INTERCEPT).astype(np.float32)


def np_rescale_i32(a: np.ndarray) -> np.ndarray:
    return a.astype(np.int32) * int(SLOPE) + int(INTERCEPT)


def np_window(a: np.ndarray) -> np.ndarray:
    x = a.astype(np.float64) * SLOPE + INTERCEPT
    y = ((x - (CENTER - 0.5)) / (WIDTH - 1) + 0.5) * 255.0
    return np.floor(np.clip(y, 0.0, 255.0) + 0.5).astype(np.uint8)


def np_invert(a: np.ndarray) -> np.ndarray:
    top = -1 if a.dtype.kind == "i" else np.iinfo(a.dtype).max
    result: np.ndarray = (top - a).astype(a.dtype)
    return result


def np_thumbnail(a: np.ndarray, max_dim: int) -> np.ndarray:
    frames = a if a.ndim == 3 else a[np.newaxis]
    f = -(-max(frames.shape[1:]) // max_dim)
    n, rows, cols = frames.shape
    out_rows, out_cols = -(-rows // f), -(-cols // f)
    padded = np.zeros((n, out_rows * f, out_cols * f), dtype=np.int64)
    padded[:, :rows, :cols] = frames
    ones = np.zeros((out_rows * f, out_cols * f), dtype=np.int64)
    ones[:rows, :cols] = 1
    sums = padded.reshape(n, out_rows, f, out_cols, f).sum(axis=(2, 4))
    counts = ones.reshape(out_rows, f, out_cols, f).sum(axis=(1, 3))
    result: np.ndarray = ((2 * sums + counts) // (2 * counts)).astype(a.dtype)
    return result if a.ndim == 3 else result[0]


def mb_per_s(fns: dict[str, Callable[[], Any]], nbytes: int, budget_s: float) -> dict[str, float]:
    """Median MB/s of each function, calls alternating between them so that a noisy
    neighbour on a shared machine slows every contender alike."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    deadline = time.perf_counter() + budget_s
    while time.perf_counter() < deadline or len(samples[next(iter(fns))]) < 5:
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {f"{name}_mb_s": round(nbytes / statistics.median(v) / 1e6, 1)
            for name, v in samples.items()}


def inputs() -> dict[str, np.ndarray]:
    gen = np.random.default_rng(6)
    return {
        "ct_int16": gen.integers(-2000, 3000, (512, 512), dtype=np.int16),
        "mf_uint16": gen.integers(0, 4096, (16, 512, 512), dtype=np.uint16),
        "cr_uint8": gen.integers(0, 256, (2048, 2048), dtype=np.uint8),
    }


def bench_one(a: np.ndarray, budget_s: float) -> dict[str, dict[str, float]]:
    cases: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "rescale_float32": (lambda: pixels.rescale(a, SLOPE, INTERCEPT),
                            lambda: np_rescale_f32(a)),
        "rescale_int32": (lambda: pixels.rescale(a, SLOPE, INTERCEPT, np.int32),
                          lambda: np_rescale_i32(a)),
        "window_linear_u8": (lambda: pixels.window(a, CENTER, WIDTH, slope=SLOPE,
                                                   intercept=INTERCEPT),
                             lambda: np_window(a)),
        "invert": (lambda: pixels.invert(a, a.dtype.itemsize * 8), lambda: np_invert(a)),
        "thumbnail_128": (lambda: pixels.thumbnail(a, 128), lambda: np_thumbnail(a, 128)),
    }
    out: dict[str, dict[str, float]] = {}
    for name, (kernel, numpy_version) in cases.items():
        # same answers, else the comparison means nothing (the window may differ by rounding
        # at the clip edges, so it is compared loosely)
        got, expected = kernel(), numpy_version()
        assert got.shape == expected.shape
        assert np.abs(got.astype(np.float64) - expected).max() <= (1 if "window" in name else 0)
        out[name] = mb_per_s({"numba": kernel, "numpy": numpy_version}, a.nbytes, budget_s)
    return out


def main(argv: list[str]) -> int:
    budget_s = 0.2 if "--quick" in argv else 1.0
    start = time.perf_counter()
    pixels.warm_up()
    results: dict[str, Any] = {"git_sha": git_sha(), "cpu": cpu_model(),
                               "numba_warm_up_s": round(time.perf_counter() - start, 4)}
    for name, a in inputs().items():
        results[name] = bench_one(a, budget_s)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
