"""Index attributes from the first bytes of a received data set (DESIGN "Ingest data flow" 3).

THEORY OF OPERATION
-------------------
The bytes are a data set exactly as received in C-STORE (no preamble, no File Meta group),
encoded in the negotiated transfer syntax. A minimal element walker (PS3.5 §7.1) reads the
top-level elements in tag order, keeps the raw value of the ~35 attributes the index needs
(``_WANTED``) and skips everything else by its Value Length. It stops at the first tag beyond the
last wanted one, so it never reaches Pixel Data (7FE0,0010). Undefined-length sequences and items
(PS3.5 §7.5) are skipped by walking their items; the contents of an undefined-length UN element
are Implicit VR Little Endian (PS3.5 §6.2.2 note).

Two implementations of the walk give the same result on every input (property-tested): the
compiled one in ``workers.kernels.walk`` (the default: the walk of a ~200-element CT header
takes ~3 µs instead of ~75 µs) and the pure-Python one here, which is its reference and stays
selectable (``walker="python"``). The kernel returns where the wanted values are; they are
decoded here, in Python, by the same code for both.

Transfer syntaxes:
  - Implicit VR LE and Explicit VR LE (every compressed syntax encodes its data set so): walked.
  - Deflated Explicit VR LE (PS3.5 §A.5) and JPIP Referenced Deflate: the raw deflate stream is
    inflated (just far enough), then walked as Explicit VR LE.
  - Explicit VR Big Endian (retired): pydicom.
  - A Specific Character Set other than default / ISO_IR 6 / ISO_IR 100 / ISO_IR 192: the
    walker's raw text values are decoded through pydicom's character set machinery (PS3.5 §6.1).
  - Anything the walker finds odd (an unknown VR, tags out of order, an unexpected VR for a
    wanted attribute, an undefined length on a VR that cannot have one): the whole read is
    redone by pydicom, which is lenient in the ways real-world senders need.

Truncation contract (the caller hands over the first ``HEAD_BYTES`` of a spool file):
  - ``complete=True`` (default) says ``data`` is the whole data set: ending cleanly at an element
    boundary is the end of the data set.
  - ``complete=False`` says more bytes follow: if the walk runs out of data before it has seen a
    tag beyond the last wanted one, ``NeedMoreData`` is raised and the caller retries with the
    whole data set (read from the spool file).
  - Running out of data inside an element raises ``NeedMoreData`` in both cases. It subclasses
    ``IngestError`` (status 0xC000), so the retry with the whole data set needs no special
    handling: a data set that is truly truncated is refused as "cannot understand".

Outcome: any input produces an ``IndexAttributes`` or an ``IngestError``, never another
exception (property-tested).
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any, Literal

from appliance.dimse.status import Status
from appliance.dimse.transfer_syntax import data_set_encoding
from appliance.errors import IngestError


@dataclass(frozen=True, slots=True)
class IndexAttributes:
    """The attributes the index keeps (PS3.4 C.6.1.1 Q/R keys at each level), as received.

    Values are ``str``, stripped of padding; ``''`` when absent or empty. Multi-valued
    attributes keep PS3.5 §6.4 backslash separators. Rows/Columns (US) are decimal strings.
    """

    specific_character_set: str = ""
    # ---- instance (PS3.4 C.6.1.1.5) ----
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    instance_number: str = ""
    content_date: str = ""
    content_time: str = ""
    number_of_frames: str = ""
    rows: str = ""
    columns: str = ""
    # ---- study (PS3.4 C.6.1.1.3) ----
    study_instance_uid: str = ""
    study_date: str = ""
    study_time: str = ""
    accession_number: str = ""
    referring_physician_name: str = ""
    study_id: str = ""
    study_description: str = ""
    institution_name: str = ""
    # ---- series (PS3.4 C.6.1.1.4) ----
    series_instance_uid: str = ""
    modality: str = ""
    series_number: str = ""
    series_description: str = ""
    series_date: str = ""
    series_time: str = ""
    body_part_examined: str = ""
    protocol_name: str = ""
    station_name: str = ""
    performed_procedure_step_start_date: str = ""
    performed_procedure_step_start_time: str = ""
    # ---- patient (PS3.4 C.6.1.1.2) ----
    patient_id: str = ""
    patient_name: str = ""
    issuer_of_patient_id: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""


class NeedMoreData(IngestError):  # noqa: N818 - a request to the caller, named as the API says
    """The bytes end before every wanted attribute was seen; retry with the whole data set.

    Raised with ``complete=True`` too when the data set is cut inside an element: then it is a
    plain 0xC000 refusal, which is why it subclasses ``IngestError``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, Status.CANNOT_UNDERSTAND)


