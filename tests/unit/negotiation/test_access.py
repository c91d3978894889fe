"""Per-peer access control (appliance/access.py) and its effect on negotiation (policy.py)."""

from __future__ import annotations

import tomllib

import pytest

from appliance import config
from appliance.access import (
    ALL_OPERATIONS,
    AccessConfig,
    DefaultPolicy,
    Operation,
    Peer,
    Refusal,
    from_toml,
    subject_from_peercert,
)
from appliance.errors import ConfigError
from appliance.negotiation.policy import (
    NegotiationPolicy,
    negotiate,
    operation_of,
    reject_calling_ae,
    user_rejected,
)
from appliance.negotiation.qr_classes import (
    MODALITY_PERFORMED_PROCEDURE_STEP,
    MODALITY_WORKLIST_FIND,
    PATIENT_ROOT_GET,
    QR_SOP_CLASSES,
    STORAGE_COMMITMENT_PUSH_MODEL,
    STUDY_ROOT_FIND,
    STUDY_ROOT_MOVE,
    WORKFLOW_SOP_CLASSES,
)
from appliance.ul.pdu import (
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    PresentationContextRQ,
    PresentationResult,
    RoleSelection,
    UserInformation,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT = "1.2.840.10008.1.2"
POLICY = NegotiationPolicy(ae_title="PACS", extra_abstract_syntaxes=QR_SOP_CLASSES
                           | WORKFLOW_SOP_CLASSES)


def rules(text: str) -> AccessConfig:
    return from_toml(tomllib.loads(text)["access"])


RULES = rules("""
[access]
default = "closed"
[access.peer.CT1]
hosts = ["10.1.2.0/24"]
operations = ["echo", "store"]
[access.peer.VIEWER]
ae_title = "VIEWER"
operations = ["echo", "find", "move"]
move_destinations = ["VIEWER", "ARCHIVE2"]
[access.peer.ROUTER]
operations = ["move"]
move_destinations = ["*"]
[access.peer.SECURE]
tls_subject = "CN=ct2, O=Hospital"
operations = ["store"]
[access.peer.lan-echo]
ae_title = "*"
hosts = ["192.168.0.0/16", "2001:db8::/32"]
operations = ["echo"]
""")


# ---- rule evaluation --------------------------------------------------------------------


def test_rule_match_gives_its_operations() -> None:
    d = RULES.decide(Peer("CT1", "10.1.2.77"))
    assert d.allowed and d.rule == "CT1"
    assert d.operations == {Operation.ECHO, Operation.STORE}


def test_known_ae_from_outside_its_hosts_is_refused_even_if_a_wildcard_would_match() -> None:
    assert RULES.decide(Peer("CT1", "10.1.3.1")).refusal is Refusal.PEER_MISMATCH
    # a later wildcard rule that does match the peer's address still applies to it
    d = RULES.decide(Peer("CT1", "192.168.4.4"))
    assert d.rule == "lan-echo" and d.operations == {Operation.ECHO}


def test_unknown_ae_under_closed_default_is_refused() -> None:
    d = RULES.decide(Peer("INTRUDER", "10.9.9.9"))
    assert not d.allowed and d.refusal is Refusal.UNKNOWN_PEER and d.rule is None


def test_open_default_admits_unknown_with_everything_but_not_a_spoofed_title() -> None:
    open_rules = AccessConfig(DefaultPolicy.OPEN, RULES.peers)
    d = open_rules.decide(Peer("ANYONE", "10.9.9.9"))
    assert d.allowed and d.operations == ALL_OPERATIONS and d.move_destinations is None
    assert open_rules.decide(Peer("CT1", "172.16.0.1")).refusal is Refusal.PEER_MISMATCH


def test_default_config_is_open() -> None:
    d = config.Config().access.decide(Peer("X", "127.0.0.1"))
    assert d.allowed and d.operations == ALL_OPERATIONS


def test_wildcard_rule_by_address_ipv6_and_mapped_ipv4() -> None:
    assert RULES.decide(Peer("ANY", "2001:db8::5")).rule == "lan-echo"
    assert RULES.decide(Peer("ANY", "::ffff:192.168.1.1")).rule == "lan-echo"
    assert not RULES.decide(Peer("ANY", "127.0.0.1")).allowed
    assert not RULES.decide(Peer("ANY", "")).allowed  # no address: no host rule matches


def test_move_destinations_default_self_listed_or_any() -> None:
    viewer = RULES.decide(Peer("VIEWER", "1.2.3.4"))
    assert viewer.move_destinations == frozenset({"VIEWER", "ARCHIVE2"})
    assert RULES.decide(Peer("ROUTER", "1.2.3.4")).move_destinations is None
    assert RULES.decide(Peer("CT1", "10.1.2.3")).move_destinations == frozenset({"CT1"})


def test_tls_subject_exact_dn_match() -> None:
    assert RULES.decide(Peer("SECURE", "1.1.1.1", "CN=ct2,O=Hospital")).rule == "SECURE"
    assert RULES.decide(Peer("SECURE", "1.1.1.1", "cn=ct2,o=Hospital")).rule == "SECURE"
    for subject in (None, "CN=ct2", "CN=ct2,O=Other", "CN=ct2,O=Hospital,C=DE",
                    "CN=CT2,O=Hospital"):  # values compare exactly
        assert RULES.decide(Peer("SECURE", "1.1.1.1", subject)).refusal is Refusal.PEER_MISMATCH


def test_subject_from_peercert_is_rfc4514_order_with_escapes() -> None:
    cert = {"subject": ((("countryName", "DE"),), (("organizationName", "Hosp, Inc"),),
                        (("commonName", "ct1"), ("userId", "u+1")))}
    assert subject_from_peercert(cert) == "CN=ct1+UID=u\\+1,O=Hosp\\, Inc,C=DE"
    assert subject_from_peercert({}) is None  # getpeercert() of an unverified peer
    assert subject_from_peercert(None) is None
    escaped = rules('[access]\n[access.peer.X]\ntls_subject = "CN=ct1+UID=u\\\\+1,O=Hosp\\\\, '
                    'Inc,C=DE"\noperations = ["echo"]')
    assert escaped.decide(Peer("X", "1.1.1.1", subject_from_peercert(cert))).allowed


# ---- loading and validation -------------------------------------------------------------


@pytest.mark.parametrize(("body", "needle"), [
    ('default = "maybe"', "[access] default"),
    ('[access.peer.A]\noperations = ["echo", "delete"]', "[access.peer.A] operations: unknown "
                                                         "operation 'delete'"),
    ('[access.peer.A]\noperations = ["echo"]\nhosts = ["10.1.2.0/33"]', "[access.peer.A] hosts"),
    ('[access.peer.A]\noperations = ["echo"]\nhosts = ["10.1.2.1/24"]', "[access.peer.A] hosts"),
    ('[access.peer.A]\noperations = ["echo"]\nhosts = ["ct.example"]', "[access.peer.A] hosts"),
    ('[access.peer.A]\nhosts = ["10.0.0.1"]', "[access.peer.A] operations: required"),
    ('[access.peer.A]\noperations = "echo"', "[access.peer.A] operations: expected a list"),
    ('[access.peer.A]\noperations = ["echo"]\ncolour = "red"', "unknown setting 'colour'"),
    ('[access.peer.A]\noperations = ["echo"]\ntls_subject = "ct1"', "[access.peer.A] tls_subject"),
    ('[access.peer.A]\nae_title = "MUCH_TOO_LONG_AE_TITLE"\noperations = ["echo"]',
     "[access.peer.A] ae_title"),
    ('[access.peer.A]\noperations = ["move"]\nmove_destinations = [""]',
     "[access.peer.A] move_destinations"),
    ('policy = "open"', "unknown setting 'policy'"),
])
def test_invalid_access_config_names_the_field(body: str, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config.from_mapping(tomllib.loads("[access]\n" + body))
    assert needle in str(exc.value)


def test_config_to_toml_round_trips_access() -> None:
    cfg = config.Config(access=RULES)
    assert config.from_mapping(tomllib.loads(config.to_toml(cfg))) == cfg


def test_access_is_reloadable() -> None:
    from appliance import reload

    old = config.Config()
    new = config.Config(access=RULES)
    merged, restart_only = reload.merge(old, new)
    assert merged.access == RULES and "access" in reload.RELOADABLE
    assert not [k for k in restart_only if k.startswith("access")]


# ---- negotiation under a rule -----------------------------------------------------------


def rq(*contexts: tuple[int, str], roles: tuple[RoleSelection, ...] = ()) -> AssociateRQ:
    return AssociateRQ(
        called_ae="PACS", calling_ae="CT1",
        presentation_contexts=tuple(PresentationContextRQ(i, uid, (IMPLICIT,))
                                    for i, uid in contexts),
        user_information=UserInformation(roles))


def results(result: AssociateAC | AssociateRJ) -> dict[int, int]:
    assert isinstance(result, AssociateAC), result
    return {pc.context_id: pc.result for pc in result.presentation_contexts}


def test_operation_of_maps_every_served_class() -> None:
    assert operation_of(VERIFICATION) is Operation.ECHO
    assert operation_of(CT) is Operation.STORE
    assert operation_of("1.2.3.4.5.6") is Operation.STORE  # promiscuous storage
    assert operation_of(STUDY_ROOT_FIND) is Operation.FIND
    assert operation_of(STUDY_ROOT_MOVE) is Operation.MOVE
    assert operation_of(PATIENT_ROOT_GET) is Operation.GET
    assert operation_of(MODALITY_WORKLIST_FIND) is Operation.WORKLIST
    assert operation_of(MODALITY_PERFORMED_PROCEDURE_STEP) is Operation.MPPS
    assert operation_of(STORAGE_COMMITMENT_PUSH_MODEL) is Operation.COMMITMENT


def test_disallowed_operations_get_user_rejection() -> None:
    req = rq((1, VERIFICATION), (3, CT), (5, STUDY_ROOT_FIND), (7, MODALITY_WORKLIST_FIND))
    ac = negotiate(POLICY, req, frozenset({Operation.ECHO, Operation.FIND}))
    assert results(ac) == {1: PresentationResult.ACCEPTANCE,
                           3: PresentationResult.USER_REJECTION,
                           5: PresentationResult.ACCEPTANCE,
                           7: PresentationResult.USER_REJECTION}
    assert isinstance(ac, AssociateAC)
    assert user_rejected(ac, req) == [CT, MODALITY_WORKLIST_FIND]
    # unrestricted: everything accepted, nothing user-rejected
    free = negotiate(POLICY, req)
    assert set(results(free).values()) == {PresentationResult.ACCEPTANCE}


def test_all_contexts_refused_is_a_rejection() -> None:
    result = negotiate(POLICY, rq((1, CT)), frozenset({Operation.ECHO}))
    assert isinstance(result, AssociateRJ) and (result.source, result.reason) == (1, 1)


def test_get_only_peer_gets_storage_contexts_as_scp_only() -> None:
    roles = (RoleSelection(CT, scu_role=True, scp_role=True),)
    ops = frozenset({Operation.GET})
    ac = negotiate(POLICY, rq((1, PATIENT_ROOT_GET), (3, CT), roles=roles), ops)
    assert results(ac) == {1: PresentationResult.ACCEPTANCE, 3: PresentationResult.ACCEPTANCE}
    assert isinstance(ac, AssociateAC)
    reply = [i for i in ac.user_information.items if isinstance(i, RoleSelection)]
    assert [(r.scu_role, r.scp_role) for r in reply] == [(False, False)]  # policy grants no
    # SCP role here (scp_role_sop_classes empty); with it, SCP only, never SCU:
    get_policy = NegotiationPolicy(ae_title="PACS", extra_abstract_syntaxes=QR_SOP_CLASSES,
                                   scp_role_sop_classes=frozenset({CT}))
    ac2 = negotiate(get_policy, rq((1, PATIENT_ROOT_GET), (3, CT), roles=roles), ops)
    assert isinstance(ac2, AssociateAC)
    reply = [i for i in ac2.user_information.items if isinstance(i, RoleSelection)]
    assert [(r.scu_role, r.scp_role) for r in reply] == [(False, True)]
    # no SCP role proposed: a plain storage context, which a get-only peer may not have
    assert results(negotiate(POLICY, rq((1, PATIENT_ROOT_GET), (3, CT)), ops))[3] == 1
    # with store allowed too the SCU role is granted as proposed
    both = negotiate(get_policy, rq((1, PATIENT_ROOT_GET), (3, CT), roles=roles),
                     ops | {Operation.STORE})
    assert isinstance(both, AssociateAC)
    reply = [i for i in both.user_information.items if isinstance(i, RoleSelection)]
    assert [(r.scu_role, r.scp_role) for r in reply] == [(True, True)]


def test_reject_calling_ae_is_permanent_service_user_reason_3() -> None:
    rj = reject_calling_ae()
    assert (rj.result, rj.source, rj.reason) == (1, 1, 3)  # PS3.8 Table 9-21
