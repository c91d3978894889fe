"""Association negotiation policy (PS3.8 §9.3.2-9.3.4, PS3.7 Annex D)."""

from __future__ import annotations

import pytest

from appliance.negotiation.policy import (
    IMPLEMENTATION_CLASS_UID,
    NegotiationPolicy,
    accepted_contexts,
    negotiate,
    reject_busy,
)
from appliance.ul.pdu import (
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    AsynchronousOperationsWindow,
    ImplementationClassUID,
    MaximumLength,
    PresentationContextRQ,
    PresentationResult,
    RoleSelection,
    UserIdentityAC,
    UserIdentityRQ,
    UserInformation,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
BIG = "1.2.840.10008.1.2.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
J2K = "1.2.840.10008.1.2.4.90"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"
POLICY = NegotiationPolicy(ae_title="PACS")


def rq(*contexts: tuple[int, str, tuple[str, ...]], **kw: object) -> AssociateRQ:
    fields: dict[str, object] = {
        "called_ae": "PACS",
        "calling_ae": "MODALITY",
        "presentation_contexts": tuple(PresentationContextRQ(*c) for c in contexts),
    }
    fields.update(kw)
    return AssociateRQ(**fields)  # type: ignore[arg-type]


def ac_of(result: AssociateAC | AssociateRJ) -> AssociateAC:
    assert isinstance(result, AssociateAC), result
    return result


def results(ac: AssociateAC) -> dict[int, tuple[int, str]]:
    return {pc.context_id: (pc.result, pc.transfer_syntax) for pc in ac.presentation_contexts}


def test_echo_and_store_accepted_with_preferred_syntax() -> None:
    req = rq((1, VERIFICATION, (IMPLICIT,)), (3, CT, (IMPLICIT, EXPLICIT, BIG)))
    ac = ac_of(negotiate(POLICY, req))
    assert results(ac) == {1: (0, IMPLICIT), 3: (0, EXPLICIT)}
    assert (ac.called_ae, ac.calling_ae) == ("PACS", "MODALITY")
    assert accepted_contexts(ac, req) == {1: (VERIFICATION, IMPLICIT), 3: (CT, EXPLICIT)}


def test_user_information_of_ac() -> None:
    ac = ac_of(negotiate(POLICY, rq((1, CT, (EXPLICIT,)))))
    ui = ac.user_information
    assert ui.maximum_length == 1_048_576
    assert ui.implementation_class_uid == IMPLEMENTATION_CLASS_UID
    assert ui.implementation_version_name and len(ui.implementation_version_name) <= 16
    assert not ui.of_type(AsynchronousOperationsWindow)
    assert not ui.of_type(RoleSelection)


def test_abstract_syntax_not_supported_and_mixed_contexts() -> None:
    req = rq((1, FIND, (IMPLICIT,)), (3, CT, (IMPLICIT,)))
    ac = ac_of(negotiate(POLICY, req))
    assert results(ac)[1][0] == PresentationResult.ABSTRACT_SYNTAX_NOT_SUPPORTED
    assert results(ac)[3] == (0, IMPLICIT)
    assert accepted_contexts(ac, req) == {3: (CT, IMPLICIT)}


def test_extra_and_promiscuous_abstract_syntaxes() -> None:
    req = rq((1, FIND, (IMPLICIT,)), (3, "1.2.3.999", (IMPLICIT,)))
    extra = NegotiationPolicy(ae_title="PACS", extra_abstract_syntaxes=frozenset({FIND}))
    assert [r for r, _ in results(ac_of(negotiate(extra, req))).values()] == [0, 3]
    promiscuous = NegotiationPolicy(ae_title="PACS", promiscuous=True)
    assert [r for r, _ in results(ac_of(negotiate(promiscuous, req))).values()] == [0, 0]


def test_encapsulated_only_proposal_takes_first_known() -> None:
    req = rq((1, CT, ("1.2.3.4.5.6", J2K, JPEG_BASELINE)))
    assert results(ac_of(negotiate(POLICY, req)))[1] == (0, J2K)


def test_native_preferred_over_encapsulated_unless_asked() -> None:
    req = rq((1, CT, (J2K, EXPLICIT)))
    assert results(ac_of(negotiate(POLICY, req)))[1] == (0, EXPLICIT)
    keep = NegotiationPolicy(ae_title="PACS", prefer_encapsulated=True)
    assert results(ac_of(negotiate(keep, req)))[1] == (0, J2K)
    # prefer_encapsulated only wins when the SCU listed the encapsulated one first
    later = rq((1, CT, (IMPLICIT, J2K)))
    assert results(ac_of(negotiate(keep, later)))[1] == (0, IMPLICIT)


def test_transfer_syntax_preference_is_ours_not_the_scus() -> None:
    only_implicit_first = NegotiationPolicy(
        ae_title="PACS", transfer_syntax_preference=(IMPLICIT, EXPLICIT)
    )
    req = rq((1, CT, (EXPLICIT, IMPLICIT)))
    assert results(ac_of(negotiate(only_implicit_first, req)))[1] == (0, IMPLICIT)


def test_no_acceptable_transfer_syntax() -> None:
    req = rq((1, CT, ("1.2.3.4",)), (3, CT, (EXPLICIT,)))
    ac = ac_of(negotiate(POLICY, req))
    assert results(ac)[1] == (PresentationResult.TRANSFER_SYNTAXES_NOT_SUPPORTED, "1.2.3.4")


def test_zero_acceptable_contexts_rejected_by_default() -> None:
    req = rq((1, FIND, (IMPLICIT,)))
    assert negotiate(POLICY, req) == AssociateRJ(result=1, source=1, reason=1)
    lenient = NegotiationPolicy(ae_title="PACS", reject_if_no_contexts=False)
    ac = ac_of(negotiate(lenient, req))
    assert accepted_contexts(ac, req) == {}


def test_duplicate_and_even_context_ids_not_accepted() -> None:
    req = rq((1, CT, (IMPLICIT,)), (1, CT, (EXPLICIT,)), (4, CT, (IMPLICIT,)))
    ac = ac_of(negotiate(POLICY, req))
    assert [pc.result for pc in ac.presentation_contexts] == [
        PresentationResult.ACCEPTANCE,
        PresentationResult.NO_REASON,
        PresentationResult.NO_REASON,
    ]


@pytest.mark.parametrize(
    ("policy", "request_kw", "expected"),
    [
        (POLICY, {"application_context": "1.2.3"}, AssociateRJ(1, 1, 2)),
        (POLICY, {"protocol_version": 2}, AssociateRJ(1, 2, 2)),
        (
            NegotiationPolicy(ae_title="PACS", require_called_ae=True),
            {"called_ae": "OTHER"},
            AssociateRJ(1, 1, 7),
        ),
        (
            NegotiationPolicy(ae_title="PACS", allowed_calling_aes=frozenset({"CT1"})),
            {"calling_ae": "MR1"},
            AssociateRJ(1, 1, 3),
        ),
    ],
)
def test_permanent_rejections(
    policy: NegotiationPolicy, request_kw: dict[str, object], expected: AssociateRJ
) -> None:
    assert negotiate(policy, rq((1, CT, (IMPLICIT,)), **request_kw)) == expected


def test_called_and_calling_ae_checks_pass() -> None:
    strict = NegotiationPolicy(
        ae_title="PACS", require_called_ae=True, allowed_calling_aes=frozenset({"MODALITY"})
    )
    ac_of(negotiate(strict, rq((1, CT, (IMPLICIT,)))))
    # Without require_called_ae any called AE is fine.
    ac_of(negotiate(POLICY, rq((1, CT, (IMPLICIT,)), called_ae="ANYTHING")))


def test_async_window_role_selection_and_user_identity() -> None:
    ui = UserInformation(
        (
            MaximumLength(16384),
            ImplementationClassUID("1.2.3"),
            AsynchronousOperationsWindow(5, 5),
            RoleSelection(CT, scu_role=True, scp_role=True),
            RoleSelection(CT, scu_role=True, scp_role=False),  # duplicate: answered once
            RoleSelection(FIND, scu_role=True, scp_role=False),  # FIND not accepted
            UserIdentityRQ(1, True, b"user"),
        )
    )
    ac = ac_of(negotiate(POLICY, rq((1, CT, (IMPLICIT,)), user_information=ui)))
    out = ac.user_information
    assert out.of_type(AsynchronousOperationsWindow) == [AsynchronousOperationsWindow(1, 1)]
    assert out.of_type(RoleSelection) == [RoleSelection(CT, scu_role=True, scp_role=False)]
    assert out.of_type(UserIdentityAC) == []
    getter = NegotiationPolicy(ae_title="PACS", scp_role_sop_classes=frozenset({CT}))
    ac2 = ac_of(negotiate(getter, rq((1, CT, (IMPLICIT,)), user_information=ui)))
    assert ac2.user_information.of_type(RoleSelection) == [RoleSelection(CT, True, True)]


def test_reject_busy() -> None:
    assert reject_busy() == AssociateRJ(result=2, source=3, reason=1)
    assert reject_busy(2) == AssociateRJ(result=2, source=3, reason=2)
    with pytest.raises(ValueError):
        reject_busy(7)
