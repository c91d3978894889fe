"""numba kernels: @njit(cache=True) functions on numpy arrays (no pydicom, no I/O).

Each kernel module has a ``warm_up()`` that compiles its kernels on tiny inputs; processes call
``warm_up()`` here after fork so that no request pays compile time (DESIGN "numba").
"""

from __future__ import annotations

import importlib
import time

# Kernel modules, each with a module-level ``warm_up() -> None``.
KERNEL_MODULES: tuple[str, ...] = ("workers.kernels.rle", "workers.kernels.walk",
                                  "workers.kernels.lengths", "workers.kernels.pixels")
# What a worker runs: the header walk (every C-STORE) and RLE (retrieve transcoding). The
# pixel kernels serve the command-line tools.
WORKER_KERNELS: tuple[str, ...] = ("workers.kernels.walk", "workers.kernels.lengths",
                                  "workers.kernels.rle")


def warm_up(modules: tuple[str, ...] = KERNEL_MODULES) -> dict[str, float]:
    """Compile (or load from numba's cache) the kernels; seconds spent per module.

    The first compile of everything takes seconds (15 s under load on 2 cores); numba's
    on-disk cache makes later processes load in milliseconds, so `make test` and `make run`
    warm it once before any appliance starts."""
    spent: dict[str, float] = {}
    for name in modules:
        start = time.perf_counter()
        importlib.import_module(name).warm_up()
        spent[name] = time.perf_counter() - start
    return spent
