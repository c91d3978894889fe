"""Q/R negotiation: relational queries by SOP Class Extended Negotiation (PS3.7 D.3.3.5,
PS3.4 C.5.1) and the SCP role for C-GET sub-operations (PS3.7 D.3.3.4)."""

from __future__ import annotations

from appliance.negotiation.policy import (
    NegotiationPolicy,
    extended_negotiation,
    granted_scp_roles,
    negotiate,
)
from appliance.negotiation.qr_classes import (
    QR_SOP_CLASSES,
    STUDY_ROOT_FIND,
    STUDY_ROOT_GET,
    extended_negotiation_reply,
    relational_granted,
)
from appliance.ul.pdu import (
    AssociateAC,
    AssociateRQ,
    PresentationContextRQ,
    RoleSelection,
    SOPClassExtendedNegotiation,
    UserInformation,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
IMPLICIT = "1.2.840.10008.1.2"


def _rq(*items: object) -> AssociateRQ:
    contexts = (PresentationContextRQ(1, STUDY_ROOT_FIND, (IMPLICIT,)),
                PresentationContextRQ(3, STUDY_ROOT_GET, (IMPLICIT,)),
                PresentationContextRQ(5, CT, (IMPLICIT,)))
    return AssociateRQ(called_ae="PACS", calling_ae="VIEWER", presentation_contexts=contexts,
                       user_information=UserInformation(tuple(items)))  # type: ignore[arg-type]


def _policy(relational: bool) -> NegotiationPolicy:
    return NegotiationPolicy(ae_title="PACS", extra_abstract_syntaxes=QR_SOP_CLASSES,
                             scp_role_sop_classes=frozenset({CT, MR}), relational=relational)


def test_reply_grants_only_relational_and_keeps_the_length() -> None:
    assert extended_negotiation_reply(b"\x01\x01\x01", True) == b"\x01\x00\x00"
    assert extended_negotiation_reply(b"\x01", False) == b"\x00"
    assert extended_negotiation_reply(b"\x00\x01", True) == b"\x00\x00"
    assert extended_negotiation_reply(b"", True) == b""
    assert relational_granted(b"\x01") and not relational_granted(b"\x00")


def test_relational_granted_when_configured() -> None:
    rq = _rq(SOPClassExtendedNegotiation(STUDY_ROOT_FIND, b"\x01\x01"),
             SOPClassExtendedNegotiation(CT, b"\x01"))  # storage: not answered
    ac = negotiate(_policy(True), rq)
    assert isinstance(ac, AssociateAC)
    assert extended_negotiation(ac) == {STUDY_ROOT_FIND: b"\x01\x00"}
    ac2 = negotiate(_policy(False), rq)
    assert isinstance(ac2, AssociateAC)
    assert extended_negotiation(ac2) == {STUDY_ROOT_FIND: b"\x00\x00"}


def test_not_proposed_means_not_answered() -> None:
    ac = negotiate(_policy(True), _rq())
    assert isinstance(ac, AssociateAC)
    assert extended_negotiation(ac) == {}


def test_scp_role_granted_for_storage_classes_of_accepted_contexts() -> None:
    rq = _rq(RoleSelection(CT, scu_role=False, scp_role=True),
             RoleSelection(MR, scu_role=False, scp_role=True))  # MR: no context proposed
    ac = negotiate(_policy(True), rq)
    assert isinstance(ac, AssociateAC)
    assert granted_scp_roles(ac) == frozenset({CT})
