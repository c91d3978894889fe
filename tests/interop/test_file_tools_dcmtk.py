"""The file tools against DCMTK on the same inputs: dcmodify, dcm2json, dcm2xml, dcmdump.

- modify: the same edits through `dcmodify` and `pacs modify` give equal data sets (File Meta
  implementation identifiers and DCMTK's dropping of Data Set Trailing Padding aside), and the
  same failures leave both files untouched.
- to-json / to-xml: our output has the structure dcm2json / dcm2xml --native-format produce:
  the same attributes at every depth, the same VRs, equal values (numbers numerically, PN by
  component, binary by bytes). DCMTK writes OW/OF/OL/OD/OV InlineBinary big endian in XML; we
  write little endian like PS3.18 JSON, so those are compared after a swap.
- from-xml reads dcm2xml's own output (`--dcmtk-binary`) back to the original data set.
- dump: every (tag, VR, length) line of dcmdump appears in ours, at the same depth.
"""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID

from appliance.tools import dicom_json, dicom_xml
from appliance.tools.dcmfile import read_dicom
from appliance.tools.dicom_json import swap_bytes
from appliance.tools.dump import DEFER_BYTES, Dumper, DumpOptions
from appliance.tools.modify import Modifier, ModifyOptions, parse_operation
from tests.conftest import require_tool
from tests.unit.tools.conftest import TEST_FILES, bundled_file, run_pacs
from tests.unit.tools.test_roundtrip import assert_same

pytestmark = [pytest.mark.interop, pytest.mark.filterwarnings("ignore::UserWarning")]

# Files DCMTK cannot convert, or converts lossily, with the reason.
DCMTK_LIMITS = {
    "MR_truncated.dcm": "truncated (both refuse it)",
    "rtplan_truncated.dcm": "truncated (both refuse it)",
    "no_meta.dcm": "not a data set (both refuse it)",
    "SC_rgb_jpeg.dcm": "DCMTK cannot parse its mixed implicit/explicit VR",
    "J2K_pixelrep_mismatch.dcm": "DCMTK 3.6.7 lacks the ISO 2022 IR 87 character set",
    "nested_priv_SQ.dcm": "group 0001 is illegal; pydicom reads it as Private Creator text",
    "meta_missing_tsyntax.dcm": "group 0001 is illegal; pydicom reads it as Private Creator text",
    "rtdose_rle.dcm": "DCMTK reads its standard elements as UN",
    "rtdose_rle_1frame.dcm": "DCMTK reads its standard elements as UN",
}
FILES = sorted(p.name for p in TEST_FILES.glob("*.dcm") if p.name not in DCMTK_LIMITS)
FLOAT_VRS = {"FL", "FD", "DS", "IS", "US", "SS", "UL", "SL", "UV", "SV"}
SWAPPED_IN_DCMTK_XML = {"OW", "OF", "OL", "OD", "OV"}


def _run(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(argv), capture_output=True, timeout=60, check=False)


def _is_compressed(name: str) -> bool:
    ds = dcmread(TEST_FILES / name, stop_before_pixels=True, force=True)
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    return ts is not None and bool(UID(str(ts)).is_compressed)


UNCOMPRESSED = [n for n in FILES if not _is_compressed(n)]


# --------------------------------------------------------------------------- value equality


def _same_number(a: Any, b: Any) -> bool:
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return str(a).strip() == str(b).strip()
    return math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-30)


def _pn_text(value: Any) -> str:
    if not value:
        return ""
    keys = ("Alphabetic", "Ideographic", "Phonetic")
    groups = [str(value.get(k) or "").rstrip("^") for k in keys]
    return "=".join(groups).rstrip("=")


# --------------------------------------------------------------------------- JSON comparison


