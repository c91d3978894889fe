"""`pacs convert`: transfer syntax conversion of pydicom's bundled files through the transcoder.

Pixel equality is checked against pydicom's own decoding of the input; the RLE we write is
checked by dcmtk (dcmdump parses it, dcmdrle decodes it to the same pixels).
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from appliance.tools import convert_cli
from appliance.tools.convert_cli import SHORT_NAMES, rewrite_file_meta
from tests.conftest import require_tool
from tests.unit.tools.conftest import bundled_file

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
RLE = "1.2.840.10008.1.2.5"
BIG_ENDIAN = "1.2.840.10008.1.2.2"


def convert(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="pacs")
    convert_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["convert", *argv])
    code: int = args.func(args)
    return code


def pixels(path: Path) -> np.ndarray:
    return dcmread(path).pixel_array


def test_rle_to_explicit_equal_pixels_and_meta_kept(tmp_path: Path) -> None:
    src = bundled_file("MR_small_RLE.dcm")
    out = tmp_path / "out.dcm"
    assert convert(str(src), str(out), "--ts", "explicit") == 0
    before, after = dcmread(src), dcmread(out)
    assert after.file_meta.TransferSyntaxUID == EXPLICIT
    # Every other File Meta element is carried over unchanged.
    for elem in before.file_meta:
        if elem.tag not in (0x00020000, 0x00020010):
            assert after.file_meta[elem.tag].value == elem.value, elem.tag
    assert np.array_equal(after.pixel_array, before.pixel_array)
    assert after.SOPInstanceUID == before.SOPInstanceUID


@pytest.mark.parametrize("name", ["MR_small.dcm", "SC_rgb_small_odd.dcm", "rtdose_1frame.dcm"])
def test_explicit_rle_explicit_round_trip(tmp_path: Path, name: str) -> None:
    src = bundled_file(name)
    rle, back = tmp_path / "rle.dcm", tmp_path / "back.dcm"
    assert convert(str(src), str(rle), "--ts", "rle") == 0
    assert dcmread(rle).file_meta.TransferSyntaxUID == RLE
    assert convert(str(rle), str(back), "--ts", EXPLICIT) == 0
    original = pixels(src)
    assert np.array_equal(pixels(rle), original)
    assert np.array_equal(pixels(back), original)


@pytest.mark.parametrize("target", ["implicit", "deflate", "ExplicitVRLittleEndian"])
def test_native_targets(tmp_path: Path, target: str) -> None:
    src = bundled_file("CT_small.dcm")
    out = tmp_path / "out.dcm"
    assert convert(str(src), str(out), "--ts", target) == 0
    ds = dcmread(out)
    assert ds.file_meta.TransferSyntaxUID == convert_cli.target_syntax(target)
    assert np.array_equal(ds.pixel_array, pixels(src))
    assert ds.PatientName == dcmread(src).PatientName


@pytest.mark.parametrize("name", ["SC_rgb_jpeg_dcmtk.dcm", "JPEG2000.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm"])
def test_encapsulated_to_explicit_equals_pydicom_decoding(tmp_path: Path, name: str) -> None:
    src = bundled_file(name)
    out = tmp_path / "out.dcm"
    assert convert(str(src), str(out), "--ts", "explicit") == 0
    ds = dcmread(out)
    assert ds.file_meta.TransferSyntaxUID == EXPLICIT
    assert np.array_equal(ds.pixel_array, pixels(src))  # pydicom's decoding (YBR -> RGB)


def test_jpeg_baseline_marked_lossy(tmp_path: Path) -> None:
    out = tmp_path / "out.dcm"
    assert convert(str(bundled_file("SC_rgb_jpeg_dcmtk.dcm")), str(out), "--ts", "explicit") == 0
    ds = dcmread(out)
    assert ds.PhotometricInterpretation == "RGB"
    assert ds.LossyImageCompression == "01"


def test_bare_data_set_gets_file_meta(tmp_path: Path) -> None:
    src = bundled_file("ExplVR_LitEndNoMeta.dcm")
    out = tmp_path / "out.dcm"
    assert convert(str(src), str(out), "--ts", "implicit") == 0
    ds = dcmread(out)
    assert ds.file_meta.TransferSyntaxUID == IMPLICIT
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    original = dcmread(src, force=True)
    assert len(ds) == len(original)
    for elem in original:
        if elem.VR != "SQ":
            assert ds[elem.tag].value == elem.value, elem.tag


def test_dcmtk_reads_our_rle(tmp_path: Path) -> None:
    dcmdump = require_tool("dcmdump")
    dcmdrle = require_tool("dcmdrle")
    src = bundled_file("MR_small.dcm")
    rle, decoded = tmp_path / "rle.dcm", tmp_path / "decoded.dcm"
    assert convert(str(src), str(rle), "--ts", "rle") == 0
    dump = subprocess.run([dcmdump, str(rle)], check=False, capture_output=True, text=True,
                          timeout=60)
    assert dump.returncode == 0, dump.stderr
    assert "RLE Lossless" in dump.stdout
    assert "PixelSequence" in dump.stdout
    done = subprocess.run([dcmdrle, str(rle), str(decoded)], check=False, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert np.array_equal(pixels(decoded), pixels(src))


def test_list_syntaxes(capsys: pytest.CaptureFixture[str]) -> None:
    assert convert("--list-syntaxes") == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines[RLE][1:4] == ["yes", "yes", "rle"]
    assert lines[BIG_ENDIAN][1:3] == ["yes", "no"]
    assert lines["1.2.840.10008.1.2.4.100"][1:3] == ["no", "no"]  # MPEG2


def test_short_names_are_writable() -> None:
    from workers.transcode import can_encode

    assert all(can_encode(uid) for uid in SHORT_NAMES.values())
    # "big" would be offered only if big endian became writable.
    assert not can_encode(BIG_ENDIAN)


def test_errors_and_no_partial_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.dcm"
    assert convert(str(tmp_path / "absent.dcm"), str(out), "--ts", "rle") == 3
    text = tmp_path / "notes.txt"
    text.write_text("hello, not DICOM at all\n" * 10)
    assert convert(str(text), str(out), "--ts", "rle") == 4
    # A syntax we can read but not write.
    assert convert(str(bundled_file("MR_small.dcm")), str(out), "--ts", BIG_ENDIAN) == 2
    # 12-bit JPEG Extended: no decoder here -> the conversion fails, nothing is written.
    assert convert(str(bundled_file("JPEG-lossy.dcm")), str(out), "--ts", "explicit") == 1
    assert convert(str(bundled_file("MR_small.dcm")), str(tmp_path / "no" / "x.dcm"),
                   "--ts", "rle") == 5
    assert convert(str(bundled_file("MR_small.dcm")), str(out)) == 2
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [text]
    err = capsys.readouterr().err
    assert "pacs convert:" in err and "absent.dcm: no such file" in err
    with pytest.raises(SystemExit) as exc:
        convert("a.dcm", "b.dcm", "--ts", "1.2.3.4")
    assert exc.value.code == 2


def test_rewrite_file_meta_adds_missing_syntax() -> None:
    data = bundled_file("meta_missing_tsyntax.dcm").read_bytes()
    assert b"\x02\x00\x10\x00" not in data[132:400]  # no (0002,0010) in the input
    head = rewrite_file_meta(data[convert_cli.meta_start(data):], RLE)  # stops at group 0008
    assert head[128:132] == b"DICM"
    group_length = int.from_bytes(head[140:144], "little")
    assert len(head) == 144 + group_length
    assert b"1.2.840.10008.1.2.5\x00" in head
