"""PS3.19 Annex A Native DICOM Model (XML) <-> pydicom Dataset; pydicom has no XML support.

Shape (PS3.19 §A.1): a `NativeDicomModel` root holding `DicomAttribute` elements with `tag`
("GGGGEEEE"), `vr`, `keyword` (standard attributes) or `privateCreator` (private ones), whose
content is one of: `Value number="n"` (1-based), `PersonName number="n"` with `Alphabetic` /
`Ideographic` / `Phonetic` groups of `FamilyName`, `GivenName`, `MiddleName`, `NamePrefix`,
`NameSuffix`; `Item number="n"` (sequences); `InlineBinary` (Base64) or `BulkData uri=`.
AT values are "GGGGEEEE"; numbers keep their DICOM text (DS "75.0000000000000" stays so).

The byte order, bulk data and File Meta conventions are those of `dicom_json` (the same value
model builds the elements), so JSON and XML round trips agree. Empty name components up to the
last `^` are written as empty elements, which keeps "OB^^^^" exactly as it was.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.datadict import dictionary_is_retired, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import PersonName

from appliance.tools.dcmfile import (
    ExitCode,
    ToolError,
    atomic_write_text,
    read_dicom,
    write_part10,
)
from appliance.tools.dicom_json import (
    BINARY_VRS,
    PN_GROUPS,
    BulkDirWriter,
    BulkReader,
    BulkWriter,
    deferred_vr,
    file_bulk_reader,
    finish_model_dataset,
    is_deferred,
    make_element,
    prepare,
    swap_bytes,
)

NAMESPACE = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
PN_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
_XML_SPACE = "{http://www.w3.org/XML/1998/namespace}space"


def _float_text(value: float, vr: str) -> str:
    """Shortest text that reads back as the same FL/FD; integral values without ".0"."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(np.float32(value)) if vr == "FL" else repr(value)


def _text_values(elem: DataElement) -> list[str]:
    """The DICOM text of each value of a non-binary, non-PN, non-SQ element."""
    raw = elem.value
    values = list(raw) if isinstance(raw, MultiValue | list | tuple) else [raw]
    if elem.VR == "AT":
        return [f"{int(v):08X}" for v in values]
    if elem.VR in ("FL", "FD"):
        return [_float_text(float(v), elem.VR) for v in values]
    return ["" if v is None else str(v) for v in values]


class XmlEncoder:
    """Data set -> `NativeDicomModel` element tree."""

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

    def document(self, ds: Dataset, *, include_meta: bool = False) -> ET.Element:
        root = ET.Element("NativeDicomModel", {"xmlns": NAMESPACE, _XML_SPACE: "preserve"})
        meta = getattr(ds, "file_meta", None)
        if include_meta and meta is not None:
            self._attributes(root, meta)
        self._attributes(root, ds)
        return root

    def _attributes(self, parent: ET.Element, ds: Dataset) -> None:
        for tag in ds.keys():
            if tag.element == 0 and tag.group != 0x0002:
                continue  # retired group lengths
            self._attribute(parent, ds, tag)

    def _attribute(self, parent: ET.Element, ds: Dataset, tag: BaseTag) -> None:
        raw = ds.get_item(tag, keep_deferred=True)
        if isinstance(raw, RawDataElement) and is_deferred(raw):
            node = self._node(parent, ds, tag, deferred_vr(raw, ds))
            path = (self.source or Path("unknown")).resolve()
            uri = f"{path.as_uri()}?offset={raw.value_tell}&length={raw.length}"
            ET.SubElement(node, "BulkData", {"uri": uri})
            return
        elem = ds[tag]
        vr = str(elem.VR)
        node = self._node(parent, ds, tag, vr)
        if vr == "SQ":
            for number, item in enumerate(elem.value or [], start=1):
                item_node = ET.SubElement(node, "Item", {"number": str(number)})
                self._attributes(item_node, item)
        elif elem.is_empty:
            return
        elif vr in BINARY_VRS:
            self._binary(node, tag, vr, bytes(elem.value))
        elif vr == "PN":
            values = elem.value if isinstance(elem.value, MultiValue) else [elem.value]
            for number, name in enumerate(values, start=1):
                _person_name(node, number, name)
        else:
            for number, text in enumerate(_text_values(elem), start=1):
                ET.SubElement(node, "Value", {"number": str(number)}).text = text or None

    def _node(self, parent: ET.Element, ds: Dataset, tag: BaseTag, vr: str) -> ET.Element:
        attrs = {"tag": f"{int(tag):08X}", "vr": vr}
        if tag.is_private:
            creator = _private_creator(ds, tag)
            if creator:
                # The block is an accident of encoding: the creator names it (as dcm2xml does).
                attrs["tag"] = f"{tag.group:04X}00{tag.element & 0xFF:02X}"
                attrs["privateCreator"] = creator
        elif (keyword := keyword_for_tag(tag)) and not _is_retired(tag):
            attrs["keyword"] = keyword
        return ET.SubElement(parent, "DicomAttribute", attrs)

    def _binary(self, node: ET.Element, tag: BaseTag, vr: str, value: bytes) -> None:
        if not self.little_endian:
            value = swap_bytes(value, vr)
        if self.bulk_writer is not None and len(value) > self.bulk_threshold:
            ET.SubElement(node, "BulkData", {"uri": self.bulk_writer(tag, vr, value)})
        else:
            ET.SubElement(node, "InlineBinary").text = base64.b64encode(value).decode("ascii")


