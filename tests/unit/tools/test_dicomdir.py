"""`pacs dir create|list|verify|update` on pydicom's test files; the DICOMDIR read by DCMTK."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from appliance.tools.anon_cli import register
from tests.conftest import require_tool

FILES = ["CT_small.dcm", "MR_small.dcm", "JPEG-lossy.dcm", "liver_1frame.dcm"]


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pacs")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def data(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path)


@pytest.fixture
def fileset(tmp_path: Path) -> Path:
    root = tmp_path / "cd"
    (root / "sub dir").mkdir(parents=True)
    for i, name in enumerate(FILES):
        shutil.copy(data(name), (root / "sub dir" if i % 2 else root) / name.lower())
    assert run(["dir", "create", str(root)]) == 0
    return root


def test_create_writes_conformant_fileset(fileset: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    files = sorted(p.relative_to(fileset) for p in fileset.rglob("*") if p.is_file())
    assert Path("DICOMDIR") in files and len(files) == len(FILES) + 1
    for rel in files:  # PS3.10 8.2: upper-case components of at most 8 characters
        assert all(len(c) <= 8 and c == c.upper() for c in rel.parts), rel
    capsys.readouterr()
    assert run(["dir", "list", str(fileset / "DICOMDIR")]) == 0
    out = capsys.readouterr().out
    assert out.count("PATIENT ") == 4 and out.count("IMAGE #") == 4
    assert "SERIES CT" in out and "PT000000/ST000000/SE000000/IM000000" in out
    assert run(["dir", "verify", str(fileset / "DICOMDIR")]) == 0


def test_dcmtk_reads_the_dicomdir(fileset: Path) -> None:
    dcmdump = require_tool("dcmdump")
    proc = subprocess.run([dcmdump, str(fileset / "DICOMDIR")], capture_output=True,
                          text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    for record in ("PATIENT", "STUDY", "SERIES", "IMAGE"):
        assert f"CS [{record}]" in proc.stdout
    assert "=MediaStorageDirectoryStorage" in proc.stdout
    assert proc.stdout.count("ReferencedFileID") == len(FILES)


def test_verify_finds_missing_mismatched_and_duplicate(
    fileset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = sorted(fileset.glob("PT*/ST*/SE*/IM*"))
    images[0].unlink()
    ds = dcmread(images[1])
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.save_as(images[1])
    dicomdir = dcmread(fileset / "DICOMDIR")
    leaves = [r for r in dicomdir.DirectoryRecordSequence if r.DirectoryRecordType == "IMAGE"]
    leaves[3].ReferencedSOPInstanceUIDInFile = leaves[2].ReferencedSOPInstanceUIDInFile
    dicomdir.save_as(fileset / "DICOMDIR")
    capsys.readouterr()
    assert run(["dir", "verify", str(fileset / "DICOMDIR")]) == 1
    out = capsys.readouterr().out
    assert "referenced file is missing" in out
    assert "SeriesInstanceUID" in out and "'1.2.3.4'" in out
    assert "referenced by 2 records" in out


def test_update_adds_files(fileset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["dir", "update", str(fileset / "DICOMDIR"), str(data("examples_overlay.dcm")),
                str(data("SC_rgb_small_odd.dcm"))]) == 0
    capsys.readouterr()
    assert run(["dir", "list", str(fileset / "DICOMDIR")]) == 0
    out = capsys.readouterr().out
    assert out.count("IMAGE #") == len(FILES) + 2 and "SERIES OT" in out
    # an instance pydicom cannot record (empty Type 1 Instance Number) is skipped, exit 3
    assert run(["dir", "update", str(fileset / "DICOMDIR"), str(data("rtdose.dcm"))]) == 4
    assert run(["dir", "verify", str(fileset / "DICOMDIR")]) == 0


def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["dir", "list", str(tmp_path / "nope")]) == 3
    (tmp_path / "DICOMDIR").write_text("not dicom")
    assert run(["dir", "verify", str(tmp_path / "DICOMDIR")]) == 4
    assert run(["dir", "create", str(tmp_path)]) == 2  # DICOMDIR already there
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    assert run(["dir", "create", str(empty)]) == 4
    assert not (empty / "DICOMDIR").exists() and (empty / "a.txt").exists()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("pacs dir ") for line in lines)