def compare_json(ours: dict[str, Any], theirs: dict[str, Any], where: str = "") -> list[str]:
    problems: list[str] = []
    if set(ours) != set(theirs):
        return [f"{where}: keys differ: {sorted(set(ours) ^ set(theirs))}"]
    for key in sorted(ours):
        a, b = ours[key], theirs[key]
        here = f"{where}{key}"
        if a["vr"] != b["vr"]:
            problems.append(f"{here}: vr {a['vr']} != {b['vr']}")
            continue
        vr = a["vr"]
        if key == "00080005":
            continue  # dcm2json rewrites the character set to ISO_IR 192 (UTF-8)
        if "InlineBinary" in a or "InlineBinary" in b:
            if base64.b64decode(a.get("InlineBinary", "")) != base64.b64decode(
                b.get("InlineBinary", "")
            ):
                problems.append(f"{here}: InlineBinary differs")
            continue
        va, vb = a.get("Value", []), b.get("Value", [])
        if vr == "PN":
            va, vb = [_pn_text(v) for v in va], [_pn_text(v) for v in vb]
            va, vb = ([] if va == [""] else va), ([] if vb == [""] else vb)
        if vr == "SQ":
            if len(va) != len(vb):
                problems.append(f"{here}: {len(va)} items != {len(vb)}")
                continue
            for n, (ia, ib) in enumerate(zip(va, vb, strict=True)):
                problems += compare_json(ia, ib, f"{here}[{n}].")
            continue
        if len(va) != len(vb):
            problems.append(f"{here}: {va!r:.60} != {vb!r:.60}")
        elif vr in FLOAT_VRS:
            if not all(_same_number(x, y) for x, y in zip(va, vb, strict=True)):
                problems.append(f"{here}: {va!r:.60} != {vb!r:.60}")
        elif [str(x or "").rstrip(" ") for x in va] != [str(y or "").rstrip(" ") for y in vb]:
            problems.append(f"{here}: {va!r:.60} != {vb!r:.60}")
    return problems


@pytest.mark.parametrize("name", UNCOMPRESSED)
def test_to_json_matches_dcm2json(name: str) -> None:
    dcm2json = require_tool("dcm2json")
    cp = _run(dcm2json, str(TEST_FILES / name))
    assert cp.returncode == 0, cp.stderr.decode(errors="replace")
    theirs = json.loads(cp.stdout)
    ours = json.loads(dicom_json.dicom_to_json(TEST_FILES / name, None))
    problems = compare_json(ours, theirs)
    assert not problems, "\n".join(problems[:20])


def test_dcm2json_refuses_compressed_we_do_not(tmp_path: Path) -> None:
    # dcm2json 3.6.7: "InlineBinary encoding not supported for compressed pixel data".
    src = bundled_file("JPEG2000.dcm")
    obj = json.loads(dicom_json.dicom_to_json(src, None, include_meta=True))
    assert obj["00020010"]["Value"] == ["1.2.840.10008.1.2.4.91"]
    assert base64.b64decode(obj["7FE00010"]["InlineBinary"])[:4] == b"\xfe\xff\x00\xe0"


# --------------------------------------------------------------------------- XML comparison


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _pn_xml(node: ET.Element) -> str:
    groups = []
    for group in ("Alphabetic", "Ideographic", "Phonetic"):
        found = [g for g in node if _local(g.tag) == group]
        parts = {_local(c.tag): c.text or "" for c in found[0]} if found else {}
        comps = [parts.get(k, "") for k in dicom_xml.PN_COMPONENTS]
        groups.append("^".join(comps).rstrip("^"))
    return "=".join(groups).rstrip("=")


def xml_model(node: ET.Element, *, dcmtk: bool) -> dict[str, Any]:
    """DicomAttribute children -> {tag: (vr, keyword, creator, values)} with binary as bytes."""
    out: dict[str, Any] = {}
    for attr in (c for c in node if _local(c.tag) == "DicomAttribute"):
        vr = attr.get("vr", "")
        values: list[Any] = []
        for child in attr:
            kind = _local(child.tag)
            if kind == "Value":
                values.append(child.text or "")
            elif kind == "PersonName":
                values.append(_pn_xml(child))
            elif kind == "Item":
                values.append(xml_model(child, dcmtk=dcmtk))
            elif kind == "InlineBinary":
                data = base64.b64decode("".join((child.text or "").split()))
                if dcmtk and vr in SWAPPED_IN_DCMTK_XML:
                    data = swap_bytes(data, vr)
                values.append(data)
        if vr == "PN" and all(v == "" for v in values):
            values = []
        tag, creator = attr.get("tag", ""), attr.get("privateCreator")
        if int(tag[:4], 16) % 2 and creator is None and int(tag[4:], 16) >= 0x100:
            tag = f"{tag[:4]}00{tag[6:]}"  # dcm2xml drops the block when the creator is missing
        out[tag] = (vr, attr.get("keyword"), creator, values)
    return out


