"""PS3.8 §9.3 PDUs and their items, as immutable dataclasses, with a byte codec.

THEORY OF OPERATION
-------------------
``decode_pdu(pdu_type, body)`` turns the body of one PDU (the bytes after the 6-byte header,
already length-checked by ``buffer.PduBuffer``) into a dataclass; ``encode_pdu(pdu)`` is its
exact inverse (``decode_pdu(encode_pdu(p)) == p``; the fuzz harness tests/fuzz/fuzz_pdu.py
checks it on whatever decodes). Anything malformed raises ``RemoteULError`` carrying the
PS3.8 §9.3.8 A-ABORT reason: 1 unrecognized PDU type; 5 unexpected PDU parameter (a known item
where it is not allowed, or repeated where only one is); 6 invalid PDU parameter value
(lengths that do not add up, a truncated or missing mandatory item). Reason 4 is never
raised: PS3.8 §9.3.1 says items of unrecognized types are ignored. No other exception escapes
``decode_pdu`` for any input.

P-DATA-TF is the hot path: PDV data are memoryviews into the caller's buffer (no copy), and
``encode_pdata_header`` lets a sender write header + payload without concatenating.

Decoding is strict about structure (every length must add up exactly) and lenient about
values: reserved fields are never tested, unrecognized item types are kept as ``UnknownItem``
(PS3.8 §9.3.1 "ignored and skipped"; PS3.8 D.2 for user information sub-items; inside a
presentation context they are dropped, as its dataclass has no place for them), and
semantic checks (protocol version, application context name, context IDs) are left to
negotiation, which answers them with an A-ASSOCIATE-RJ rather than an A-ABORT (PS3.8 §9.3.4).
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NoReturn

from appliance.errors import RemoteULError

APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"
PROTOCOL_VERSION = 1


class PduType(IntEnum):
    """PS3.8 §9.3.1 PDU types."""

    ASSOCIATE_RQ = 0x01
    ASSOCIATE_AC = 0x02
    ASSOCIATE_RJ = 0x03
    P_DATA_TF = 0x04
    RELEASE_RQ = 0x05
    RELEASE_RP = 0x06
    ABORT = 0x07


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


class AbortSource(IntEnum):
    SERVICE_USER = 0
    SERVICE_PROVIDER = 2


class PresentationResult(IntEnum):
    """PS3.8 §9.3.3.2 presentation context result/reason."""

    ACCEPTANCE = 0
    USER_REJECTION = 1
    NO_REASON = 2
    ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
    TRANSFER_SYNTAXES_NOT_SUPPORTED = 4


# ---- user information sub-items (PS3.8 §9.3.2.3, PS3.7 Annex D) -------------------------


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


# ---- presentation contexts ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PresentationContextRQ:
    """0x20: one abstract syntax (0x30) and one or more transfer syntaxes (0x40)."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PresentationContextAC:
    """0x21: result (PresentationResult) and the one transfer syntax chosen.

    When result != ACCEPTANCE the transfer syntax is not significant (PS3.8 §9.3.3.2);
    it is encoded as given (may be empty)."""

    context_id: int
    result: int
    transfer_syntax: str


# ---- the seven PDUs ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AssociateRQ:
    """A-ASSOCIATE-RQ (PS3.8 §9.3.2). AE titles are str, stripped of padding spaces."""

    called_ae: str
    calling_ae: str
    presentation_contexts: tuple[PresentationContextRQ, ...]
    user_information: UserInformation = field(default_factory=UserInformation)
    application_context: str = APPLICATION_CONTEXT_NAME
    protocol_version: int = PROTOCOL_VERSION
    unknown_items: tuple[UnknownItem, ...] = ()


@dataclass(frozen=True, slots=True)
class AssociateAC:
    """A-ASSOCIATE-AC (PS3.8 §9.3.3). Called/calling AE echo the RQ (not tested by peers)."""

    called_ae: str
    calling_ae: str
    presentation_contexts: tuple[PresentationContextAC, ...]
    user_information: UserInformation = field(default_factory=UserInformation)
    application_context: str = APPLICATION_CONTEXT_NAME
    protocol_version: int = PROTOCOL_VERSION
    unknown_items: tuple[UnknownItem, ...] = ()


