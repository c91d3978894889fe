"""DICOM JSON Model (PS3.18 Annex F) <-> pydicom Dataset, and the value model XML shares.

Why not pydicom's `Dataset.to_json_dict` alone: it must not load deferred values (`pacs dump
--format json` never reads Pixel Data), big endian sources need their OW/OF/OL/OD/OV bytes in
little endian (PS3.18 F.2.7 Base64 of the little endian Value Field), and ambiguous VRs
("US or SS", "OB or OW") must be resolved first (PS3.18 F.2.3 allows a single VR). The
decoder is ours too, so that JSON and the PS3.19 XML model build elements the same way.

Mapping (PS3.18 Table F.2.3-1): PN -> objects with Alphabetic/Ideographic/Phonetic; AT ->
"GGGGEEEE" strings; IS/DS/FL/FD/SL/SS/SV/UL/US/UV -> JSON numbers; SQ -> array of objects;
OB/OD/OF/OL/OV/OW/UN -> InlineBinary (Base64) or BulkDataURI; other VRs -> strings. An empty
value inside a multi-valued element is `null` (F.2.5); an empty element has no "Value".

Group 0002 (File Meta) is not part of a data set; `include_meta` adds it (as dcm2json +m),
which is what lets `from-json` restore the transfer syntax of compressed files.
"""

from __future__ import annotations

import base64
import json
import math
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import (
    DataElement,
    RawDataElement,
    convert_raw_data_element,
    empty_value_for_VR,
)
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import correct_ambiguous_vr, correct_ambiguous_vr_element
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID
from pydicom.valuerep import PersonName, format_number_as_ds

from appliance.tools.dcmfile import (
    UNDEFINED_LENGTH,
    ExitCode,
    ToolError,
    atomic_write,
    atomic_write_text,
    read_dicom,
    write_part10,
)

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
INT_VRS = frozenset({"IS", "SL", "SS", "SV", "UL", "US", "UV"})
FLOAT_VRS = frozenset({"DS", "FL", "FD"})
# Word size of the binary VRs whose bytes depend on the transfer syntax's byte order.
SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")

# A bulk data element handler: (element tag, VR, value bytes) -> BulkDataURI.
BulkWriter = Callable[[BaseTag, str, bytes], str]
# A BulkDataURI resolver: (uri) -> the value bytes.
BulkReader = Callable[[str], bytes]


def swap_bytes(value: bytes, vr: str) -> bytes:
    """Reverse the byte order of each word of an OW/OF/OL/OD/OV value."""
    width = SWAP_WIDTH.get(vr)
    if width is None or len(value) % width:
        return value
    out = bytearray(value)
    for offset in range(width):
        out[offset::width] = value[width - 1 - offset :: width]
    return bytes(out)


def little_endian_of(ds: Dataset) -> bool:
    """The byte order the data set was read in (File Meta first, then pydicom's guess)."""
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts:
        try:
            return bool(UID(str(ts)).is_little_endian)
        except ValueError:
            pass
    encoding = getattr(ds, "original_encoding", (None, None))
    return bool(encoding[1]) if encoding and encoding[1] is not None else True


def prepare(ds: Dataset) -> bool:
    """Resolve ambiguous VRs in place (PS3.5 §6.2); return True if the source is little endian.

    This converts (and so loads) every element: for fully read data sets only.
    """
    little = little_endian_of(ds)
    ambiguous_pixels = 0x7FE00010 in ds and " or " in str(ds[0x7FE00010].VR)
    correct_ambiguous_vr(ds, little)
    if ambiguous_pixels and _encapsulated(ds):
        # Encapsulated Pixel Data is OB (PS3.5 §A.4); a file that says OW keeps its OW.
        ds[0x7FE00010].VR = "OB"
    return little


