"""`pacs dump`: a dcmdump-like listing of a DICOM file, its File Meta and nested sequences.

Each line is ``(gggg,eeee) VR value  # length, VM Keyword`` like dcmdump's, so that eyes
trained on DCMTK read it at once: strings in brackets, numbers bare, UIDs of the registry
(PS3.6 Annex A) as ``=Keyword``, binary as hex words. Lengths are the Value Lengths found in
the file (PS3.5 §7.1), read from pydicom's raw elements before conversion.

Values longer than `DEFER_BYTES` are never loaded: pydicom's `defer_size` skips them and the
listing shows their first bytes, read straight from the file. Encapsulated Pixel Data has no
length (PS3.5 A.4), so pydicom has to scan it to find its end.
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import UID

from appliance.tools.dcmfile import (
    UNDEFINED_LENGTH,
    ExitCode,
    NotDicomError,
    ToolError,
    iter_files,
    read_dicom,
)
from appliance.tools.dicom_json import (
    JsonEncoder,
    deferred_vr,
    is_deferred,
    little_endian_of,
    to_json_text,
)
from appliance.tools.tagpath import TagPathError, parse_tag

DEFER_BYTES = 256  # values longer than this stay on disk
VALUE_COLUMN = 55  # dcmdump pads "(gggg,eeee) VR value" to this width before the '#'
_NUMPY_TYPES = {"OW": "u2", "OF": "f4", "OD": "f8", "OL": "u4", "OV": "u8"}
_NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"})


@dataclass(frozen=True, slots=True)
class DumpOptions:
    max_value_chars: int = 64  # 0 = unlimited (dcmdump +L)
    tags: frozenset[BaseTag] | None = None
    show_meta: bool = True


def _hex(tag: BaseTag) -> str:
    return f"({tag.group:04x},{tag.element:04x})"


def _ts_name(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts:
        return str(UID(str(ts)).name)
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None:
        return "unknown"
    return f"{'Implicit' if implicit else 'Explicit'} VR {'Little' if little else 'Big'} Endian"


class Dumper:
    """Renders one file; `source` is used to peek at deferred values."""

    def __init__(self, source: Path, options: DumpOptions, little_endian: bool = True) -> None:
        self.source = source
        self.options = options
        self.little_endian = little_endian

    # ------------------------------------------------------------------ whole file

    def file_lines(self, ds: Dataset) -> Iterator[str]:
        if self.options.tags:
            yield from self.filtered(ds, "")
            return
        meta = getattr(ds, "file_meta", None)
        has_preamble = getattr(ds, "preamble", None) is not None
        yield "# Dicom-File-Format" if has_preamble else "# Dicom-Data-Set (no preamble)"
        if self.options.show_meta and meta is not None and len(meta):
            yield ""
            yield "# Dicom-Meta-Information-Header"
            yield "# Used TransferSyntax: Little Endian Explicit"
            yield from self.dataset_lines(meta, 0)
        yield ""
        yield "# Dicom-Data-Set"
        yield f"# Used TransferSyntax: {_ts_name(ds)}"
        yield from self.dataset_lines(ds, 0)

    def dataset_lines(self, ds: Dataset, depth: int) -> Iterator[str]:
        for tag in list(ds.keys()):
            yield from self.element_lines(ds, tag, depth)

    def filtered(self, ds: Dataset, prefix: str) -> Iterator[str]:
        """Only the elements named by --tags, at any depth, each prefixed by its path."""
        wanted = self.options.tags or frozenset()
        for tag in list(ds.keys()):
            name = f"{prefix}{_hex(tag)}"
            if tag in wanted:
                first = next(iter(self.element_lines(ds, tag, 0)))
                yield prefix + first
            raw = ds.get_item(tag, keep_deferred=True)
            if raw is not None and (raw.VR == "SQ" or (raw.VR is None and _is_sq(tag))):
                for index, item in enumerate(ds[tag].value or []):
                    yield from self.filtered(item, f"{name}[{index}].")

    # ------------------------------------------------------------------ one element

    def element_lines(self, ds: Dataset, tag: BaseTag, depth: int) -> Iterator[str]:
        raw = ds.get_item(tag, keep_deferred=True)
        length: int | None = None
        deferred: RawDataElement | None = None
        if isinstance(raw, RawDataElement):
            length = raw.length
            if is_deferred(raw):
                deferred = raw
        if deferred is not None:
            vr = deferred_vr(deferred, ds)
            head = self._peek(deferred)
            text = _binary_text(head, vr, self.little_endian, complete=False)
            yield self._line(depth, tag, vr, text, length, 1, _name_for(tag, None))
            return
        elem = ds[tag]
        vr = str(elem.VR)
        if vr == "SQ":
            yield from self._sequence_lines(elem, depth, length)
            return
        text = self.value_text(elem)
        if length is None:  # already converted by pydicom (File Meta, charset): re-encode
            length = _encoded_length(elem, implicit=False, little_endian=self.little_endian)
        yield self._line(depth, tag, vr, text, length, elem.VM, _name_for(tag, elem))

    def _sequence_lines(self, elem: DataElement, depth: int, length: int | None) -> Iterator[str]:
        items = list(elem.value or [])
        undefined = length == UNDEFINED_LENGTH or elem.is_undefined_length
        if undefined:
            length = UNDEFINED_LENGTH  # pydicom parses such sequences while reading
        kind = "undefined" if undefined else "explicit"
        text = f"(Sequence with {kind} length #={len(items)})"
        yield self._line(depth, elem.tag, "SQ", text, length, 1, _name_for(elem.tag, elem))
        for item in items:
            item_undefined = bool(getattr(item, "is_undefined_length_sequence_item", False))
            item_kind = "undefined" if item_undefined else "explicit"
            text = f"(Item with {item_kind} length #={len(item)})"
            yield self._line(depth + 1, BaseTag(0xFFFEE000), "na", text, None, 1, "Item")
            yield from self.dataset_lines(item, depth + 2)
            if item_undefined:
                yield self._line(
                    depth + 1, BaseTag(0xFFFEE00D), "na", "(ItemDelimitationItem)", 0, 0,
                    "ItemDelimitationItem",
                )
        if undefined:
            yield self._line(
                depth, BaseTag(0xFFFEE0DD), "na", "(SequenceDelimitationItem)", 0, 0,
                "SequenceDelimitationItem",
            )

    def value_text(self, elem: DataElement) -> str:
        vr = str(elem.VR)
        if elem.is_empty:
            return "(no value available)"
        if vr in _NUMPY_TYPES or vr in ("OB", "UN", "OB or OW", "US or OW"):
            value = elem.value
            if isinstance(value, bytes) and elem.tag == 0x7FE00010 and elem.is_undefined_length:
                return "(PixelSequence, encapsulated)"
            if isinstance(value, bytes):
                return _binary_text(value, vr, self.little_endian, complete=True)
        values = list(elem.value) if isinstance(elem.value, MultiValue) else [elem.value]
        if vr == "UI" and len(values) == 1:
            uid = UID(str(values[0]))
            if uid.is_valid and uid.keyword:
                return f"={uid.keyword}"
        if vr == "AT":
            return "\\".join(_hex(BaseTag(int(v))) for v in values)
        if vr == "FL":
            return "\\".join(str(np.float32(v)) for v in values)
        if vr in _NUMBER_VRS:
            return "\\".join(str(v) for v in values)
        return "[" + "\\".join("" if v is None else str(v) for v in values) + "]"

    def _line(
        self,
        depth: int,
        tag: BaseTag,
        vr: str,
        text: str,
        length: int | None,
        vm: int,
        name: str,
    ) -> str:
        limit = self.options.max_value_chars
        if limit and len(text) > limit:
            closing = "]" if text.startswith("[") else ""
            text = text[: max(limit - 3 - len(closing), 1)] + "..." + closing
        text = text.replace("\r", "\\r").replace("\n", "\\n")
        indent = "  " * depth
        shown = "u/l" if length == UNDEFINED_LENGTH else "?" if length is None else str(length)
        body = f"{indent}{_hex(tag)} {vr[:2]} {text}"
        return f"{body:<{VALUE_COLUMN + len(indent)}} # {shown:>3}, {vm} {name}"

    def _peek(self, raw: RawDataElement, size: int = 64) -> bytes:
        try:
            with self.source.open("rb") as fp:
                fp.seek(raw.value_tell)
                return fp.read(min(size, raw.length))
        except OSError:
            return b""


def _encoded_length(elem: DataElement, *, implicit: bool, little_endian: bool) -> int | None:
    """The Value Length `elem` has when encoded (PS3.5 §7.1.2), for already converted elements."""
    if elem.is_empty:
        return 0
    fp = DicomBytesIO()
    fp.is_little_endian = little_endian
    fp.is_implicit_VR = implicit
    try:
        write_data_element(fp, elem)
    except (ValueError, TypeError, struct.error, LookupError):
        return None
    header = 12 if str(elem.VR) in _LONG_HEADER_VRS else 8
    return len(fp.getvalue()) - header


_LONG_HEADER_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)


def _dictionary_vr(tag: BaseTag) -> str:
    try:
        return str(dictionary_VR(tag)).split(" ")[0]
    except KeyError:
        return "UN"


def _is_sq(tag: BaseTag) -> bool:
    return _dictionary_vr(tag) == "SQ"


def _name_for(tag: BaseTag, elem: DataElement | None) -> str:
    if elem is not None and elem.keyword:
        return str(elem.keyword)
    if elem is not None and tag.is_private and elem.name and elem.name != "Private tag data":
        words = re.split(r"[^A-Za-z0-9]+", elem.name)
        return "".join(w[:1].upper() + w[1:] for w in words) or "PrivateTag"
    return keyword_for_tag(tag) or ("PrivateTag" if tag.is_private else "Unknown")


def _binary_text(value: bytes, vr: str, little_endian: bool, *, complete: bool) -> str:
    dtype = _NUMPY_TYPES.get(vr)
    if dtype is None:
        text = "\\".join(f"{b:02x}" for b in value[:64])
    else:
        width = np.dtype(dtype).itemsize
        usable = value[: len(value) - len(value) % width][: 64 - 64 % width]
        array = np.frombuffer(usable, dtype=("<" if little_endian else ">") + dtype)
        if dtype.startswith("f"):
            text = "\\".join(str(v) for v in array)
        else:
            text = "\\".join(f"{int(v):0{width * 2}x}" for v in array)
    if not complete or len(value) > 64:
        text += "..."
    return text


# --------------------------------------------------------------------------- summary


SUMMARY_FIELDS = (
    "path",
    "sop_class",
    "modality",
    "patient_id",
    "study_uid",
    "series_uid",
    "instance_uid",
    "transfer_syntax",
)


def summary(path: Path) -> dict[str, str]:
    """One file's identifying attributes, without reading Pixel Data."""
    ds = read_dicom(path, stop_before_pixels=True, defer_size=DEFER_BYTES)
    sop_class = str(ds.get("SOPClassUID", ""))
    return {
        "path": str(path),
        "sop_class": str(UID(sop_class).name) if sop_class else "",
        "modality": str(ds.get("Modality", "")),
        "patient_id": str(ds.get("PatientID", "")),
        "study_uid": str(ds.get("StudyInstanceUID", "")),
        "series_uid": str(ds.get("SeriesInstanceUID", "")),
        "instance_uid": str(ds.get("SOPInstanceUID", "")),
        "transfer_syntax": _ts_name(ds),
    }