def compare_xml(ours: dict[str, Any], theirs: dict[str, Any], where: str = "") -> list[str]:
    if set(ours) != set(theirs):
        return [f"{where}: tags differ: {sorted(set(ours) ^ set(theirs))}"]
    problems: list[str] = []
    for tag in sorted(ours):
        (vr, kw, creator, va), (vr2, kw2, creator2, vb) = ours[tag], theirs[tag]
        here = f"{where}{tag}"
        if tag == "7FE00010" and {vr, vr2} == {"OW", "OB"} and vb == [b""]:
            continue  # encapsulated Pixel Data the file calls OW: DCMTK says OB, we keep OW
        if vr != vr2 or creator != creator2:
            problems.append(f"{here}: vr/creator {vr}/{creator} != {vr2}/{creator2}")
            continue
        if kw and kw2 and kw != kw2:  # the dictionaries differ on what is retired
            problems.append(f"{here}: keyword {kw} != {kw2}")
        if tag == "00080005" or (tag == "7FE00010" and vb == [b""]):
            continue  # charset rewritten; DCMTK leaves encapsulated pixel data empty
        if len(va) != len(vb):
            problems.append(f"{here}: {va!r:.60} != {vb!r:.60}")
            continue
        for n, (x, y) in enumerate(zip(va, vb, strict=True)):
            if isinstance(x, dict):
                problems += compare_xml(x, y, f"{here}[{n + 1}].")
            elif isinstance(x, bytes) or vr not in FLOAT_VRS:
                if (x.rstrip(" ") if isinstance(x, str) else x) != (
                    y.rstrip(" ") if isinstance(y, str) else y
                ):
                    problems.append(f"{here}: {x!r:.60} != {y!r:.60}")
            elif not _same_number(x, y):
                problems.append(f"{here}: {x!r} != {y!r}")
    return problems


@pytest.mark.parametrize("name", FILES)
def test_to_xml_matches_dcm2xml(name: str) -> None:
    dcm2xml = require_tool("dcm2xml")
    cp = _run(dcm2xml, "--native-format", "+Eb", "-q", str(TEST_FILES / name))
    assert cp.returncode == 0, cp.stderr.decode(errors="replace")
    theirs = xml_model(ET.fromstring(cp.stdout), dcmtk=True)
    ours = xml_model(
        ET.fromstring(dicom_xml.dicom_to_xml(TEST_FILES / name, None).encode()), dcmtk=False
    )
    problems = compare_xml(ours, theirs)
    assert not problems, "\n".join(problems[:20])


# dcm2xml loses the block number of private elements whose Private Creator is missing.
DCM2XML_LOSSY = {"waveform_ecg.dcm", "UN_sequence.dcm", "priv_SQ.dcm"}


@pytest.mark.parametrize("name", [n for n in UNCOMPRESSED if n not in DCM2XML_LOSSY])
def test_from_xml_reads_dcm2xml_output(name: str, tmp_path: Path) -> None:
    dcm2xml = require_tool("dcm2xml")
    xml = tmp_path / "dcmtk.xml"
    cp = _run(dcm2xml, "--native-format", "+Eb", "-q", str(TEST_FILES / name), str(xml))
    assert cp.returncode == 0, cp.stderr.decode(errors="replace")
    out = tmp_path / "back.dcm"
    assert run_pacs("from-xml", "--dcmtk-binary", str(xml), "-o", str(out)) == 0
    original, back = dcmread(TEST_FILES / name, force=True), dcmread(out)
    if not dicom_json.prepare(original):
        # dcm2xml writes no File Meta, so `back` is little endian: compare LE bytes.
        dicom_json.restore_byte_order(original, little_endian=False)
    dicom_json.prepare(back)
    for ds in (original, back):
        _drop(ds, 0x00080005)  # dcm2xml converts text to UTF-8 and says so
        _strip_pn(ds)  # dcm2xml drops empty trailing name components ("OB^^^^" -> "OB")
    # dcm2xml prints FD with 17 digits that do not always round-trip the last bit
    assert_same(original, back, True, rel_tol=1e-15)


def _strip_pn(ds: Dataset) -> None:
    for elem in ds.iterall():
        if elem.VR == "PN" and not elem.is_empty:
            names = elem.value if elem.VM > 1 else [elem.value]
            stripped = [
                "=".join(g.rstrip("^") for g in str(n).split("=")).rstrip("=") for n in names
            ]
            elem.value = stripped if elem.VM > 1 else stripped[0]


