"""User Information sub-items (PS3.8 §9.3.2.3, D.1; PS3.7 Annex D.3.3) and their codec.

Each sub-item is an immutable dataclass; ``decode_user_information`` reads the value of a
User Information item (0x50) and ``encode_sub_item`` writes one sub-item back, so that
``decode(encode(x)) == x``. Unrecognized sub-items are kept verbatim (``UnknownItem``: PS3.8
D.2 says to ignore them, not to reject the association) so that they round-trip and can be
logged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from appliance.ul.items import (
    TWO_U16,
    U32,
    ItemType,
    decode_uid,
    encode_item,
    encode_text,
    fail,
    length_prefixed,
    prefixed_field,
    require_end,
    split_items,
)


@dataclass(frozen=True, slots=True)
class MaximumLength:
    """0x51. ``maximum_length`` 0 means unlimited (PS3.8 D.1)."""

    maximum_length: int


@dataclass(frozen=True, slots=True)
class ImplementationClassUID:
    """0x52."""

    uid: str


@dataclass(frozen=True, slots=True)
class ImplementationVersionName:
    """0x55. 1-16 characters."""

    name: str


@dataclass(frozen=True, slots=True)
class AsynchronousOperationsWindow:
    """0x53 (PS3.7 D.3.3.3). 0 = unlimited."""

    max_operations_invoked: int
    max_operations_performed: int


@dataclass(frozen=True, slots=True)
class RoleSelection:
    """0x54 SCP/SCU Role Selection (PS3.7 D.3.3.4)."""

    sop_class_uid: str
    scu_role: bool
    scp_role: bool


@dataclass(frozen=True, slots=True)
class SOPClassExtendedNegotiation:
    """0x56 (PS3.7 D.3.3.5). ``info`` is service-class specific bytes."""

    sop_class_uid: str
    info: bytes


@dataclass(frozen=True, slots=True)
class SOPClassCommonExtendedNegotiation:
    """0x57 (PS3.7 D.3.3.6). Only in A-ASSOCIATE-RQ."""

    sop_class_uid: str
    service_class_uid: str
    related_general_sop_class_uids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UserIdentityRQ:
    """0x58 (PS3.7 D.3.3.7). identity_type 1 username, 2 username+passcode, 3 Kerberos,
    4 SAML, 5 JWT."""

    identity_type: int
    positive_response_requested: bool
    primary_field: bytes
    secondary_field: bytes = b""


@dataclass(frozen=True, slots=True)
class UserIdentityAC:
    """0x59 (PS3.7 D.3.3.7.2)."""

    server_response: bytes


@dataclass(frozen=True, slots=True)
class UnknownItem:
    """An item/sub-item type we do not know, kept verbatim so it round-trips."""

    item_type: int
    data: bytes


UserSubItem = (
    MaximumLength
    | ImplementationClassUID
    | ImplementationVersionName
    | AsynchronousOperationsWindow
    | RoleSelection
    | SOPClassExtendedNegotiation
    | SOPClassCommonExtendedNegotiation
    | UserIdentityRQ
    | UserIdentityAC
    | UnknownItem
)


@dataclass(frozen=True, slots=True)
class UserInformation:
    """0x50. Sub-items kept in wire order; convenience accessors below."""

    items: tuple[UserSubItem, ...] = ()

    @property
    def maximum_length(self) -> int | None:
        for it in self.items:
            if isinstance(it, MaximumLength):
                return it.maximum_length
        return None

    @property
    def implementation_class_uid(self) -> str | None:
        for it in self.items:
            if isinstance(it, ImplementationClassUID):
                return it.uid
        return None

    @property
    def implementation_version_name(self) -> str | None:
        for it in self.items:
            if isinstance(it, ImplementationVersionName):
                return it.name
        return None

    def of_type(self, cls: type) -> list[UserSubItem]:
        return [it for it in self.items if isinstance(it, cls)]


# ---- decoding ------------------------------------------------------------------------------


def _maximum_length(v: memoryview) -> MaximumLength:
    if len(v) != 4:
        fail("maximum length sub-item length is not 4")
    return MaximumLength(U32.unpack_from(v)[0])


def _async_window(v: memoryview) -> AsynchronousOperationsWindow:
    if len(v) != 4:
        fail("asynchronous operations window sub-item length is not 4")
    invoked, performed = TWO_U16.unpack_from(v)
    return AsynchronousOperationsWindow(invoked, performed)


def _role_selection(v: memoryview) -> RoleSelection:
    uid, offset = prefixed_field(v, 0, "SCP/SCU role selection")
    if len(v) - offset != 2:
        fail("SCP/SCU role selection sub-item has a bad length")
    # PS3.7 D.3.3.4: 0 non-support, 1 support; other values are read as support.
    return RoleSelection(decode_uid(uid), v[offset] != 0, v[offset + 1] != 0)


def _extended_negotiation(v: memoryview) -> SOPClassExtendedNegotiation:
    uid, offset = prefixed_field(v, 0, "SOP class extended negotiation")
    return SOPClassExtendedNegotiation(decode_uid(uid), bytes(v[offset:]))


def _common_extended_negotiation(v: memoryview) -> SOPClassCommonExtendedNegotiation:
    where = "SOP class common extended negotiation"
    sop_class, offset = prefixed_field(v, 0, where)
    service_class, offset = prefixed_field(v, offset, where)
    related_field, offset = prefixed_field(v, offset, where)
    require_end(v, offset, where)
    related: list[str] = []
    inner = 0
    while inner < len(related_field):
        uid, inner = prefixed_field(related_field, inner, where)
        related.append(decode_uid(uid))
    return SOPClassCommonExtendedNegotiation(decode_uid(sop_class), decode_uid(service_class),
                                             tuple(related))


def _user_identity_rq(v: memoryview) -> UserIdentityRQ:
    if len(v) < 2:
        fail("truncated user identity sub-item")
    primary, offset = prefixed_field(v, 2, "user identity")
    secondary, offset = prefixed_field(v, offset, "user identity")
    require_end(v, offset, "user identity")
    return UserIdentityRQ(v[0], v[1] != 0, bytes(primary), bytes(secondary))


def _user_identity_ac(v: memoryview) -> UserIdentityAC:
    response, offset = prefixed_field(v, 0, "user identity response")
    require_end(v, offset, "user identity response")
    return UserIdentityAC(bytes(response))


_SUB_ITEM_DECODERS: dict[int, Callable[[memoryview], UserSubItem]] = {
    ItemType.MAXIMUM_LENGTH: _maximum_length,
    ItemType.IMPLEMENTATION_CLASS_UID: lambda v: ImplementationClassUID(decode_uid(v)),
    ItemType.ASYNCHRONOUS_OPERATIONS_WINDOW: _async_window,
    ItemType.SCP_SCU_ROLE_SELECTION: _role_selection,
    ItemType.IMPLEMENTATION_VERSION_NAME: lambda v: ImplementationVersionName(decode_uid(v)),
    ItemType.SOP_CLASS_EXTENDED_NEGOTIATION: _extended_negotiation,
    ItemType.SOP_CLASS_COMMON_EXTENDED_NEGOTIATION: _common_extended_negotiation,
    ItemType.USER_IDENTITY_RQ: _user_identity_rq,
    ItemType.USER_IDENTITY_AC: _user_identity_ac,
}


def decode_user_information(view: memoryview) -> UserInformation:
    items: list[UserSubItem] = []
    for item_type, value in split_items(view, "user information item"):
        decoder = _SUB_ITEM_DECODERS.get(item_type)
        # PS3.8 D.2 note 2: unrecognized user information sub-items shall be ignored, not
        # rejected; we keep them so that they round-trip and can be logged.
        items.append(decoder(value) if decoder else UnknownItem(item_type, bytes(value)))
    return UserInformation(tuple(items))


# ---- encoding ------------------------------------------------------------------------------


def encode_sub_item(item: UserSubItem) -> bytes:
    match item:
        case MaximumLength(n):
            return encode_item(ItemType.MAXIMUM_LENGTH, U32.pack(n))
        case ImplementationClassUID(uid):
            return encode_item(ItemType.IMPLEMENTATION_CLASS_UID, encode_text(uid))
        case ImplementationVersionName(name):
            return encode_item(ItemType.IMPLEMENTATION_VERSION_NAME, encode_text(name))
        case AsynchronousOperationsWindow(invoked, performed):
            return encode_item(ItemType.ASYNCHRONOUS_OPERATIONS_WINDOW,
                               TWO_U16.pack(invoked, performed))
        case RoleSelection(uid, scu, scp):
            value = length_prefixed(encode_text(uid)) + bytes((int(scu), int(scp)))
            return encode_item(ItemType.SCP_SCU_ROLE_SELECTION, value)
        case SOPClassExtendedNegotiation(uid, info):
            return encode_item(ItemType.SOP_CLASS_EXTENDED_NEGOTIATION,
                               length_prefixed(encode_text(uid)) + info)
        case SOPClassCommonExtendedNegotiation(uid, service, related):
            related_field = b"".join(length_prefixed(encode_text(r)) for r in related)
            value = (length_prefixed(encode_text(uid)) + length_prefixed(encode_text(service))
                     + length_prefixed(related_field))
            # The byte after the item type is the Sub-item-version, 0 (PS3.7 D.3.3.6).
            return encode_item(ItemType.SOP_CLASS_COMMON_EXTENDED_NEGOTIATION, value)
        case UserIdentityRQ(kind, positive, primary, secondary):
            value = (bytes((kind, int(positive))) + length_prefixed(primary)
                     + length_prefixed(secondary))
            return encode_item(ItemType.USER_IDENTITY_RQ, value)
        case UserIdentityAC(response):
            return encode_item(ItemType.USER_IDENTITY_AC, length_prefixed(response))
        case UnknownItem(item_type, data):
            return encode_item(item_type, data)
    raise TypeError(f"not a user information sub-item: {item!r}")