# --------------------------------------------------------------------------- the verb


def _split_tag_args(values: list[str] | None) -> list[str] | None:
    # "--tags 0010,0010" is one hex tag; "--tags PatientName,PatientID" two keywords.
    if not values:
        return None
    out: list[str] = []
    for value in values:
        try:
            parse_tag(value)
            out.append(value)
        except TagPathError:
            out.extend(p for p in value.split(",") if p)
    return out


def dump_one(path: Path, args: argparse.Namespace, out: Any) -> None:
    if args.summary:
        row = summary(path)
        line = json.dumps(row) if args.format == "json" else "\t".join(row.values())
        print(line, file=out)
        return
    ds = read_dicom(path, defer_size=DEFER_BYTES)
    little = little_endian_of(ds)
    if args.format == "json":
        encoder = JsonEncoder(little_endian=little, source=path)
        print(to_json_text(encoder.dataset(ds), compact=False), end="", file=out)
        return
    options = DumpOptions(
        max_value_chars=args.max_value_chars, tags=args.parsed_tags, show_meta=not args.no_meta
    )
    for line in Dumper(path, options, little).file_lines(ds):
        print(line, file=out)


def run(args: argparse.Namespace) -> int:
    """Dump each input; files found in directories that are not DICOM are skipped."""
    args.parsed_tags = None
    if args.tags:
        try:
            args.parsed_tags = frozenset(parse_tag(t) for t in _split_tag_args(args.tags) or [])
        except TagPathError as exc:
            raise ToolError(ExitCode.USAGE, f"--tags: {exc}") from exc
    status = ExitCode.OK
    many = len(args.paths) > 1 or any(p.is_dir() for p in args.paths)
    if args.summary and args.format != "json" and not args.no_header:
        print("\t".join(SUMMARY_FIELDS))
    for path, named in iter_files(args.paths, recursive=args.recursive):
        if many and not args.summary and args.format != "json":
            print(f"# File: {path}")
        try:
            dump_one(path, args, sys.stdout)
        except NotDicomError as exc:
            if named:
                print(f"pacs dump: {exc.message}", file=sys.stderr)
                status = status or exc.code
            elif not args.quiet:
                print(f"pacs dump: skipped {path}: not DICOM", file=sys.stderr)
        except ToolError as exc:
            print(f"pacs dump: {exc.message}", file=sys.stderr)
            status = status or exc.code
    return int(status)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, metavar="FILE|DIR")
    parser.add_argument("--tags", "-t", action="append", metavar="TAG",
                        help="show only these elements, at any depth (repeatable; "
                             "(gggg,eeee) or keyword; comma-separated keywords allowed)")
    parser.add_argument("--format", choices=["text", "json"], default="text",
                        help="text (dcmdump-like) or json (PS3.18 F data set; with --summary "
                             "one JSON object per line)")
    parser.add_argument("--recursive", "-r", action="store_true",
                        help="descend into sub-directories")
    parser.add_argument("--summary", "-s", action="store_true",
                        help="one line per file: path, SOP class, modality, patient ID, "
                             "study/series/instance UIDs, transfer syntax (tab-separated)")
    parser.add_argument("--no-header", action="store_true",
                        help="with --summary: no column header line")
    parser.add_argument("--no-meta", action="store_true", help="hide the File Meta group")
    parser.add_argument("--max-value-chars", type=int, default=64, metavar="N",
                        help="truncate displayed values to N characters (0: no limit)")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="do not report non-DICOM files skipped in directories")