def _is_retired(tag: BaseTag) -> bool:
    try:
        return bool(dictionary_is_retired(tag))
    except KeyError:
        return False


def _private_creator(ds: Dataset, tag: BaseTag) -> str | None:
    if tag.element < 0x1000:
        return None  # a creator element itself (gggg,0010-00FF) or a group length
    creator_tag = Tag(tag.group, tag.element >> 8)
    if creator_tag in ds:
        return str(ds[creator_tag].value)
    return None


def _person_name(node: ET.Element, number: int, name: Any) -> None:
    pn = name if isinstance(name, PersonName) else PersonName(str(name))
    pn_node = ET.SubElement(node, "PersonName", {"number": str(number)})
    for group, text in zip(PN_GROUPS, pn.components, strict=False):
        if not text:
            continue
        group_node = ET.SubElement(pn_node, group)
        for component, part in zip(PN_COMPONENTS, text.split("^"), strict=False):
            ET.SubElement(group_node, component).text = part or None


def to_xml_text(root: ET.Element) -> str:
    ET.indent(root, space="  ")
    # A literal CR would come back as LF (XML 1.0 §2.11 end-of-line handling): escape it.
    body = ET.tostring(root, encoding="unicode").replace("\r", "&#13;")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'


# --------------------------------------------------------------------------- decoding


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(node: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in node if _local(c.tag) == name]


def _numbered(nodes: list[ET.Element]) -> list[ET.Element | None]:
    """Order by the 1-based `number` attribute; a missing number is an empty value."""
    by_number: dict[int, ET.Element] = {}
    for index, node in enumerate(nodes, start=1):
        by_number[int(node.get("number", index))] = node
    size = max(by_number, default=0)
    return [by_number.get(n) for n in range(1, size + 1)]


def _pn_from_xml(node: ET.Element | None) -> str:
    if node is None:
        return ""
    groups: list[str] = []
    for group in PN_GROUPS:
        found = _children(node, group)
        if not found:
            groups.append("")
            continue
        parts = {_local(c.tag): c.text or "" for c in found[0]}
        present = [i for i, comp in enumerate(PN_COMPONENTS) if comp in parts]
        count = (max(present) + 1) if present else 0
        groups.append("^".join(parts.get(PN_COMPONENTS[i], "") for i in range(count)))
    return "=".join(groups).rstrip("=")


def _place_private(ds: Dataset, tag: BaseTag, creator: str) -> BaseTag:
    """(gggg,00ee) + creator -> (gggg,bbee) in the block `creator` holds in `ds` (PS3.5 §7.8.1),
    reserving the first free block when the creator element is not there yet."""
    free = None
    for block in range(0x10, 0x100):
        creator_tag = Tag(tag.group, block)
        if creator_tag not in ds:
            free = block if free is None else free
        elif str(ds[creator_tag].value) == creator:
            return Tag(tag.group, (block << 8) | tag.element)
    if free is None:
        raise ValueError(f"no free private block in group {tag.group:04X} for {creator!r}")
    ds.add_new(Tag(tag.group, free), "LO", creator)
    return Tag(tag.group, (free << 8) | tag.element)