@dataclass(frozen=True, slots=True)
class AssociateRJ:
    """A-ASSOCIATE-RJ (PS3.8 §9.3.4). result 1 permanent / 2 transient; source 1 user,
    2 provider (ACSE), 3 provider (presentation); reason per source."""

    result: int
    source: int
    reason: int


@dataclass(frozen=True, slots=True)
class PDV:
    """One Presentation Data Value item (PS3.8 §9.3.5.1, Annex E.2).

    The message control header: bit 0 = command (1) / data set (0); bit 1 = last fragment."""

    context_id: int
    is_command: bool
    is_last: bool
    data: bytes | memoryview

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PDV):
            return NotImplemented
        return (
            self.context_id == other.context_id
            and self.is_command == other.is_command
            and self.is_last == other.is_last
            and bytes(self.data) == bytes(other.data)
        )

    def __hash__(self) -> int:
        return hash((self.context_id, self.is_command, self.is_last, bytes(self.data)))


@dataclass(frozen=True, slots=True)
class PDataTF:
    """P-DATA-TF (PS3.8 §9.3.5): one or more PDVs."""

    pdvs: tuple[PDV, ...]


@dataclass(frozen=True, slots=True)
class ReleaseRQ:
    """A-RELEASE-RQ (PS3.8 §9.3.6)."""


@dataclass(frozen=True, slots=True)
class ReleaseRP:
    """A-RELEASE-RP (PS3.8 §9.3.7)."""


@dataclass(frozen=True, slots=True)
class AbortPDU:
    """A-ABORT (PS3.8 §9.3.8). source 0 service-user, 2 service-provider."""

    source: int = AbortSource.SERVICE_PROVIDER
    reason: int = AbortReason.NOT_SPECIFIED


PDU = AssociateRQ | AssociateAC | AssociateRJ | PDataTF | ReleaseRQ | ReleaseRP | AbortPDU

PDU_HEADER_BYTES = 6
PDV_HEADER_BYTES = 6  # 4-byte item length + context id + message control header


_PDU_HEADER = struct.Struct(">BBI")  # PDU-type, reserved, PDU-length (PS3.8 §9.3.1)
_ITEM_HEADER = struct.Struct(">BBH")  # Item-type, reserved, Item-length
_PDV_HEADER = struct.Struct(">IBB")  # Item-length, Presentation-context-ID, control header
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_TWO_U16 = struct.Struct(">HH")
# Protocol-version, reserved, Called-AE-title, Calling-AE-title, 32 reserved (Table 9-11/9-17)
_ASSOCIATE_FIXED = struct.Struct(">HH16s16s32s")
_FOUR_BYTES = struct.Struct(">BBBB")

_INVALID = int(AbortReason.INVALID_PDU_PARAMETER_VALUE)
_UNEXPECTED = int(AbortReason.UNEXPECTED_PDU_PARAMETER)
_KNOWN_ITEM_TYPES = frozenset(int(t) for t in ItemType)
_AE_TITLE_BYTES = 16
_UINT16_MAX = 0xFFFF
_UINT32_MAX = 0xFFFFFFFF


def _fail(message: str, reason: int = _INVALID) -> NoReturn:
    raise RemoteULError(message, abort_reason=reason)


# ---- decoding helpers --------------------------------------------------------------------


def _items(view: memoryview, where: str) -> Iterator[tuple[int, memoryview]]:
    """Split a variable field into (item type, item value) pairs; every length must fit."""
    offset, end = 0, len(view)
    while offset < end:
        if end - offset < _ITEM_HEADER.size:
            _fail(f"truncated item header in {where}")
        item_type, _, length = _ITEM_HEADER.unpack_from(view, offset)
        stop = offset + _ITEM_HEADER.size + length
        if stop > end:
            _fail(f"item 0x{item_type:02X} overruns {where}")
        yield item_type, view[offset + _ITEM_HEADER.size : stop]
        offset = stop


def _text(view: memoryview) -> str:
    # latin-1 never fails and keeps every byte, so a bad character becomes a value that
    # negotiation rejects rather than an exception here.
    return bytes(view).decode("latin-1")