class _Odd(Exception):  # noqa: N818 - internal signal, never escapes this module
    """The walker met something it does not handle; pydicom re-reads the data set."""


# (tag, field name, VR). The VR is the data dictionary one (PS3.6); the walker checks explicit
# VRs against it and decodes implicit VR values by it.
_WANTED_TABLE: tuple[tuple[int, str, str], ...] = (
    (0x00080005, "specific_character_set", "CS"),
    (0x00080016, "sop_class_uid", "UI"),
    (0x00080018, "sop_instance_uid", "UI"),
    (0x00080020, "study_date", "DA"),
    (0x00080021, "series_date", "DA"),
    (0x00080023, "content_date", "DA"),
    (0x00080030, "study_time", "TM"),
    (0x00080031, "series_time", "TM"),
    (0x00080033, "content_time", "TM"),
    (0x00080050, "accession_number", "SH"),
    (0x00080060, "modality", "CS"),
    (0x00080080, "institution_name", "LO"),
    (0x00080090, "referring_physician_name", "PN"),
    (0x00081010, "station_name", "SH"),
    (0x00081030, "study_description", "LO"),
    (0x0008103E, "series_description", "LO"),
    (0x00100010, "patient_name", "PN"),
    (0x00100020, "patient_id", "LO"),
    (0x00100021, "issuer_of_patient_id", "LO"),
    (0x00100030, "patient_birth_date", "DA"),
    (0x00100040, "patient_sex", "CS"),
    (0x00180015, "body_part_examined", "CS"),
    (0x00181030, "protocol_name", "LO"),
    (0x0020000D, "study_instance_uid", "UI"),
    (0x0020000E, "series_instance_uid", "UI"),
    (0x00200010, "study_id", "SH"),
    (0x00200011, "series_number", "IS"),
    (0x00200013, "instance_number", "IS"),
    (0x00280008, "number_of_frames", "IS"),
    (0x00280010, "rows", "US"),
    (0x00280011, "columns", "US"),
    (0x00400244, "performed_procedure_step_start_date", "DA"),
    (0x00400245, "performed_procedure_step_start_time", "TM"),
)

_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(IndexAttributes))
_FIELD_INDEX = {name: i for i, name in enumerate(_FIELD_NAMES)}
# tag -> (slot in the IndexAttributes field order, dictionary VR)
_WANTED: dict[int, tuple[int, str]] = {t: (_FIELD_INDEX[n], vr) for t, n, vr in _WANTED_TABLE}
WANTED_TAGS: tuple[int, ...] = tuple(t for t, _, _ in _WANTED_TABLE)
_LAST_WANTED = max(WANTED_TAGS)
_CHARSET_TAG = min(WANTED_TAGS)  # (0008,0005): so it is the first element a walk finds
assert _CHARSET_TAG == 0x00080005

# PS3.5 §6.1.2.3: VRs whose values are affected by Specific Character Set.
_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
# Character sets whose text the walker decodes itself; pydicom maps default/ISO_IR 6 to
# iso8859 (latin-1 superset behaviour) as well, so results agree byte for byte.
_FAST_CHARSETS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1",
                  "ISO_IR 192": "utf-8"}


