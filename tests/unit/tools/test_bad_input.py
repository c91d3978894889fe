"""Bad input: one line on stderr naming the file and the reason, a distinct exit code, and no
partial output file left behind (outputs are written to a temporary name, then renamed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from appliance.tools import dcmfile
from appliance.tools.dcmfile import ExitCode
from tests.unit.tools.conftest import bundled_file

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

READ_VERBS = [
    ("dump",), ("info",), ("to-json",), ("to-xml",), ("modify", "-i", "PatientID=1"),
]


@pytest.fixture
def not_dicom(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("These are not the pixels you are looking for.\n" * 20, encoding="utf-8")
    return path


@pytest.fixture
def truncated(tmp_path: Path) -> Path:
    path = tmp_path / "cut.dcm"
    data = bundled_file("CT_small.dcm").read_bytes()
    path.write_bytes(data[: len(data) - 5000])  # inside Pixel Data
    return path


def _one_line(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("verb", READ_VERBS, ids=lambda v: v[0])
def test_missing_file(
    verb: tuple[str, ...], tmp_path: Path, pacs: Callable[..., int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = tmp_path / "nope.dcm"
    assert pacs(*verb, str(missing)) == ExitCode.NOT_FOUND
    _one_line(capsys, str(missing), "no such file")


@pytest.mark.parametrize("verb", READ_VERBS, ids=lambda v: v[0])
def test_not_dicom(
    verb: tuple[str, ...], not_dicom: Path, pacs: Callable[..., int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert pacs(*verb, str(not_dicom)) == ExitCode.NOT_DICOM
    _one_line(capsys, str(not_dicom), "not DICOM")


@pytest.mark.parametrize("verb", READ_VERBS, ids=lambda v: v[0])
def test_truncated(
    verb: tuple[str, ...], truncated: Path, pacs: Callable[..., int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = truncated.read_bytes()
    assert pacs(*verb, str(truncated)) == ExitCode.NOT_DICOM
    _one_line(capsys, str(truncated), "truncated", "(7FE0,0010)")
    assert truncated.read_bytes() == before
    assert sorted(p.name for p in truncated.parent.iterdir()) == ["cut.dcm"]


def test_empty_file(
    tmp_path: Path, pacs: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    assert pacs("dump", str(empty)) == ExitCode.NOT_DICOM
    _one_line(capsys, "empty.dcm", "not DICOM")


@pytest.mark.parametrize("verb", ["to-json", "to-xml"])
def test_unwritable_output(
    verb: str, tmp_path: Path, pacs: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "no-such-dir" / "out"
    assert pacs(verb, str(bundled_file("CT_small.dcm")), "-o", str(out)) == ExitCode.WRITE_ERROR
    _one_line(capsys, str(out), "cannot write")


@pytest.mark.parametrize(("verb", "text"), [
    ("from-json", '{"00100010": {"vr": "PN", "Value": [{"Alphabetic": "A"}]},'),
    ("from-json", '{"0010": {"vr": "PN"}}'),
    ("from-json", '{"00280010": {"vr": "US", "Value": ["many"]}}'),
    ("from-xml", "<NativeDicomModel><DicomAttribute tag='00100010'"),
    ("from-xml", "<Other/>"),
])
def test_bad_model_input(
    verb: str, text: str, tmp_path: Path, pacs: Callable[..., int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = tmp_path / "in.txt"
    src.write_text(text, encoding="utf-8")
    out = tmp_path / "out.dcm"
    assert pacs(verb, str(src), "-o", str(out)) == ExitCode.NOT_DICOM
    _one_line(capsys, str(src))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_failure_during_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.dcm"
    out.write_bytes(b"previous content")

    def half_write(self: Dataset, fp: object, **kwargs: object) -> None:
        fp.write(b"partial")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Dataset, "save_as", half_write)
    ds = Dataset()
    ds.PatientID = "1"
    with pytest.raises(dcmfile.ToolError) as info:
        dcmfile.write_dicom(ds, out)
    assert info.value.code == ExitCode.WRITE_ERROR
    assert out.read_bytes() == b"previous content"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.dcm"]


def test_usage_errors(
    tmp_path: Path, pacs: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        pacs("from-json", str(tmp_path / "x.json"))  # -o is required
    assert info.value.code == ExitCode.USAGE
    with pytest.raises(SystemExit) as info:
        pacs("from-json", "--ts", "1.2.3", str(tmp_path / "x.json"), "-o", "y.dcm")
    assert info.value.code == ExitCode.USAGE
    assert "not a known transfer syntax" in capsys.readouterr().err
    assert pacs("dump", "--tags", "NoSuchKeyword", str(bundled_file("CT_small.dcm"))) == 2


def test_directory_given_to_single_file_verb(
    tmp_path: Path, pacs: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    assert pacs("info", str(tmp_path)) == ExitCode.USAGE
    _one_line(capsys, str(tmp_path), "is a directory")


def test_dump_several_files_reports_each(
    not_dicom: Path, tmp_path: Path, pacs: Callable[..., int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    good = bundled_file("MR_small.dcm")
    assert pacs("dump", str(not_dicom), str(good)) == ExitCode.NOT_DICOM
    captured = capsys.readouterr()
    assert "(0008,0060) CS [MR]" in captured.out  # the good file is still dumped
    assert len(captured.err.strip().splitlines()) == 1