def _uid(view: memoryview) -> str:
    # PS3.8 Annex F forbids padding, but some peers pad UIDs to even length as in PS3.5 §9.1.
    return _text(view).rstrip("\x00 ")


def _prefixed(view: memoryview, offset: int, where: str) -> tuple[memoryview, int]:
    """A u16-length-prefixed field at ``offset``; returns (value, offset after it)."""
    if len(view) - offset < 2:
        _fail(f"truncated length field in {where}")
    (length,) = _U16.unpack_from(view, offset)
    stop = offset + 2 + length
    if stop > len(view):
        _fail(f"field overruns {where}")
    return view[offset + 2 : stop], stop


def _exactly(view: memoryview, offset: int, where: str) -> None:
    if offset != len(view):
        _fail(f"{len(view) - offset} stray bytes at the end of {where}")


def _maximum_length(v: memoryview) -> MaximumLength:
    if len(v) != 4:
        _fail("maximum length sub-item length is not 4")
    return MaximumLength(_U32.unpack_from(v)[0])


def _async_window(v: memoryview) -> AsynchronousOperationsWindow:
    if len(v) != 4:
        _fail("asynchronous operations window sub-item length is not 4")
    invoked, performed = _TWO_U16.unpack_from(v)
    return AsynchronousOperationsWindow(invoked, performed)


def _role_selection(v: memoryview) -> RoleSelection:
    uid, offset = _prefixed(v, 0, "SCP/SCU role selection")
    if len(v) - offset != 2:
        _fail("SCP/SCU role selection sub-item has a bad length")
    # PS3.7 D.3.3.4: 0 non-support, 1 support; other values are read as support.
    return RoleSelection(_uid(uid), v[offset] != 0, v[offset + 1] != 0)


def _extended_negotiation(v: memoryview) -> SOPClassExtendedNegotiation:
    uid, offset = _prefixed(v, 0, "SOP class extended negotiation")
    return SOPClassExtendedNegotiation(_uid(uid), bytes(v[offset:]))


def _common_extended_negotiation(v: memoryview) -> SOPClassCommonExtendedNegotiation:
    where = "SOP class common extended negotiation"
    sop_class, offset = _prefixed(v, 0, where)
    service_class, offset = _prefixed(v, offset, where)
    related_field, offset = _prefixed(v, offset, where)
    _exactly(v, offset, where)
    related: list[str] = []
    inner = 0
    while inner < len(related_field):
        uid, inner = _prefixed(related_field, inner, where)
        related.append(_uid(uid))
    return SOPClassCommonExtendedNegotiation(_uid(sop_class), _uid(service_class), tuple(related))


def _user_identity_rq(v: memoryview) -> UserIdentityRQ:
    if len(v) < 2:
        _fail("truncated user identity sub-item")
    primary, offset = _prefixed(v, 2, "user identity")
    secondary, offset = _prefixed(v, offset, "user identity")
    _exactly(v, offset, "user identity")
    return UserIdentityRQ(v[0], v[1] != 0, bytes(primary), bytes(secondary))


def _user_identity_ac(v: memoryview) -> UserIdentityAC:
    response, offset = _prefixed(v, 0, "user identity response")
    _exactly(v, offset, "user identity response")
    return UserIdentityAC(bytes(response))


_SUB_ITEM_DECODERS: dict[int, Callable[[memoryview], UserSubItem]] = {
    ItemType.MAXIMUM_LENGTH: _maximum_length,
    ItemType.IMPLEMENTATION_CLASS_UID: lambda v: ImplementationClassUID(_uid(v)),
    ItemType.ASYNCHRONOUS_OPERATIONS_WINDOW: _async_window,
    ItemType.SCP_SCU_ROLE_SELECTION: _role_selection,
    ItemType.IMPLEMENTATION_VERSION_NAME: lambda v: ImplementationVersionName(_uid(v)),
    ItemType.SOP_CLASS_EXTENDED_NEGOTIATION: _extended_negotiation,
    ItemType.SOP_CLASS_COMMON_EXTENDED_NEGOTIATION: _common_extended_negotiation,
    ItemType.USER_IDENTITY_RQ: _user_identity_rq,
    ItemType.USER_IDENTITY_AC: _user_identity_ac,
}