def _drop(ds: Dataset, tag: int) -> None:
    if tag in ds:
        del ds[tag]


# --------------------------------------------------------------------------- our files in DCMTK


@pytest.mark.parametrize("kind", ["json", "xml"])
@pytest.mark.parametrize("name", ["CT_small.dcm", "rtplan.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm"])
def test_dcmdump_reads_what_we_write(name: str, kind: str, tmp_path: Path) -> None:
    dcmdump = require_tool("dcmdump")
    model, out = tmp_path / f"m.{kind}", tmp_path / "out.dcm"
    assert run_pacs(f"to-{kind}", "--meta", str(bundled_file(name)), "-o", str(model)) == 0
    assert run_pacs(f"from-{kind}", str(model), "-o", str(out)) == 0
    theirs = _run(dcmdump, "-q", str(bundled_file(name)))
    cp = _run(dcmdump, str(out))
    assert cp.returncode == 0 and not cp.stderr, cp.stderr.decode(errors="replace")
    # Element for element the same text; only sequence/item lengths (pydicom writes defined
    # lengths where the original had undefined ones) and the File Meta may differ.
    assert _element_lines(cp.stdout) == _element_lines(theirs.stdout)


def _element_lines(dump: bytes) -> list[str]:
    body = dump.decode(errors="replace").split("# Dicom-Data-Set", 1)[1]
    return [
        line for line in body.splitlines()
        if line.lstrip().startswith("(") and " SQ (" not in line and "(fffe," not in line
    ]


# --------------------------------------------------------------------------- modify vs dcmodify

EDITS = [
    "-i", "(0010,0010)=DOE^JOHN",
    "-m", "PatientID=XYZ",
    "-i", "(0008,1111)[1].(0008,1150)=1.2.3",
    "-i", "RequestAttributesSequence[0].ScheduledProcedureStepID=SPS1",
    "-i", "RequestAttributesSequence[*].RequestedProcedureID=RP9",
    "-ea", "(0008,0012)",
    "-ep",
    "-i", "(0018,1310)=1\\2\\3\\4",
    "-i", "OverlayData=01\\02",
    "-i", "PixelSpacing=abc\\1",
    "-ma", "(0008,1150)=9.9",
    "-i", "SOPInstanceUID=1.2.3.4",
    "-i", "StudyDescription=",
    "-e", "(0008,1111)[0]",
]  # fmt: skip


def _comparable(path: Path) -> Dataset:
    ds = dcmread(path)
    for tag in [t for t in ds.keys() if t.element == 0] + [0xFFFCFFFC]:
        _drop(ds, tag)
    return ds


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm"]
)
def test_modify_matches_dcmodify(name: str, tmp_path: Path) -> None:
    dcmodify = require_tool("dcmodify")
    theirs, ours = tmp_path / "dcmtk.dcm", tmp_path / "ours.dcm"
    shutil.copy(bundled_file(name), theirs)
    shutil.copy(bundled_file(name), ours)
    cp = _run(dcmodify, "-nb", *EDITS, str(theirs))
    assert cp.returncode == 0, cp.stderr.decode(errors="replace")
    assert run_pacs("modify", "-nb", *EDITS, str(ours)) == 0
    a, b = _comparable(theirs), _comparable(ours)
    assert_same(a, b, dicom_json.little_endian_of(b))
    assert b.file_meta.MediaStorageSOPInstanceUID == a.file_meta.MediaStorageSOPInstanceUID
    assert b.file_meta.TransferSyntaxUID == a.file_meta.TransferSyntaxUID


