"""Association negotiation policy: A-ASSOCIATE-RQ in, A-ASSOCIATE-AC or -RJ out (PS3.8 §9.3,
PS3.7 Annex D). Pure: no I/O, no state; the acceptor applies association-count limits itself
and uses ``reject_busy`` for those.

Decisions documented here (each is a deliberate choice among what PS3.8 allows):
- Zero acceptable presentation contexts -> A-ASSOCIATE-RJ permanent, source 1, reason 1 (no
  reason given), as DCMTK storescp does. PS3.8 would allow an AC with every context
  rejected, but the requestor could do nothing with it; an RJ states the outcome at once.
  ``reject_if_no_contexts=False`` restores the AC.
- Transfer syntax: the first of ``transfer_syntax_preference`` (native encodings) that the
  requestor proposed; otherwise the requestor's first proposed encapsulated or JPIP syntax,
  which we store exactly as received (no transcoding). With ``prefer_encapsulated`` an
  encapsulated syntax proposed before every native one wins, sparing the requestor a
  decompression.
- Rejected contexts carry the first proposed transfer syntax (or Implicit VR LE): PS3.8
  §9.3.3.2 says the field is not tested then, but a non-empty UID is safest for old decoders.
- SCP/SCU Role Selection (PS3.7 D.3.3.4) is answered for SOP classes of accepted contexts:
  the requestor's SCU role is granted as proposed (we are the SCP: Storage, Verification);
  the requestor's SCP role (us acting as SCU, i.e. C-GET sub-operations) only for the SOP
  classes in ``scp_role_sop_classes`` (none until C-GET is served).
- Asynchronous Operations Window (PS3.7 D.3.3.3): answered (1, 1) when proposed: we perform
  operations serially on each association.
- User Identity (PS3.7 D.3.3.7): not authenticated yet, so never a User Identity AC; a
  requestor that requested a positive response then decides whether to go on.
- Access control (appliance/access.py): ``negotiate(..., operations=...)`` accepts only the
  contexts of the operations a peer is allowed (``operation_of``), answering the others
  result 1 "user-rejection" (PS3.8 §9.3.3.2). Storage contexts also serve C-GET
  sub-operations, so a peer allowed ``get`` but not ``store`` gets a storage context only
  when its Role Selection proposes the SCP role, and its SCU role is not granted.
- SOP Class Extended Negotiation (PS3.7 D.3.3.5) is answered for accepted Query/Retrieve
  classes only (relational queries/retrieval, PS3.4 C.5.1), granted when ``relational``;
  for other classes it is not answered, which D.3.3.5 defines as "not supported". SOP Class
  Common Extended Negotiation (D.3.3.6) is never answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

from appliance.negotiation.qr_classes import (
    MODALITY_PERFORMED_PROCEDURE_STEP,
    MODALITY_WORKLIST_FIND,
    QR_FIND,
    QR_GET,
    QR_MOVE,
    QR_SOP_CLASSES,
    STORAGE_COMMITMENT_PUSH_MODEL,
    extended_negotiation_reply,
)
from appliance.negotiation.sop_classes import (
    ENCAPSULATED_TRANSFER_SYNTAXES,
    IMPLICIT_VR_LITTLE_ENDIAN,
    NATIVE_TRANSFER_SYNTAXES,
    REFERENCED_TRANSFER_SYNTAXES,
    STORAGE_SOP_CLASSES,
    VERIFICATION,
)
from appliance.ul.pdu import (
    APPLICATION_CONTEXT_NAME,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    AsynchronousOperationsWindow,
    ImplementationClassUID,
    ImplementationVersionName,
    MaximumLength,
    PresentationContextAC,
    PresentationContextRQ,
    PresentationResult,
    RoleSelection,
    SOPClassExtendedNegotiation,
    UserInformation,
    UserSubItem,
)

# A UUID-derived UID (PS3.5 B.2) identifying this implementation; no organisation root needed.
IMPLEMENTATION_CLASS_UID = "2.25.110644245515791858236152589235373083154"
IMPLEMENTATION_VERSION_NAME = "PYINGEST_0_1"  # PS3.7 D.3.3.2: 1-16 characters

_AS_RECEIVED = frozenset(ENCAPSULATED_TRANSFER_SYNTAXES + REFERENCED_TRANSFER_SYNTAXES)


class Operation(StrEnum):
    """What a peer may do (``[access.peer.X] operations``); each names the SOP classes that
    ``operation_of`` maps to it."""

    ECHO = "echo"  # Verification (PS3.4 A)
    STORE = "store"  # Storage (PS3.4 B), and any class accepted under ``promiscuous``
    FIND = "find"  # Q/R C-FIND (PS3.4 C.4.1)
    GET = "get"  # Q/R C-GET (PS3.4 C.4.3)
    MOVE = "move"  # Q/R C-MOVE (PS3.4 C.4.2)
    WORKLIST = "worklist"  # Modality Worklist C-FIND (PS3.4 K)
    MPPS = "mpps"  # Modality Performed Procedure Step (PS3.4 F)
    COMMITMENT = "commitment"  # Storage Commitment Push Model (PS3.4 J)


_OPERATION_OF: dict[str, Operation] = {
    VERIFICATION: Operation.ECHO,
    **dict.fromkeys(QR_FIND, Operation.FIND),
    **dict.fromkeys(QR_GET, Operation.GET),
    **dict.fromkeys(QR_MOVE, Operation.MOVE),
    MODALITY_WORKLIST_FIND: Operation.WORKLIST,
    MODALITY_PERFORMED_PROCEDURE_STEP: Operation.MPPS,
    STORAGE_COMMITMENT_PUSH_MODEL: Operation.COMMITMENT,
}


def operation_of(abstract_syntax: str) -> Operation:
    """The operation a presentation context serves: storage for every class not named."""
    return _OPERATION_OF.get(abstract_syntax, Operation.STORE)


class RejectResult(IntEnum):
    """PS3.8 Table 9-21 Result."""

    PERMANENT = 1
    TRANSIENT = 2


class RejectSource(IntEnum):
    """PS3.8 Table 9-21 Source."""

    SERVICE_USER = 1
    SERVICE_PROVIDER_ACSE = 2
    SERVICE_PROVIDER_PRESENTATION = 3


class UserRejectReason(IntEnum):
    """PS3.8 Table 9-21 Reason/Diag. when the source is 1 (service-user)."""

    NO_REASON_GIVEN = 1
    APPLICATION_CONTEXT_NOT_SUPPORTED = 2
    CALLING_AE_NOT_RECOGNIZED = 3
    CALLED_AE_NOT_RECOGNIZED = 7


class AcseRejectReason(IntEnum):
    """PS3.8 Table 9-21 Reason/Diag. when the source is 2 (service-provider, ACSE)."""

    NO_REASON_GIVEN = 1
    PROTOCOL_VERSION_NOT_SUPPORTED = 2


class PresentationRejectReason(IntEnum):
    """PS3.8 Table 9-21 Reason/Diag. when the source is 3 (service-provider, presentation)."""

    TEMPORARY_CONGESTION = 1
    LOCAL_LIMIT_EXCEEDED = 2


@dataclass(frozen=True, slots=True)
class NegotiationPolicy:
    """What this AE accepts. AE titles compare exactly, after padding spaces are stripped."""

    ae_title: str
    require_called_ae: bool = False  # False: any Called AE Title is accepted
    allowed_calling_aes: frozenset[str] | None = None  # None: any Calling AE Title
    promiscuous: bool = False  # accept any abstract syntax (unknown storage SOP classes)
    transfer_syntax_preference: tuple[str, ...] = NATIVE_TRANSFER_SYNTAXES
    prefer_encapsulated: bool = False
    max_pdu_bytes: int = 1_048_576  # PS3.8 D.1 Maximum Length we receive; 0 = unlimited
    implementation_class_uid: str = IMPLEMENTATION_CLASS_UID
    implementation_version_name: str = IMPLEMENTATION_VERSION_NAME
    extra_abstract_syntaxes: frozenset[str] = frozenset()  # e.g. Q/R models, later issues
    scp_role_sop_classes: frozenset[str] = frozenset()
    reject_if_no_contexts: bool = True
    relational: bool = False  # grant relational Q/R when the requestor asks (PS3.4 C.5.1)

    def accepts_abstract_syntax(self, uid: str) -> bool:
        return (
            self.promiscuous
            or uid == VERIFICATION
            or uid in STORAGE_SOP_CLASSES
            or uid in self.extra_abstract_syntaxes
        )


def reject_busy(reason: int = PresentationRejectReason.TEMPORARY_CONGESTION) -> AssociateRJ:
    """Transient rejection by the presentation provider (PS3.8 Table 9-21, source 3):
    reason 1 temporary congestion, 2 local limit exceeded."""
    return AssociateRJ(
        result=RejectResult.TRANSIENT,
        source=RejectSource.SERVICE_PROVIDER_PRESENTATION,
        reason=PresentationRejectReason(reason),  # ValueError for anything but 1 or 2
    )


def _permanent(source: int, reason: int) -> AssociateRJ:
    return AssociateRJ(result=RejectResult.PERMANENT, source=source, reason=reason)


def choose_transfer_syntax(policy: NegotiationPolicy, proposed: tuple[str, ...]) -> str | None:
    """The transfer syntax we accept from ``proposed``, or None (PS3.8 §9.3.3.2 result 4)."""
    as_received = next((ts for ts in proposed if ts in _AS_RECEIVED), None)
    if policy.prefer_encapsulated and as_received is not None:
        first_native = next(
            (i for i, ts in enumerate(proposed) if ts in policy.transfer_syntax_preference),
            len(proposed),
        )
        if proposed.index(as_received) < first_native:
            return as_received
    for ts in policy.transfer_syntax_preference:
        if ts in proposed:
            return ts
    return as_received


def _permitted(uid: str, operations: frozenset[str] | None, scp_proposed: set[str]) -> bool:
    """May this peer have a context for ``uid``? (``operations`` None: no restriction)"""
    if operations is None:
        return True
    op = operation_of(uid)
    if op in operations:
        return True
    # C-GET sub-operations travel on storage contexts where the requestor is the SCP.
    return op is Operation.STORE and Operation.GET in operations and uid in scp_proposed


def _answer_context(
    policy: NegotiationPolicy, pc: PresentationContextRQ, seen: set[int],
    permitted: bool = True,
) -> PresentationContextAC:
    filler = pc.transfer_syntaxes[0] if pc.transfer_syntaxes else IMPLICIT_VR_LITTLE_ENDIAN
    if pc.context_id in seen or pc.context_id % 2 == 0:
        # PS3.8 §9.3.2.2: ids are distinct odd integers; a broken one cannot be accepted.
        return PresentationContextAC(pc.context_id, PresentationResult.NO_REASON, filler)
    seen.add(pc.context_id)
    if not policy.accepts_abstract_syntax(pc.abstract_syntax):
        return PresentationContextAC(
            pc.context_id, PresentationResult.ABSTRACT_SYNTAX_NOT_SUPPORTED, filler
        )
    if not permitted:
        return PresentationContextAC(pc.context_id, PresentationResult.USER_REJECTION, filler)
    chosen = choose_transfer_syntax(policy, pc.transfer_syntaxes)
    if chosen is None:
        return PresentationContextAC(
            pc.context_id, PresentationResult.TRANSFER_SYNTAXES_NOT_SUPPORTED, filler
        )
    return PresentationContextAC(pc.context_id, PresentationResult.ACCEPTANCE, chosen)


def _user_information(
    policy: NegotiationPolicy, rq: AssociateRQ, accepted_abstract: set[str],
    operations: frozenset[str] | None = None,
) -> UserInformation:
    items: list[UserSubItem] = [
        MaximumLength(policy.max_pdu_bytes),
        ImplementationClassUID(policy.implementation_class_uid),
        ImplementationVersionName(policy.implementation_version_name),
    ]
    if rq.user_information.of_type(AsynchronousOperationsWindow):
        items.append(AsynchronousOperationsWindow(1, 1))
    answered: set[str] = set()
    extended: set[str] = set()
    for item in rq.user_information.items:
        if isinstance(item, SOPClassExtendedNegotiation):
            uid = item.sop_class_uid
            if uid in accepted_abstract and uid in QR_SOP_CLASSES and uid not in extended:
                extended.add(uid)
                items.append(SOPClassExtendedNegotiation(
                    uid, extended_negotiation_reply(item.info, policy.relational)))
            continue
        if not isinstance(item, RoleSelection):
            continue
        uid = item.sop_class_uid
        if uid not in accepted_abstract or uid in answered:
            continue  # PS3.7 D.3.3.4: at most one reply per SOP class
        answered.add(uid)
        items.append(
            RoleSelection(
                sop_class_uid=uid,
                scu_role=item.scu_role and (operations is None
                                            or operation_of(uid) in operations),
                scp_role=item.scp_role and uid in policy.scp_role_sop_classes,
            )
        )
    return UserInformation(tuple(items))


def negotiate(
    policy: NegotiationPolicy, rq: AssociateRQ, operations: frozenset[str] | None = None
) -> AssociateAC | AssociateRJ:
    """Answer an A-ASSOCIATE-RQ (PS3.8 §9.3.2-9.3.4, PS3.7 Annex D). ``operations``: what
    the requestor may do (``Operation`` values, from appliance.access); None = anything."""
    if not rq.protocol_version & 1:
        # PS3.8 §9.3.2: bit 0 (version 1) must be set.
        return _permanent(
            RejectSource.SERVICE_PROVIDER_ACSE, AcseRejectReason.PROTOCOL_VERSION_NOT_SUPPORTED
        )
    if rq.application_context != APPLICATION_CONTEXT_NAME:
        return _permanent(
            RejectSource.SERVICE_USER, UserRejectReason.APPLICATION_CONTEXT_NOT_SUPPORTED
        )
    if policy.require_called_ae and rq.called_ae.strip() != policy.ae_title.strip():
        return _permanent(RejectSource.SERVICE_USER, UserRejectReason.CALLED_AE_NOT_RECOGNIZED)
    if (
        policy.allowed_calling_aes is not None
        and rq.calling_ae.strip() not in policy.allowed_calling_aes
    ):
        return _permanent(RejectSource.SERVICE_USER, UserRejectReason.CALLING_AE_NOT_RECOGNIZED)

    seen: set[int] = set()
    scp_proposed = {item.sop_class_uid for item in rq.user_information.items
                    if isinstance(item, RoleSelection) and item.scp_role}
    answers = tuple(
        _answer_context(policy, pc, seen,
                        _permitted(pc.abstract_syntax, operations, scp_proposed))
        for pc in rq.presentation_contexts)
    accepted_ids = {a.context_id for a in answers if a.result == PresentationResult.ACCEPTANCE}
    if not accepted_ids and policy.reject_if_no_contexts:
        return reject_no_contexts()
    accepted_abstract = {
        pc.abstract_syntax for pc in rq.presentation_contexts if pc.context_id in accepted_ids
    }
    return AssociateAC(
        called_ae=rq.called_ae,
        calling_ae=rq.calling_ae,
        presentation_contexts=answers,
        user_information=_user_information(policy, rq, accepted_abstract, operations),
        application_context=APPLICATION_CONTEXT_NAME,
    )


def reject_no_contexts() -> AssociateRJ:
    """Rejected-permanent, service-user, no-reason-given: no context could be accepted."""
    return _permanent(RejectSource.SERVICE_USER, UserRejectReason.NO_REASON_GIVEN)


def reject_calling_ae() -> AssociateRJ:
    """Rejected-permanent, service-user, calling-AE-title-not-recognized (PS3.8 Table 9-21):
    the answer to a peer the access rules do not admit."""
    return _permanent(RejectSource.SERVICE_USER, UserRejectReason.CALLING_AE_NOT_RECOGNIZED)


def user_rejected(ac: AssociateAC, rq: AssociateRQ) -> list[str]:
    """Abstract syntaxes of the contexts answered "user-rejection" (refused by access)."""
    abstract = _first_abstract_syntaxes(rq)
    return [abstract[pc.context_id] for pc in ac.presentation_contexts
            if pc.result == PresentationResult.USER_REJECTION and pc.context_id in abstract]


def extended_negotiation(ac: AssociateAC) -> dict[str, bytes]:
    """SOP Class UID -> the Extended Negotiation reply we sent (PS3.7 D.3.3.5)."""
    return {
        item.sop_class_uid: item.info
        for item in ac.user_information.items
        if isinstance(item, SOPClassExtendedNegotiation)
    }


def granted_scp_roles(ac: AssociateAC) -> frozenset[str]:
    """SOP classes for which we granted the requestor the SCP role (C-GET sub-operations)."""
    return frozenset(
        item.sop_class_uid
        for item in ac.user_information.items
        if isinstance(item, RoleSelection) and item.scp_role
    )


def _first_abstract_syntaxes(rq: AssociateRQ) -> dict[int, str]:
    """Context id -> abstract syntax of its first proposal. A repeated id is answered
    no-reason (``_answer_context``): only the first one can be accepted, so a later proposal
    under the same id must not replace it (an echo-only peer would else gain storage)."""
    abstract: dict[int, str] = {}
    for pc in rq.presentation_contexts:
        abstract.setdefault(pc.context_id, pc.abstract_syntax)
    return abstract


def accepted_contexts(ac: AssociateAC, rq: AssociateRQ) -> dict[int, tuple[str, str]]:
    """Context id -> (abstract syntax, transfer syntax) for every accepted context."""
    abstract = _first_abstract_syntaxes(rq)
    return {
        pc.context_id: (abstract[pc.context_id], pc.transfer_syntax)
        for pc in ac.presentation_contexts
        if pc.result == PresentationResult.ACCEPTANCE and pc.context_id in abstract
    }


__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "NegotiationPolicy",
    "Operation",
    "operation_of",
    "reject_calling_ae",
    "reject_no_contexts",
    "user_rejected",
    "AcseRejectReason",
    "PresentationRejectReason",
    "RejectResult",
    "RejectSource",
    "accepted_contexts",
    "extended_negotiation",
    "granted_scp_roles",
    "choose_transfer_syntax",
    "negotiate",
    "reject_busy",
    "UserRejectReason",
]