def _user_information(view: memoryview) -> UserInformation:
    items: list[UserSubItem] = []
    for item_type, value in _items(view, "user information item"):
        decoder = _SUB_ITEM_DECODERS.get(item_type)
        # PS3.8 D.2 note 2: unrecognized user information sub-items shall be ignored, not
        # rejected; we keep them so that they round-trip and can be logged.
        items.append(decoder(value) if decoder else UnknownItem(item_type, bytes(value)))
    return UserInformation(tuple(items))


def _presentation_context_rq(view: memoryview) -> PresentationContextRQ:
    # PS3.8 §9.3.2.2: ID, reserved, reserved, reserved, then sub-items.
    if len(view) < 4:
        _fail("truncated presentation context item")
    abstract_syntax: str | None = None
    transfer_syntaxes: list[str] = []
    for item_type, value in _items(view[4:], "presentation context item"):
        if item_type == ItemType.ABSTRACT_SYNTAX:
            if abstract_syntax is not None:
                _fail("more than one abstract syntax in a presentation context", _UNEXPECTED)
            abstract_syntax = _uid(value)
        elif item_type == ItemType.TRANSFER_SYNTAX:
            transfer_syntaxes.append(_uid(value))
        elif item_type in _KNOWN_ITEM_TYPES:
            _fail(f"item 0x{item_type:02X} inside a presentation context", _UNEXPECTED)
        # else: an unrecognized sub-item, ignored and skipped (PS3.8 §9.3.1).
    if abstract_syntax is None:
        _fail(f"presentation context {view[0]} has no abstract syntax")
    if not transfer_syntaxes:
        _fail(f"presentation context {view[0]} has no transfer syntax")
    return PresentationContextRQ(view[0], abstract_syntax, tuple(transfer_syntaxes))


def _presentation_context_ac(view: memoryview) -> PresentationContextAC:
    # PS3.8 §9.3.3.2: ID, reserved, Result/Reason, reserved, then one transfer syntax.
    if len(view) < 4:
        _fail("truncated presentation context item")
    transfer_syntax: str | None = None
    for item_type, value in _items(view[4:], "presentation context item"):
        if item_type == ItemType.TRANSFER_SYNTAX:
            if transfer_syntax is not None:
                _fail("more than one transfer syntax in an accepted context", _UNEXPECTED)
            transfer_syntax = _uid(value)
        elif item_type in _KNOWN_ITEM_TYPES:
            _fail(f"item 0x{item_type:02X} inside a presentation context", _UNEXPECTED)
    if transfer_syntax is None:
        # The sub-item is "not significant" when the context was refused, so tolerate it
        # missing then; an acceptance without a transfer syntax is unusable.
        if view[2] == PresentationResult.ACCEPTANCE:
            _fail(f"accepted presentation context {view[0]} has no transfer syntax")
        transfer_syntax = ""
    return PresentationContextAC(view[0], view[2], transfer_syntax)


def _associate(body: memoryview, is_rq: bool) -> AssociateRQ | AssociateAC:
    if len(body) < _ASSOCIATE_FIXED.size:
        _fail("A-ASSOCIATE PDU shorter than its fixed fields")
    version, _, called, calling, _ = _ASSOCIATE_FIXED.unpack_from(body)
    context_type = ItemType.PRESENTATION_CONTEXT_RQ if is_rq else ItemType.PRESENTATION_CONTEXT_AC
    decode_context = _presentation_context_rq if is_rq else _presentation_context_ac
    application_context: str | None = None
    contexts: list[PresentationContextRQ | PresentationContextAC] = []
    user_information: UserInformation | None = None
    unknown: list[UnknownItem] = []
    for item_type, value in _items(body[_ASSOCIATE_FIXED.size :], "A-ASSOCIATE PDU"):
        if item_type == ItemType.APPLICATION_CONTEXT:
            if application_context is not None:
                _fail("more than one application context item", _UNEXPECTED)
            application_context = _uid(value)
        elif item_type == context_type:
            contexts.append(decode_context(value))
        elif item_type == ItemType.USER_INFORMATION:
            if user_information is not None:
                _fail("more than one user information item", _UNEXPECTED)
            user_information = _user_information(value)
        elif item_type in _KNOWN_ITEM_TYPES:
            _fail(f"item 0x{item_type:02X} in the A-ASSOCIATE variable field", _UNEXPECTED)
        else:  # PS3.8 §9.3.1: items of unrecognized types shall be ignored and skipped.
            unknown.append(UnknownItem(item_type, bytes(value)))
    if application_context is None:
        _fail("A-ASSOCIATE PDU without an application context item")
    if not contexts:
        _fail("A-ASSOCIATE PDU without a presentation context item")
    # A missing user information item is tolerated (read as empty): negotiation decides.
    ae = (_text(memoryview(called)).strip(" \x00"), _text(memoryview(calling)).strip(" \x00"))
    if is_rq:
        return AssociateRQ(
            ae[0],
            ae[1],
            tuple(c for c in contexts if isinstance(c, PresentationContextRQ)),
            user_information or UserInformation(),
            application_context,
            version,
            tuple(unknown),
        )
    return AssociateAC(
        ae[0],
        ae[1],
        tuple(c for c in contexts if isinstance(c, PresentationContextAC)),
        user_information or UserInformation(),
        application_context,
        version,
        tuple(unknown),
    )


