"""`pacs modify`: dcmodify semantics on data sets and files (in place, .bak, -o, script)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from appliance.tools.dcmfile import ExitCode
from appliance.tools.modify import Modifier, ModifyOptions, parse_operation, parse_script
from tests.unit.tools.conftest import bundled_file


def _apply(ds: Dataset, *ops: tuple[str, str | None], **options: bool) -> list[str]:
    return Modifier(ds, ModifyOptions(**options)).apply([parse_operation(k, t) for k, t in ops])


@pytest.fixture
def ct(tmp_path: Path) -> Path:
    path = tmp_path / "ct.dcm"
    shutil.copy(bundled_file("CT_small.dcm"), path)
    return path


def test_insert_overwrite_and_multivalue() -> None:
    ds = Dataset()
    ds.PatientName = "OLD"
    assert _apply(ds, ("i", "(0010,0010)=DOE^JOHN"), ("i", "AcquisitionMatrix=1\\2\\3\\4")) == []
    assert ds.PatientName == "DOE^JOHN"
    assert ds.AcquisitionMatrix == [1, 2, 3, 4]
    assert ds["AcquisitionMatrix"].VR == "US"


def test_insert_without_value_creates_empty_element() -> None:
    ds = Dataset()
    assert _apply(ds, ("i", "OtherPatientIDs")) == []
    assert ds["OtherPatientIDs"].is_empty


def test_insert_nested_path_creates_sequence_and_items() -> None:
    ds = Dataset()
    errors = _apply(ds, ("i", "RequestAttributesSequence[1].ScheduledProcedureStepID=SPS1"))
    assert errors == []
    seq = ds.RequestAttributesSequence
    assert len(seq) == 2 and "ScheduledProcedureStepID" not in seq[0]
    assert seq[1].ScheduledProcedureStepID == "SPS1"


def test_insert_wildcard_needs_items() -> None:
    ds = Dataset()
    errors = _apply(ds, ("i", "(0008,1110)[*].(0008,1150)=1.2"))
    assert len(errors) == 1 and "(*)" in errors[0]
    ds.ReferencedStudySequence = [Dataset(), Dataset()]
    assert _apply(ds, ("i", "(0008,1110)[*].(0008,1150)=1.2")) == []
    assert [i.ReferencedSOPClassUID for i in ds.ReferencedStudySequence] == ["1.2", "1.2"]


def test_insert_items_up_to_index() -> None:
    ds = Dataset()
    assert _apply(ds, ("i", "(0008,1111)[2]")) == []
    assert len(ds.ReferencedPerformedProcedureStepSequence) == 3


def test_modify_only_existing() -> None:
    ds = Dataset()
    errors = _apply(ds, ("m", "PatientID=1"))
    assert len(errors) == 1 and "tag not found" in errors[0]
    assert "PatientID" not in ds
    assert _apply(ds, ("m", "PatientID=1"), ignore_missing=True) == []
    ds.PatientID = "0"
    assert _apply(ds, ("m", "PatientID=1")) == []
    assert ds.PatientID == "1"


def test_modify_all_and_erase_all_reach_into_sequences() -> None:
    ds = Dataset()
    ds.ReferencedSOPInstanceUID = "1"
    item = Dataset()
    item.ReferencedSOPInstanceUID = "2"
    inner = Dataset()
    inner.ReferencedSOPInstanceUID = "3"
    item.ReferencedImageSequence = [inner]
    ds.ReferencedSeriesSequence = [item]
    assert _apply(ds, ("ma", "ReferencedSOPInstanceUID=9")) == []
    assert ds.ReferencedSOPInstanceUID == "9"
    assert ds.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID == "9"
    assert _apply(ds, ("ea", "(0008,1155)")) == []
    assert "ReferencedSOPInstanceUID" not in ds
    assert "ReferencedSOPInstanceUID" not in ds.ReferencedSeriesSequence[0]
    assert len(_apply(ds, ("ea", "(0008,1155)"))) == 1  # now missing
    assert _apply(ds, ("ea", "(0008,1155)"), ignore_missing=True) == []


def test_erase_element_and_item() -> None:
    ds = Dataset()
    ds.PatientAge = "030Y"
    ds.ReferencedStudySequence = [Dataset(), Dataset(), Dataset()]
    ds.ReferencedStudySequence[2].ReferencedSOPClassUID = "1.2.3"
    assert _apply(ds, ("e", "PatientAge"), ("e", "ReferencedStudySequence[1]")) == []
    assert "PatientAge" not in ds
    assert len(ds.ReferencedStudySequence) == 2
    assert ds.ReferencedStudySequence[1].ReferencedSOPClassUID == "1.2.3"


def test_erase_only_top_level_without_path() -> None:
    ds = Dataset()
    item = Dataset()
    item.PatientID = "nested"
    ds.ReferencedPatientSequence = [item]
    assert len(_apply(ds, ("e", "PatientID"))) == 1
    assert ds.ReferencedPatientSequence[0].PatientID == "nested"


def test_erase_private_everywhere() -> None:
    ds = dcmread(bundled_file("nested_priv_SQ.dcm"))
    assert any(e.tag.is_private for e in ds.iterall())
    assert _apply(ds, ("ep", None)) == []
    assert not any(e.tag.is_private for e in ds.iterall())


def test_value_conversions() -> None:
    ds = Dataset()
    ds.BitsAllocated = 16
    errors = _apply(
        ds,
        ("i", "OverlayData=01\\02"),  # OW: hex words, as dcmodify
        ("i", "(0029,0010)=ACME"),
        ("i", "FrameIncrementPointer=(0018,1063)"),
        ("i", "PixelSpacing=abc\\1"),  # DS is not validated (dcmodify neither)
        ("i", "EncapsulatedDocument=0a\\ff"),
    )
    assert errors == []
    assert ds[0x60003000].value == b"\x01\x00\x02\x00"
    assert ds[0x00290010].VR == "LO"
    assert ds.FrameIncrementPointer == Tag(0x00181063)
    assert ds["PixelSpacing"].VM == 2
    assert ds.EncapsulatedDocument == b"\x0a\xff"


def test_invalid_number_is_an_error() -> None:
    ds = Dataset()
    errors = _apply(ds, ("i", "Rows=abc"), ("i", "PatientID=still-applied"))
    assert len(errors) == 1 and "Rows" in errors[0]
    assert ds.PatientID == "still-applied"  # later operations still run (dcmodify)


def test_value_into_sequence_refused() -> None:
    ds = Dataset()
    ds.ReferencedStudySequence = []
    assert len(_apply(ds, ("m", "ReferencedStudySequence=abc"))) == 1


def test_parse_operation_validation() -> None:
    for kind, text in (("m", "PatientID"), ("e", "PatientID=1"), ("ea", "(0008,1110)[0].X")):
        with pytest.raises(ValueError):
            parse_operation(kind, text)


# --------------------------------------------------------------------------- files


def test_in_place_with_backup(ct: Path, pacs: Callable[..., int]) -> None:
    original = ct.read_bytes()
    assert pacs("modify", "-i", "(0010,0010)=DOE^JOHN", str(ct)) == 0
    assert dcmread(ct).PatientName == "DOE^JOHN"
    assert (ct.parent / "ct.dcm.bak").read_bytes() == original


def test_no_backup_and_output(ct: Path, tmp_path: Path, pacs: Callable[..., int]) -> None:
    original = ct.read_bytes()
    out = tmp_path / "out" / "new.dcm"
    assert pacs("modify", "-m", "PatientID=42", "-o", str(out), str(ct)) == 0
    assert ct.read_bytes() == original
    assert dcmread(out).PatientID == "42"
    assert not (tmp_path / "ct.dcm.bak").exists()
    assert pacs("modify", "-nb", "-m", "PatientID=43", str(ct)) == 0
    assert not (tmp_path / "ct.dcm.bak").exists()
    assert dcmread(ct).PatientID == "43"


def test_failed_operation_leaves_file_alone(
    ct: Path, pacs: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    original = ct.read_bytes()
    rc = pacs("modify", "-nb", "-i", "PatientID=X", "-m", "(0010,1000)=Y", str(ct))
    assert rc == ExitCode.FAILED
    assert ct.read_bytes() == original
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tag not found" in err[0] and "ct.dcm" in err[0]
    assert sorted(p.name for p in ct.parent.iterdir()) == ["ct.dcm"]  # no temp file left
    assert pacs("modify", "-nb", "-ie", "-i", "PatientID=X", "-m", "(0010,1000)=Y", str(ct)) == 0
    assert dcmread(ct).PatientID == "X"


def test_uid_generation_keeps_meta_consistent(ct: Path, pacs: Callable[..., int]) -> None:
    before = dcmread(ct)
    assert pacs("modify", "-nb", "-gst", "-gse", "-gin", str(ct)) == 0
    after = dcmread(ct)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert after[keyword].value != before[keyword].value
    assert after.file_meta.MediaStorageSOPInstanceUID == after.SOPInstanceUID


def test_sop_instance_edit_updates_meta_unless_nmu(ct: Path, pacs: Callable[..., int]) -> None:
    assert pacs("modify", "-nb", "-m", "SOPInstanceUID=1.2.3", str(ct)) == 0
    assert dcmread(ct).file_meta.MediaStorageSOPInstanceUID == "1.2.3"
    assert pacs("modify", "-nb", "-nmu", "-m", "SOPInstanceUID=1.2.4", str(ct)) == 0
    ds = dcmread(ct)
    assert ds.SOPInstanceUID == "1.2.4"
    assert ds.file_meta.MediaStorageSOPInstanceUID == "1.2.3"


def test_script_file(ct: Path, tmp_path: Path, pacs: Callable[..., int]) -> None:
    script = tmp_path / "edits.txt"
    script.write_text(
        "# anonymise a little\n"
        '-i "PatientName=ANON^YMOUS"\n'
        "-e (0010,1010)\n"
        "\n"
        "--insert RequestAttributesSequence[0].ScheduledProcedureStepID=S1\n"
        "-gin\n",
        encoding="utf-8",
    )
    ops = parse_script(script)
    assert [op.kind for op in ops] == ["i", "e", "i", "gin"]
    assert pacs("modify", "-nb", "--script", str(script), str(ct)) == 0
    ds = dcmread(ct)
    assert ds.PatientName == "ANON^YMOUS" and "PatientAge" not in ds
    assert ds.RequestAttributesSequence[0].ScheduledProcedureStepID == "S1"


def test_bad_script_line_is_usage_error(ct: Path, tmp_path: Path, pacs: Callable[..., int]) -> None:
    script = tmp_path / "edits.txt"
    script.write_text("-x PatientName=1\n", encoding="utf-8")
    assert pacs("modify", "--script", str(script), str(ct)) == ExitCode.USAGE


def test_order_of_operations_is_command_line_order(ct: Path, pacs: Callable[..., int]) -> None:
    assert pacs("modify", "-nb", "-e", "PatientID", "-i", "PatientID=after", str(ct)) == 0
    assert dcmread(ct).PatientID == "after"
    assert pacs("modify", "-nb", "-i", "PatientID=before", "-e", "PatientID", str(ct)) == 0
    assert "PatientID" not in dcmread(ct)


def test_recursive_directory_with_output(tmp_path: Path, pacs: Callable[..., int]) -> None:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    shutil.copy(bundled_file("CT_small.dcm"), src / "one.dcm")
    shutil.copy(bundled_file("MR_small.dcm"), src / "a" / "b" / "two.dcm")
    (src / "notes.txt").write_text("not dicom", encoding="utf-8")
    out = tmp_path / "out"
    assert pacs("modify", "-r", "-i", "InstitutionName=HERE", "-o", str(out), str(src)) == 0
    assert dcmread(out / "one.dcm").InstitutionName == "HERE"
    assert dcmread(out / "a" / "b" / "two.dcm").InstitutionName == "HERE"
    assert not (out / "notes.txt").exists()
    # in place, recursively: backups are made and not themselves modified on a second run
    assert pacs("modify", "-r", "-i", "InstitutionName=THERE", str(src)) == 0
    assert pacs("modify", "-r", "-i", "InstitutionName=AGAIN", str(src)) == 0
    assert dcmread(src / "a" / "b" / "two.dcm").InstitutionName == "AGAIN"
    assert dcmread(src / "a" / "b" / "two.dcm.bak").InstitutionName == "THERE"
    assert not (src / "a" / "b" / "two.dcm.bak.bak").exists()


def test_no_operation_is_usage_error(ct: Path, pacs: Callable[..., int]) -> None:
    assert pacs("modify", str(ct)) == ExitCode.USAGE


def test_insert_from_file(ct: Path, tmp_path: Path, pacs: Callable[..., int]) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\x01\x02\x03\x04")
    text = tmp_path / "name.txt"
    text.write_text("FROM^FILE", encoding="utf-8")
    rc = pacs("modify", "-nb", "-if", f"EncapsulatedDocument={blob}", "-mf",
              f"PatientName={text}", str(ct))
    assert rc == 0
    ds = dcmread(ct)
    assert ds.EncapsulatedDocument == b"\x01\x02\x03\x04"
    assert ds.PatientName == "FROM^FILE"
