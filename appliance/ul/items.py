"""PS3.8 §9.3 item framing, shared by the PDU codec (pdu.py) and the user information
sub-items (user_items.py): item types, headers, u16-length-prefixed fields, text and UID
values, and the A-ABORT reason (PS3.8 §9.3.8) a malformed one earns (``fail``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from enum import IntEnum
from typing import NoReturn

from appliance.errors import RemoteULError


class ItemType(IntEnum):
    """PS3.8 §9.3.2-9.3.3 and Annex D item / sub-item types."""

    APPLICATION_CONTEXT = 0x10
    PRESENTATION_CONTEXT_RQ = 0x20
    PRESENTATION_CONTEXT_AC = 0x21
    ABSTRACT_SYNTAX = 0x30
    TRANSFER_SYNTAX = 0x40
    USER_INFORMATION = 0x50
    MAXIMUM_LENGTH = 0x51
    IMPLEMENTATION_CLASS_UID = 0x52
    ASYNCHRONOUS_OPERATIONS_WINDOW = 0x53
    SCP_SCU_ROLE_SELECTION = 0x54
    IMPLEMENTATION_VERSION_NAME = 0x55
    SOP_CLASS_EXTENDED_NEGOTIATION = 0x56
    SOP_CLASS_COMMON_EXTENDED_NEGOTIATION = 0x57
    USER_IDENTITY_RQ = 0x58
    USER_IDENTITY_AC = 0x59


class AbortReason(IntEnum):
    """PS3.8 §9.3.8 A-ABORT reason/diag (meaningful when source == 2)."""

    NOT_SPECIFIED = 0
    UNRECOGNIZED_PDU = 1
    UNEXPECTED_PDU = 2
    UNRECOGNIZED_PDU_PARAMETER = 4
    UNEXPECTED_PDU_PARAMETER = 5
    INVALID_PDU_PARAMETER_VALUE = 6


ITEM_HEADER = struct.Struct(">BBH")  # Item-type, reserved, Item-length
U16 = struct.Struct(">H")
U32 = struct.Struct(">I")
TWO_U16 = struct.Struct(">HH")
INVALID = int(AbortReason.INVALID_PDU_PARAMETER_VALUE)
UNEXPECTED = int(AbortReason.UNEXPECTED_PDU_PARAMETER)
UINT16_MAX = 0xFFFF


def fail(message: str, reason: int = INVALID) -> NoReturn:
    raise RemoteULError(message, abort_reason=reason)


# ---- decoding ------------------------------------------------------------------------------


def split_items(view: memoryview, where: str) -> Iterator[tuple[int, memoryview]]:
    """Split a variable field into (item type, item value) pairs; every length must fit."""
    offset, end = 0, len(view)
    while offset < end:
        if end - offset < ITEM_HEADER.size:
            fail(f"truncated item header in {where}")
        item_type, _, length = ITEM_HEADER.unpack_from(view, offset)
        stop = offset + ITEM_HEADER.size + length
        if stop > end:
            fail(f"item 0x{item_type:02X} overruns {where}")
        yield item_type, view[offset + ITEM_HEADER.size : stop]
        offset = stop


def decode_text(view: memoryview) -> str:
    # latin-1 never fails and keeps every byte, so a bad character becomes a value that
    # negotiation rejects rather than an exception here.
    return bytes(view).decode("latin-1")


def decode_uid(view: memoryview) -> str:
    # PS3.8 Annex F forbids padding, but some peers pad UIDs to even length as in PS3.5 §9.1.
    return decode_text(view).rstrip("\x00 ")


def prefixed_field(view: memoryview, offset: int, where: str) -> tuple[memoryview, int]:
    """A u16-length-prefixed field at ``offset``; returns (value, offset after it)."""
    if len(view) - offset < 2:
        fail(f"truncated length field in {where}")
    (length,) = U16.unpack_from(view, offset)
    stop = offset + 2 + length
    if stop > len(view):
        fail(f"field overruns {where}")
    return view[offset + 2 : stop], stop


def require_end(view: memoryview, offset: int, where: str) -> None:
    if offset != len(view):
        fail(f"{len(view) - offset} stray bytes at the end of {where}")


# ---- encoding ------------------------------------------------------------------------------


def u16_length(n: int, what: str) -> bytes:
    if n > UINT16_MAX:
        raise ValueError(f"{what} is {n} bytes, more than a 16-bit length allows")
    return U16.pack(n)


def encode_item(item_type: int, value: bytes) -> bytes:
    if len(value) > UINT16_MAX:
        raise ValueError(f"item 0x{item_type:02X} is {len(value)} bytes, over the u16 limit")
    return ITEM_HEADER.pack(item_type, 0, len(value)) + value


def length_prefixed(value: bytes) -> bytes:
    return u16_length(len(value), "field") + value


def encode_text(text: str) -> bytes:
    return text.encode("latin-1")  # UnicodeEncodeError is a ValueError