def _vr16(vr: str) -> int:
    return int.from_bytes(vr.encode("ascii"), "little")


# PS3.5 Table 7.1-1: explicit VRs with a 2-byte reserved field and a 32-bit Value Length.
LONG_VR_NAMES = ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV")
_SHORT_VR_NAMES = ("AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "PN",
                   "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US")
_VR_NAMES = {_vr16(v): v for v in LONG_VR_NAMES + _SHORT_VR_NAMES}
# Undefined length is legal on SQ, on UN (PS3.5 §6.2.2) and on encapsulated OB/OW (§A.4).
_UNDEFINED_OK = frozenset(_vr16(v) for v in ("SQ", "UN", "OB", "OW"))
_VR_UN = _vr16("UN")

_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xE000  # (FFFE,E000) Item, PS3.5 §7.5
_ITEM_DELIMITER = 0xE00D  # (FFFE,E00D)
_SEQUENCE_DELIMITER = 0xE0DD  # (FFFE,E0DD)
_MAX_DEPTH = 32  # nesting deeper than this is hostile input, not a real data set

_EXPLICIT_HDR = struct.Struct("<HHHH").unpack_from  # group, element, VR, 16-bit length
_IMPLICIT_HDR = struct.Struct("<HHI").unpack_from  # group, element, 32-bit length
_U32 = struct.Struct("<I").unpack_from

# What pydicom may raise on hostile bytes. pydicom has no single error base class, so the
# fallback names the families it is known to raise instead of catching Exception.
_PYDICOM_FAILURES: tuple[type[BaseException], ...] = (
    ValueError, KeyError, IndexError, EOFError, struct.error, TypeError, OverflowError,
    NotImplementedError, AttributeError, LookupError, RecursionError, OSError, MemoryError,
    zlib.error,
)


@lru_cache(maxsize=1)
def _pydicom_failures() -> tuple[type[BaseException], ...]:
    # pydicom is imported only when a fallback runs: most workers never need it for headers.
    from pydicom.errors import BytesLengthException, InvalidDicomError

    return (*_PYDICOM_FAILURES, BytesLengthException, InvalidDicomError)

# A wanted element found by a walk: (tag, explicit VR as uint16 or 0, value offset, value
# length). Both walkers return these in tag order: tuples from Python, lists from numba.
Raw = Sequence[int]

# Explicit VR -> element header size (PS3.5 Table 7.1-1 / 7.1-2); absent = not a VR.
_HEADER_BYTES = {_vr16(v): 12 if v in LONG_VR_NAMES else 8 for v in _VR_NAMES.values()}


# ---------------------------------------------------------------------------------- walker
# The two walks are written out in one frame each: the per-element cost is the whole cost
# (~200 elements before (0040,0245) in a CT), and a helper call per element would add ~40%.


def _walk_explicit(data: Any, complete: bool) -> list[Raw]:
    """Top-level Explicit VR LE element walk (PS3.5 §7.1.2) -> raw wanted values."""
    header = _EXPLICIT_HDR
    header_bytes = _HEADER_BYTES.get
    u32 = _U32
    wanted = _WANTED
    last = _LAST_WANTED
    found: list[Raw] = []
    n = len(data)
    limit = n - 8
    pos = 0
    prev = -1
    while pos <= limit:
        group, element, vr16, length = header(data, pos)
        tag = (group << 16) | element
        if tag > last:
            return found
        if tag <= prev:
            raise _Odd(f"tag ({group:04X},{element:04X}) out of order at offset {pos}")
        prev = tag
        size = header_bytes(vr16)
        if size is None:
            raise _Odd(f"unknown VR at offset {pos}")
        if size == 12:
            if pos + 12 > n:
                raise NeedMoreData(f"element header cut at offset {pos}")
            length = u32(data, pos + 8)[0]
            if length == _UNDEFINED:
                pos = _skip_undefined(data, pos, tag, vr16, False)
                continue
        start = pos + size
        pos = start + length
        if tag in wanted:
            found.append((tag, vr16, start, length))
    return _walk_end(pos, n, complete, found)


