"""`pacs extract` and `pacs img2dcm` on pydicom's test files; results decoded independently."""

from __future__ import annotations

import argparse
import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, SecondaryCaptureImageStorage

from appliance.tools.anon_cli import register
from appliance.tools.images import voi_window_to_uint8
from tests.conftest import require_tool


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pacs")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def data(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path)


def test_extract_png_with_window(tmp_path: Path) -> None:
    out = tmp_path / "ct.png"
    assert run(["extract", str(data("CT_small.dcm")), str(out), "--window", "40", "400"]) == 0
    png = np.asarray(Image.open(out))
    ds = dcmread(data("CT_small.dcm"))
    assert png.shape == (ds.Rows, ds.Columns) and png.dtype == np.uint8
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert (png[hu <= 40 - 200] == 0).all() and (png[hu > 40 + 200] == 255).all()
    inside = (hu > -150) & (hu < 230)
    expected = np.clip(((hu - 39.5) / 399 + 0.5) * 255, 0, 255).round()
    assert np.abs(png[inside].astype(float) - expected[inside]).max() <= 1


def test_min_max_and_formats(tmp_path: Path) -> None:
    ds = dcmread(data("MR_small.dcm"))
    del ds.WindowCenter, ds.WindowWidth  # no window in the file: min..max
    src = tmp_path / "nowin.dcm"
    ds.save_as(src)
    assert run(["extract", str(src), str(tmp_path / "a.pgm")]) == 0
    raw = (tmp_path / "a.pgm").read_bytes()
    assert raw.startswith(b"P5\n64 64\n255\n") and len(raw) == len(b"P5\n64 64\n255\n") + 64 * 64
    pixels = np.frombuffer(raw[-64 * 64:], np.uint8)
    assert pixels.min() == 0 and pixels.max() == 255
    assert run(["extract", str(src), str(tmp_path / "a.raw")]) == 0
    stored = np.frombuffer((tmp_path / "a.raw").read_bytes(), "<i2").reshape(64, 64)
    assert (stored == dcmread(src).pixel_array).all()
    assert run(["extract", str(src), str(tmp_path / "a.jpg")]) == 0
    assert Image.open(tmp_path / "a.jpg").size == (64, 64)


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    ds = dcmread(data("MR_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "m1.dcm")
    assert run(["extract", str(data("MR_small.dcm")), str(tmp_path / "m2.png")]) == 0
    assert run(["extract", str(tmp_path / "m1.dcm"), str(tmp_path / "m1.png")]) == 0
    m1, m2 = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in ("m1", "m2"))
    assert (m1 == 255 - m2).all()


def test_frames_and_colour(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = data("SC_rgb_rle_2frame.dcm")
    arr = dcmread(src).pixel_array
    assert run(["extract", str(src), str(tmp_path / "f2.png"), "--frame", "2"]) == 0
    assert (np.asarray(Image.open(tmp_path / "f2.png")) == arr[1]).all()
    assert run(["extract", str(src), str(tmp_path / "f3.png"), "--frame", "3"]) == 2
    assert run(["extract", str(src), str(tmp_path / "c.pgm")]) == 2  # PGM is greyscale
    assert not (tmp_path / "f3.png").exists() and not (tmp_path / "c.pgm").exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 2


def test_window_function_reference() -> None:
    values = np.array([-1000.0, 0.0, 39.5, 40.0, 1000.0])
    assert voi_window_to_uint8(values, 40, 400).tolist() == [0, 102, 128, 128, 255]
    assert voi_window_to_uint8(np.array([5.0, 5.0]), None, None).tolist() == [0, 0]


def _jpeg(tmp_path: Path, mode: str, subsampling: int) -> Path:
    rng = np.random.default_rng(7)
    shape = (48, 64, 3) if mode == "RGB" else (48, 64)
    img = Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode)
    path = tmp_path / f"in_{mode}.jpg"
    img.save(path, format="JPEG", quality=90, subsampling=subsampling)
    return path


@pytest.mark.parametrize(("mode", "subsampling", "photometric"),
                         [("RGB", 1, "YBR_FULL_422"), ("RGB", 0, "YBR_FULL"),
                          ("L", 0, "MONOCHROME2")])
def test_img2dcm_jpeg_is_not_recompressed(tmp_path: Path, mode: str, subsampling: int,
                                          photometric: str) -> None:
    jpg = _jpeg(tmp_path, mode, subsampling)
    out = tmp_path / "out.dcm"
    assert run(["img2dcm", str(jpg), str(out), "--patient-id", "P1", "--patient-name",
                "DOE^JANE", "--study-uid", "1.2.3.4"]) == 0
    ds = dcmread(out)
    assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert ds.SOPClassUID == SecondaryCaptureImageStorage
    assert ds.PhotometricInterpretation == photometric
    assert ds.PatientID == "P1" and str(ds.PatientName) == "DOE^JANE"
    assert ds.StudyInstanceUID == "1.2.3.4" and ds.SeriesInstanceUID != "1.2.3.4"
    (frame,) = generate_frames(ds.PixelData, number_of_frames=1)
    assert frame.rstrip(b"\0") == jpg.read_bytes().rstrip(b"\0")  # bytes as given
    decoded = ds.pixel_array
    assert decoded.shape[:2] == (48, 64)
    reference = np.asarray(Image.open(jpg).convert(mode))
    assert np.abs(decoded.astype(int) - reference.astype(int)).mean() < 3


def test_img2dcm_png_is_uncompressed_and_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    assert run(["img2dcm", str(tmp_path / "a.png"), str(tmp_path / "a.dcm")]) == 0
    ds = dcmread(tmp_path / "a.dcm")
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.PhotometricInterpretation == "RGB" and (ds.pixel_array == pixels).all()


def test_img2dcm_dcmdump(tmp_path: Path) -> None:
    dcmdump = require_tool("dcmdump")
    out = tmp_path / "o.dcm"
    assert run(["img2dcm", str(_jpeg(tmp_path, "RGB", 2)), str(out)]) == 0
    proc = subprocess.run([dcmdump, str(out)], capture_output=True, text=True, timeout=30,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "=JPEGBaseline" in proc.stdout and "=SecondaryCaptureImageStorage" in proc.stdout
    assert "pixel item" in proc.stdout.lower() or "PixelSequence" in proc.stdout


def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "t.txt").write_text("not an image")
    assert run(["img2dcm", str(tmp_path / "missing.jpg"), str(tmp_path / "o.dcm")]) == 3
    assert run(["img2dcm", str(tmp_path / "t.txt"), str(tmp_path / "o.dcm")]) == 4
    assert run(["extract", str(tmp_path / "t.txt"), str(tmp_path / "o.png")]) == 4
    assert run(["extract", str(data("MR_truncated.dcm")), str(tmp_path / "o.png")]) == 4
    assert run(["extract", str(data("MR_small.dcm")), str(tmp_path / "o.gif")]) == 2
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="JPEG", progressive=True)
    (tmp_path / "p.jpg").write_bytes(buf.getvalue())
    assert run(["img2dcm", str(tmp_path / "p.jpg"), str(tmp_path / "o.dcm")]) == 4
    assert not list(tmp_path.glob("o.*")) and not list(tmp_path.glob(".o.*"))
    assert len(capsys.readouterr().err.strip().splitlines()) == 6
