"""DICOM -> JSON -> DICOM and DICOM -> XML -> DICOM give an equal data set on pydicom's files.

Every bundled `*.dcm` file and every DICOMDIR is tried. "Equal" is element by element: same
tags, VRs and values, recursively, ignoring only the retired group lengths (gggg,0000), which
PS3.18/PS3.19 do not carry. Three files are not valid DICOM and must be *refused* (exit code
NOT_DICOM), not round-tripped; see UNREADABLE.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_sequence
from pydicom.filewriter import correct_ambiguous_vr
from pydicom.multival import MultiValue

from appliance.tools import dicom_json, dicom_xml
from appliance.tools.dcmfile import ExitCode, ToolError
from tests.unit.tools.conftest import TEST_FILES, bundled_file

# The bundled files are full of tolerated oddities (DA "1997.04.24", IS "1A"): pydicom warns.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# pydicom "reads" these without complaint, but they are damaged; dcmdump refuses them too.
UNREADABLE = {
    "MR_truncated.dcm": "Pixel Data declares 8192 bytes, the file ends before",
    "rtplan_truncated.dcm": "BeamSequence declares 976 bytes, the file ends before",
    "no_meta.dcm": "starts one byte off: the first element decodes as (0820,0500)",
}
FILES = sorted(p.name for p in TEST_FILES.glob("*.dcm"))
DICOMDIRS = sorted(str(p.relative_to(TEST_FILES)) for p in TEST_FILES.rglob("DICOMDIR"))


def _little(ds: Dataset) -> bool:
    return dicom_json.little_endian_of(ds)


def _read(path: Path) -> Dataset:
    ds = dcmread(path, force=True)
    correct_ambiguous_vr(ds, _little(ds))
    return ds


def _as_sequence(elem: DataElement, little: bool) -> list[Dataset]:
    # Implicit VR cannot say that a private element is a sequence (PS3.5 §7.5): pydicom reads
    # a defined-length private SQ back as UN bytes. Parse those bytes as the sequence.
    fp = DicomBytesIO(elem.value)
    return list(read_sequence(fp, True, little, len(elem.value), ["iso8859"]))  # type: ignore[arg-type]


def _close(x: object, y: object, rel_tol: float) -> bool:
    if isinstance(x, float) and isinstance(y, float):
        return math.isclose(x, y, rel_tol=rel_tol)
    if isinstance(x, list | MultiValue) and isinstance(y, list | MultiValue) and len(x) == len(y):
        return all(_close(i, j, rel_tol) for i, j in zip(x, y, strict=True))
    return False


def assert_same(
    a: Dataset, b: Dataset, little_b: bool, where: str = "", *, rel_tol: float = 0.0
) -> None:
    """Equal data sets; `rel_tol` > 0 lets FL/FD values differ by rounding (other writers)."""
    keys_a = {t for t in a.keys() if t.element != 0}
    keys_b = {t for t in b.keys() if t.element != 0}
    assert keys_a == keys_b, f"{where}: tags differ: {sorted(keys_a ^ keys_b)}"
    for tag in sorted(keys_a):
        ea, eb = a[tag], b[tag]
        here = f"{where}{tag}"
        if ea.VR == "SQ":
            items_b = _as_sequence(eb, little_b) if eb.VR == "UN" and tag.is_private else eb.value
            assert len(ea.value) == len(items_b), f"{here}: item count"
            for n, (ia, ib) in enumerate(zip(ea.value, items_b, strict=True)):
                assert_same(ia, ib, little_b, f"{here}[{n}].", rel_tol=rel_tol)
            continue
        assert ea.VR == eb.VR, f"{here}: VR {ea.VR} != {eb.VR}"
        if rel_tol and ea.VR in ("FL", "FD") and _close(ea.value, eb.value, rel_tol):
            continue
        assert ea.value == eb.value, f"{here}: {ea.value!r:.80} != {eb.value!r:.80}"


def _roundtrip(kind: str, src: Path, tmp_path: Path, **kwargs: object) -> Path:
    model = tmp_path / f"model.{kind}"
    out = tmp_path / "out.dcm"
    if kind == "json":
        dicom_json.dicom_to_json(src, model, include_meta=True, **kwargs)  # type: ignore[arg-type]
        dicom_json.json_to_dicom(model, out)
    else:
        dicom_xml.dicom_to_xml(src, model, include_meta=True, **kwargs)  # type: ignore[arg-type]
        dicom_xml.xml_to_dicom(model, out)
    return out


@pytest.mark.parametrize("kind", ["json", "xml"])
@pytest.mark.parametrize("name", FILES + DICOMDIRS)
def test_roundtrip_equal(name: str, kind: str, tmp_path: Path) -> None:
    src = TEST_FILES / name
    if name in UNREADABLE:
        with pytest.raises(ToolError) as info:
            _roundtrip(kind, src, tmp_path)
        assert info.value.code == ExitCode.NOT_DICOM
        assert not (tmp_path / f"model.{kind}").exists()
        return
    out = _roundtrip(kind, src, tmp_path)
    original, back = _read(src), _read(out)
    assert_same(original, back, _little(back))
    meta = getattr(original, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        assert back.file_meta.TransferSyntaxUID == meta.TransferSyntaxUID


@pytest.mark.parametrize("kind", ["json", "xml"])
@pytest.mark.parametrize("name", ["CT_small.dcm", "ExplVR_BigEnd.dcm", "JPEG2000.dcm"])
def test_roundtrip_with_bulk_files(name: str, kind: str, tmp_path: Path) -> None:
    src = bundled_file(name)
    out = _roundtrip(kind, src, tmp_path, bulk_dir=tmp_path / "bulk", bulk_threshold=64)
    bulk_files = sorted((tmp_path / "bulk").iterdir())
    assert bulk_files, "nothing was written as bulk data"
    text = (tmp_path / f"model.{kind}").read_text(encoding="utf-8")
    assert "bulk/0001_" in text  # URIs relative to the JSON/XML file
    assert_same(_read(src), _read(out), _little(_read(out)))


def test_json_value_types(tmp_path: Path) -> None:
    obj = json.loads(dicom_json.dicom_to_json(bundled_file("rtplan.dcm"), None))
    assert obj["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Last^First^mid^pre"}]}
    assert obj["00080090"] == {"vr": "PN"}  # empty: no Value (PS3.18 F.2.5)
    dose = obj["300A0010"]["Value"][0]["300A0018"]
    assert dose["vr"] == "DS" and all(isinstance(v, float) for v in dose["Value"])
    assert obj["300A0070"]["Value"][0]["300A0071"]["Value"] == [1]  # IS as a number
    ct = json.loads(dicom_json.dicom_to_json(bundled_file("CT_small.dcm"), None))
    pixel = ct["7FE00010"]
    assert pixel["vr"] == "OW" and len(base64.b64decode(pixel["InlineBinary"])) == 32768
    assert "00020010" not in ct  # File Meta only with include_meta
    assert ct["00280010"]["Value"] == [128]


def test_json_at_and_multivalue_nulls(tmp_path: Path) -> None:
    ds = Dataset()
    ds.FrameIncrementPointer = 0x00181063
    ds.ImageType = ["ORIGINAL", "", "AXIAL"]
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    obj = dicom_json.JsonEncoder().dataset(ds)
    assert obj["00280009"] == {"vr": "AT", "Value": ["00181063"]}
    assert obj["00080008"]["Value"] == ["ORIGINAL", None, "AXIAL"]
    assert obj["00100010"]["Value"] == [
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
    ]
    back = dicom_json.JsonDecoder().dataset(json.loads(json.dumps(obj)))
    assert back.FrameIncrementPointer == 0x00181063
    assert list(back.ImageType) == ["ORIGINAL", "", "AXIAL"]
    assert str(back.PatientName) == str(ds.PatientName)


def test_json_big_endian_binary_is_little_endian(tmp_path: Path) -> None:
    big = json.loads(dicom_json.dicom_to_json(bundled_file("MR_small_bigendian.dcm"), None))
    little = json.loads(dicom_json.dicom_to_json(bundled_file("MR_small.dcm"), None))
    assert big["7FE00010"]["InlineBinary"] == little["7FE00010"]["InlineBinary"]


def test_xml_shape(tmp_path: Path) -> None:
    text = dicom_xml.dicom_to_xml(bundled_file("rtplan.dcm"), None)
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    assert 'xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM"' in text
    assert '<DicomAttribute tag="00100010" vr="PN" keyword="PatientName">' in text
    assert "<FamilyName>Last</FamilyName>" in text and "<NamePrefix>pre</NamePrefix>" in text
    assert '<Item number="1">' in text
    assert '<Value number="3">-741.87000000000</Value>' in text  # DS text kept as is


def test_from_json_accepts_dicomweb_array(tmp_path: Path) -> None:
    ds_json = dicom_json.dicom_to_json(bundled_file("CT_small.dcm"), None)
    src = tmp_path / "metadata.json"
    src.write_text("[" + ds_json + "]", encoding="utf-8")
    out = tmp_path / "out.dcm"
    dicom_json.json_to_dicom(src, out)
    assert dcmread(out).PatientID == "1CT1"
    assert dcmread(out).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"


def test_from_xml_rejects_uuid_bulk_data(tmp_path: Path) -> None:
    src = tmp_path / "in.xml"
    src.write_text(
        '<NativeDicomModel><DicomAttribute tag="7FE00010" vr="OW">'
        '<BulkData uuid="096ebbda"/></DicomAttribute></NativeDicomModel>',
        encoding="utf-8",
    )
    with pytest.raises(ToolError) as info:
        dicom_xml.xml_to_dicom(src, tmp_path / "out.dcm")
    assert info.value.code == ExitCode.NOT_DICOM and "uuid" in info.value.message
    assert not (tmp_path / "out.dcm").exists()
