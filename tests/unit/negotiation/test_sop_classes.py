"""The generated SOP class / transfer syntax module matches the generator and pydicom."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from appliance.negotiation import sop_classes

ROOT = Path(__file__).resolve().parents[3]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_sop_classes", ROOT / "tools" / "gen_sop_classes.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_module_equals_generator_output() -> None:
    # In a fresh interpreter: importing pynetdicom (other tests do) adds UIDs to pydicom's
    # registry in place, which would make the output depend on test order.
    committed = (ROOT / "appliance" / "negotiation" / "sop_classes.py").read_text(encoding="utf-8")
    gen = str(ROOT / "tools" / "gen_sop_classes.py")
    code = (
        "import importlib.util, sys;"
        f"spec = importlib.util.spec_from_file_location('g', {gen!r});"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m);"
        "sys.stdout.write(m.render())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert committed == out.stdout, "rerun tools/gen_sop_classes.py"


@pytest.mark.parametrize(
    "uid",
    [
        "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
        "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
        "1.2.840.10008.5.1.4.1.1.481.5",  # RT Plan Storage
        "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF Storage
        "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
        "1.2.840.10008.5.1.4.1.1.6",  # Ultrasound Image Storage (retired, kept)
    ],
)
def test_known_storage_classes_present(uid: str) -> None:
    assert uid in sop_classes.STORAGE_SOP_CLASSES


@pytest.mark.parametrize(
    "uid",
    [
        "1.2.840.10008.1.1",  # Verification
        "1.2.840.10008.1.20.1",  # Storage Commitment Push Model
        "1.2.840.10008.1.3.10",  # Media Storage Directory Storage (media only)
        "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root Q/R FIND
    ],
)
def test_non_storage_classes_absent(uid: str) -> None:
    assert uid not in sop_classes.STORAGE_SOP_CLASSES


def test_transfer_syntax_groups() -> None:
    assert sop_classes.NATIVE_TRANSFER_SYNTAXES == (
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.2",
    )
    enc = set(sop_classes.ENCAPSULATED_TRANSFER_SYNTAXES)
    for uid in (
        "1.2.840.10008.1.2.4.50",  # JPEG Baseline
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
        "1.2.840.10008.1.2.4.93",  # JPEG 2000 Part 2
        "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
        "1.2.840.10008.1.2.5",  # RLE
        "1.2.840.10008.1.2.4.100",  # MPEG2
        "1.2.840.10008.1.2.4.102",  # MPEG-4 AVC
        "1.2.840.10008.1.2.4.107",  # HEVC
    ):
        assert uid in enc
    assert "1.2.840.10008.1.2.4.94" in sop_classes.REFERENCED_TRANSFER_SYNTAXES  # JPIP
    groups = [
        set(sop_classes.NATIVE_TRANSFER_SYNTAXES),
        enc,
        set(sop_classes.REFERENCED_TRANSFER_SYNTAXES),
    ]
    assert sum(len(g) for g in groups) == len(sop_classes.ALL_TRANSFER_SYNTAXES)  # disjoint
    for excluded in ("1.2.840.10008.1.2.6.1", "1.2.840.10008.1.2.7.1", "1.2.840.10008.1.20"):
        assert excluded not in sop_classes.ALL_TRANSFER_SYNTAXES


def test_native_syntaxes_from_pydicom_are_the_ones_the_codec_knows() -> None:
    """The generated list (pydicom's registry) and the UIDs' home in appliance.dimse agree."""
    from appliance.dimse.transfer_syntax import NATIVE_ENCODINGS

    assert set(sop_classes.NATIVE_TRANSFER_SYNTAXES) == set(NATIVE_ENCODINGS)
    assert sop_classes.EXPLICIT_VR_LITTLE_ENDIAN == sop_classes.NATIVE_TRANSFER_SYNTAXES[0]
