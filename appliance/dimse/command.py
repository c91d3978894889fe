"""DIMSE command sets (PS3.7 §6.3, §9.3, Annex E) encoded and decoded by hand.

A command set is group 0000 only, always Implicit VR Little Endian (PS3.7 §6.3.1), so each
element is ``tag (group LE, element LE) | length (UL LE) | value``. The VR of every element
comes from ``COMMAND_VR``, a transcription of PS3.7 Table E.1-1 and the retired Table E.2-1.

Decoded values: UL/US -> int (US with VM 1-n -> tuple), AT -> tuple of full tags, strings ->
str without padding, tags not in the tables -> raw bytes (kept so nothing is lost).

``encode_command_set`` is the exact inverse of ``decode_command_set`` on every value the
decoder produces (the fuzz harness ``tests/fuzz/fuzz_command.py`` checks it): text goes out
as latin-1, byte for byte what came in, and at its full length. A command set has no Specific
Character Set, so only the Default Character Repertoire is valid in it (PS3.5 §6.1.2.1), and
an LO holds at most 64 characters (PS3.5 Table 6.2-1); a peer's value outside those limits
is kept (and echoed, as PS3.7 §9.3.1.2 wants the RSP's Affected SOP Instance UID equal to
the RQ's) rather than aborted on. Text we write ourselves is made valid where it is written:
``error_comment`` for (0000,0902).

``decode_command_set`` raises ``CommandSetError`` and nothing else for any input: a command
set that cannot be decoded has no Message ID to answer, so the caller sends an A-ABORT
(STYLE 2.5). Messages that decode but lack a required field also raise ``CommandSetError``,
carrying the Message ID when one was readable so a caller may choose to answer instead.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from enum import IntEnum

from appliance.dimse.status import Status
from appliance.errors import DimseError

CommandValue = int | str | bytes | tuple[int, ...]
CommandElements = dict[int, CommandValue]

VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"


class CommandSetError(DimseError):
    """The command set is malformed (PS3.7 Annex E); the association must be aborted."""

    def __init__(self, message: str, message_id: int | None = None) -> None:
        super().__init__(message, Status.PROCESSING_FAILURE)
        self.message_id = message_id


class CommandField(IntEnum):
    """(0000,0100) Command Field values (PS3.7 §9.3, §10.3, Table E.1-1)."""

    C_STORE_RQ = 0x0001
    C_STORE_RSP = 0x8001
    C_GET_RQ = 0x0010
    C_GET_RSP = 0x8010
    C_FIND_RQ = 0x0020
    C_FIND_RSP = 0x8020
    C_MOVE_RQ = 0x0021
    C_MOVE_RSP = 0x8021
    C_ECHO_RQ = 0x0030
    C_ECHO_RSP = 0x8030
    C_CANCEL_RQ = 0x0FFF
    N_EVENT_REPORT_RQ = 0x0100
    N_EVENT_REPORT_RSP = 0x8100
    N_GET_RQ = 0x0110
    N_GET_RSP = 0x8110
    N_SET_RQ = 0x0120
    N_SET_RSP = 0x8120
    N_ACTION_RQ = 0x0130
    N_ACTION_RSP = 0x8130
    N_CREATE_RQ = 0x0140
    N_CREATE_RSP = 0x8140
    N_DELETE_RQ = 0x0150
    N_DELETE_RSP = 0x8150


RESPONSE_BIT = 0x8000


class CommandDataSetType(IntEnum):
    """(0000,0800): 0x0101 means no data set; PS3.7 E.1 says any other value means one follows."""

    NO_DATA_SET = 0x0101
    DATA_SET_PRESENT = 0x0001  # the value we send; we accept any value other than 0x0101


class Priority(IntEnum):
    """(0000,0700) (PS3.7 §9.1.1.1.7)."""

    MEDIUM = 0x0000
    HIGH = 0x0001
    LOW = 0x0002


class Tag(IntEnum):
    """Command element tags (PS3.7 Table E.1-1; retired ones from Table E.2-1)."""

    COMMAND_GROUP_LENGTH = 0x00000000
    COMMAND_LENGTH_TO_END = 0x00000001  # retired
    AFFECTED_SOP_CLASS_UID = 0x00000002
    REQUESTED_SOP_CLASS_UID = 0x00000003
    COMMAND_RECOGNITION_CODE = 0x00000010  # retired
    COMMAND_FIELD = 0x00000100
    MESSAGE_ID = 0x00000110
    MESSAGE_ID_BEING_RESPONDED_TO = 0x00000120
    INITIATOR = 0x00000200  # retired
    RECEIVER = 0x00000300  # retired
    FIND_LOCATION = 0x00000400  # retired
    MOVE_DESTINATION = 0x00000600
    PRIORITY = 0x00000700
    COMMAND_DATA_SET_TYPE = 0x00000800
    NUMBER_OF_MATCHES = 0x00000850  # retired
    RESPONSE_SEQUENCE_NUMBER = 0x00000860  # retired
    STATUS = 0x00000900
    OFFENDING_ELEMENT = 0x00000901
    ERROR_COMMENT = 0x00000902
    ERROR_ID = 0x00000903
    AFFECTED_SOP_INSTANCE_UID = 0x00001000
    REQUESTED_SOP_INSTANCE_UID = 0x00001001
    EVENT_TYPE_ID = 0x00001002
    ATTRIBUTE_IDENTIFIER_LIST = 0x00001005
    ACTION_TYPE_ID = 0x00001008
    NUMBER_OF_REMAINING_SUBOPERATIONS = 0x00001020
    NUMBER_OF_COMPLETED_SUBOPERATIONS = 0x00001021
    NUMBER_OF_FAILED_SUBOPERATIONS = 0x00001022
    NUMBER_OF_WARNING_SUBOPERATIONS = 0x00001023
    MOVE_ORIGINATOR_AE_TITLE = 0x00001030
    MOVE_ORIGINATOR_MESSAGE_ID = 0x00001031
    DIALOG_RECEIVER = 0x00004000  # retired
    TERMINAL_TYPE = 0x00004010  # retired
    MESSAGE_SET_ID = 0x00005010  # retired
    END_MESSAGE_ID = 0x00005020  # retired
    DISPLAY_FORMAT = 0x00005110  # retired
    PAGE_POSITION_ID = 0x00005120  # retired
    TEXT_FORMAT_ID = 0x00005130  # retired
    NORMAL_REVERSE = 0x00005140  # retired
    ADD_GRAY_SCALE = 0x00005150  # retired
    BORDERS = 0x00005160  # retired
    COPIES = 0x00005170  # retired
    COMMAND_MAGNIFICATION_TYPE = 0x00005180  # retired
    ERASE = 0x00005190  # retired
    PRINT = 0x000051A0  # retired
    OVERLAYS = 0x000051B0  # retired


# VR of every element of PS3.7 Tables E.1-1 and E.2-1. "US*" marks a US with VM 1-n.
COMMAND_VR: dict[int, str] = {
    Tag.COMMAND_GROUP_LENGTH: "UL",
    Tag.COMMAND_LENGTH_TO_END: "UL",
    Tag.AFFECTED_SOP_CLASS_UID: "UI",
    Tag.REQUESTED_SOP_CLASS_UID: "UI",
    Tag.COMMAND_RECOGNITION_CODE: "SH",
    Tag.COMMAND_FIELD: "US",
    Tag.MESSAGE_ID: "US",
    Tag.MESSAGE_ID_BEING_RESPONDED_TO: "US",
    Tag.INITIATOR: "AE",
    Tag.RECEIVER: "AE",
    Tag.FIND_LOCATION: "AE",
    Tag.MOVE_DESTINATION: "AE",
    Tag.PRIORITY: "US",
    Tag.COMMAND_DATA_SET_TYPE: "US",
    Tag.NUMBER_OF_MATCHES: "US",
    Tag.RESPONSE_SEQUENCE_NUMBER: "US",
    Tag.STATUS: "US",
    Tag.OFFENDING_ELEMENT: "AT",
    Tag.ERROR_COMMENT: "LO",
    Tag.ERROR_ID: "US",
    Tag.AFFECTED_SOP_INSTANCE_UID: "UI",
    Tag.REQUESTED_SOP_INSTANCE_UID: "UI",
    Tag.EVENT_TYPE_ID: "US",
    Tag.ATTRIBUTE_IDENTIFIER_LIST: "AT",
    Tag.ACTION_TYPE_ID: "US",
    Tag.NUMBER_OF_REMAINING_SUBOPERATIONS: "US",
    Tag.NUMBER_OF_COMPLETED_SUBOPERATIONS: "US",
    Tag.NUMBER_OF_FAILED_SUBOPERATIONS: "US",
    Tag.NUMBER_OF_WARNING_SUBOPERATIONS: "US",
    Tag.MOVE_ORIGINATOR_AE_TITLE: "AE",
    Tag.MOVE_ORIGINATOR_MESSAGE_ID: "US",
    Tag.DIALOG_RECEIVER: "LT",
    Tag.TERMINAL_TYPE: "LT",
    Tag.MESSAGE_SET_ID: "SH",
    Tag.END_MESSAGE_ID: "SH",
    Tag.DISPLAY_FORMAT: "LT",
    Tag.PAGE_POSITION_ID: "LT",
    Tag.TEXT_FORMAT_ID: "CS",
    Tag.NORMAL_REVERSE: "CS",
    Tag.ADD_GRAY_SCALE: "CS",
    Tag.BORDERS: "CS",
    Tag.COPIES: "IS",
    Tag.COMMAND_MAGNIFICATION_TYPE: "CS",
    Tag.ERASE: "CS",
    Tag.PRINT: "CS",
    Tag.OVERLAYS: "US*",
}

# Leading spaces are insignificant for these (PS3.5 Table 6.2-1); for LO/SH/ST/LT only
# trailing padding is insignificant, so leading spaces are kept.
_STRIP_BOTH = frozenset({"UI", "AE", "CS", "IS"})
_ELEMENT_HEADER = struct.Struct("<HHI")
_US = struct.Struct("<H")
_UL = struct.Struct("<I")
_LO_MAX_CHARS = 64


# ---- element codec ----------------------------------------------------------------------


def _decode_value(tag: int, vr: str | None, raw: bytes) -> CommandValue:
    if vr is None:
        return raw
    if vr == "UL":
        if len(raw) != 4:
            raise CommandSetError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) UL of length {len(raw)}")
        return int(_UL.unpack(raw)[0])
    if vr == "US":
        if len(raw) != 2:
            raise CommandSetError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) US of length {len(raw)}")
        return int(_US.unpack(raw)[0])
    if vr in ("US*", "AT"):
        unit = 2 if vr == "US*" else 4
        if len(raw) % unit:
            raise CommandSetError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {vr} of length {len(raw)}")
        if vr == "US*":
            return tuple(v for (v,) in struct.iter_unpack("<H", raw))
        # AT: each value is group then element, both little endian (PS3.5 §6.2).
        return tuple((g << 16) | e for g, e in struct.iter_unpack("<HH", raw))
    # Command sets use the Default Character Repertoire; latin-1 decodes any byte, so a peer's
    # odd Error Comment never turns into an abort.
    text = raw.decode("latin-1")
    if vr == "UI":
        return text.rstrip("\0 ").lstrip(" ")
    if vr in _STRIP_BOTH:
        return text.strip(" ")
    return text.rstrip(" ")


def decode_command_set(data: bytes | memoryview) -> CommandElements:
    """Decode a command set (PS3.7 §6.3.1) into ``{full tag: value}``.

    Raises ``CommandSetError`` for anything malformed (truncated element, element outside
    group 0000, duplicate tag, value length not matching the VR), and no other exception.
    """
    buf = bytes(data)
    end = len(buf)
    pos = 0
    out: CommandElements = {}
    while pos < end:
        if end - pos < _ELEMENT_HEADER.size:
            raise CommandSetError(f"truncated element header at offset {pos}")
        group, element, length = _ELEMENT_HEADER.unpack_from(buf, pos)
        pos += _ELEMENT_HEADER.size
        if group != 0x0000:
            raise CommandSetError(f"element ({group:04X},{element:04X}) outside group 0000")
        if length > end - pos:
            raise CommandSetError(f"element (0000,{element:04X}) length {length} overruns")
        if element in out:
            raise CommandSetError(f"duplicate element (0000,{element:04X})")
        out[element] = _decode_value(element, COMMAND_VR.get(element), buf[pos : pos + length])
        pos += length
    return out


def _encode_value(tag: int, value: CommandValue) -> bytes:
    vr = COMMAND_VR.get(tag)
    if vr is None or isinstance(value, bytes):
        if not isinstance(value, bytes):
            raise ValueError(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) needs raw bytes")
        raw = value
    elif vr in ("UL", "US"):
        if not isinstance(value, int):
            raise ValueError(f"element {tag:#010x} ({vr}) needs an int")
        raw = (_UL if vr == "UL" else _US).pack(value)
    elif vr in ("US*", "AT"):
        if not isinstance(value, tuple):
            raise ValueError(f"element {tag:#010x} ({vr}) needs a tuple")
        if vr == "US*":
            raw = b"".join(_US.pack(v) for v in value)
        else:
            raw = b"".join(struct.pack("<HH", v >> 16, v & 0xFFFF) for v in value)
    else:
        if not isinstance(value, str):
            raise ValueError(f"element {tag:#010x} ({vr}) needs a str")
        try:
            raw = value.encode("latin-1")  # the decoder's inverse: every byte comes back
        except UnicodeEncodeError:  # only our own text can get here: never unsendable
            raw = value.encode("latin-1", errors="replace")
        if len(raw) % 2:
            # PS3.5 §6.2: UI is padded with NUL, the other string VRs with a space.
            raw += b"\0" if vr == "UI" else b" "
    if len(raw) % 2:
        raise ValueError(f"element {tag:#010x} has odd length {len(raw)}")
    return _ELEMENT_HEADER.pack(0x0000, tag & 0xFFFF, len(raw)) + raw


def encode_command_set(elements: Mapping[int, CommandValue]) -> bytes:
    """Encode group-0000 elements sorted by tag, with (0000,0000) Command Group Length computed
    (PS3.7 §6.3.1, PS3.5 §7.2). A (0000,0000) given by the caller is ignored."""
    body = b"".join(
        _encode_value(tag, elements[tag])
        for tag in sorted(elements)
        if tag != Tag.COMMAND_GROUP_LENGTH
    )
    for tag in elements:
        if tag >> 16:
            raise ValueError(f"element {tag:#010x} is not in group 0000")
    return _encode_value(Tag.COMMAND_GROUP_LENGTH, len(body)) + body


def error_comment(text: str) -> str:
    """``text`` as an (0000,0902) Error Comment we may send (PS3.7 Table E.1-1): an LO of
    at most 64 characters (PS3.5 Table 6.2-1) from the Default Character Repertoire
    (PS3.5 §6.1.2.1; group 0000 has no Specific Character Set), others replaced by ``?``."""
    if len(text) > _LO_MAX_CHARS:
        text = text[:_LO_MAX_CHARS]
    return text if text.isascii() else text.encode("ascii", errors="replace").decode("ascii")


def has_data_set(elements: Mapping[int, CommandValue]) -> bool:
    """PS3.7 E.1 (0000,0800): a data set follows unless the value is 0x0101.

    Raises ``CommandSetError`` if the element is missing or not a US."""
    value = elements.get(Tag.COMMAND_DATA_SET_TYPE)
    if not isinstance(value, int):
        raise CommandSetError("(0000,0800) Command Data Set Type missing", _message_id(elements))
    return value != CommandDataSetType.NO_DATA_SET


def _message_id(elements: Mapping[int, CommandValue]) -> int | None:
    value = elements.get(Tag.MESSAGE_ID)
    return value if isinstance(value, int) else None


__all__ = [
    "COMMAND_VR",
    "CommandDataSetType",
    "CommandElements",
    "CommandField",
    "CommandSetError",
    "CommandValue",
    "Priority",
    "RESPONSE_BIT",
    "Tag",
    "VERIFICATION_SOP_CLASS",
    "decode_command_set",
    "encode_command_set",
    "error_comment",
    "has_data_set",
]