class XmlDecoder:
    """`NativeDicomModel` tree -> Dataset (group 0002 goes to `file_meta` at the top)."""

    def __init__(
        self, bulk_reader: BulkReader | None = None, *, binary_big_endian: bool = False
    ) -> None:
        self.bulk_reader = bulk_reader
        # DCMTK's dcm2xml +Eb writes OW/OF/OL/OD/OV InlineBinary big endian; the model is LE.
        self.binary_big_endian = binary_big_endian

    def dataset(self, node: ET.Element, *, top: bool = False) -> Dataset:
        ds = Dataset()
        meta = FileMetaDataset()
        for attr in _children(node, "DicomAttribute"):
            elem = self.element(attr, ds)
            if top and elem.tag.group == 0x0002:
                meta.add(elem)
            else:
                ds.add(elem)
        if top and len(meta):
            ds.file_meta = meta
        return ds

    def element(self, node: ET.Element, ds: Dataset) -> DataElement:
        tag_text, vr = node.get("tag"), node.get("vr")
        if tag_text is None or vr is None:
            raise ValueError("DicomAttribute without tag or vr")
        tag = Tag(int(tag_text, 16))
        creator = node.get("privateCreator")
        if creator and tag.is_private and tag.element < 0x0100:
            tag = _place_private(ds, tag, creator)
        if vr == "SQ":
            items = _numbered(_children(node, "Item"))
            return make_element(
                tag, vr, [Dataset() if i is None else self.dataset(i) for i in items]
            )
        if vr in BINARY_VRS:
            values = self._binary(node)
            if self.binary_big_endian and values:
                values = [swap_bytes(values[0], vr)]
            return make_element(tag, vr, values)
        if vr == "PN":
            names = _numbered(_children(node, "PersonName"))
            return make_element(tag, vr, [_pn_from_xml(n) for n in names])
        values = _numbered(_children(node, "Value"))
        return make_element(tag, vr, [None if v is None else (v.text or "") for v in values])

    def _binary(self, node: ET.Element) -> list[Any]:
        inline = _children(node, "InlineBinary")
        if inline:
            return [base64.b64decode("".join((inline[0].text or "").split()), validate=True)]
        bulk = _children(node, "BulkData")
        if bulk:
            uri = bulk[0].get("uri")
            if uri is None:
                raise ValueError("BulkData by uuid cannot be resolved (use a uri, or dcm2xml +Eb)")
            if self.bulk_reader is None:
                raise ValueError("BulkData present but no way to resolve it")
            return [self.bulk_reader(uri)]
        return []


# --------------------------------------------------------------------------- the verbs


def dicom_to_xml(
    path: Path,
    out: Path | None,
    *,
    include_meta: bool = False,
    bulk_dir: Path | None = None,
    bulk_threshold: int = 1024,
) -> str:
    """`pacs to-xml`: the XML text (also written atomically to `out` when given)."""
    ds = read_dicom(path)
    little = prepare(ds)
    writer = BulkDirWriter(bulk_dir, out.parent if out else Path.cwd()) if bulk_dir else None
    encoder = XmlEncoder(little_endian=little, bulk_writer=writer, bulk_threshold=bulk_threshold)
    try:
        text = to_xml_text(encoder.document(ds, include_meta=include_meta))
        if out is not None:
            atomic_write_text(out, text)
    except BaseException:
        if writer is not None:
            writer.remove()
        raise
    return text


def xml_to_dicom(
    path: Path,
    out: Path,
    *,
    transfer_syntax: str | None = None,
    binary_big_endian: bool = False,
) -> Dataset:
    """`pacs from-xml`: a NativeDicomModel document -> Part 10 file."""
    if not path.is_file():
        raise ToolError(ExitCode.NOT_FOUND, f"{path}: no such file")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ToolError(ExitCode.NOT_DICOM, f"{path}: not XML: {exc}") from exc
    except OSError as exc:
        raise ToolError(ExitCode.NOT_FOUND, f"{path}: cannot read: {exc.strerror}") from exc
    if _local(root.tag) != "NativeDicomModel":
        raise ToolError(
            ExitCode.NOT_DICOM, f"{path}: not a Native DICOM Model document (root {root.tag})"
        )
    try:
        decoder = XmlDecoder(file_bulk_reader(path.parent), binary_big_endian=binary_big_endian)
        ds = decoder.dataset(root, top=True)
    except (ValueError, TypeError, KeyError) as exc:
        raise ToolError(
            ExitCode.NOT_DICOM, f"{path}: not a valid Native DICOM Model: {exc}"
        ) from exc
    finish_model_dataset(ds, transfer_syntax)
    write_part10(ds, out, transfer_syntax)
    return ds