def _encapsulated(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    try:
        return bool(ts) and bool(UID(str(ts)).is_encapsulated)
    except ValueError:
        return False


# --------------------------------------------------------------------------- values out


class JsonNumber(float):
    """A float that remembers its text, so that DS "0.000000" survives JSON both ways."""

    text: str

    def __new__(cls, text: str) -> JsonNumber:
        number = super().__new__(cls, text)
        number.text = text
        return number


class JsonInt(int):
    """An int that remembers its text (IS "0010")."""

    text: str

    def __new__(cls, text: str) -> JsonInt:
        number = super().__new__(cls, text)
        number.text = text
        return number


# RFC 8259 §6 number grammar: only such DICOM text can be written as a JSON number verbatim.
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def _number(value: Any, vr: str) -> Any:
    """A JSON number for a numeric VR value; invalid text (badly encoded IS/DS) stays a string."""
    if value is None or value == "":
        return None
    text = str(getattr(value, "original_string", "") or "").strip()
    if vr in ("IS", "DS") and text and _JSON_NUMBER.fullmatch(text):
        return JsonNumber(text) if vr == "DS" else JsonInt(text)
    if vr in INT_VRS:
        try:
            return int(value)
        except (TypeError, ValueError):
            return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(number):
        return str(value)  # JSON has no NaN/Infinity (dcm2json -es refuses them)
    if vr == "FL":
        # Shortest text that gives back the same 32-bit float, not the widened double's digits.
        return float(str(np.float32(number)))
    return number


def _pn(value: Any) -> dict[str, str] | None:
    name = value if isinstance(value, PersonName) else PersonName(str(value))
    groups = {key: comp for key, comp in zip(PN_GROUPS, name.components, strict=False) if comp}
    return groups or None


def element_values(elem: DataElement) -> list[Any]:
    """The values of a non-binary, non-sequence element in the JSON model's Python types."""
    if elem.is_empty:
        return []
    raw = elem.value
    values = list(raw) if isinstance(raw, MultiValue | list | tuple) else [raw]
    vr = elem.VR
    if vr == "PN":
        return [_pn(v) for v in values]
    if vr == "AT":
        return [f"{int(v):08X}" for v in values]
    if vr in INT_VRS or vr in FLOAT_VRS:
        return [_number(v, vr) for v in values]
    return [None if v is None or v == "" else str(v) for v in values]


class JsonEncoder:
    """Data set -> PS3.18 F JSON object (a dict ready for `json.dumps`)."""

    def __init__(
        self,
        *,
        little_endian: bool = True,
        bulk_writer: BulkWriter | None = None,
        bulk_threshold: int = 1024,
        source: Path | None = None,
    ) -> None:
        self.little_endian = little_endian
        self.bulk_writer = bulk_writer
        self.bulk_threshold = bulk_threshold
        self.source = source

    def dataset(self, ds: Dataset, *, include_meta: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        meta = getattr(ds, "file_meta", None)
        if include_meta and meta is not None:
            for tag in meta.keys():
                out[f"{int(tag):08X}"] = self.element(meta, tag)
        for tag in ds.keys():
            if tag.element == 0 and tag.group != 0x0002:
                continue  # group lengths are retired and not part of the JSON model (F.2.1)
            out[f"{int(tag):08X}"] = self.element(ds, tag)
        return out

    def element(self, ds: Dataset, tag: BaseTag) -> dict[str, Any]:
        raw = ds.get_item(tag, keep_deferred=True)
        if isinstance(raw, RawDataElement) and is_deferred(raw):
            # Deferred (never read): point at the bytes in the source file instead.
            return {"vr": deferred_vr(raw, ds), "BulkDataURI": self._deferred_uri(raw)}
        elem = ds[tag]
        if " or " in str(elem.VR):  # not resolved by prepare() (dump reads lazily)
            elem = cast(DataElement, correct_ambiguous_vr_element(elem, ds, self.little_endian))
        vr = str(elem.VR)
        out: dict[str, Any] = {"vr": vr}
        if vr == "SQ":
            out["Value"] = [self.dataset(item) for item in (elem.value or [])]
        elif vr in BINARY_VRS:
            if not elem.is_empty:
                self._binary(out, tag, vr, bytes(elem.value))
        else:
            values = element_values(elem)
            if values:
                out["Value"] = values
        return out

    def _binary(self, out: dict[str, Any], tag: BaseTag, vr: str, value: bytes) -> None:
        if not self.little_endian:
            value = swap_bytes(value, vr)
        if self.bulk_writer is not None and len(value) > self.bulk_threshold:
            out["BulkDataURI"] = self.bulk_writer(tag, vr, value)
        else:
            out["InlineBinary"] = base64.b64encode(value).decode("ascii")

    def _deferred_uri(self, raw: RawDataElement) -> str:
        path = (self.source or Path("unknown")).resolve()
        return f"{path.as_uri()}?offset={raw.value_tell}&length={raw.length}"


def deferred_vr(raw: RawDataElement, ds: Dataset) -> str:
    """The VR of a value never read: implicit VR files leave OB/OW to Bits Allocated."""
    if raw.VR:
        return str(raw.VR)
    vr = _dictionary_vr(raw.tag)
    if raw.tag == 0x7FE00010:
        bits = ds.get("BitsAllocated")
        vr = "OW" if bits is not None and int(bits) > 8 else "OB"
    return vr


def is_deferred(raw: RawDataElement) -> bool:
    """A value pydicom skipped (defer_size); sequences are read anyway, they hold elements."""
    if raw.value is not None or raw.length in (0, UNDEFINED_LENGTH):
        return False
    return (raw.VR or _dictionary_vr(raw.tag)) != "SQ"


def _dictionary_vr(tag: BaseTag) -> str:
    try:
        return str(dictionary_VR(tag)).split(" ")[0]
    except KeyError:
        return "UN"


_RAW = "\x00num:"
_RAW_PATTERN = re.compile(r'"\\u0000num:([^"\\]*)"')


def _raw_numbers(obj: Any) -> Any:
    # json writes floats through float.__repr__; carry the DICOM text through as a marked
    # string instead and unquote it afterwards.
    if isinstance(obj, JsonNumber | JsonInt):
        return _RAW + obj.text
    if isinstance(obj, dict):
        return {k: _raw_numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_raw_numbers(v) for v in obj]
    return obj


def to_json_text(obj: dict[str, Any], *, compact: bool = False) -> str:
    """Serialise, writing IS/DS numbers with their original DICOM text."""
    marked = _raw_numbers(obj)
    if compact:
        text = json.dumps(marked, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    else:
        text = json.dumps(marked, ensure_ascii=False, indent=2, allow_nan=False) + "\n"
    return _RAW_PATTERN.sub(lambda m: m.group(1), text)


def parse_json_text(text: str) -> Any:
    """json.loads keeping the text of every number (see JsonNumber)."""
    return json.loads(text, parse_float=JsonNumber, parse_int=JsonInt)


# --------------------------------------------------------------------------- values in


def _ds_text(value: Any) -> str:
    if isinstance(value, bool):
        raise ValueError(f"boolean {value!r} is not a DS value")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        return text if len(text) <= 16 else format_number_as_ds(value)
    return str(value)


def _pn_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"PN value must be an object, got {value!r}")
    groups = [str(value.get(key) or "") for key in PN_GROUPS]
    return "=".join(groups).rstrip("=")


def _number_in(value: Any, vr: str) -> Any:
    if value is None or value == "":
        return None if vr not in ("IS", "DS") else ""
    if vr in ("IS", "DS") and isinstance(value, JsonNumber | JsonInt):
        return value.text
    if vr == "DS":
        return _ds_text(value)
    if vr == "IS":
        return str(int(value)) if not isinstance(value, str) else value
    if isinstance(value, str):
        return float(value) if vr in FLOAT_VRS else int(value)
    return float(value) if vr in FLOAT_VRS else int(value)


def make_element(tag: BaseTag, vr: str, values: list[Any]) -> DataElement:
    """Build an element from model values (strings, numbers, PN objects, items, or one bytes)."""
    if vr == "SQ":
        return DataElement(tag, vr, Sequence(values))
    if not values:
        return DataElement(tag, vr, empty_value_for_VR(vr))
    if vr in BINARY_VRS:
        return DataElement(tag, vr, values[0])
    if vr == "PN":
        converted: list[Any] = [_pn_text(v) for v in values]
    elif vr == "AT":
        converted = [Tag(int(str(v), 16)) for v in values]
    elif vr in INT_VRS or vr in FLOAT_VRS:
        converted = [_number_in(v, vr) for v in values]
    else:
        converted = ["" if v is None else str(v) for v in values]
    if vr in ("IS", "DS"):
        # Decode as if read from a file: keeps the text as written, and a malformed value
        # (badVR.dcm's IS "1A") warns as on reading instead of raising.
        text = "\\".join("" if v is None else str(v) for v in converted).encode("ascii")
        return convert_raw_data_element(RawDataElement(tag, vr, len(text), text, 0, False, True))
    return DataElement(tag, vr, converted[0] if len(converted) == 1 else converted)


class JsonDecoder:
    """PS3.18 F JSON object -> Dataset (File Meta, if present, goes to `file_meta`)."""

    def __init__(self, bulk_reader: BulkReader | None = None) -> None:
        self.bulk_reader = bulk_reader

    def dataset(self, obj: Any, *, top: bool = False) -> Dataset:
        if not isinstance(obj, dict):
            raise ValueError(f"expected an object of attributes, got {type(obj).__name__}")
        ds = Dataset()
        meta = FileMetaDataset()
        for key, attr in obj.items():
            tag = _parse_key(key)
            elem = self.element(tag, attr)
            if top and tag.group == 0x0002:
                meta.add(elem)
            else:
                ds.add(elem)
        if top and len(meta):
            ds.file_meta = meta
        return ds

    def element(self, tag: BaseTag, attr: Any) -> DataElement:
        if not isinstance(attr, dict) or not isinstance(attr.get("vr"), str):
            raise ValueError(f"attribute {int(tag):08X} has no \"vr\"")
        vr: str = attr["vr"]
        if vr == "SQ":
            return make_element(tag, vr, [self.dataset(i) for i in attr.get("Value") or []])
        if vr in BINARY_VRS:
            return make_element(tag, vr, self._binary(attr))
        values = attr.get("Value")
        if values is not None and not isinstance(values, list):
            raise ValueError(f"attribute {int(tag):08X}: \"Value\" must be an array")
        return make_element(tag, vr, values or [])

    def _binary(self, attr: dict[str, Any]) -> list[Any]:
        if "InlineBinary" in attr:
            return [base64.b64decode(attr["InlineBinary"], validate=True)]
        if "BulkDataURI" in attr:
            if self.bulk_reader is None:
                raise ValueError("BulkDataURI present but no way to resolve it")
            return [self.bulk_reader(str(attr["BulkDataURI"]))]
        if attr.get("Value"):
            raise ValueError("binary VR with a \"Value\" array (expected InlineBinary)")
        return []


def _parse_key(key: Any) -> BaseTag:
    if not isinstance(key, str) or len(key) != 8:
        raise ValueError(f"attribute key {key!r} is not 8 hex digits")
    return Tag(int(key, 16))


# --------------------------------------------------------------------------- bulk data files


class BulkDirWriter:
    """Writes bulk values as files under a directory; URIs are relative to `relative_to`."""

    def __init__(self, directory: Path, relative_to: Path) -> None:
        self.directory = directory
        self.relative_to = relative_to
        self.written: list[Path] = []

    def __call__(self, tag: BaseTag, vr: str, value: bytes) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{len(self.written) + 1:04d}_{int(tag):08X}_{vr}.bin"
        atomic_write(path, lambda fp: fp.write(value))
        self.written.append(path)
        try:
            return urllib.parse.quote(str(path.resolve().relative_to(self.relative_to.resolve())))
        except ValueError:
            return path.resolve().as_uri()

    def remove(self) -> None:
        for path in self.written:
            path.unlink(missing_ok=True)


def file_bulk_reader(base: Path) -> BulkReader:
    """Resolve relative or file:// BulkDataURIs (with optional ?offset=&length=)."""

    def read(uri: str) -> bytes:
        parsed = urllib.parse.urlsplit(uri)
        if parsed.scheme not in ("", "file"):
            raise ValueError(f"cannot fetch BulkDataURI {uri!r}: only files are supported")
        path = Path(urllib.parse.unquote(parsed.path))
        if not path.is_absolute():
            path = base / path
        query = urllib.parse.parse_qs(parsed.query)
        offset = int(query.get("offset", ["0"])[0])
        length = int(query["length"][0]) if "length" in query else -1
        try:
            with path.open("rb") as fp:
                fp.seek(offset)
                data = fp.read(length)
        except OSError as exc:
            raise ToolError(ExitCode.NOT_FOUND, f"{path}: bulk data: {exc.strerror}") from exc
        if length >= 0 and len(data) != length:
            raise ValueError(f"bulk data {uri!r} is shorter than {length} bytes")
        return data

    return read


def restore_byte_order(ds: Dataset, little_endian: bool) -> None:
    """Model bytes are little endian; swap back for a big endian target syntax."""
    if little_endian:
        return
    for elem in ds.iterall():
        if elem.VR in SWAP_WIDTH and isinstance(elem.value, bytes):
            elem.value = swap_bytes(elem.value, elem.VR)


# --------------------------------------------------------------------------- the verbs


def dicom_to_json(
    path: Path,
    out: Path | None,
    *,
    include_meta: bool = False,
    bulk_dir: Path | None = None,
    bulk_threshold: int = 1024,
    compact: bool = False,
) -> str:
    """`pacs to-json`: the JSON text (also written atomically to `out` when given)."""
    ds = read_dicom(path)
    little = prepare(ds)
    writer = None
    if bulk_dir is not None:
        writer = BulkDirWriter(bulk_dir, (out.parent if out else Path.cwd()))
    encoder = JsonEncoder(little_endian=little, bulk_writer=writer, bulk_threshold=bulk_threshold)
    try:
        text = to_json_text(encoder.dataset(ds, include_meta=include_meta), compact=compact)
        if out is not None:
            atomic_write_text(out, text)
    except BaseException:
        if writer is not None:
            writer.remove()
        raise
    return text


def load_json(path: Path) -> Any:
    """Parse a JSON file; NOT_FOUND / NOT_DICOM on failure."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ToolError(ExitCode.NOT_FOUND, f"{path}: no such file") from exc
    except OSError as exc:
        raise ToolError(ExitCode.NOT_FOUND, f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ToolError(ExitCode.NOT_DICOM, f"{path}: not DICOM JSON: not UTF-8 text") from exc
    try:
        return parse_json_text(text)
    except json.JSONDecodeError as exc:
        raise ToolError(ExitCode.NOT_DICOM, f"{path}: not DICOM JSON: {exc}") from exc


def json_to_dicom(path: Path, out: Path, *, transfer_syntax: str | None = None) -> Dataset:
    """`pacs from-json`: JSON (a data set, or a one-element array of them) -> Part 10 file."""
    obj = load_json(path)
    if isinstance(obj, list) and len(obj) == 1:
        obj = obj[0]  # DICOMweb metadata responses are arrays
    try:
        ds = JsonDecoder(file_bulk_reader(path.parent)).dataset(obj, top=True)
    except (ValueError, TypeError, KeyError) as exc:
        raise ToolError(ExitCode.NOT_DICOM, f"{path}: not DICOM JSON: {exc}") from exc
    finish_model_dataset(ds, transfer_syntax)
    write_part10(ds, out, transfer_syntax)
    return ds


def finish_model_dataset(ds: Dataset, transfer_syntax: str | None) -> None:
    """Put model (little endian) bytes into the byte order of the target syntax."""
    meta = getattr(ds, "file_meta", None)
    ts = transfer_syntax or (meta.get("TransferSyntaxUID") if meta is not None else None)
    little = True
    if ts:
        try:
            little = UID(str(ts)).is_little_endian
        except ValueError:
            little = True
    restore_byte_order(ds, little)
