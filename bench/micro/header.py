"""Header-read micro-benchmark: prints one JSON object (STYLE 2.10: never gated on wall time).

    python -m bench.micro.header [--quick]

Median µs per call of ``workers.header.read_index_attributes`` with the Python walker and with
the numba walker, and of ``pydicom.dcmread(stop_before_pixels=True)`` on the same bytes (the
data set behind its File Meta group), for:

- ``ct_512k``: a 512×512×16-bit CT from tests/fixtures/make_datasets.py (≈0.5 MB, a sparse
  synthetic header of ~25 elements);
- ``small_8k``: the same generator at 64×64 (≈8 KB);
- ``ct_512k_real_header``: pydicom's bundled CT_small.dcm header (≈200 elements before the
  last index attribute, as scanners write them) with 512×512×16-bit pixels.

``walk_*`` are the element walk alone (no value decoding), which is what the kernel replaces.
"""

from __future__ import annotations

import io
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite

from bench.micro.ring import cpu_model, git_sha
from tests.fixtures.make_datasets import Hierarchy, dataset_offset, make_ct
from workers import header
from workers.kernels import walk

EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"


def part10(ds: pydicom.Dataset) -> bytes:
    out = DicomBytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def corpus() -> dict[str, bytes]:
    """name -> Part 10 bytes, all Explicit VR Little Endian."""
    rng = random.Random(6)
    h = Hierarchy("BENCH0001", pydicom.uid.generate_uid(), pydicom.uid.generate_uid())
    real = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    real.Rows = real.Columns = 512
    pixels = np.random.default_rng(6).integers(0, 4096, 512 * 512, dtype=np.uint16)
    real.PixelData = pixels.astype("<u2").tobytes()
    real.file_meta.TransferSyntaxUID = pydicom.uid.UID(EXPLICIT_VR_LE)
    return {
        "ct_512k": part10(make_ct(rng, h, rows=512, cols=512)),
        "small_8k": part10(make_ct(rng, h, rows=64, cols=64)),
        "ct_512k_real_header": part10(real),
    }


def median_us(fns: dict[str, Callable[[], Any]], budget_s: float) -> dict[str, float]:
    """Median µs per call of each function. Batches of ~5 ms of each run in turn, so that a
    noisy neighbour on a shared machine slows every contender alike."""
    per_batch = {}
    for name, fn in fns.items():
        fn()
        start = time.perf_counter()
        fn()
        per_batch[name] = max(1, int(0.005 / max(time.perf_counter() - start, 1e-7)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    deadline = time.perf_counter() + budget_s
    while time.perf_counter() < deadline or len(samples[next(iter(fns))]) < 5:
        for name, fn in fns.items():
            n = per_batch[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t0) / n * 1e6)
    return {f"{name}_us": round(statistics.median(v), 2) for name, v in samples.items()}


def bench_one(raw: bytes, budget_s: float) -> dict[str, float | int]:
    data = raw[dataset_offset(raw[:1024]):]
    python = header.read_index_attributes(data, EXPLICIT_VR_LE, walker="python")
    assert header.read_index_attributes(data, EXPLICIT_VR_LE, walker="numba") == python
    return {
        "bytes": len(data),
        **median_us({
            "python": lambda: header.read_index_attributes(data, EXPLICIT_VR_LE,
                                                           walker="python"),
            "numba": lambda: header.read_index_attributes(data, EXPLICIT_VR_LE, walker="numba"),
            "pydicom_dcmread": lambda: pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True),
            "walk_python": lambda: header._walk_python(data, False, True),
            "walk_numba": lambda: header._walk_numba(data, False, True),
        }, budget_s),
    }


def main(argv: list[str]) -> int:
    budget_s = 0.5 if "--quick" in argv else 3.0
    start = time.perf_counter()
    walk.warm_up()
    warm_s = time.perf_counter() - start
    results: dict[str, Any] = {"git_sha": git_sha(), "cpu": cpu_model(),
                               "numba_warm_up_s": round(warm_s, 4)}
    for name, raw in corpus().items():
        results[name] = bench_one(raw, budget_s)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