def _walk_implicit(data: Any, complete: bool) -> list[Raw]:
    """Top-level Implicit VR LE element walk (PS3.5 §7.1.3) -> raw wanted values."""
    header = _IMPLICIT_HDR
    wanted = _WANTED
    last = _LAST_WANTED
    found: list[Raw] = []
    n = len(data)
    limit = n - 8
    pos = 0
    prev = -1
    while pos <= limit:
        group, element, length = header(data, pos)
        tag = (group << 16) | element
        if tag > last:
            return found
        if tag <= prev:
            raise _Odd(f"tag ({group:04X},{element:04X}) out of order at offset {pos}")
        prev = tag
        if length == _UNDEFINED:
            pos = _skip_undefined(data, pos, tag, 0, True)
            continue
        start = pos + 8
        pos = start + length
        if tag in wanted:
            found.append((tag, 0, start, length))
    return _walk_end(pos, n, complete, found)


def _walk_end(pos: int, n: int, complete: bool, found: list[Raw]) -> list[Raw]:
    """The data ran out before a tag beyond the last wanted one (see the truncation contract)."""
    if pos > n:
        raise NeedMoreData(f"the element ending at offset {pos} runs past the data ({n} bytes)")
    if pos == n and complete:
        return found
    raise NeedMoreData(f"data set ends at offset {n} before the index attributes")


def _skip_undefined(data: Any, pos: int, tag: int, vr16: int, implicit: bool) -> int:
    """Skip a top-level undefined-length element at ``pos``; returns the offset after it."""
    if tag in _WANTED or not (implicit or vr16 in _UNDEFINED_OK):
        raise _Odd(f"undefined length on ({tag >> 16:04X},{tag & 0xFFFF:04X}) at offset {pos}")
    # An undefined-length UN holds Implicit VR LE items (PS3.5 §6.2.2).
    return _skip_sequence(data, pos + (8 if implicit else 12), implicit or vr16 == _VR_UN, 1)


def _skip_sequence(data: Any, pos: int, implicit: bool, depth: int) -> int:
    """Skip the items of an undefined-length sequence; returns the offset after (FFFE,E0DD)."""
    if depth > _MAX_DEPTH:
        raise IngestError(f"sequences nested deeper than {_MAX_DEPTH} at offset {pos}",
                          Status.CANNOT_UNDERSTAND)
    n = len(data)
    while True:
        if pos + 8 > n:
            raise NeedMoreData(f"sequence cut at offset {pos}")
        group, element, length = _IMPLICIT_HDR(data, pos)  # item headers are always so (§7.5)
        if group != 0xFFFE:
            raise _Odd(f"expected an item tag at offset {pos}")
        pos += 8
        if element == _SEQUENCE_DELIMITER:
            return pos
        if element != _ITEM:
            raise _Odd(f"unexpected (FFFE,{element:04X}) at offset {pos - 8}")
        if length == _UNDEFINED:
            pos = _skip_item(data, pos, implicit, depth + 1)
        else:
            pos += length
            if pos > n:
                raise NeedMoreData(f"item runs past offset {n}")


def _item_element(data: Any, pos: int, implicit: bool) -> tuple[int, int, int, int, int]:
    """(group, element, VR, length, header size) of an element inside an item."""
    if pos + 8 > len(data):
        raise NeedMoreData(f"item cut at offset {pos}")
    if implicit:
        group, element, length = _IMPLICIT_HDR(data, pos)
        return group, element, 0, length, 8
    group, element, vr16, length = _EXPLICIT_HDR(data, pos)
    if group == 0xFFFE:  # delimiters carry no VR: tag + 32-bit length (PS3.5 §7.5)
        group, element, length = _IMPLICIT_HDR(data, pos)
        return group, element, 0, length, 8
    size = _HEADER_BYTES.get(vr16)
    if size is None:
        raise _Odd(f"unknown VR at offset {pos}")
    if size == 12:
        if pos + 12 > len(data):
            raise NeedMoreData(f"element header cut at offset {pos}")
        length = _U32(data, pos + 8)[0]
    return group, element, vr16, length, size


