"""DICOM Part 10 files: the File Meta Information group, packed and read (PS3.10 §7.1).

A stored object is ``build_file_meta(...)`` followed by the data set bytes exactly as received:
the data set is never re-encoded (DESIGN "Ingest data flow" 4). ``read_part10_header`` goes the
other way for files handed to ``pacs ingest``: it finds the transfer syntax, the SOP Class and
Instance UIDs and where the data set starts, in files with or without preamble and meta group.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.dimse.transfer_syntax import EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE
from appliance.errors import ApplianceError, IngestError
from workers.header import NeedMoreData, read_index_attributes

PREAMBLE = bytes(128)
MAGIC = b"DICM"
FILE_META_INFORMATION_VERSION = b"\x00\x01"  # PS3.10 §7.1: version 1, as an OB bit field
HEAD_BYTES = 64 * 1024

_TAG_VR_LEN16 = struct.Struct("<HH2sH")
_TAG_OB_LEN32 = struct.Struct("<HH2sxxI")


class NotDicomError(ApplianceError):
    """The bytes are neither a Part 10 file nor a bare data set we could identify."""


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    """One group-0002 element, Explicit VR LE, 16-bit length (PS3.5 §7.1.2)."""
    if len(value) > 0xFFFF:
        raise ValueError(f"(0002,{element:04X}) value too long: {len(value)} bytes")
    return _TAG_VR_LEN16.pack(0x0002, element, vr, len(value)) + value


def _uid(value: str) -> bytes:
    # PS3.5 §9.1: UIDs are padded to even length with a single NUL.
    raw = value.strip(" \x00").encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _text(value: str) -> bytes:
    # AE and SH are padded with a trailing space (PS3.5 §6.2). Non-ASCII would be out of the
    # default repertoire: replaced, since these values are informational only.
    raw = value.strip().encode("ascii", "replace")
    return raw + b" " if len(raw) % 2 else raw


def build_file_meta(
    *,
    media_storage_sop_class_uid: str,
    media_storage_sop_instance_uid: str,
    transfer_syntax_uid: str,
    source_ae_title: str,
    implementation_class_uid: str,
    implementation_version_name: str,
) -> bytes:
    """128-byte preamble, "DICM" and the File Meta group in Explicit VR LE (PS3.10 §7.1).

    Empty ``source_ae_title`` / ``implementation_version_name`` omit those (type 3) elements.
    Raises ``ValueError`` for a UID that is not ASCII.
    """
    # One per stored object: everything but the SOP Instance UID repeats across an
    # association, so the elements before and after (0002,0003) are packed once per
    # combination (profiled: a third of the cost of creating a StoreJob).
    key = (media_storage_sop_class_uid, transfer_syntax_uid, source_ae_title,
           implementation_class_uid, implementation_version_name)
    parts = _META_PARTS.get(key)
    if parts is None:
        parts = _meta_parts(*key)
        if len(_META_PARTS) >= _META_PARTS_MAX:
            _META_PARTS.clear()
        _META_PARTS[key] = parts
    before, after = parts
    instance = _element(0x0003, b"UI", _uid(media_storage_sop_instance_uid))
    # (0002,0000) File Meta Information Group Length: bytes after this element to the end of
    # the group.
    length = _U32.pack(len(before) + len(instance) + len(after))
    return b"".join((_META_START, length, before, instance, after))


_U32 = struct.Struct("<I")
_META_START = PREAMBLE + MAGIC + _TAG_VR_LEN16.pack(0x0002, 0x0000, b"UL", 4)
_META_PARTS: dict[tuple[str, str, str, str, str], tuple[bytes, bytes]] = {}
_META_PARTS_MAX = 256


def _meta_parts(sop_class_uid: str, transfer_syntax_uid: str, source_ae_title: str,
                implementation_class_uid: str,
                implementation_version_name: str) -> tuple[bytes, bytes]:
    """The File Meta elements before and after (0002,0003), in tag order."""
    before = b"".join((
        _TAG_OB_LEN32.pack(0x0002, 0x0001, b"OB", 2) + FILE_META_INFORMATION_VERSION,
        _element(0x0002, b"UI", _uid(sop_class_uid)),
    ))
    after = [
        _element(0x0010, b"UI", _uid(transfer_syntax_uid)),
        _element(0x0012, b"UI", _uid(implementation_class_uid)),
    ]
    if implementation_version_name.strip():
        after.append(_element(0x0013, b"SH", _text(implementation_version_name[:16])))
    if source_ae_title.strip():
        after.append(_element(0x0016, b"AE", _text(source_ae_title[:16])))
    return before, b"".join(after)


@dataclass(frozen=True, slots=True)
class Part10Info:
    """What ``pacs ingest`` needs to know about a file before streaming its data set."""

    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    dataset_offset: int  # where the data set starts (after the meta group, if any)
    source_ae: str  # (0002,0016) Source Application Entity Title, '' when absent
    has_file_meta: bool


def read_part10_header(source: str | os.PathLike[str] | bytes) -> Part10Info:
    """Identify a Part 10 file, a meta group without preamble, or a bare data set.

    A bare data set's transfer syntax is guessed as pydicom does: Explicit VR when the first
    element carries a valid VR, big endian when its group number only makes sense swapped.
    The SOP Class / Instance UIDs come from the meta group, else from the data set. Raises
    ``NotDicomError`` when no data set with both UIDs can be found, ``OSError`` on I/O failure.
    """
    if isinstance(source, bytes):
        return _identify(source, lambda: source)
    path = Path(source)
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    return _identify(head, path.read_bytes if len(head) == HEAD_BYTES else lambda: head)


def _identify(head: bytes, whole: Callable[[], bytes]) -> Part10Info:
    if head[128:132] == MAGIC:
        meta_start = 132
    elif head[:4] == MAGIC:
        meta_start = 4  # preamble stripped, magic kept (seen from some converters)
    elif head[:2] == b"\x02\x00" and head[4:6].isalpha():
        meta_start = 0  # meta group without preamble (pydicom accepts these too)
    else:
        meta_start = -1
    meta: dict[int, str] = {}
    offset = 0
    if meta_start >= 0:
        try:
            meta, offset = _read_meta(head, meta_start)
        except (struct.error, UnicodeDecodeError) as exc:
            raise NotDicomError(f"malformed File Meta Information: {exc}") from exc
    transfer_syntax = meta.get(0x0010, "") or _guess_syntax(head[offset:offset + 8])
    sop_class, sop_instance = meta.get(0x0002, ""), meta.get(0x0003, "")
    if not (sop_class and sop_instance):
        attrs = _dataset_uids(head, whole, offset, transfer_syntax)
        sop_class = sop_class or attrs[0]
        sop_instance = sop_instance or attrs[1]
    if not (sop_class and sop_instance):
        raise NotDicomError("no SOP Class UID and SOP Instance UID found")
    return Part10Info(transfer_syntax, sop_class, sop_instance, offset, meta.get(0x0016, ""),
                      meta_start >= 0)



def _read_meta(head: bytes, pos: int) -> tuple[dict[int, str], int]:
    """Walk group 0002 (Explicit VR LE, PS3.10 §7.1) up to the first element of another group.

    Returns the text elements keyed by element number and the data set offset. A truncated
    or lying Group Length is ignored on purpose: the walk stops at the first non-0002 tag.
    """
    values: dict[int, str] = {}
    n = len(head)
    while pos + 8 <= n:
        group, element, vr, length = _TAG_VR_LEN16.unpack_from(head, pos)
        if group != 0x0002:
            break
        if not vr.isalpha():
            raise NotDicomError(f"meta group element at offset {pos} has no VR")
        size = 8
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UN", b"UT", b"UC", b"UR", b"OD", b"OL", b"OV"):
            length = struct.unpack_from("<I", head, pos + 8)[0]
            size = 12
        end = pos + size + length
        if end > n:
            raise NotDicomError(f"meta group element at offset {pos} runs past the file head")
        if vr in (b"UI", b"AE", b"SH"):
            values[element] = head[pos + size:end].decode("ascii").strip(" \x00")
        pos = end
    return values, pos


def _guess_syntax(first: bytes) -> str:
    """Transfer syntax of a bare data set from its first element header (PS3.5 §7.1)."""
    if len(first) < 8:
        raise NotDicomError("too short to hold a data element")
    little_group = int.from_bytes(first[0:2], "little")
    big_group = int.from_bytes(first[0:2], "big")
    explicit = first[4:6].isalpha() and first[4:6].isupper()
    if explicit and big_group < little_group:  # e.g. (0008,...) stored as 00 08
        return EXPLICIT_VR_BE
    return EXPLICIT_VR_LE if explicit else IMPLICIT_VR_LE


def _dataset_uids(
    head: bytes, whole: Callable[[], bytes], offset: int, syntax: str
) -> tuple[str, str]:
    complete = len(head) < HEAD_BYTES
    try:
        try:
            attrs = read_index_attributes(memoryview(head)[offset:], syntax, complete=complete)
        except NeedMoreData:
            if complete:
                raise
            attrs = read_index_attributes(memoryview(whole())[offset:], syntax)
    except IngestError as exc:
        raise NotDicomError(f"data set at offset {offset} does not parse: {exc}") from exc
    return attrs.sop_class_uid, attrs.sop_instance_uid