def _p_data(body: memoryview) -> PDataTF:
    # Hot path: one unpack per PDV, PDV data are zero-copy slices of ``body``.
    pdvs: list[PDV] = []
    unpack = _PDV_HEADER.unpack_from
    offset, end = 0, len(body)
    while offset < end:
        if end - offset < PDV_HEADER_BYTES:
            _fail("truncated PDV item header")
        length, context_id, control = unpack(body, offset)
        stop = offset + 4 + length
        if length < 2 or stop > end:
            _fail(f"PDV item length {length} is invalid")
        # PS3.8 E.2: bit 0 command/data set, bit 1 last fragment; other bits not tested.
        pdvs.append(PDV(context_id, bool(control & 1), bool(control & 2), body[offset + 6 : stop]))
        offset = stop
    if not pdvs:
        _fail("P-DATA-TF PDU without a PDV item")
    return PDataTF(tuple(pdvs))


def _four_bytes(body: memoryview, name: str) -> tuple[int, int, int, int]:
    if len(body) != 4:
        _fail(f"{name} PDU length is {len(body)}, not 4")
    fields: tuple[int, int, int, int] = _FOUR_BYTES.unpack_from(body)
    return fields


def decode_pdu(pdu_type: int, body: memoryview) -> PDU:
    """Decode one PDU body (the bytes after the 6-byte PDU header).

    Raises ``RemoteULError`` (with the A-ABORT reason) for anything malformed, and nothing else.
    """
    if not isinstance(body, memoryview):
        body = memoryview(body)
    try:
        if pdu_type == PduType.P_DATA_TF:
            return _p_data(body)
        if pdu_type == PduType.ASSOCIATE_RQ:
            return _associate(body, is_rq=True)
        if pdu_type == PduType.ASSOCIATE_AC:
            return _associate(body, is_rq=False)
        if pdu_type == PduType.ASSOCIATE_RJ:  # PS3.8 §9.3.4: reserved, result, source, reason
            _, result, source, reason = _four_bytes(body, "A-ASSOCIATE-RJ")
            return AssociateRJ(result, source, reason)
        if pdu_type == PduType.RELEASE_RQ:
            _four_bytes(body, "A-RELEASE-RQ")
            return ReleaseRQ()
        if pdu_type == PduType.RELEASE_RP:
            _four_bytes(body, "A-RELEASE-RP")
            return ReleaseRP()
        if pdu_type == PduType.ABORT:  # PS3.8 §9.3.8: reserved, reserved, source, reason
            _, _, source, reason = _four_bytes(body, "A-ABORT")
            return AbortPDU(source, reason)
    except (struct.error, IndexError) as exc:  # a guard missed a short field: still the peer's
        raise RemoteULError(f"truncated PDU: {exc}", abort_reason=_INVALID) from exc
    _fail(f"unrecognized PDU type 0x{pdu_type:02X}", int(AbortReason.UNRECOGNIZED_PDU))


# ---- encoding ----------------------------------------------------------------------------


def _length_u16(n: int, what: str) -> bytes:
    if n > _UINT16_MAX:
        raise ValueError(f"{what} is {n} bytes, more than a 16-bit length allows")
    return _U16.pack(n)


