"""`pacs db patients|studies|series|verify|compact` on an index built with IndexWriter over real
files in tmp_path (pydicom's bundled files copied to their layout paths)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.config import DuplicatePolicy
from appliance.tools import db_cli
from tests.unit.tools.conftest import bundled_file
from workers.header import IndexAttributes
from workers.index.reader import IndexReader
from workers.index.schema import InstanceRecord
from workers.index.writer import IndexWriter
from workers.layout import object_relpath

FILES = ("CT_small.dcm", "MR_small.dcm", "rtdose_1frame.dcm")


def record(data: Path, sop: str, series: str, study: str, patient: str, src: str,
           ) -> InstanceRecord:
    rel = object_relpath(study, series, sop)
    (data / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundled_file(src), data / rel)
    attrs = IndexAttributes(
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2", sop_instance_uid=sop,
        study_instance_uid=study, series_instance_uid=series, patient_id=patient,
        patient_name=f"Doe^{patient}", modality="CT", study_date="20240102",
        accession_number=f"A{study}",
    )
    return InstanceRecord.from_attributes(
        attrs, relpath=rel, size_bytes=(data / rel).stat().st_size,
        transfer_syntax_uid="1.2.840.10008.1.2.1", received_at=1700000000.0, calling_ae="SCU")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """P1: study 1 (series 1.1: 2 instances, 1.2: 1); P2: study 2 (series 2.1: 1)."""
    root = tmp_path / "data"
    records = [
        record(root, "1.1.1", "1.1", "1", "P1", FILES[0]),
        record(root, "1.1.2", "1.1", "1", "P1", FILES[1]),
        record(root, "1.2.1", "1.2", "1", "P1", FILES[2]),
        record(root, "2.1.1", "2.1", "2", "P2", FILES[0]),
    ]
    w = IndexWriter(root / "index", map_size=64 * 1024 * 1024, sync=False)
    w.apply_batch(records, DuplicatePolicy.KEEP)
    w.close()
    return root


def db(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="pacs")
    db_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["db", *argv])
    code: int = args.func(args)
    return code


def stats(data: Path) -> tuple[int, int, int, int, int]:
    r = IndexReader(data / "index")
    try:
        s = r.stats()
        return s.patients, s.studies, s.series, s.instances, s.stored_bytes
    finally:
        r.close()


# ----------------------------------------------------------------------------- browsing


def test_patients_table_and_json(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert db("patients", "--data", str(data)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["PatientID", "PatientName"]
    assert [ln.split()[0] for ln in lines[1:]] == ["P1", "P2"]
    assert lines[1].split()[-3:] == ["1", "2", "3"]  # studies, series, instances
    assert db("patients", "--data", str(data), "--patient-id", "P2", "--format", "json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["patient_id"], r["number_of_patient_related_instances"]) for r in rows] == [
        ("P2", 1)]


def test_studies_filters_and_csv(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert db("studies", "--data", str(data), "--format", "csv") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["StudyInstanceUID"], r["Series"], r["Instances"]) for r in rows] == [
        ("1", "2", "3"), ("2", "1", "1")]
    assert rows[0]["Modalities"] == "CT"
    assert db("studies", "--data", str(data), "--patient-id", "P2", "--format", "json") == 0
    found = json.loads(capsys.readouterr().out)
    assert [s["study_instance_uid"] for s in found] == ["2"]
    assert found[0]["modalities_in_study"] == ["CT"]
    assert db("studies", "--data", str(data), "--patient-id", "NOBODY") == 0
    assert capsys.readouterr().out.strip() == "(none)"


def test_series(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert db("series", "--data", str(data), "--study", "1", "--format", "json") == 0
    found = json.loads(capsys.readouterr().out)
    assert sorted((s["series_instance_uid"], s["number_of_series_related_instances"])
                  for s in found) == [("1.1", 2), ("1.2", 1)]
    assert db("series", "--data", str(data)) == 0
    out = capsys.readouterr().out.splitlines()
    assert sorted(ln.split()[0] for ln in out[1:]) == ["1.1", "1.2", "2.1"]


def test_no_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert db("studies", "--data", str(tmp_path)) == 3
    assert db("verify", "--data", str(tmp_path)) == 3
    assert db("compact", "--data", str(tmp_path)) == 3
    assert "no index at" in capsys.readouterr().err


# ------------------------------------------------------------------------------- verify


def test_verify_clean(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert db("verify", "--data", str(data)) == 0
    assert "4 instances indexed, 4 files stored, 0 problems" in capsys.readouterr().out


def damage(data: Path) -> tuple[str, str, str]:
    """Delete one file, truncate another, add an unindexed one; returns their relpaths."""
    missing = object_relpath("1", "1.2", "1.2.1")
    (data / missing).unlink()
    short = object_relpath("2", "2.1", "2.1.1")
    with open(data / short, "r+b") as fh:
        fh.truncate(1000)
    stray = object_relpath("9", "9.1", "9.1.1")
    (data / stray).parent.mkdir(parents=True)
    shutil.copyfile(bundled_file("MR_small.dcm"), data / stray)
    return missing, short, stray


def test_verify_reports_problems(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing, short, stray = damage(data)
    assert db("verify", "--data", str(data), "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["missing"] == [["1.2.1", missing]]
    assert report["wrong_size"][0][:2] == ["2.1.1", short]
    assert report["wrong_size"][0][3] == 1000
    assert report["unindexed"] == [stray]
    assert report["problems"] == 3
    assert (data / stray).exists() and stats(data)[3] == 4  # read-only without --repair


def test_verify_repair(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing, short, stray = damage(data)
    before = stats(data)
    # The size mismatch is reported, not repaired: exit 1 while it remains.
    assert db("verify", "--data", str(data), "--repair") == 1
    out = capsys.readouterr().out
    assert f"repaired: moved {stray}" in out and "1 unrepaired" in out
    assert not (data / stray).exists()
    assert (data / "orphans" / Path(stray).relative_to("objects")).is_file()
    after = stats(data)
    # Series 1.2 lost its only instance: the series goes, patient and study stay.
    assert after[:4] == (2, 2, 2, 3)
    assert after[4] == before[4] - (bundled_file(FILES[2]).stat().st_size)
    # Fix the truncated file: now everything is consistent.
    shutil.copyfile(bundled_file(FILES[0]), data / short)
    assert db("verify", "--data", str(data), "--repair") == 0


HOLD_INDEX = """
import sys, time
from workers.index.reader import IndexReader
r = IndexReader(sys.argv[1])
r.stats()
print("open", flush=True)
sys.stdin.readline()
"""


def test_repair_and_compact_refused_while_index_open(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing, _, _ = damage(data)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_INDEX, str(data / "index")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        assert db_cli.index_users(data / "index")
        assert db("verify", "--data", str(data), "--repair") == 1
        assert db("compact", "--data", str(data)) == 1
        assert "the index is open in another process" in capsys.readouterr().err
        assert stats(data)[3] == 4 and not (data / "orphans").exists()
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=30)
    assert not db_cli.index_users(data / "index")


# ------------------------------------------------------------------------------ compact


def test_compact_shrinks_and_keeps_content(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    w = IndexWriter(root / "index", map_size=256 * 1024 * 1024, sync=False)
    keep = record(root, "1.1.1", "1.1", "1", "P1", FILES[1])
    w.apply_batch([keep], DuplicatePolicy.KEEP)
    bulk = [
        InstanceRecord.from_attributes(
            IndexAttributes(sop_instance_uid=f"5.{i}", series_instance_uid=f"5.{i % 50}",
                            study_instance_uid=f"5.{i % 5}", patient_id=f"Q{i % 5}",
                            sop_class_uid="1.2.3", patient_name="X" * 60),
            relpath=f"objects/x/{i}.dcm", size_bytes=10, transfer_syntax_uid="1.2.840.10008.1.2",
            received_at=0.0, calling_ae="A")
        for i in range(5000)
    ]
    w.apply_batch(bulk, DuplicatePolicy.KEEP)
    for r in bulk:
        w.delete_instance(r.sop_instance_uid)
    w.close()
    before_stats = stats(root)
    before_bytes = (root / "index" / "data.mdb").stat().st_size
    assert db("compact", "--data", str(root)) == 0
    assert f"{before_bytes} -> " in capsys.readouterr().out
    after_bytes = (root / "index" / "data.mdb").stat().st_size
    assert after_bytes < before_bytes / 2
    assert stats(root) == before_stats == (1, 1, 1, 1, keep.size_bytes)
    assert sorted(p.name for p in root.iterdir()) == ["index", "objects"]
    # The compacted index is writable again and verifies clean.
    w = IndexWriter(root / "index", map_size=256 * 1024 * 1024, sync=False)
    w.apply_batch([record(root, "1.1.2", "1.1", "1", "P1", FILES[0])], DuplicatePolicy.KEEP)
    w.close()
    assert db("verify", "--data", str(root)) == 0
