"""`pacs ingest` of pydicom's whole test-file directory into a fresh data dir, then again.

The directory mixes Part 10 files, raw datasets without File Meta, DICOMDIRs, damaged files and
plain non-DICOM files (README, JSON, dumps, gzip, an ICC profile). What the test pins:
  - the summary accounts for every file exactly once (stored, duplicates, not_dicom, failed, and
    the optional skipped for DICOM files that hold no storable instance, like DICOMDIR);
  - obvious non-DICOM files are ``not_dicom``, files with the Part 10 "DICM" prefix never are;
  - the exit code is non-zero exactly when something failed, and each failure names its file;
  - every good Part 10 instance is indexed, its dataset bytes stored unchanged;
  - the index statistics match the objects on disk;
  - a second run is idempotent: everything is a duplicate and nothing changes.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.filereader import _read_file_meta_info, read_preamble

from tests.conftest import PYTHON, REPO, index_get_many, index_stats, run_tool
from tests.fixtures.make_datasets import sha256_of_dataset

pytestmark = pytest.mark.interop

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
# Deliberately truncated test files: an ingest may store or refuse them, but must account for them.
DAMAGED = {"MR_truncated.dcm", "rtplan_truncated.dcm"}
_TEXTUAL_SUFFIXES = {".txt", ".json", ".dump", ".gz", ".icc"}


def ingest(data: Path) -> tuple[int, dict[str, Any], str]:
    cp = run_tool(
        [PYTHON, "-m", "appliance", "ingest", str(TEST_FILES), "--data", str(data),
         "--json", "--no-progress"],
        timeout_s=300,
        cwd=REPO,
    )  # fmt: skip
    lines = [ln for ln in cp.stdout.splitlines() if ln.strip().startswith("{")]
    assert lines, f"no JSON summary (rc={cp.returncode})\n{cp.stdout[-3000:]}\n{cp.stderr[-3000:]}"
    summary: dict[str, Any] = json.loads(lines[-1])
    return cp.returncode, summary, cp.stderr


def has_dicm_prefix(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


def obviously_not_dicom(path: Path) -> bool:
    return not has_dicm_prefix(path) and (
        path.suffix.lower() in _TEXTUAL_SUFFIXES or path.name.upper().startswith("README")
    )


def original_dataset_sha256(path: Path) -> str:
    """Hash of the dataset bytes after the File Meta group, located by pydicom's own reader."""
    with open(path, "rb") as fh:
        read_preamble(fh, False)
        _read_file_meta_info(fh)
        return hashlib.sha256(fh.read()).hexdigest()


def good_instances(files: list[Path]) -> dict[str, list[Path]]:
    """SOP Instance UID -> the valid Part 10 files carrying it (several for re-encodings)."""
    out: dict[str, list[Path]] = defaultdict(list)
    for path in files:
        if path.name in DAMAGED:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path)
                if "TransferSyntaxUID" not in ds.file_meta:
                    continue
                if not all(k in ds for k in _REQUIRED):
                    continue
        except Exception:
            continue
        out[str(ds.SOPInstanceUID)].append(path)
    return dict(out)


def file_ts(path: Path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def objects_on_disk(data: Path) -> tuple[int, int]:
    files = [p for p in (data / "objects").rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def test_ingest_pydicom_test_files_then_again(tmp_path: Path) -> None:
    files = sorted(p for p in TEST_FILES.rglob("*") if p.is_file())
    data = tmp_path / "data"
    rc, first, stderr = ingest(data)

    # Every file is accounted for exactly once.
    # "skipped" (DICOM but no storable instance, e.g. DICOMDIR) is optional in the summary.
    kinds = ("stored", "duplicates", "not_dicom", "failed", "skipped")
    counts = {k: first.get(k, 0) for k in kinds}
    assert sum(counts.values()) == len(files), (counts, len(files))
    assert (rc != 0) == (first["failed"] > 0), (rc, first, stderr[-2000:])
    failures = first["failures"]
    assert len(failures) == first["failed"], failures
    failed_paths = {Path(f["path"]).resolve() for f in failures}
    assert all(f.get("reason") for f in failures), failures
    assert failed_paths <= {p.resolve() for p in files}, failed_paths

    # Classification bounds.
    obvious = [p for p in files if obviously_not_dicom(p)]
    no_prefix = [p for p in files if not has_dicm_prefix(p)]
    assert len(obvious) >= 8
    assert len(obvious) <= first["not_dicom"] <= len(no_prefix), (
        first["not_dicom"], [p.name for p in obvious], [p.name for p in no_prefix]
    )  # fmt: skip

    # Every good instance is stored; a unique one with exactly its original dataset bytes.
    good = good_instances(files)
    assert len(good) >= 100
    wrongly_failed = sorted(str(p) for paths in good.values() for p in paths
                            if p.resolve() in failed_paths)  # fmt: skip
    assert not wrongly_failed, [f for f in failures if f["path"] in wrongly_failed]
    records = index_get_many(data, list(good))
    problems: list[str] = []
    for uid, paths in good.items():
        rec = records[uid]
        if rec is None:
            problems.append(f"{paths[0].name}: {uid} not indexed")
            continue
        stored = data / rec.relpath
        if not stored.is_file():
            problems.append(f"{paths[0].name}: indexed at {rec.relpath}, no such file")
            continue
        if stored.stat().st_size != rec.size_bytes:
            problems.append(
                f"{paths[0].name}: index says {rec.size_bytes} bytes, file has "
                f"{stored.stat().st_size} (files with this UID: {[p.name for p in paths]})"
            )
            continue
        stored_ts = file_ts(stored)
        original_ts = {file_ts(p) for p in paths}
        if stored_ts not in original_ts or str(rec.transfer_syntax_uid) != stored_ts:
            problems.append(
                f"{paths[0].name}: stored file TS {stored_ts}, index TS "
                f"{rec.transfer_syntax_uid}, originals {sorted(original_ts)}"
            )
        if len(paths) == 1 and sha256_of_dataset(stored)[0] != original_dataset_sha256(paths[0]):
            problems.append(f"{paths[0].name}: stored dataset bytes differ from the file's")
    assert not problems, "\n".join(problems)

    # Statistics agree with the summary and with what is on disk.
    stats = index_stats(data)
    n_objects, n_bytes = objects_on_disk(data)
    assert stats["instances"] == first["stored"] == n_objects, (stats, first, n_objects)
    assert stats["stored_bytes"] == n_bytes
    assert all(1 <= stats[k] <= stats["instances"] for k in ("patients", "studies", "series"))

    # Second run: idempotent.
    rc2, second, stderr2 = ingest(data)
    assert second["stored"] == 0, second
    assert second["duplicates"] == first["stored"] + first["duplicates"], (first, second)
    assert second["not_dicom"] == first["not_dicom"], (first, second)
    assert second["failed"] == first["failed"], (first, second)
    assert second.get("skipped", 0) == first.get("skipped", 0), (first, second)
    assert (rc2 != 0) == (second["failed"] > 0), (rc2, second, stderr2[-2000:])
    assert index_stats(data) == stats
    assert objects_on_disk(data) == (n_objects, n_bytes)