@pytest.mark.parametrize(
    "edit",
    [
        ["-m", "(0010,1000)=X"],  # modify a missing element
        ["-e", "(0010,1000)"],  # erase a missing element
        ["-ma", "(0010,1000)=X"],
        ["-i", "(0008,1110)[*].(0008,1150)=1.2"],  # wildcard over no items
        ["-i", "Rows=abc"],  # not a number
        ["-m", "(0008,1111)=abc"],  # a value into a sequence
    ],
)
def test_failures_match_dcmodify(edit: list[str], tmp_path: Path) -> None:
    dcmodify = require_tool("dcmodify")
    theirs, ours = tmp_path / "dcmtk.dcm", tmp_path / "ours.dcm"
    shutil.copy(bundled_file("CT_small.dcm"), theirs)
    shutil.copy(bundled_file("CT_small.dcm"), ours)
    before = theirs.read_bytes()
    cp = _run(dcmodify, "-nb", "-i", "PatientID=changed", *edit, str(theirs))
    assert cp.returncode != 0
    assert run_pacs("modify", "-nb", "-i", "PatientID=changed", *edit, str(ours)) == 1
    assert theirs.read_bytes() == before and ours.read_bytes() == before
    if edit[0] in ("-m", "-e", "-ma"):  # -imt forgives "tag not found" in both
        assert _run(dcmodify, "-nb", "-imt", *edit, str(theirs)).returncode == 0
        assert run_pacs("modify", "-nb", "-imt", *edit, str(ours)) == 0


def test_gin_updates_meta_like_dcmodify(tmp_path: Path) -> None:
    dcmodify = require_tool("dcmodify")
    theirs, ours = tmp_path / "dcmtk.dcm", tmp_path / "ours.dcm"
    for path in (theirs, ours):
        shutil.copy(bundled_file("MR_small.dcm"), path)
    assert _run(dcmodify, "-nb", "-gin", "-gst", str(theirs)).returncode == 0
    assert run_pacs("modify", "-nb", "-gin", "-gst", str(ours)) == 0
    original = dcmread(bundled_file("MR_small.dcm"))
    for path in (theirs, ours):
        ds = dcmread(path)
        assert ds.SOPInstanceUID != original.SOPInstanceUID
        assert ds.StudyInstanceUID != original.StudyInstanceUID
        assert ds.SeriesInstanceUID == original.SeriesInstanceUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_modifier_api_agrees_with_cli(tmp_path: Path) -> None:
    # The library path the CLI uses, on the same edits, gives what dcmodify gives.
    dcmodify = require_tool("dcmodify")
    theirs = tmp_path / "dcmtk.dcm"
    shutil.copy(bundled_file("rtplan.dcm"), theirs)
    assert _run(dcmodify, "-nb", "-ma", "(300a,0084)=2.5", str(theirs)).returncode == 0
    ds = dcmread(bundled_file("rtplan.dcm"))
    assert Modifier(ds, ModifyOptions()).apply([parse_operation("ma", "(300a,0084)=2.5")]) == []
    ours_beam = ds.FractionGroupSequence[0].ReferencedBeamSequence[0]
    their_beam = dcmread(theirs).FractionGroupSequence[0].ReferencedBeamSequence[0]
    assert ours_beam.BeamDose == their_beam.BeamDose


# --------------------------------------------------------------------------- dump vs dcmdump

_LINE = re.compile(
    r"^(?P<indent> *)\((?P<tag>[0-9a-f]{4},[0-9a-f]{4})\) (?P<vr>\S\S) .*# +(?P<len>\S+),"
)


def _triples(text: str) -> list[tuple[int, str, str, str]]:
    out = []
    for line in text.splitlines():
        if m := _LINE.match(line):
            if m["tag"].startswith("fffe"):
                continue  # item / delimiter lines: DCMTK prints lengths we do not keep
            out.append((len(m["indent"]), m["tag"], m["vr"], m["len"]))
    return out


@pytest.mark.parametrize("name", ["CT_small.dcm", "rtplan.dcm", "MR_small_bigendian.dcm",
                                  "ExplVR_BigEndNoMeta.dcm", "waveform_ecg.dcm"])
def test_dump_matches_dcmdump(name: str) -> None:
    dcmdump = require_tool("dcmdump")
    cp = _run(dcmdump, "-q", str(bundled_file(name)))
    theirs = _triples(cp.stdout.decode(errors="replace"))
    path = bundled_file(name)
    ds = read_dicom(path, defer_size=DEFER_BYTES)
    dumper = Dumper(path, DumpOptions(), dicom_json.little_endian_of(ds))
    ours = _triples("\n".join(dumper.file_lines(ds)))
    assert _unknown_as_un(ours) == _unknown_as_un(theirs)


def _unknown_as_un(rows: list[tuple[int, str, str, str]]) -> list[tuple[int, str, str, str]]:
    # dcmdump prints "??" for an implicit-VR tag its dictionary lacks, pydicom says UN.
    return [(d, t, "UN" if v == "??" else v, n) for d, t, v, n in rows]
