"""C-FIND / C-MOVE / C-GET Identifiers: request bytes -> ``Query``; result -> response bytes.

Request (PS3.4 C.4.1.1.3.1): a small data set in the presentation context's transfer syntax,
read by pydicom (Implicit VR LE, Explicit VR LE and BE, Deflated). Text values are decoded
with the request's Specific Character Set (0008,0005) (PS3.4 C.2.2.2: it is never matched but
says how the other values are encoded), so a ``Query`` holds Python strings only.

``make_query`` checks the Identifier against the information model (PS3.4 C.4.1.2.1,
C.4.1.3.1) and raises ``QueryError`` with the status the standard gives (C.4.1.1.4):
  - no Query/Retrieve Level (0008,0052), or a level the model lacks (PATIENT in Study Root):
    0xA900 Identifier Does Not Match SOP Class;
  - hierarchical (no relational-queries granted): the Unique Key of every level above the
    query level missing, empty, wild-carded or multi-valued ("one Attribute Value for each
    Unique Key Attribute of each level above", C.4.1.2.1): 0xA900. DCMTK's dcmqrscp answers
    this case so too;
  - an undecodable Identifier: 0xC000 Unable to Process.
Keys that are valid but that we cannot match are *not* failures: optional keys the SCP does
not support are ignored for matching and returned zero length (C.4.1.1.3.2), and the C-FIND
pending responses then carry 0xFF01 (C.4.1.1.4, "one or more Optional Keys were not
supported"); ``Query.unsupported`` lists them. These are: attributes the index does not keep,
keys of levels below the query level (the hierarchical search stops at the query level,
C.4.1.3.1.1), sequence keys with items (C.2.2.2.6: no sequence is indexed), private
attributes, and a value for Retrieve AE Title. Non-unique keys of levels above the query level
are matched against the parent entity in both modes (C.4.1.3.1.1 step a matches "the key
match strings ... against the values of the Key Attributes for each entity at the current
level") and returned with its values, so a SERIES query can ask for Patient's Name.

Response (C.4.1.1.3.2): hand-encoded (no pydicom: it runs once per match, see bench/query.py):
every requested attribute with the index's value ('' when unknown), Query/Retrieve Level,
Retrieve AE Title, and Specific Character Set when needed: the request's character set when
it can represent every text value, else ISO_IR 192 (UTF-8).
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from appliance.dimse.status import Status
from appliance.dimse.transfer_syntax import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    data_set_encoding,
)
from appliance.errors import DimseError
from workers.header import LONG_VR_NAMES
from workers.query.keys import (
    INSTANCE_AVAILABILITY,
    MODEL_LEVELS,
    QUERY_RETRIEVE_LEVEL,
    RETRIEVE_AE_TITLE,
    SPECIFIC_CHARACTER_SET,
    UNIQUE_KEY,
    depth,
    level_of,
    vr_of,
)
from workers.query.matching import is_universal, literal_prefix

_DECODE_FAILURES: tuple[type[BaseException], ...] = (
    ValueError, KeyError, IndexError, EOFError, struct.error, TypeError, OverflowError,
    NotImplementedError, AttributeError, LookupError, RecursionError, OSError, zlib.error,
)


class QueryError(DimseError):
    """A request answered with a failure ``status`` and an Error Comment (0000,0902)."""

    def __init__(self, comment: str, status: int) -> None:
        super().__init__(comment, status)
        self.comment = comment[:64]  # (0000,0902) is LO: 64 characters at most


@dataclass(frozen=True, slots=True)
class QueryKey:
    """One attribute of a request Identifier: its VR and decoded value ('' = universal;
    multiple values backslash-separated). A sequence key (SQ) carries no values: '' when it
    has no items (Universal Matching), 'items' when it has some (Sequence Matching, C.2.2.2.6,
    which we cannot do: the key is then reported unsupported)."""

    tag: int
    vr: str
    value: str = ""


@dataclass(frozen=True, eq=False)
class Query:
    """A checked request Identifier. ``keys`` holds every attribute of the request except
    Specific Character Set and Query/Retrieve Level, in tag order: each one is returned, and
    the non-universal ones the index knows at or above ``level`` are matched."""

    model: str  # "PATIENT" (Patient Root) | "STUDY" (Study Root)
    level: str  # "PATIENT" | "STUDY" | "SERIES" | "IMAGE"
    keys: Mapping[int, QueryKey]
    character_set: tuple[str, ...] = ()  # the request's (0008,0005) terms
    relational: bool = False  # relational-queries / -retrieval granted (PS3.4 C.5.1)
    combined_datetime: bool = False  # combined date-time matching granted (C.2.2.2.5.1)
    unsupported: tuple[int, ...] = field(default=())  # -> pending status 0xFF01

    @property
    def return_tags(self) -> tuple[int, ...]:
        return tuple(self.keys)

    def value(self, tag: int) -> str:
        k = self.keys.get(tag)
        return k.value if k is not None else ""


def make_query(
    model: str,
    level: str,
    keys: Iterable[QueryKey],
    *,
    relational: bool = False,
    character_set: tuple[str, ...] = (),
    combined_datetime: bool = False,
) -> Query:
    """Check ``keys`` against ``model`` at ``level`` (see the module notes) into a Query."""
    if model not in MODEL_LEVELS:
        raise ValueError(f"unknown Q/R model {model!r}")
    level = level.strip().upper()
    if not level:
        raise QueryError("Query/Retrieve Level (0008,0052) missing",
                         Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS)
    if level not in MODEL_LEVELS[model]:
        raise QueryError(f"Query/Retrieve Level {level[:16]} not in this model",
                         Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS)
    at = depth(model, level)
    table: dict[int, QueryKey] = {}
    unsupported: list[int] = []
    for k in sorted(keys, key=lambda k: k.tag):
        if k.tag in (SPECIFIC_CHARACTER_SET, QUERY_RETRIEVE_LEVEL) or k.tag & 0xFFFF == 0:
            continue  # not keys; group lengths are not returned either
        if k.tag >> 16 < 0x0008:
            continue  # outside a data set (PS3.4 C.4.1.1.3 note): command or meta group
        if (k.tag >> 16) & 1:
            if not is_universal(k.vr, k.value):
                unsupported.append(k.tag)
            continue  # private: no creator context to answer with
        table[k.tag] = k
        if _unsupported(k, model, at):
            unsupported.append(k.tag)
    if not relational:
        for above in MODEL_LEVELS[model][:at]:
            _check_unique_key(table.get(UNIQUE_KEY[above]), UNIQUE_KEY[above])
    return Query(model, level, table, tuple(character_set), relational, combined_datetime,
                 tuple(unsupported))


def _unsupported(k: QueryKey, model: str, at: int) -> bool:
    if k.vr == "SQ":
        return bool(k.value)  # the decoder marks a sequence with items by a non-empty value
    if is_universal(k.vr, k.value) or k.tag == INSTANCE_AVAILABILITY:
        return False
    lvl = level_of(k.tag, model)
    return lvl is None or depth(model, lvl) > at


def _check_unique_key(k: QueryKey | None, tag: int) -> None:
    shown = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    value = k.value.strip() if k is not None else ""
    if not value or "\\" in value or literal_prefix(value) != value:
        raise QueryError(f"Unique Key {shown} of a level above needs one value",
                         Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS)


# ---- decode --------------------------------------------------------------------------------


def decode_identifier(
    data: bytes | memoryview,
    transfer_syntax_uid: str,
    model: str,
    *,
    relational: bool = False,
    combined_datetime: bool = False,
) -> Query:
    """Read a request Identifier and check it (``make_query``); QueryError on failure."""
    from pydicom.filereader import read_dataset

    encoding = data_set_encoding(transfer_syntax_uid)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            raw = zlib.decompress(bytes(data), -15) if encoding.deflated else bytes(data)
            ds = read_dataset(io.BytesIO(raw), encoding.implicit, encoding.little)
            charset = ds.get(SPECIFIC_CHARACTER_SET)
            terms = tuple(v.strip() for v in _stringify(charset.value).split("\\")) \
                if charset is not None else ()
            level_elem = ds.get(QUERY_RETRIEVE_LEVEL)
            level = _stringify(level_elem.value) if level_elem is not None else ""
            keys = [_query_key(elem) for elem in ds]
        except _DECODE_FAILURES as exc:
            raise QueryError("Identifier cannot be decoded",
                             Status.UNABLE_TO_PROCESS) from exc
    return make_query(model, level, keys, relational=relational,
                      character_set=terms if any(terms) else (),
                      combined_datetime=combined_datetime)


def _query_key(elem: Any) -> QueryKey:
    tag = int(elem.tag)
    vr = str(elem.VR)
    if vr == "SQ":
        return QueryKey(tag, vr, "items" if len(elem.value) else "")
    known = vr_of(tag)
    return QueryKey(tag, known if known and vr in ("UN", "") else vr, _stringify(elem.value))


def _stringify(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return value.decode("latin-1").strip(" \0")
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(_stringify(v) for v in value)
    return str(value).strip(" \0")


# ---- encode --------------------------------------------------------------------------------

# PS3.5 §6.1.2.3: the VRs whose values the Specific Character Set applies to.
TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
_LONG_VRS = frozenset(LONG_VR_NAMES)  # explicit VRs with a 32-bit Value Length
_BINARY = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}
# Character sets a response may keep when they can encode its values (no code extensions).
_CODECS = {
    "ISO_IR 100": "latin_1", "ISO_IR 101": "iso8859_2", "ISO_IR 109": "iso8859_3",
    "ISO_IR 110": "iso8859_4", "ISO_IR 144": "iso8859_5", "ISO_IR 127": "iso8859_6",
    "ISO_IR 126": "iso8859_7", "ISO_IR 138": "iso8859_8", "ISO_IR 148": "iso8859_9",
    "ISO_IR 166": "tis_620", "ISO_IR 192": "utf_8", "GB18030": "gb18030", "GBK": "gbk",
}
UTF8 = "ISO_IR 192"

Result = Mapping[int, str]


class ResponseEncoder:
    """Encodes response Identifiers of one query in one transfer syntax; build it once per
    C-FIND, then ``encode`` each match."""

    def __init__(self, query: Query, transfer_syntax_uid: str, retrieve_ae_title: str = "")\
            -> None:
        encoding = data_set_encoding(transfer_syntax_uid)
        self._implicit, self._deflated = encoding.implicit, encoding.deflated
        self._end = "<" if encoding.little else ">"
        self._query = query
        fixed = {QUERY_RETRIEVE_LEVEL: ("CS", query.level)}
        if retrieve_ae_title:
            fixed[RETRIEVE_AE_TITLE] = ("AE", retrieve_ae_title)
        self._fixed = fixed
        # (tag, vr, header prefix without length) for every element, in tag order
        self._elements: list[tuple[int, str, bool]] = sorted(
            [(t, k.vr, False) for t, k in query.keys.items() if t not in fixed]
            + [(t, vr, True) for t, (vr, _) in fixed.items()])
        self._text_tags = [t for t, vr, _ in self._elements if vr in TEXT_VRS]
        self._u16 = struct.Struct(self._end + "H").pack
        self._u32 = struct.Struct(self._end + "I").pack
        self._tag = struct.Struct(self._end + "HH").pack
        self._single = query.character_set[0] if len(query.character_set) == 1 else ""

    def character_set(self, result: Result) -> tuple[str, str]:
        """(Specific Character Set term or '', Python codec) for this response's text."""
        text = [result.get(t, "") for t in self._text_tags]
        if all(v.isascii() for v in text):
            return "\\".join(self._query.character_set), "ascii"
        codec = _CODECS.get(self._single)
        if codec is not None:
            try:
                for v in text:
                    v.encode(codec)
                return self._single, codec
            except UnicodeEncodeError:
                pass
        return UTF8, "utf_8"

    def encode(self, result: Result) -> bytes:
        term, codec = self.character_set(result)
        out = bytearray()
        pending = bool(term)  # (0008,0005) goes in its place in tag order (PS3.5 §7.1)
        for tag, vr, fixed in self._elements:
            if pending and tag > SPECIFIC_CHARACTER_SET:
                out += self._element(SPECIFIC_CHARACTER_SET, "CS", term.encode("ascii"))
                pending = False
            value = self._fixed[tag][1] if fixed else result.get(tag, "")
            out += self._element(tag, vr, self._value(vr, value, codec))
        if pending:
            out += self._element(SPECIFIC_CHARACTER_SET, "CS", term.encode("ascii"))
        return zlib.compress(bytes(out))[2:-4] if self._deflated else bytes(out)

    def _value(self, vr: str, value: str, codec: str) -> bytes:
        if not value or vr == "SQ":
            return b""
        fmt = _BINARY.get(vr)
        if fmt is not None:
            try:
                numbers = [float(v) if fmt in "fd" else int(v) for v in value.split("\\")]
                return struct.pack(f"{self._end}{len(numbers)}{fmt}", *numbers)
            except (ValueError, struct.error):
                return b""
        raw = value.encode(codec if vr in TEXT_VRS else "ascii", "replace")
        if len(raw) & 1:
            raw += b"\0" if vr == "UI" else b" "
        return raw

    def _element(self, tag: int, vr: str, value: bytes) -> bytes:
        head = self._tag(tag >> 16, tag & 0xFFFF)
        if self._implicit:
            return head + self._u32(len(value)) + value
        if vr in _LONG_VRS:
            return head + vr.encode() + b"\0\0" + self._u32(len(value)) + value
        return head + vr.encode() + self._u16(len(value)) + value


@lru_cache(maxsize=8)
def _encoder(query: Query, transfer_syntax_uid: str, retrieve_ae_title: str) -> ResponseEncoder:
    return ResponseEncoder(query, transfer_syntax_uid, retrieve_ae_title)


def encode_identifier(
    result: Result, query: Query, transfer_syntax_uid: str, retrieve_ae_title: str = ""
) -> bytes:
    """A C-FIND response Identifier for one match (an encoder is cached per query)."""
    return _encoder(query, transfer_syntax_uid, retrieve_ae_title).encode(result)


__all__ = [
    "DEFLATED_EXPLICIT_VR_LE", "EXPLICIT_VR_BE", "EXPLICIT_VR_LE", "IMPLICIT_VR_LE", "Query",
    "QueryError", "QueryKey", "ResponseEncoder", "Result", "TEXT_VRS", "decode_identifier",
    "encode_identifier", "make_query",
]
