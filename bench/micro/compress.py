"""Compression on ingest, per object: prints one JSON object (STYLE 2.10: never gated on time).

    python -m bench.micro.compress [--quick]

What ``[storage] compress_on_ingest = "rle"`` adds to a worker's ingest path for one 0.5 MB
CT object (512x512x16, Explicit VR LE; pixels: bench.micro.rle's CT-like slice, and uniform
noise like the ingest bench's corpora): ``workers.compress.compress_dataset`` in µs (median
and min), split into the parse + RLE encode and the restore check (decode + compare), plus
the sizes. The spool read and the write of the smaller file are not included.
"""

from __future__ import annotations

import io
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pydicom
from pydicom.data import get_testdata_file

from bench.micro.ring import cpu_model, git_sha
from bench.micro.rle import ct_frame
from workers.compress import _encode_rle, compress_dataset, restore_dataset
from workers.kernels.rle import warm_up
from workers.part10 import read_part10_header
from workers.transcode.parse import parse_dataset


def ct_object(pixels: np.ndarray) -> tuple[bytes, str]:
    """CT_small's header around ``pixels``: the data set bytes and transfer syntax."""
    path = get_testdata_file("CT_small.dcm")
    assert isinstance(path, str)
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelData = pixels.astype("<u2").tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    raw = out.getvalue()
    info = read_part10_header(raw)
    return raw[info.dataset_offset:], info.transfer_syntax_uid


def _us(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_us": round(statistics.median(times) * 1e6, 1),
            "min_us": round(min(times) * 1e6, 1)}


def bench_object(dataset: bytes, syntax: str, repeat: int) -> dict[str, Any]:
    result = compress_dataset(dataset, syntax)
    row: dict[str, Any] = {
        "bytes": len(dataset), "decision": result.decision.value,
        "compressed_bytes": len(result.dataset) if result.dataset else None,
        "compress_dataset": _us(lambda: compress_dataset(dataset, syntax), repeat),
        "parse_and_encode": _us(
            lambda: _encode_rle(parse_dataset(memoryview(dataset), False, True)), repeat),
    }
    if result.dataset is not None:
        stored = result.dataset
        row["restore_and_compare"] = _us(lambda: restore_dataset(stored, syntax) == dataset,
                                         repeat)
    return row


def main() -> None:
    repeat = 5 if "--quick" in sys.argv else 31
    warm_up()
    noise = np.random.default_rng(7).integers(0, 4096, (512, 512), dtype=np.uint16)
    out = {
        "bench": "compress_on_ingest",
        "git_sha": git_sha(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "ct16_512x512": bench_object(*ct_object(ct_frame()), repeat),
        "noise16_512x512": bench_object(*ct_object(noise), repeat),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
