"""RLE Lossless codec micro-benchmark: prints one JSON object (STYLE 2.10: never gated on time).

    python -m bench.micro.rle [--quick]

MB/s of decoded (native) bytes per second, median of several runs, on two synthetic frames:
``ct16``, a 512x512 16-bit CT-like slice (air outside a noisy body disk: long runs plus noisy
literals), and ``rgb8``, a 512x512 8-bit RGB secondary capture (flat areas, gradients, noise).

- decode: ``numba`` (workers.kernels.rle, pixel-interleaved output), ``pylibjpeg_rle`` (its
  Rust ``decode_frame``, planar bytes) and ``pylibjpeg_rle_array`` (the same plus the reshape
  to an interleaved array), ``pydicom_native`` (pydicom's pure-Python RLE decoder through its
  Decoder API) and ``pydicom_pylibjpeg`` (the same API, pylibjpeg plugin; its multi-sample
  result is a non-contiguous view); ``decode_to_native_bytes``: numba vs pylibjpeg-rle all the
  way to interleaved native bytes, what transcoding needs.
- encode: ``numba``, ``pylibjpeg_rle`` (``encode_pixel_data``), ``pydicom_native``.
Also the encoded size of each frame and that every decoder returned the same pixels.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import RLELossless
from rle.rle import decode_frame as prle_decode_frame
from rle.utils import encode_pixel_data as prle_encode_pixel_data

from bench.micro.ring import cpu_model, git_sha
from workers.kernels.rle import rle_decode_frame, rle_encode_frame, warm_up


def ct_frame(size: int = 512) -> np.ndarray:
    """12-bit stored in 16: -1024 HU air (as 0) around a noisy disk of soft tissue and bone."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:size, 0:size]
    r = np.hypot(x - size / 2, y - size / 2)
    img = np.zeros((size, size), dtype=np.int32)
    body = r < size * 0.42
    img[body] = 1024 + 40 + rng.normal(0, 12, body.sum()).astype(np.int32)
    bone = (r > size * 0.36) & body
    img[bone] += 600
    return np.clip(img, 0, 4095).astype(np.uint16)


def rgb_frame(size: int = 512) -> np.ndarray:
    rng = np.random.default_rng(2)
    y, x = np.mgrid[0:size, 0:size]
    img = np.zeros((size, size, 3), dtype=np.uint8)
    img[..., 0] = (x * 255 // size).astype(np.uint8)
    img[..., 1] = (y * 255 // size).astype(np.uint8)
    img[: size // 2, :, 2] = 200
    noisy = slice(size // 2, size)
    img[noisy, :, :] = np.clip(img[noisy, :, :] + rng.integers(0, 6, (size // 2, size, 3)),
                               0, 255).astype(np.uint8)
    return img


def median_mb_per_s(fn: Callable[[], object], nbytes: int, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(nbytes / statistics.median(times) / 1e6, 1)


def bench_frame(arr: np.ndarray, repeat: int) -> dict[str, object]:
    rows, cols = arr.shape[:2]
    spp = 1 if arr.ndim == 2 else arr.shape[2]
    bits = arr.dtype.itemsize * 8
    nbytes = arr.nbytes
    encoded = rle_encode_frame(arr, bits, spp)
    pixel_kwargs = {
        "rows": rows, "columns": cols, "samples_per_pixel": spp, "bits_allocated": bits,
        "bits_stored": bits, "pixel_representation": 0, "number_of_frames": 1,
        "photometric_interpretation": "MONOCHROME2" if spp == 1 else "RGB",
        "planar_configuration": 0,
    }
    encapsulated = encapsulate([encoded])
    decoder = get_decoder(RLELossless)

    def prle_array() -> np.ndarray:
        planes = np.frombuffer(prle_decode_frame(encoded, rows * cols, bits, "<"),
                               dtype=arr.dtype)
        if spp == 1:
            return planes.reshape(rows, cols)
        return np.ascontiguousarray(planes.reshape(spp, rows, cols).transpose(1, 2, 0))

    def pydicom_decode(plugin: str) -> np.ndarray:
        out, _ = decoder.as_array(encapsulated, decoding_plugin=plugin, **pixel_kwargs)
        return out

    same = all(np.array_equal(got, arr) for got in (
        rle_decode_frame(encoded, rows, cols, bits, spp), prle_array(),
        pydicom_decode("pydicom"), pydicom_decode("pylibjpeg")))
    raw = arr.tobytes()
    encoder = get_encoder(RLELossless)
    pydicom_repeat = max(1, repeat // 10)
    return {
        "native_bytes": nbytes,
        "rle_bytes": len(encoded),
        "decoders_agree": same,
        "decode_mb_per_s": {
            "numba": median_mb_per_s(
                lambda: rle_decode_frame(encoded, rows, cols, bits, spp), nbytes, repeat),
            "pylibjpeg_rle": median_mb_per_s(
                lambda: prle_decode_frame(encoded, rows * cols, bits, "<"), nbytes, repeat),
            "pylibjpeg_rle_array": median_mb_per_s(prle_array, nbytes, repeat),
            "pydicom_pylibjpeg": median_mb_per_s(
                lambda: pydicom_decode("pylibjpeg"), nbytes, repeat),
            "pydicom_native": median_mb_per_s(
                lambda: pydicom_decode("pydicom"), nbytes, pydicom_repeat),
        },
        # What transcoding needs: interleaved native bytes (Planar Configuration 0).
        "decode_to_native_bytes_mb_per_s": {
            "numba": median_mb_per_s(
                lambda: rle_decode_frame(encoded, rows, cols, bits, spp).tobytes(), nbytes,
                repeat),
            "pylibjpeg_rle": median_mb_per_s(lambda: prle_array().tobytes(), nbytes, repeat),
        },
        "encode_mb_per_s": {
            "numba": median_mb_per_s(lambda: rle_encode_frame(arr, bits, spp), nbytes, repeat),
            "pylibjpeg_rle": median_mb_per_s(
                lambda: prle_encode_pixel_data(raw, rows=rows, columns=cols,
                                               samples_per_pixel=spp, bits_allocated=bits,
                                               byteorder="<"), nbytes, repeat),
            "pydicom_native": median_mb_per_s(
                lambda: encoder.encode(arr, encoding_plugin="pydicom", **pixel_kwargs),
                nbytes, pydicom_repeat),
        },
    }


def main() -> None:
    repeat = 5 if "--quick" in sys.argv else 31
    t0 = time.perf_counter()
    warm_up()
    warm_s = time.perf_counter() - t0
    out = {
        "bench": "rle",
        "git_sha": git_sha(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "numba_warm_up_s": round(warm_s, 3),
        "ct16_512x512": bench_frame(ct_frame(), repeat),
        "rgb8_512x512": bench_frame(rgb_frame(), repeat),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
