"""PS3.8 §9.3 PDUs and their items, as immutable dataclasses, with a byte codec.

The item framing both levels share (headers, length-prefixed fields, ``fail``) is in
items.py; the User Information sub-items (PS3.7 Annex D) and their codec in user_items.py.

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
from dataclasses import dataclass, field
from enum import IntEnum

from appliance.errors import RemoteULError
from appliance.ul.items import (
    INVALID,
    UNEXPECTED,
    AbortReason,
    ItemType,
    decode_text,
    decode_uid,
    encode_item,
    encode_text,
    fail,
    split_items,
)
from appliance.ul.user_items import (
    AsynchronousOperationsWindow,
    ImplementationClassUID,
    ImplementationVersionName,
    MaximumLength,
    RoleSelection,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UnknownItem,
    UserIdentityAC,
    UserIdentityRQ,
    UserInformation,
    UserSubItem,
    decode_user_information,
    encode_sub_item,
)

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
_PDV_HEADER = struct.Struct(">IBB")  # Item-length, Presentation-context-ID, control header
# Protocol-version, reserved, Called-AE-title, Calling-AE-title, 32 reserved (Table 9-11/9-17)
_ASSOCIATE_FIXED = struct.Struct(">HH16s16s32s")
_FOUR_BYTES = struct.Struct(">BBBB")

_KNOWN_ITEM_TYPES = frozenset(int(t) for t in ItemType)
_AE_TITLE_BYTES = 16
_UINT32_MAX = 0xFFFFFFFF


# ---- decoding helpers --------------------------------------------------------------------


def _presentation_context_rq(view: memoryview) -> PresentationContextRQ:
    # PS3.8 §9.3.2.2: ID, reserved, reserved, reserved, then sub-items.
    if len(view) < 4:
        fail("truncated presentation context item")
    abstract_syntax: str | None = None
    transfer_syntaxes: list[str] = []
    for item_type, value in split_items(view[4:], "presentation context item"):
        if item_type == ItemType.ABSTRACT_SYNTAX:
            if abstract_syntax is not None:
                fail("more than one abstract syntax in a presentation context", UNEXPECTED)
            abstract_syntax = decode_uid(value)
        elif item_type == ItemType.TRANSFER_SYNTAX:
            transfer_syntaxes.append(decode_uid(value))
        elif item_type in _KNOWN_ITEM_TYPES:
            fail(f"item 0x{item_type:02X} inside a presentation context", UNEXPECTED)
        # else: an unrecognized sub-item, ignored and skipped (PS3.8 §9.3.1).
    if abstract_syntax is None:
        fail(f"presentation context {view[0]} has no abstract syntax")
    if not transfer_syntaxes:
        fail(f"presentation context {view[0]} has no transfer syntax")
    return PresentationContextRQ(view[0], abstract_syntax, tuple(transfer_syntaxes))


def _presentation_context_ac(view: memoryview) -> PresentationContextAC:
    # PS3.8 §9.3.3.2: ID, reserved, Result/Reason, reserved, then one transfer syntax.
    if len(view) < 4:
        fail("truncated presentation context item")
    transfer_syntax: str | None = None
    for item_type, value in split_items(view[4:], "presentation context item"):
        if item_type == ItemType.TRANSFER_SYNTAX:
            if transfer_syntax is not None:
                fail("more than one transfer syntax in an accepted context", UNEXPECTED)
            transfer_syntax = decode_uid(value)
        elif item_type in _KNOWN_ITEM_TYPES:
            fail(f"item 0x{item_type:02X} inside a presentation context", UNEXPECTED)
    if transfer_syntax is None:
        # The sub-item is "not significant" when the context was refused, so tolerate it
        # missing then; an acceptance without a transfer syntax is unusable.
        if view[2] == PresentationResult.ACCEPTANCE:
            fail(f"accepted presentation context {view[0]} has no transfer syntax")
        transfer_syntax = ""
    return PresentationContextAC(view[0], view[2], transfer_syntax)


def _associate(body: memoryview, is_rq: bool) -> AssociateRQ | AssociateAC:
    if len(body) < _ASSOCIATE_FIXED.size:
        fail("A-ASSOCIATE PDU shorter than its fixed fields")
    version, _, called, calling, _ = _ASSOCIATE_FIXED.unpack_from(body)
    context_type = ItemType.PRESENTATION_CONTEXT_RQ if is_rq else ItemType.PRESENTATION_CONTEXT_AC
    decode_context = _presentation_context_rq if is_rq else _presentation_context_ac
    application_context: str | None = None
    contexts: list[PresentationContextRQ | PresentationContextAC] = []
    user_information: UserInformation | None = None
    unknown: list[UnknownItem] = []
    for item_type, value in split_items(body[_ASSOCIATE_FIXED.size :], "A-ASSOCIATE PDU"):
        if item_type == ItemType.APPLICATION_CONTEXT:
            if application_context is not None:
                fail("more than one application context item", UNEXPECTED)
            application_context = decode_uid(value)
        elif item_type == context_type:
            contexts.append(decode_context(value))
        elif item_type == ItemType.USER_INFORMATION:
            if user_information is not None:
                fail("more than one user information item", UNEXPECTED)
            user_information = decode_user_information(value)
        elif item_type in _KNOWN_ITEM_TYPES:
            fail(f"item 0x{item_type:02X} in the A-ASSOCIATE variable field", UNEXPECTED)
        else:  # PS3.8 §9.3.1: items of unrecognized types shall be ignored and skipped.
            unknown.append(UnknownItem(item_type, bytes(value)))
    if application_context is None:
        fail("A-ASSOCIATE PDU without an application context item")
    if not contexts:
        fail("A-ASSOCIATE PDU without a presentation context item")
    # A missing user information item is tolerated (read as empty): negotiation decides.
    ae = (decode_text(memoryview(called)).strip(" \x00"),
          decode_text(memoryview(calling)).strip(" \x00"))
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
            fail("truncated PDV item header")
        length, context_id, control = unpack(body, offset)
        stop = offset + 4 + length
        if length < 2 or stop > end:
            fail(f"PDV item length {length} is invalid")
        # PS3.8 E.2: bit 0 command/data set, bit 1 last fragment; other bits not tested.
        pdvs.append(PDV(context_id, bool(control & 1), bool(control & 2), body[offset + 6 : stop]))
        offset = stop
    if not pdvs:
        fail("P-DATA-TF PDU without a PDV item")
    return PDataTF(tuple(pdvs))


def _four_bytes(body: memoryview, name: str) -> tuple[int, int, int, int]:
    if len(body) != 4:
        fail(f"{name} PDU length is {len(body)}, not 4")
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
        raise RemoteULError(f"truncated PDU: {exc}", abort_reason=INVALID) from exc
    fail(f"unrecognized PDU type 0x{pdu_type:02X}", int(AbortReason.UNRECOGNIZED_PDU))


# ---- encoding ----------------------------------------------------------------------------


def _ae_title(title: str) -> bytes:
    raw = encode_text(title)
    if len(raw) > _AE_TITLE_BYTES:
        raise ValueError(f"AE title {title!r} is longer than 16 characters")
    return raw.ljust(_AE_TITLE_BYTES, b" ")  # PS3.8 §9.3.2: 16 characters, space padded


def _presentation_context(pc: PresentationContextRQ | PresentationContextAC) -> bytes:
    if isinstance(pc, PresentationContextRQ):
        if not pc.transfer_syntaxes:
            raise ValueError(f"presentation context {pc.context_id} has no transfer syntax")
        subs = encode_item(ItemType.ABSTRACT_SYNTAX, encode_text(pc.abstract_syntax)) + b"".join(
            encode_item(ItemType.TRANSFER_SYNTAX, encode_text(ts)) for ts in pc.transfer_syntaxes
        )
        return encode_item(ItemType.PRESENTATION_CONTEXT_RQ, bytes((pc.context_id, 0, 0, 0)) + subs)
    subs = encode_item(ItemType.TRANSFER_SYNTAX, encode_text(pc.transfer_syntax))
    return encode_item(ItemType.PRESENTATION_CONTEXT_AC,
                       bytes((pc.context_id, 0, pc.result, 0)) + subs)


def _encode_associate(pdu: AssociateRQ | AssociateAC) -> bytes:
    if not pdu.presentation_contexts:
        raise ValueError("an A-ASSOCIATE PDU needs at least one presentation context")
    fixed = _ASSOCIATE_FIXED.pack(
        pdu.protocol_version, 0, _ae_title(pdu.called_ae), _ae_title(pdu.calling_ae), bytes(32)
    )
    known: list[tuple[int, bytes]] = [
        (
            ItemType.APPLICATION_CONTEXT,
            encode_item(ItemType.APPLICATION_CONTEXT, encode_text(pdu.application_context)),
        ),
        *(
            (ItemType.PRESENTATION_CONTEXT_RQ, _presentation_context(pc))
            for pc in pdu.presentation_contexts
        ),
        (
            ItemType.USER_INFORMATION,
            encode_item(ItemType.USER_INFORMATION,
                        b"".join(map(encode_sub_item, pdu.user_information.items))),
        ),
    ]
    unknown = [(u.item_type, encode_item(u.item_type, u.data)) for u in pdu.unknown_items]
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


# Item types, abort reasons and the User Information sub-items live in items.py and
# user_items.py; they are part of this module's interface too (PDUs are built from them).
__all__ = [
    "AbortReason", "AsynchronousOperationsWindow", "ImplementationClassUID",
    "ImplementationVersionName", "ItemType", "MaximumLength", "RemoteULError", "RoleSelection",
    "SOPClassCommonExtendedNegotiation", "SOPClassExtendedNegotiation", "UnknownItem",
    "UserIdentityAC", "UserIdentityRQ", "UserInformation", "UserSubItem",
]
