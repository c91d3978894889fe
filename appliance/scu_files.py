"""Part 10 files as an SCU sends them: the File Meta read by hand, the data set streamed.

``read_file_meta`` takes what a C-STORE needs from the File Meta Information (PS3.10 §7.1)
without pydicom (it runs once per file sent, and must not parse the data set); ``file_pdus``
cuts the data set that follows into PDVs read block by block into one reused buffer, so
memory stays bounded whatever the file size (``SCU.store_file``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from io import BufferedReader
from typing import BinaryIO, Final

from appliance.dimse.fragment import PduParts
from appliance.ul.pdu import encode_pdv_header

# file_pdus reads the data set in blocks of about this size (a whole number of PDVs).
_FILE_BLOCK_BYTES: Final = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FileMeta:
    """What the SCU needs from a Part 10 File Meta Information (PS3.10 §7.1)."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    dataset_offset: int


_PREAMBLE_BYTES: Final = 128
_MAGIC: Final = b"DICM"
_TAG_VR: Final = struct.Struct("<HH2s")
_U16: Final = struct.Struct("<H")
_U32: Final = struct.Struct("<I")
# PS3.5 §7.1.2: these VRs have 2 reserved bytes and a 32-bit length in Explicit VR.
_LONG_VRS: Final = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_META_UIDS: Final = {0x0002: "sop_class_uid", 0x0003: "sop_instance_uid", 0x0010: "ts"}
_MAX_META_BYTES: Final = 1024 * 1024


def read_file_meta(fp: BinaryIO) -> FileMeta:
    """Parse the File Meta Information (PS3.10 §7.1: 128-byte preamble, "DICM", group 0002
    in Explicit VR Little Endian) from ``fp``'s start; leaves ``fp`` at the data set.

    Raises ``ValueError`` if it is not a Part 10 file or lacks (0002,0002/0003/0010).
    Group 0002 is walked element by element rather than trusting (0002,0000), which some
    writers get wrong or omit.
    """
    head = fp.read(_PREAMBLE_BYTES + len(_MAGIC))
    if len(head) != _PREAMBLE_BYTES + len(_MAGIC) or head[_PREAMBLE_BYTES:] != _MAGIC:
        raise ValueError("not a DICOM Part 10 file (no 'DICM' after the 128-byte preamble)")
    found: dict[str, str] = {}
    offset = len(head)
    while offset - len(head) < _MAX_META_BYTES:
        header = fp.read(_TAG_VR.size)
        if len(header) < _TAG_VR.size:
            break  # a file with no data set at all
        group, element, vr = _TAG_VR.unpack(header)
        if group != 0x0002:
            break
        if vr in _LONG_VRS:
            raw = fp.read(6)
            length = _U32.unpack_from(raw, 2)[0] if len(raw) == 6 else -1
            size = _TAG_VR.size + 6
        else:
            raw = fp.read(2)
            length = _U16.unpack(raw)[0] if len(raw) == 2 else -1
            size = _TAG_VR.size + 2
        if length < 0 or length == 0xFFFFFFFF:
            raise ValueError(f"malformed File Meta element (0002,{element:04X})")
        value = fp.read(length)
        if len(value) != length:
            raise ValueError(f"File Meta element (0002,{element:04X}) is truncated")
        key = _META_UIDS.get(element)
        if key is not None:
            found[key] = value.decode("ascii", "replace").rstrip("\0 ")
        offset += size + length
    fp.seek(offset)
    missing = [k for k in _META_UIDS.values() if not found.get(k)]
    if missing:
        raise ValueError(f"File Meta lacks {', '.join(missing)}")
    return FileMeta(found["sop_class_uid"], found["sop_instance_uid"], found["ts"], offset)


def file_pdus(
    fp: BufferedReader, context_id: int, length: int, max_data: int
) -> Iterator[list[PduParts]]:
    """The data set PDVs of ``length`` bytes read from ``fp``, one list per block read.

    The views point into one reused buffer: the caller must write a block before asking for
    the next one. Only the very last PDV has the last-fragment bit (PS3.8 E.2); an empty data
    set is one empty last PDV.
    """
    if max_data < 1:
        raise ValueError("peer maximum PDU length cannot hold a PDV with data")
    if length <= 0:
        yield [[encode_pdv_header(context_id, False, True, 0), b""]]
        return
    block_size = max(max_data, _FILE_BLOCK_BYTES // max_data * max_data)
    buf = memoryview(bytearray(min(block_size, length)))
    remaining = length
    while remaining:
        size = min(block_size, remaining)
        view = buf[:size]
        got = 0
        while got < size:
            n = fp.readinto(view[got:])
            if not n:
                raise OSError(f"file shrank while sending: {remaining - got} bytes missing")
            got += n
        remaining -= size
        block: list[PduParts] = []
        for start in range(0, size, max_data):
            stop = min(start + max_data, size)
            last = remaining == 0 and stop == size
            block.append(
                [encode_pdv_header(context_id, False, last, stop - start), view[start:stop]]
            )
        yield block


__all__ = ["FileMeta", "file_pdus", "read_file_meta"]
