"""`pacs dump` and `pacs info` on pydicom's bundled files."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.dataelem import RawDataElement

from appliance.tools.dcmfile import read_dicom
from appliance.tools.dump import DEFER_BYTES, Dumper, DumpOptions
from appliance.tools.info import describe
from tests.unit.tools.conftest import bundled_file

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _dump(pacs: Callable[..., int], capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert pacs("dump", *argv) == 0
    return capsys.readouterr().out


def test_dump_lines_like_dcmdump(
    pacs: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    out = _dump(pacs, capsys, str(bundled_file("CT_small.dcm")))
    lines = out.splitlines()
    assert lines[0] == "# Dicom-File-Format"
    assert "# Dicom-Meta-Information-Header" in lines
    assert any(line.startswith("(0002,0010) UI =ExplicitVRLittleEndian") for line in lines)
    patient = next(line for line in lines if line.startswith("(0010,0010)"))
    assert patient.startswith("(0010,0010) PN [CompressedSamples^CT1]")
    assert patient.endswith("#  22, 1 PatientName")
    pixel = next(line for line in lines if line.startswith("(7fe0,0010)"))
    assert pixel.startswith("(7fe0,0010) OW ") and "..." in pixel
    assert pixel.endswith("# 32768, 1 PixelData")
    rows = next(line for line in lines if line.startswith("(0028,0010)"))
    assert rows.split("#")[0].split() == ["(0028,0010)", "US", "128"]


def test_dump_nested_sequences_indented(
    pacs: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    out = _dump(pacs, capsys, str(bundled_file("rtplan.dcm")))
    assert "(300a,0010) SQ (Sequence with explicit length #=2)" in out
    assert "\n  (fffe,e000) na (Item with explicit length #=7)" in out
    assert "\n    (300a,0012) IS [1]" in out
    assert "\n        (300a,0084) DS [1.02754010000000]" in out  # two levels down


def test_dump_undefined_length_delimiters(
    pacs: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    out = _dump(pacs, capsys, str(bundled_file("JPEG2000.dcm")))
    assert "(PixelSequence, encapsulated)" in out
    assert "# u/l, 1 PixelData" in out


def test_dump_does_not_load_large_values() -> None:
    path = bundled_file("CT_small.dcm")
    ds = read_dicom(path, defer_size=DEFER_BYTES)
    lines = list(Dumper(path, DumpOptions()).file_lines(ds))
    raw = ds.get_item(0x7FE00010, keep_deferred=True)
    assert isinstance(raw, RawDataElement) and raw.value is None  # still on disk
    pixel = next(line for line in lines if line.startswith("(7fe0,0010)"))
    assert pixel.startswith("(7fe0,0010) OW 00af\\00b4")  # head read straight from the file


def test_dump_tags_filter_at_any_depth(
    pacs: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    out = _dump(pacs, capsys, "--tags", "PatientName", "-t", "(300a,0084)",
                str(bundled_file("rtplan.dcm")))
    lines = out.splitlines()
    assert len(lines) == 2, out
    assert lines[0].startswith("(0010,0010) PN [Last^First^mid^pre]")
    assert lines[1].startswith("(300a,0070)[0].(300c,0004)[0].(300a,0084) DS [1.02754010000000]")


def test_dump_json(pacs: Callable[..., int], capsys: pytest.CaptureFixture[str]) -> None:
    obj = json.loads(_dump(pacs, capsys, "--format", "json", str(bundled_file("CT_small.dcm"))))
    assert obj["00100020"] == {"vr": "LO", "Value": ["1CT1"]}
    uri = obj["7FE00010"]["BulkDataURI"]  # not loaded: a reference into the file
    assert uri.startswith("file://") and uri.endswith("&length=32768")


def test_dump_without_preamble(
    pacs: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    out = _dump(pacs, capsys, str(bundled_file("ExplVR_BigEndNoMeta.dcm")))
    assert out.startswith("# Dicom-Data-Set (no preamble)")
    assert "Explicit VR Big Endian" in out
    assert "(0008,0060) CS [RTPLAN]" in out


def test_dump_recursive_summary(
    tmp_path: Path, pacs: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sub").mkdir()
    shutil.copy(bundled_file("CT_small.dcm"), tmp_path / "ct.dcm")
    shutil.copy(bundled_file("MR_small.dcm"), tmp_path / "sub" / "mr")
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    assert pacs("dump", "--recursive", "--summary", str(tmp_path)) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == f"pacs dump: skipped {tmp_path / 'notes.txt'}: not DICOM"
    lines = captured.out.splitlines()
    assert lines[0].split("\t")[:3] == ["path", "sop_class", "modality"]
    rows = [line.split("\t") for line in lines[1:]]
    assert [Path(r[0]).name for r in rows] == ["ct.dcm", "mr"]
    assert rows[0][1:4] == ["CT Image Storage", "CT", "1CT1"]
    assert rows[1][2] == "MR" and rows[1][7] == "Explicit VR Little Endian"
    out = _dump(pacs, capsys, "-r", "-s", "--format", "json", str(tmp_path))
    assert [json.loads(line)["modality"] for line in out.splitlines()] == ["CT", "MR"]


def test_info_summary() -> None:
    info = describe(bundled_file("CT_small.dcm"))
    assert info["patient"]["PatientID"] == "1CT1"
    assert info["sop"]["class_name"] == "CT Image Storage"
    pixels = info["pixels"]
    assert (pixels["rows"], pixels["columns"], pixels["frames"]) == (128, 128, 1)
    assert pixels["pixel_data_bytes"] == pixels["expected_bytes"] == 32768
    assert pixels["compressed"] is False and pixels["pixel_representation"] == "signed"


def test_info_compressed_multiframe() -> None:
    info = describe(bundled_file("SC_rgb_rle_2frame.dcm"))
    pixels = info["pixels"]
    assert pixels["frames"] == 2 and pixels["compressed"] is True
    assert pixels["fragments"] == 2
    assert pixels["photometric_interpretation"] == "RGB"
    assert info["sop"]["transfer_syntax"] == "RLE Lossless"


def test_info_text(pacs: Callable[..., int], capsys: pytest.CaptureFixture[str]) -> None:
    assert pacs("info", str(bundled_file("MR_small.dcm"))) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("SOP Class     MR Image Storage")
    assert "Pixels        64 x 64, 1 frame" in out
    assert "Pixel Data    8.0 KiB, uncompressed" in out
    assert len(out.splitlines()) <= 24  # one screen