def _skip_item(data: Any, pos: int, implicit: bool, depth: int) -> int:
    """Skip the elements of an undefined-length item; returns the offset after (FFFE,E00D)."""
    n = len(data)
    while True:
        group, element, vr16, length, size = _item_element(data, pos, implicit)
        if group == 0xFFFE:
            if element == _ITEM_DELIMITER:
                return pos + 8
            raise _Odd(f"unexpected (FFFE,{element:04X}) inside an item at offset {pos}")
        if length == _UNDEFINED:
            if not (implicit or vr16 in _UNDEFINED_OK):
                raise _Odd(f"undefined length at offset {pos}")
            pos = _skip_sequence(data, pos + size, implicit or vr16 == _VR_UN, depth + 1)
        else:
            pos += size + length
            if pos > n:
                raise NeedMoreData(f"element inside an item runs past offset {n}")


def _walk_python(data: Any, implicit: bool, complete: bool) -> list[Raw]:
    return (_walk_implicit if implicit else _walk_explicit)(data, complete)


@lru_cache(maxsize=1)
def _kernel() -> tuple[Any, Any, Any]:
    """(numpy, workers.kernels.walk, wanted tags as uint32), imported on first use: numba costs
    ~0.3 s and ~70 MB to import, and the index writer and ``pacs db stats`` import this module
    for ``IndexAttributes`` alone. Workers import it at boot anyway (kernels.warm_up)."""
    import numpy as np

    from workers.kernels import walk

    assert walk.MAX_DEPTH == _MAX_DEPTH
    return np, walk, np.array(sorted(WANTED_TAGS), dtype=np.uint32)


def _walk_numba(data: Any, implicit: bool, complete: bool) -> list[Raw]:
    """The same walk compiled; its status codes become the exceptions the Python one raises."""
    np, kernel, wanted = _kernel()
    buf = np.frombuffer(data, dtype=np.uint8)
    buf.flags.writeable = False  # one compiled variant for bytes, bytearray and memoryview
    # bool(): an int would make numba compile another variant mid-request
    status, offset, rows = kernel.walk_le(buf, bool(implicit), bool(complete), wanted,
                                          kernel.VR_KINDS)
    if status == kernel.OK:
        found: list[Raw] = rows.tolist()
        return found
    if status == kernel.NEED_MORE:
        raise NeedMoreData(f"data set cut at offset {offset} ({len(data)} bytes) before the "
                           "index attributes")
    if status == kernel.TOO_DEEP:
        raise IngestError(f"sequences nested deeper than {_MAX_DEPTH} at offset {offset}",
                          Status.CANNOT_UNDERSTAND)
    raise _Odd(f"element walk stopped at offset {offset}")


_Walk = Callable[[Any, bool, bool], list[Raw]]
Walker = Literal["numba", "python"]
_WALKERS: dict[str, _Walk] = {"numba": _walk_numba, "python": _walk_python}


# ---------------------------------------------------------------------------------- values


def _strip(text: str) -> str:
    # PS3.5 §6.2: padding is a trailing space (NUL for UI); leading spaces are insignificant
    # for every VR we index except the free-text ones, which we do not index.
    if "\\" in text:
        return "\\".join(v.strip(" \x00") for v in text.split("\\"))
    return text.strip(" \x00")


def _strip_pn_groups(text: str) -> str:
    # PS3.5 §6.2.1.1: trailing empty component groups are insignificant ("Doe=" is "Doe").
    return "\\".join(v.rstrip("=") for v in text.split("\\"))


