"""`pacs anonymize`: PS3.15 Annex E Basic Profile on pydicom's test files, through the parser."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_description, dictionary_VR
from pydicom.dataset import Dataset

from appliance.tools.anon_cli import register
from appliance.tools.anonymize import Anonymizer, Settings, UidMap, shift_date, verify
from appliance.tools.deid_profile import ROWS, Option, action_for
from tests.conftest import require_tool

FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtdose.dcm", "test-SR.dcm",
         "examples_overlay.dcm", "JPEG-lossy.dcm", "waveform_ecg.dcm"]


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
def inputs(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    for name in FILES:
        shutil.copy(data(name), src / name)
    return src


def _norm(text: str) -> str:
    return re.sub(r"[^a-z]", "", text.lower().replace("(trial)", ""))


def test_table_rows_match_the_data_dictionary() -> None:
    # Transcription check: every tag of Table E.1-1 has the standard's name for it.
    assert len(ROWS) == 456
    for tag, row in ROWS.items():
        assert _norm(row.name) == _norm(dictionary_description(tag)), hex(tag)
    assert ROWS[0x00100010].basic == "Z" and ROWS[0x00080018].basic == "U"
    assert ROWS[0x00081140].basic == "X/Z/U*"
    assert action_for(ROWS[0x00101010], frozenset({Option.RETAIN_PATIENT_CHARACTERISTICS})) == "K"
    assert action_for(ROWS[0x00080020], frozenset({Option.RETAIN_MODIFIED_DATES})) == "C"
    assert action_for(ROWS[0x00081120], frozenset({Option.RETAIN_UIDS})) == "X"


_VALUES = {"DA": "20010203", "DT": "20010203040506", "TM": "040506", "UI": "1.2.3.4.5",
           "AS": "042Y", "IS": "7", "DS": "1.5", "US": 7, "SS": 7, "UL": 7, "SL": 7,
           "FL": 1.5, "FD": 1.5, "CS": "SECRET"}


def _planted() -> Dataset:
    """A data set holding every non-sequence attribute of Table E.1-1 with a value."""
    ds = dcmread(data("CT_small.dcm"))
    for tag in ROWS:
        vr = dictionary_VR(tag)
        if vr in ("SQ", "OB", "OW", "UN", "OB or OW", "US or SS", "AT", "OD", "OF", "OL"):
            continue
        ds.add_new(tag, vr, _VALUES.get(vr, "Secret^Ident"))
    return ds


def test_every_table_attribute_gets_its_action() -> None:
    ds = _planted()
    original = {tag: ds[tag].value for tag in ROWS if tag in ds}
    assert len(original) > 380
    uids = UidMap()
    Anonymizer(Settings(), uids).apply(ds)
    for tag, old in original.items():
        action = {"Z/D": "D", "X/D": "D", "X/Z/D": "D", "X/Z": "Z"}.get(ROWS[tag].basic,
                                                                       ROWS[tag].basic)
        label = f"{tag:08X} {ROWS[tag].name} {action}"
        if action == "X":
            assert tag not in ds, label
        elif action == "Z":
            assert ds[tag].value in (None, "", []), label
        elif action == "D":
            assert ds[tag].value not in (None, "", []) and ds[tag].value != old, label
        elif action == "U":
            assert ds[tag].value == uids.uids[str(old)], label
            assert str(ds[tag].value).startswith("2.25."), label
    assert verify(ds, Settings(), uids) == []
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100"] and ds.PatientIdentityRemoved == "YES"
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"


def test_batch_on_test_files_is_clean(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(["anonymize", str(inputs), "-o", str(out), "--verify"]) == 0
    for name in FILES:
        before, after = dcmread(inputs / name), dcmread(out / name)
        assert not any(e.tag.is_private for e in after.iterall()), name
        assert not any(e.tag.group in range(0x5000, 0x6100) and e.tag.group & 0xFF00 in
                       (0x5000, 0x6000) for e in after.iterall()), name
        for tag in ROWS:
            if tag in before and ROWS[tag].basic == "X":
                assert tag not in after, (name, hex(tag))
        assert after.SOPInstanceUID != before.SOPInstanceUID
        assert after.file_meta.MediaStorageSOPInstanceUID == after.SOPInstanceUID
        assert after.get("PatientName", "") == "" and after.get("PatientID", "") == ""
        assert after.PatientIdentityRemoved == "YES"


def test_uids_consistent_across_batch_and_runs(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    # the same instance in three transfer syntaxes: one set of new UIDs
    for name in ("MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm"):
        shutil.copy(data(name), src / name)
    mapfile = tmp_path / "map.json"
    assert run(["anonymize", str(src), "-o", str(tmp_path / "a"), "--map", str(mapfile)]) == 0
    outs = [dcmread(p) for p in sorted((tmp_path / "a").iterdir())]
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        assert len({str(ds[kw].value) for ds in outs}) == 1, kw
    original = dcmread(src / "MR_small.dcm")
    mapping = json.loads(mapfile.read_text())["uids"]
    assert mapping[original.StudyInstanceUID] == outs[0].StudyInstanceUID
    # a second run with the map reuses it; one without gets new UIDs
    assert run(["anonymize", str(src / "MR_small.dcm"), "-o", str(tmp_path / "b"),
                "--map", str(mapfile)]) == 0
    assert dcmread(tmp_path / "b" / "MR_small.dcm").SOPInstanceUID == outs[0].SOPInstanceUID
    assert run(["anonymize", str(src / "MR_small.dcm"), "-o", str(tmp_path / "c")]) == 0
    assert dcmread(tmp_path / "c" / "MR_small.dcm").SOPInstanceUID != outs[0].SOPInstanceUID


def test_references_inside_sequences_are_mapped(tmp_path: Path) -> None:
    key = "ReferencedSOPInstanceUID"
    before = dcmread(data("test-SR.dcm"))
    refs_before = [str(e.value) for e in before.iterall() if e.keyword == key]
    assert len(refs_before) > 2
    uids = UidMap(tmp_path / "m.json")
    ds = dcmread(data("test-SR.dcm"))
    Anonymizer(Settings(), uids).apply(ds)
    refs_after = [str(e.value) for e in ds.iterall() if e.keyword == key]
    assert refs_after == [uids.uids[u] for u in refs_before]
    classes = [e.value for e in ds.iterall() if e.keyword == "ReferencedSOPClassUID"]
    assert classes and all(not str(c).startswith("2.25.") for c in classes)  # classes kept


def test_dates_shifted_by_offset(tmp_path: Path) -> None:
    src = data("CT_small.dcm")
    assert run(["anonymize", str(src), "-o", str(tmp_path), "--date-offset", "-10"]) == 0
    before, after = dcmread(src), dcmread(tmp_path / "CT_small.dcm")
    assert before.StudyDate == "20040119" and after.StudyDate == "20040109"
    assert after.ContentDate == shift_date(before.ContentDate, -10)
    assert after.get("PatientBirthDate", "") == ""  # Z, not a longitudinal date
    assert after.LongitudinalTemporalInformationModified == "MODIFIED"
    assert [i.CodeValue for i in after.DeidentificationMethodCodeSequence] == ["113100",
                                                                                "113107"]
    assert shift_date("20000301", -1) == "20000229"
    assert shift_date("20010203040506.1", 2) == "20010205040506.1"


def test_per_patient_offset_is_stable_with_the_map(tmp_path: Path) -> None:
    mapfile = tmp_path / "m.json"
    for out in ("a", "b"):
        assert run(["anonymize", str(data("CT_small.dcm")), "-o", str(tmp_path / out),
                    "--modified-dates", "--map", str(mapfile)]) == 0
    a, b = (dcmread(tmp_path / o / "CT_small.dcm").StudyDate for o in ("a", "b"))
    assert a == b and a != "20040119" and a < "20040119"


def test_verify_finds_a_planted_identifier(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    assert run(["anonymize", str(data("MR_small.dcm")), "-o", str(tmp_path)]) == 0
    path = tmp_path / "MR_small.dcm"
    assert run(["anonymize", str(path), "--verify"]) == 0
    ds = dcmread(path)
    ds.PatientAddress = "1 Main Street"
    ds.save_as(path)
    capsys.readouterr()
    assert run(["anonymize", str(path), "--verify"]) == 1
    assert "PatientAddress" in capsys.readouterr().out


def test_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, mapfile = tmp_path / "out", tmp_path / "map.json"
    assert run(["anonymize", str(data("CT_small.dcm")), "-o", str(out), "--map", str(mapfile),
                "--dry-run"]) == 0
    assert not out.exists() and not mapfile.exists()
    report = capsys.readouterr().out
    assert "(0010,0010) PatientName  Z" in report and "(0008,0018) SOPInstanceUID  U" in report


def test_keep_and_replace(tmp_path: Path) -> None:
    assert run(["anonymize", str(data("CT_small.dcm")), "-o", str(tmp_path),
                "-k", "StudyDescription", "-k", "(0008,0018)", "-r", "PatientID=SUBJ01",
                "-r", "PatientName=ANON^ONE"]) == 0
    before, after = dcmread(data("CT_small.dcm")), dcmread(tmp_path / "CT_small.dcm")
    assert after.StudyDescription == before.StudyDescription
    assert after.SOPInstanceUID == before.SOPInstanceUID
    assert after.PatientID == "SUBJ01" and str(after.PatientName) == "ANON^ONE"


def test_clean_descriptors_scrubs_identifying_words(tmp_path: Path) -> None:
    ds = dcmread(data("CT_small.dcm"))
    ds.StudyDescription = f"Head CT of {ds.PatientName.family_name} id {ds.PatientID}"
    Anonymizer(Settings(options=frozenset({Option.CLEAN_DESCRIPTORS})), UidMap()).apply(ds)
    assert ds.StudyDescription == "Head CT of * id *"


@pytest.mark.parametrize(
    ("argv_tail", "code"),
    [(["missing.dcm", "-o", "out"], 3), (["notdicom.txt", "-o", "out"], 4),
     (["truncated.dcm", "-o", "out"], 4), (["good.dcm"], 2),
     (["good.dcm", "-o", "afile/out"], 5)],
)
def test_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str], argv_tail: list[str], code: int) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notdicom.txt").write_text("hello\n")
    (tmp_path / "afile").write_text("in the way\n")
    shutil.copy(data("MR_truncated.dcm"), tmp_path / "truncated.dcm")
    shutil.copy(data("MR_small.dcm"), tmp_path / "good.dcm")
    assert run(["anonymize", *argv_tail]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pacs anonymize:")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert not list(tmp_path.glob("afile/**/*.dcm"))


def test_dcmdump_reads_the_result(tmp_path: Path) -> None:
    dcmdump = require_tool("dcmdump")
    assert run(["anonymize", str(data("rtplan.dcm")), "-o", str(tmp_path)]) == 0
    proc = subprocess.run([dcmdump, str(tmp_path / "rtplan.dcm")], capture_output=True,
                          text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "PatientIdentityRemoved" in proc.stdout and "[YES]" in proc.stdout