def _item(item_type: int, value: bytes) -> bytes:
    if len(value) > _UINT16_MAX:
        raise ValueError(f"item 0x{item_type:02X} is {len(value)} bytes, over the u16 limit")
    return _ITEM_HEADER.pack(item_type, 0, len(value)) + value


def _lp(value: bytes) -> bytes:
    return _length_u16(len(value), "field") + value


def _latin1(text: str) -> bytes:
    return text.encode("latin-1")  # UnicodeEncodeError is a ValueError


def _ae_title(title: str) -> bytes:
    raw = _latin1(title)
    if len(raw) > _AE_TITLE_BYTES:
        raise ValueError(f"AE title {title!r} is longer than 16 characters")
    return raw.ljust(_AE_TITLE_BYTES, b" ")  # PS3.8 §9.3.2: 16 characters, space padded


def _sub_item(item: UserSubItem) -> bytes:
    match item:
        case MaximumLength(n):
            return _item(ItemType.MAXIMUM_LENGTH, _U32.pack(n))
        case ImplementationClassUID(uid):
            return _item(ItemType.IMPLEMENTATION_CLASS_UID, _latin1(uid))
        case ImplementationVersionName(name):
            return _item(ItemType.IMPLEMENTATION_VERSION_NAME, _latin1(name))
        case AsynchronousOperationsWindow(invoked, performed):
            return _item(ItemType.ASYNCHRONOUS_OPERATIONS_WINDOW, _TWO_U16.pack(invoked, performed))
        case RoleSelection(uid, scu, scp):
            value = _lp(_latin1(uid)) + bytes((int(scu), int(scp)))
            return _item(ItemType.SCP_SCU_ROLE_SELECTION, value)
        case SOPClassExtendedNegotiation(uid, info):
            return _item(ItemType.SOP_CLASS_EXTENDED_NEGOTIATION, _lp(_latin1(uid)) + info)
        case SOPClassCommonExtendedNegotiation(uid, service, related):
            related_field = b"".join(_lp(_latin1(r)) for r in related)
            value = _lp(_latin1(uid)) + _lp(_latin1(service)) + _lp(related_field)
            # The byte after the item type is the Sub-item-version, 0 (PS3.7 D.3.3.6).
            return _item(ItemType.SOP_CLASS_COMMON_EXTENDED_NEGOTIATION, value)
        case UserIdentityRQ(kind, positive, primary, secondary):
            value = bytes((kind, int(positive))) + _lp(primary) + _lp(secondary)
            return _item(ItemType.USER_IDENTITY_RQ, value)
        case UserIdentityAC(response):
            return _item(ItemType.USER_IDENTITY_AC, _lp(response))
        case UnknownItem(item_type, data):
            return _item(item_type, data)
    raise TypeError(f"not a user information sub-item: {item!r}")


def _presentation_context(pc: PresentationContextRQ | PresentationContextAC) -> bytes:
    if isinstance(pc, PresentationContextRQ):
        if not pc.transfer_syntaxes:
            raise ValueError(f"presentation context {pc.context_id} has no transfer syntax")
        subs = _item(ItemType.ABSTRACT_SYNTAX, _latin1(pc.abstract_syntax)) + b"".join(
            _item(ItemType.TRANSFER_SYNTAX, _latin1(ts)) for ts in pc.transfer_syntaxes
        )
        return _item(ItemType.PRESENTATION_CONTEXT_RQ, bytes((pc.context_id, 0, 0, 0)) + subs)
    subs = _item(ItemType.TRANSFER_SYNTAX, _latin1(pc.transfer_syntax))
    return _item(ItemType.PRESENTATION_CONTEXT_AC, bytes((pc.context_id, 0, pc.result, 0)) + subs)


