"""The receivers the harness compares, by name (``--receivers`` filters on these names).

``appliance-<mode>`` (os, batch, fsync; ``--workers`` workers), ``appliance-rle`` (batch,
with ``[storage] compress_on_ingest = "rle"``: the disk table shows the bytes saved), ``storescp``,
``storescp-fork``, ``orthanc``, ``pynetdicom``; and for the scaling runs
``appliance-os-w<N>``.
"""

from __future__ import annotations

from pathlib import Path

from bench.receivers.appliance import ApplianceReceiver
from bench.receivers.base import Receiver, ReceiverError
from bench.receivers.dcmtk import StorescpReceiver
from bench.receivers.orthanc import OrthancReceiver, locate
from bench.receivers.pynetdicom_scp import PynetdicomReceiver

MODES = ("os", "batch", "fsync")
RLE = "appliance-rle"  # batch durability, RLE Lossless on ingest (workers/compress.py)
BASELINE = "storescp-fork"  # the ratios' denominators
ORTHANC = "orthanc"
SCALING_WORKERS = (1, 2, 4)


def main_names() -> list[str]:
    """Every receiver of the side-by-side table, in the order the runs alternate."""
    return [*(f"appliance-{m}" for m in MODES), RLE, "storescp", BASELINE, ORTHANC,
            "pynetdicom"]


def scaling_names() -> list[str]:
    return [f"appliance-os-w{n}" for n in SCALING_WORKERS]


def build(name: str, *, workers: int, src: Path | None, install: bool) -> Receiver:
    """The receiver called ``name`` (``ValueError`` for an unknown name)."""
    if name.startswith("appliance-os-w"):
        return ApplianceReceiver(name, "os", int(name.removeprefix("appliance-os-w")), src)
    if name == RLE:
        return ApplianceReceiver(name, "batch", workers, src, compress="rle")
    if name.startswith("appliance-") and name.removeprefix("appliance-") in MODES:
        return ApplianceReceiver(name, name.removeprefix("appliance-"), workers, src)
    if name in ("storescp", BASELINE):
        return StorescpReceiver(name, fork=name == BASELINE)
    if name == ORTHANC:
        binary, why = locate(install=install)
        return OrthancReceiver(name, binary, why)
    if name == "pynetdicom":
        return PynetdicomReceiver(name)
    raise ValueError(f"unknown receiver {name!r}; known: {', '.join(main_names())}, "
                     f"{', '.join(scaling_names())}")


__all__ = [
    "BASELINE", "ORTHANC", "Receiver", "ReceiverError", "build", "main_names", "scaling_names",
]