def _decode_fast(data: Any, found: list[Raw], encoding: str) -> list[str]:
    values = [""] * len(_FIELD_NAMES)
    for tag, vr16, start, length in found:
        slot, vr = _WANTED[tag]
        if vr16 and vr16 != _VR_UN and _VR_NAMES[vr16] != vr:
            raise _Odd(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) has VR {_VR_NAMES[vr16]}, "
                       f"expected {vr}")
        if vr == "US":
            if length == 0:
                continue
            if length != 2:
                raise _Odd(f"US value of length {length}")
            values[slot] = str(data[start] | (data[start + 1] << 8))
            continue
        raw = data[start:start + length]
        # str(buffer, encoding) accepts bytes, bytearray and memoryview alike.
        if vr in _TEXT_VRS:
            text = _strip(str(raw, encoding, "replace"))
            if vr == "PN" and "=" in text:
                text = _strip_pn_groups(text)
            values[slot] = text
        else:
            values[slot] = _strip(str(raw, "latin-1"))
    return values


def _decode_with_pydicom(data: Any, found: list[Raw], charset: str) -> list[str]:
    """Text values in a character set needing code extensions etc. (PS3.5 §6.1.2.5)."""
    from pydicom.charset import convert_encodings
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag
    from pydicom.values import convert_value

    text = [r for r in found if _WANTED[r[0]][1] in _TEXT_VRS]
    values = _decode_fast(data, [r for r in found if _WANTED[r[0]][1] not in _TEXT_VRS],
                          "latin-1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            encodings = convert_encodings([c.strip() for c in charset.split("\\")])
            for tag, _, start, length in text:
                vr = _WANTED[tag][1]
                raw = RawDataElement(Tag(tag), vr, length, bytes(data[start:start + length]),
                                     start, True, True)
                values[_WANTED[tag][0]] = _stringify(convert_value(vr, raw, encodings))
        except _pydicom_failures() as exc:
            raise IngestError(f"cannot decode text in character set {charset!r}: {exc}",
                              Status.CANNOT_UNDERSTAND) from exc
    return values


def _stringify(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return _strip(value.decode("latin-1"))
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(_stringify(v) for v in value)
    return _strip(str(value))


def _via_pydicom(data: Any, implicit: bool, little: bool, complete: bool) -> list[str]:
    """Lenient re-read by pydicom (PS3.5 §7 in whatever dialect the sender used)."""
    from pydicom.filereader import read_dataset
    from pydicom.tag import Tag

    stopped = False

    def stop_when(tag: int, vr: str | None, length: int) -> bool:
        nonlocal stopped
        if tag > _LAST_WANTED:
            stopped = True
        return stopped

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = read_dataset(io.BytesIO(bytes(data)), implicit, little, stop_when=stop_when,
                              specific_tags=[Tag(t) for t in WANTED_TAGS])
            values = [""] * len(_FIELD_NAMES)
            for tag, (slot, _) in _WANTED.items():
                elem = ds.get(tag)
                if elem is not None:
                    values[slot] = _stringify(elem.value)
        except _pydicom_failures() as exc:
            if not complete:
                raise NeedMoreData(f"pydicom could not read the partial data set: {exc}") \
                    from exc
            raise IngestError(f"data set cannot be parsed: {exc}",
                              Status.CANNOT_UNDERSTAND) from exc
    if not complete and not stopped:
        raise NeedMoreData("the partial data set ends before the index attributes")
    return values


# ---------------------------------------------------------------------------------- API


def read_index_attributes(
    data: bytes | bytearray | memoryview,
    transfer_syntax_uid: str,
    *,
    complete: bool = True,
    walker: Walker = "numba",
) -> IndexAttributes:
    """The index attributes of a data set encoded in ``transfer_syntax_uid`` (PS3.5 §7, §10).

    See the module docstring for ``complete`` and ``NeedMoreData``. Raises ``IngestError``
    (0xC000, cannot understand) with the offending offset when the bytes do not parse.
    ``walker`` picks the element walk; both give the same result on every input.
    """
    if isinstance(data, memoryview) and (data.ndim != 1 or data.itemsize != 1):
        data = data.cast("B")
    encoding = data_set_encoding(transfer_syntax_uid.strip(" \x00"))
    walk = _WALKERS[walker]
    if encoding.deflated:
        return _read_deflated(data, walk)
    if not encoding.little:
        return IndexAttributes(*_via_pydicom(data, False, False, complete))
    return _read_le(data, encoding.implicit, complete, walk)


def _read_le(data: Any, implicit: bool, complete: bool, walk: _Walk) -> IndexAttributes:
    try:
        found = walk(data, implicit, complete)
        charset = ""
        if found and found[0][0] == _CHARSET_TAG:  # the smallest wanted tag comes first
            _, _, start, length = found[0]
            charset = _strip(str(data[start:start + length], "latin-1"))
        encoding = _FAST_CHARSETS.get(charset)
        if encoding is None:
            return IndexAttributes(*_decode_with_pydicom(data, found, charset))
        return IndexAttributes(*_decode_fast(data, found, encoding))
    except _Odd:
        return IndexAttributes(*_via_pydicom(data, implicit, True, complete))


_INFLATE_FIRST_BYTES = 256 * 1024


def _read_deflated(data: Any, walk: _Walk) -> IndexAttributes:
    """PS3.5 §A.5: the data set is a raw deflate stream (RFC 1951, no zlib header).

    Only as much is inflated as the walk needs. Whether ``data`` is the whole stream needs no
    flag: the stream marks its own end, and a stream cut short raises ``NeedMoreData``."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    source: Any = data
    limit = _INFLATE_FIRST_BYTES
    while True:
        try:
            out += inflater.decompress(source, limit - len(out))
        except zlib.error as exc:
            raise IngestError(f"deflated data set is corrupt: {exc}",
                              Status.CANNOT_UNDERSTAND) from exc
        source = inflater.unconsumed_tail
        more_output_possible = bool(source) and not inflater.eof
        try:
            return _read_le(out, False, inflater.eof, walk)
        except NeedMoreData:
            if not more_output_possible:
                raise
        limit *= 4


_REQUIRED_UIDS = (
    ("sop_class_uid", "SOP Class UID (0008,0016)"),
    ("sop_instance_uid", "SOP Instance UID (0008,0018)"),
    ("study_instance_uid", "Study Instance UID (0020,000D)"),
    ("series_instance_uid", "Series Instance UID (0020,000E)"),
)


def validate_against_command(
    attrs: IndexAttributes, affected_sop_class_uid: str, affected_sop_instance_uid: str
) -> None:
    """Check the data set against its C-STORE-RQ (PS3.4 B.2.3, PS3.7 §9.1.1.1).

    A missing UID the object cannot be stored or indexed without: 0xC000 "cannot understand".
    SOP Class or Instance UID differing from the command's Affected SOP Class / Instance UID:
    0xA900 "data set does not match SOP Class" (as DCMTK storescp answers for both).
    """
    for name, label in _REQUIRED_UIDS:
        if not getattr(attrs, name):
            raise IngestError(f"data set has no {label}", Status.CANNOT_UNDERSTAND)
    sop_class = affected_sop_class_uid.strip(" \x00")
    if attrs.sop_class_uid != sop_class:
        raise IngestError(
            f"SOP Class UID {attrs.sop_class_uid} differs from the command's {sop_class}",
            Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
        )
    sop_instance = affected_sop_instance_uid.strip(" \x00")
    if attrs.sop_instance_uid != sop_instance:
        raise IngestError(
            f"SOP Instance UID {attrs.sop_instance_uid} differs from the command's "
            f"{sop_instance}",
            Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
        )