def _encode_associate(pdu: AssociateRQ | AssociateAC) -> bytes:
    if not pdu.presentation_contexts:
        raise ValueError("an A-ASSOCIATE PDU needs at least one presentation context")
    fixed = _ASSOCIATE_FIXED.pack(
        pdu.protocol_version, 0, _ae_title(pdu.called_ae), _ae_title(pdu.calling_ae), bytes(32)
    )
    known: list[tuple[int, bytes]] = [
        (
            ItemType.APPLICATION_CONTEXT,
            _item(ItemType.APPLICATION_CONTEXT, _latin1(pdu.application_context)),
        ),
        *(
            (ItemType.PRESENTATION_CONTEXT_RQ, _presentation_context(pc))
            for pc in pdu.presentation_contexts
        ),
        (
            ItemType.USER_INFORMATION,
            _item(ItemType.USER_INFORMATION, b"".join(map(_sub_item, pdu.user_information.items))),
        ),
    ]
    unknown = [(u.item_type, _item(u.item_type, u.data)) for u in pdu.unknown_items]
    # PS3.8 §9.3.1: items appear in increasing order of item type. Ours are in that order;
    # unknown items are merged in without being reordered among themselves, so a peer's
    # out-of-order ones keep their order and decode_pdu(encode_pdu(pdu)) == pdu holds.
    items = heapq.merge(known, unknown, key=lambda pair: pair[0])
    body = fixed + b"".join(encoded for _, encoded in items)
    kind = PduType.ASSOCIATE_RQ if isinstance(pdu, AssociateRQ) else PduType.ASSOCIATE_AC
    return _PDU_HEADER.pack(kind, 0, len(body)) + body


def _encode_p_data(pdu: PDataTF) -> bytes:
    if not pdu.pdvs:
        raise ValueError("a P-DATA-TF PDU needs at least one PDV")
    parts: list[bytes | memoryview] = [b""]
    total = 0
    for pdv in pdu.pdvs:
        size = pdv.data.nbytes if isinstance(pdv.data, memoryview) else len(pdv.data)
        parts.append(encode_pdv_header(pdv.context_id, pdv.is_command, pdv.is_last, size))
        parts.append(pdv.data)
        total += PDV_HEADER_BYTES + size
    parts[0] = encode_pdata_header(total)
    return b"".join(parts)


def encode_pdu(pdu: PDU) -> bytes:
    """Encode a PDU including its 6-byte header.

    Raises ``ValueError`` for a PDU that ``decode_pdu`` would refuse or that cannot be encoded
    (an AE title over 16 characters, a field over its length limit, no PDV, ...)."""
    try:
        match pdu:
            case PDataTF():
                return _encode_p_data(pdu)
            case AssociateRQ() | AssociateAC():
                return _encode_associate(pdu)
            case AssociateRJ(result, source, reason):
                fields = (0, result, source, reason)
                return _PDU_HEADER.pack(PduType.ASSOCIATE_RJ, 0, 4) + _FOUR_BYTES.pack(*fields)
            case ReleaseRQ():
                return _PDU_HEADER.pack(PduType.RELEASE_RQ, 0, 4) + bytes(4)
            case ReleaseRP():
                return _PDU_HEADER.pack(PduType.RELEASE_RP, 0, 4) + bytes(4)
            case AbortPDU(source, reason):
                fields = (0, 0, source, reason)
                return _PDU_HEADER.pack(PduType.ABORT, 0, 4) + _FOUR_BYTES.pack(*fields)
    except struct.error as exc:  # an integer field out of range
        raise ValueError(str(exc)) from exc
    raise TypeError(f"not a PDU: {pdu!r}")


def encode_pdata_header(pdv_lengths_total: int) -> bytes:
    """The 6-byte P-DATA-TF header for a body of ``pdv_lengths_total`` bytes (PDV items)."""
    if not 0 <= pdv_lengths_total <= _UINT32_MAX:
        raise ValueError(f"P-DATA-TF body of {pdv_lengths_total} bytes")
    return _PDU_HEADER.pack(PduType.P_DATA_TF, 0, pdv_lengths_total)


def encode_pdv_header(context_id: int, is_command: bool, is_last: bool, data_len: int) -> bytes:
    """The 6-byte PDV item header (item length, context id, message control header)."""
    if not 0 <= context_id <= 0xFF or not 0 <= data_len <= _UINT32_MAX - 2:
        raise ValueError(f"PDV context {context_id} with {data_len} bytes")
    control = (1 if is_command else 0) | (2 if is_last else 0)
    return _PDV_HEADER.pack(data_len + 2, context_id, control)


__all__ = ["RemoteULError"]
