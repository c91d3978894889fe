"""numba kernels: @njit(cache=True) functions on numpy arrays (no pydicom, no I/O).

Each kernel module has a ``warm_up()`` that compiles its kernels on tiny inputs; processes call
``warm_up()`` here after fork so that no request pays compile time (DESIGN "numba").
"""

from __future__ import annotations

import importlib
import time

# Kernel modules, each with a module-level ``warm_up() -> None``.
KERNEL_MODULES: tuple[str, ...] = ("workers.kernels.rle",)


def warm_up() -> dict[str, float]:
    """Compile (or load from numba's cache) every kernel; seconds spent per module."""
    spent: dict[str, float] = {}
    for name in KERNEL_MODULES:
        start = time.perf_counter()
        importlib.import_module(name).warm_up()
        spent[name] = time.perf_counter() - start
    return spent
