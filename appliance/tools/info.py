"""`pacs info`: one screen about one file: who, which study/series/image, and its pixels.

The pixel description is what PS3.3 C.7.6.3 (Image Pixel Module) says about the Pixel Data
(rows, columns, frames, samples, photometric interpretation, bits) next to what is actually
there: the Value Length of Pixel Data against the size the module implies, and whether the
transfer syntax is encapsulated (compressed). Pixel Data is not loaded unless encapsulated
(an encapsulated value has no length and pydicom scans it to find its end).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path
from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import parse_fragments
from pydicom.uid import UID

from appliance.tools.dcmfile import UNDEFINED_LENGTH, ExitCode, ToolError, read_dicom

DEFER_BYTES = 256
PIXEL_DATA = 0x7FE00010


def _get(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"


def _transfer_syntax(ds: Dataset) -> tuple[str, str, bool]:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if not ts:
        implicit, little = getattr(ds, "original_encoding", (True, True))
        name = f"{'Implicit' if implicit else 'Explicit'} VR {'Little' if little else 'Big'} Endian"
        return "", f"{name} (no File Meta)", False
    uid = UID(str(ts))
    return str(uid), str(uid.name), bool(uid.is_compressed)


def _pixels(ds: Dataset, compressed: bool) -> dict[str, Any]:
    rows, cols = ds.get("Rows"), ds.get("Columns")
    frames = int(_get(ds, "NumberOfFrames") or 1) if _get(ds, "NumberOfFrames").isdigit() else 1
    samples = ds.get("SamplesPerPixel") or 1
    allocated = ds.get("BitsAllocated")
    out: dict[str, Any] = {
        "rows": rows,
        "columns": cols,
        "frames": frames,
        "samples_per_pixel": samples,
        "photometric_interpretation": _get(ds, "PhotometricInterpretation"),
        "bits_allocated": allocated,
        "bits_stored": ds.get("BitsStored"),
        "high_bit": ds.get("HighBit"),
        "pixel_representation": (
            None if ds.get("PixelRepresentation") is None
            else "signed" if ds.PixelRepresentation else "unsigned"
        ),
        "planar_configuration": ds.get("PlanarConfiguration"),
        "compressed": compressed,
        "pixel_data_bytes": None,
        "expected_bytes": None,
        "fragments": None,
    }
    if rows and cols and allocated:
        out["expected_bytes"] = int(rows) * int(cols) * frames * int(samples) * int(allocated) // 8
    if PIXEL_DATA in ds:
        raw = ds.get_item(PIXEL_DATA, keep_deferred=True)
        if isinstance(raw, RawDataElement) and raw.length != UNDEFINED_LENGTH:
            out["pixel_data_bytes"] = raw.length
        else:
            value = ds[PIXEL_DATA].value
            out["pixel_data_bytes"] = len(value) if isinstance(value, bytes) else None
            if compressed and isinstance(value, bytes):
                out["fragments"] = _fragments(value)
    return out


def _fragments(value: bytes) -> int | None:
    """Fragments after the Basic Offset Table item (PS3.5 A.4), None if not parsable."""
    try:
        (table_length,) = struct.unpack_from("<I", value, 4)
        return int(parse_fragments(value[8 + table_length :])[0])
    except (ValueError, struct.error):
        return None


def describe(path: Path) -> dict[str, Any]:
    """The summary as a dict of sections (what `--format json` prints)."""
    ds = read_dicom(path, defer_size=DEFER_BYTES)
    ts_uid, ts_name, compressed = _transfer_syntax(ds)
    sop_class = _get(ds, "SOPClassUID")
    return {
        "file": {"path": str(path), "bytes": path.stat().st_size},
        "sop": {
            "class_uid": sop_class,
            "class_name": str(UID(sop_class).name) if sop_class else "",
            "instance_uid": _get(ds, "SOPInstanceUID"),
            "transfer_syntax_uid": ts_uid,
            "transfer_syntax": ts_name,
        },
        "patient": {k: _get(ds, k) for k in (
            "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge")},
        "study": {k: _get(ds, k) for k in (
            "StudyDate", "StudyTime", "StudyDescription", "AccessionNumber", "StudyID",
            "ReferringPhysicianName", "StudyInstanceUID")},
        "series": {k: _get(ds, k) for k in (
            "Modality", "SeriesNumber", "SeriesDescription", "BodyPartExamined",
            "SeriesInstanceUID")},
        "image": {k: _get(ds, k) for k in (
            "InstanceNumber", "ImageType", "AcquisitionDate", "ContentDate", "ContentTime",
            "SliceThickness", "PixelSpacing")},
        "pixels": _pixels(ds, compressed) if PIXEL_DATA in ds or "Rows" in ds else None,
    }


def _pixel_lines(px: dict[str, Any]) -> list[tuple[str, str]]:
    frames = px["frames"]
    geometry = (
        f"{px['columns']} x {px['rows']}, {frames} frame{'s' if frames != 1 else ''}, "
        f"{px['samples_per_pixel']} sample(s)/pixel, {px['photometric_interpretation']}"
    )
    bits = (
        f"{px['bits_allocated']} allocated, {px['bits_stored']} stored, high bit "
        f"{px['high_bit']}, {px['pixel_representation']}"
    )
    if px["planar_configuration"] is not None:
        bits += f", planar configuration {px['planar_configuration']}"
    if px["pixel_data_bytes"] is None:
        data = "absent"
    else:
        data = _size(int(px["pixel_data_bytes"]))
        if px["compressed"]:
            fragments = px["fragments"]
            data += ", compressed" + (f" ({fragments} fragments)" if fragments else "")
            if px["expected_bytes"]:
                ratio = px["expected_bytes"] / max(int(px["pixel_data_bytes"]), 1)
                data += f", ratio {ratio:.1f}:1 against {_size(px['expected_bytes'])}"
        else:
            data += ", uncompressed"
            expected = px["expected_bytes"]
            if expected and expected > int(px["pixel_data_bytes"]):
                data += f", SHORT: the Image Pixel Module implies {expected} bytes"
    return [("Pixels", geometry), ("Bits", bits), ("Pixel Data", data)]


def render(info: dict[str, Any]) -> str:
    sop, patient = info["sop"], info["patient"]
    study, series, image = info["study"], info["series"], info["image"]
    rows: list[tuple[str, str]] = [
        ("File", f"{info['file']['path']} ({_size(info['file']['bytes'])})"),
        ("SOP Class", f"{sop['class_name']} [{sop['class_uid']}]" if sop["class_uid"] else "-"),
        ("SOP Instance", sop["instance_uid"] or "-"),
        ("Transfer", f"{sop['transfer_syntax']}"
                     + (f" [{sop['transfer_syntax_uid']}]" if sop["transfer_syntax_uid"] else "")),
        ("Patient", f"{patient['PatientName'] or '-'}  ID {patient['PatientID'] or '-'}  "
                    f"born {patient['PatientBirthDate'] or '-'}  sex {patient['PatientSex'] or '-'}"
                    f"  age {patient['PatientAge'] or '-'}"),
        ("Study", f"{study['StudyDate'] or '-'} {study['StudyTime']}  "
                  f"\"{study['StudyDescription']}\"  accession {study['AccessionNumber'] or '-'}"
                  f"  ID {study['StudyID'] or '-'}"),
        ("Study UID", study["StudyInstanceUID"] or "-"),
        ("Series", f"{series['Modality'] or '-'}  #{series['SeriesNumber'] or '-'}  "
                   f"\"{series['SeriesDescription']}\"  body part "
                   f"{series['BodyPartExamined'] or '-'}"),
        ("Series UID", series["SeriesInstanceUID"] or "-"),
        ("Image", f"#{image['InstanceNumber'] or '-'}  type {image['ImageType'] or '-'}  "
                  f"content {image['ContentDate'] or '-'} {image['ContentTime']}"),
    ]
    if image["PixelSpacing"] or image["SliceThickness"]:
        rows.append(("Geometry", f"pixel spacing {image['PixelSpacing'] or '-'} mm, "
                                 f"slice thickness {image['SliceThickness'] or '-'} mm"))
    if info["pixels"] is not None:
        rows.extend(_pixel_lines(info["pixels"]))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}".rstrip() for label, value in rows) + "\n"


def run(args: argparse.Namespace) -> int:
    """Describe each file; a failing file is reported and the rest still described."""
    status = ExitCode.OK
    for index, path in enumerate(args.paths):
        try:
            info = describe(path)
        except ToolError as exc:
            print(f"pacs info: {exc.message}", file=sys.stderr)
            status = status or exc.code
            continue
        if args.format == "json":
            print(json.dumps(info, ensure_ascii=False))
        else:
            print(("\n" if index else "") + render(info), end="")
    return int(status)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--format", choices=["text", "json"], default="text",
                        help="text (one screen) or json (one object per file)")
