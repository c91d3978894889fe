"""PS3.8 §9.3 PDUs and their items, as immutable dataclasses, with a byte codec.

THEORY OF OPERATION
-------------------
``decode_pdu(pdu_type, body)`` turns the body of one PDU (the bytes after the 6-byte header,
already length-checked by ``buffer.PduBuffer``) into a dataclass; ``encode_pdu(pdu)`` is its
exact inverse. Anything malformed raises ``RemoteULError`` carrying the PS3.8 §9.3.8 A-ABORT
reason: 1 unrecognized PDU, 4 unrecognized PDU parameter, 6 invalid PDU parameter value.
No other exception may escape ``decode_pdu`` for any input.

P-DATA-TF is the hot path: PDV data are memoryviews into the caller's buffer (no copy), and
``encode_pdata_header`` lets a sender write header + payload without concatenating.

STATUS: skeleton written by the lead; the codec bodies are filled in by the UL helper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

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


def decode_pdu(pdu_type: int, body: memoryview) -> PDU:
    """Decode one PDU body (the bytes after the 6-byte PDU header).

    Raises ``RemoteULError`` (with the A-ABORT reason) for anything malformed, and nothing else.
    """
    raise NotImplementedError


def encode_pdu(pdu: PDU) -> bytes:
    """Encode a PDU including its 6-byte header."""
    raise NotImplementedError


def encode_pdata_header(pdv_lengths_total: int) -> bytes:
    """The 6-byte P-DATA-TF header for a body of ``pdv_lengths_total`` bytes (PDV items)."""
    raise NotImplementedError


def encode_pdv_header(context_id: int, is_command: bool, is_last: bool, data_len: int) -> bytes:
    """The 6-byte PDV item header (item length, context id, message control header)."""
    raise NotImplementedError


__all__ = ["RemoteULError"]
