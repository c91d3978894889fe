"""appliance.ul.pdu against the hand-written fixtures (PS3.8 §9.3) and malformed inputs."""

from __future__ import annotations

import struct

import pytest

from appliance.errors import RemoteULError
from appliance.ul.pdu import (
    PDV,
    AbortPDU,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    AsynchronousOperationsWindow,
    ImplementationClassUID,
    ImplementationVersionName,
    MaximumLength,
    PDataTF,
    PresentationContextAC,
    PresentationContextRQ,
    ReleaseRP,
    ReleaseRQ,
    RoleSelection,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UnknownItem,
    UserIdentityAC,
    UserIdentityRQ,
    UserInformation,
    UserSubItem,
    decode_pdu,
    encode_pdata_header,
    encode_pdu,
    encode_pdv_header,
)
from tests.fixtures import pdus

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
USER_INFO = UserInformation(
    (
        MaximumLength(16382),
        ImplementationClassUID("1.2.3.999"),
        ImplementationVersionName("APPLIANCE_01"),
    )
)

EXPECTED = {
    "A_ASSOCIATE_RQ": AssociateRQ(
        called_ae="ANY-SCP",
        calling_ae="ECHOSCU",
        presentation_contexts=(PresentationContextRQ(1, VERIFICATION, (IMPLICIT_LE,)),),
        user_information=USER_INFO,
    ),
    "A_ASSOCIATE_AC": AssociateAC(
        called_ae="ANY-SCP",
        calling_ae="ECHOSCU",
        presentation_contexts=(
            PresentationContextAC(1, 0, IMPLICIT_LE),
            PresentationContextAC(3, 3, ""),
        ),
        user_information=UserInformation(
            (
                MaximumLength(32768),
                ImplementationClassUID("1.2.3.999"),
                ImplementationVersionName("APPLIANCE_01"),
            )
        ),
    ),
    "A_ASSOCIATE_RJ": AssociateRJ(result=1, source=1, reason=7),
    "P_DATA_TF": PDataTF(
        (PDV(1, True, True, bytes.fromhex("00 00 00 00 04 00 00 00 38 00 00 00")),)
    ),
    "P_DATA_TF_TWO_PDVS": PDataTF((PDV(3, False, False, b"ABCD"), PDV(3, False, True, b"EF"))),
    "A_RELEASE_RQ": ReleaseRQ(),
    "A_RELEASE_RP": ReleaseRP(),
    "A_ABORT": AbortPDU(source=2, reason=6),
}

SUB_ITEMS: dict[str, UserSubItem] = {
    "MAXIMUM_LENGTH_SUB_ITEM": MaximumLength(16384),
    "IMPLEMENTATION_CLASS_UID_SUB_ITEM": ImplementationClassUID("1.2.3.999"),
    "ASYNCHRONOUS_OPERATIONS_WINDOW_SUB_ITEM": AsynchronousOperationsWindow(5, 1),
    "ROLE_SELECTION_SUB_ITEM": RoleSelection(CT_IMAGE, scu_role=True, scp_role=False),
    "IMPLEMENTATION_VERSION_NAME_SUB_ITEM": ImplementationVersionName("APPLIANCE_01"),
    "SOP_CLASS_EXTENDED_NEGOTIATION_SUB_ITEM": SOPClassExtendedNegotiation(
        "1.2.840.10008.5.1.4.1.2.1.1", b"\x01"
    ),
    "SOP_CLASS_COMMON_EXTENDED_NEGOTIATION_SUB_ITEM": SOPClassCommonExtendedNegotiation(
        "1.2.840.10008.5.1.4.1.1.88.22",
        "1.2.840.10008.4.2",
        ("1.2.840.10008.5.1.4.1.1.88.11",),
    ),
    "USER_IDENTITY_RQ_SUB_ITEM": UserIdentityRQ(2, True, b"pacs", b"secret"),
    "USER_IDENTITY_AC_SUB_ITEM": UserIdentityAC(b"ok-token"),
    "UNKNOWN_USER_SUB_ITEM": UnknownItem(0x70, b"\x01\x02\x03"),
}


# ---- helpers that build PDUs around item fixtures (lengths computed, not hand-counted) ------


def item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BBI", pdu_type, 0, len(body)) + body


FIXED = struct.pack(">HH16s16s32s", 1, 0, b"ANY-SCP".ljust(16), b"ECHOSCU".ljust(16), bytes(32))
DEFAULT_PC = item(
    0x20, b"\x01\x00\x00\x00" + pdus.ABSTRACT_SYNTAX_SUB_ITEM + pdus.TRANSFER_SYNTAX_SUB_ITEM
)


def rq_body(*items: bytes, fixed: bytes = FIXED) -> bytes:
    return fixed + b"".join(items)


def decode(raw: bytes) -> object:
    return decode_pdu(raw[0], memoryview(raw)[6:])


def decode_body(pdu_type: int, body: bytes) -> object:
    return decode_pdu(pdu_type, memoryview(body))


def reason_of(pdu_type: int, body: bytes) -> int:
    with pytest.raises(RemoteULError) as info:
        decode_body(pdu_type, body)
    return info.value.abort_reason


# ---- fixtures: decode -> expected, encode(expected) -> bytes ----------------------------


@pytest.mark.parametrize("name", sorted(pdus.ALL_PDUS))
def test_pdu_fixture_decodes_to_expected(name: str) -> None:
    assert decode(pdus.ALL_PDUS[name]) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(pdus.ALL_PDUS))
def test_expected_encodes_to_pdu_fixture(name: str) -> None:
    assert encode_pdu(EXPECTED[name]) == pdus.ALL_PDUS[name]  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(SUB_ITEMS))
def test_user_sub_item_fixture(name: str) -> None:
    raw = pdu(
        0x01,
        rq_body(pdus.APPLICATION_CONTEXT_ITEM, DEFAULT_PC, item(0x50, getattr(pdus, name))),
    )
    decoded = decode(raw)
    assert isinstance(decoded, AssociateRQ)
    assert decoded.user_information == UserInformation((SUB_ITEMS[name],))
    assert encode_pdu(decoded) == raw


def test_presentation_context_rq_and_user_information_items() -> None:
    raw = pdu(
        0x01,
        rq_body(
            pdus.APPLICATION_CONTEXT_ITEM,
            pdus.PRESENTATION_CONTEXT_RQ_ITEM,
            pdus.USER_INFORMATION_ITEM,
        ),
    )
    decoded = decode(raw)
    assert isinstance(decoded, AssociateRQ)
    assert decoded.application_context == "1.2.840.10008.3.1.1.1"
    assert decoded.presentation_contexts == (
        PresentationContextRQ(3, CT_IMAGE, (EXPLICIT_LE, IMPLICIT_LE)),
    )
    assert decoded.user_information == UserInformation((MaximumLength(0),))
    assert decoded.user_information.maximum_length == 0
    assert encode_pdu(decoded) == raw


def test_presentation_context_ac_item() -> None:
    raw = pdu(
        0x02,
        rq_body(pdus.APPLICATION_CONTEXT_ITEM, pdus.PRESENTATION_CONTEXT_AC_ITEM, item(0x50, b"")),
    )
    decoded = decode(raw)
    assert isinstance(decoded, AssociateAC)
    assert decoded.presentation_contexts == (PresentationContextAC(3, 0, EXPLICIT_LE),)
    assert decoded.user_information == UserInformation()
    assert encode_pdu(decoded) == raw


def test_unknown_top_level_item_is_kept_and_encoded_in_item_type_order() -> None:
    # PS3.8 §9.3.1: unrecognized items are ignored and skipped (kept here for round-trip).
    raw = pdu(
        0x01,
        rq_body(
            pdus.APPLICATION_CONTEXT_ITEM, DEFAULT_PC, pdus.USER_INFORMATION_ITEM, pdus.UNKNOWN_ITEM
        ),
    )
    decoded = decode(raw)
    assert isinstance(decoded, AssociateRQ)
    assert decoded.unknown_items == (UnknownItem(0x60, b"\xab\xcd"),)
    assert encode_pdu(decoded) == raw


def test_unknown_sub_item_inside_presentation_context_is_skipped() -> None:
    pc = item(
        0x20,
        b"\x01\x00\x00\x00"
        + pdus.ABSTRACT_SYNTAX_SUB_ITEM
        + item(0x3F, b"zz")
        + pdus.TRANSFER_SYNTAX_SUB_ITEM,
    )
    decoded = decode(pdu(0x01, rq_body(pdus.APPLICATION_CONTEXT_ITEM, pc)))
    assert isinstance(decoded, AssociateRQ)
    assert decoded.presentation_contexts == (
        PresentationContextRQ(1, VERIFICATION, (EXPLICIT_LE,)),
    )
    assert decoded.user_information == UserInformation()  # missing item tolerated


def test_padding_is_stripped_from_uids_and_ae_titles() -> None:
    fixed = struct.pack(
        ">HH16s16s32s", 1, 0, b"  LEAD ".ljust(16), b"NUL\x00".ljust(16, b"\x00"), bytes(32)
    )
    pc = item(
        0x20,
        b"\x01\x00\x00\x00" + item(0x30, VERIFICATION.encode() + b"\x00") + item(0x40, b"1.2 "),
    )
    decoded = decode(pdu(0x01, rq_body(item(0x10, b"1.2.840.10008.3.1.1.1\x00"), pc, fixed=fixed)))
    assert isinstance(decoded, AssociateRQ)
    assert (decoded.called_ae, decoded.calling_ae) == ("LEAD", "NUL")
    assert decoded.application_context == "1.2.840.10008.3.1.1.1"
    assert decoded.presentation_contexts == (PresentationContextRQ(1, VERIFICATION, ("1.2",)),)


def test_protocol_version_and_application_context_are_values_for_negotiation() -> None:
    # PS3.8 §9.3.4: an unsupported version is answered with A-ASSOCIATE-RJ (source 2,
    # reason 2), so decoding keeps the value instead of aborting.
    fixed = struct.pack(">HH16s16s32s", 2, 0, b"A".ljust(16), b"B".ljust(16), bytes(32))
    decoded = decode(pdu(0x01, rq_body(item(0x10, b"1.2.3"), DEFAULT_PC, fixed=fixed)))
    assert isinstance(decoded, AssociateRQ)
    assert decoded.protocol_version == 2
    assert decoded.application_context == "1.2.3"


def test_rejected_context_without_transfer_syntax_sub_item_is_tolerated() -> None:
    pc = item(0x21, b"\x05\x00\x04\x00")
    decoded = decode(pdu(0x02, rq_body(pdus.APPLICATION_CONTEXT_ITEM, pc)))
    assert isinstance(decoded, AssociateAC)
    assert decoded.presentation_contexts == (PresentationContextAC(5, 4, ""),)


def test_message_control_header_reserved_bits_are_not_tested() -> None:
    decoded = decode(pdu(0x04, struct.pack(">IBB", 3, 7, 0xFD) + b"x"))
    assert decoded == PDataTF((PDV(7, True, False, b"x"),))


def test_pdv_data_are_views_into_the_body() -> None:
    body = bytearray(pdus.P_DATA_TF_TWO_PDVS[6:])
    decoded = decode_pdu(0x04, memoryview(body))
    assert isinstance(decoded, PDataTF)
    first = decoded.pdvs[0].data
    assert isinstance(first, memoryview)
    body[6] = ord("Z")  # the first data byte of PDV 1
    assert bytes(first) == b"ZBCD"


# ---- encoding ----------------------------------------------------------------------------


def test_pdata_and_pdv_headers_compose_into_encode_pdu() -> None:
    data = memoryview(b"0123456789")[2:7]
    single = PDataTF((PDV(5, False, True, data),))
    header = encode_pdata_header(6 + 5)
    assert header + encode_pdv_header(5, False, True, 5) + bytes(data) == encode_pdu(single)
    assert encode_pdv_header(1, True, False, 0) == b"\x00\x00\x00\x02\x01\x01"


@pytest.mark.parametrize(
    "bad",
    [
        AssociateRQ("X" * 17, "B", (PresentationContextRQ(1, VERIFICATION, (IMPLICIT_LE,)),)),
        AssociateRQ("A", "B", ()),
        AssociateRQ("A", "B", (PresentationContextRQ(1, VERIFICATION, ()),)),
        AssociateRQ(
            "A",
            "B",
            (PresentationContextRQ(1, VERIFICATION, (IMPLICIT_LE,)),),
            UserInformation((SOPClassExtendedNegotiation("1.2", b"x" * 70000),)),
        ),
        AssociateRQ(
            "A",
            "B",
            (PresentationContextRQ(1, VERIFICATION, (IMPLICIT_LE,)),),
            UserInformation((MaximumLength(2**32),)),
        ),
        PDataTF(()),
        PDataTF((PDV(256, False, False, b""),)),
        AbortPDU(source=300),
    ],
)
def test_encode_refuses_what_decode_would_refuse(bad: object) -> None:
    with pytest.raises(ValueError):
        encode_pdu(bad)  # type: ignore[arg-type]


# ---- malformed input: only RemoteULError, with the PS3.8 §9.3.8 reason --------------------


def test_unrecognized_pdu_type_is_reason_1() -> None:
    assert reason_of(0x08, b"\x00\x00\x00\x00") == 1
    assert reason_of(0x00, b"") == 1


@pytest.mark.parametrize("pdu_type", [0x03, 0x05, 0x06, 0x07])
@pytest.mark.parametrize("size", [0, 3, 5])
def test_fixed_size_pdu_with_wrong_length_is_reason_6(pdu_type: int, size: int) -> None:
    assert reason_of(pdu_type, bytes(size)) == 6


@pytest.mark.parametrize(
    "body",
    [
        b"",  # no PDV at all
        b"\x00\x00\x00",  # truncated PDV header
        b"\x00\x00\x00\x01\x01",  # item length 1 < 2
        b"\x00\x00\x00\x05\x01\x03ab",  # overruns the PDU
        b"\x00\x00\x00\x02\x01\x03\x00",  # a second, truncated PDV
    ],
)
def test_malformed_p_data_is_reason_6(body: bytes) -> None:
    assert reason_of(0x04, body) == 6


ABSTRACT = pdus.ABSTRACT_SYNTAX_SUB_ITEM
TRANSFER = pdus.TRANSFER_SYNTAX_SUB_ITEM
APP = pdus.APPLICATION_CONTEXT_ITEM


@pytest.mark.parametrize(
    ("pdu_type", "body", "reason"),
    [
        pytest.param(0x01, FIXED[:67], 6, id="shorter-than-fixed-fields"),
        pytest.param(0x01, rq_body(APP, DEFAULT_PC)[:-1], 6, id="item-overruns-pdu"),
        pytest.param(0x01, rq_body(APP, DEFAULT_PC, b"\x50\x00"), 6, id="truncated-item-header"),
        pytest.param(0x01, rq_body(DEFAULT_PC), 6, id="no-application-context"),
        pytest.param(0x01, rq_body(APP), 6, id="no-presentation-context"),
        pytest.param(0x01, rq_body(APP, item(0x20, b"\x01\x00\x00")), 6, id="truncated-context"),
        pytest.param(
            0x01,
            rq_body(APP, item(0x20, b"\x01\x00\x00\x00" + TRANSFER)),
            6,
            id="no-abstract-syntax",
        ),
        pytest.param(
            0x01,
            rq_body(APP, item(0x20, b"\x01\x00\x00\x00" + ABSTRACT)),
            6,
            id="no-transfer-syntax",
        ),
        pytest.param(
            0x01,
            rq_body(APP, item(0x20, b"\x01\x00\x00\x00" + ABSTRACT + ABSTRACT + TRANSFER)),
            5,
            id="two-abstract-syntaxes",
        ),
        pytest.param(
            0x01,
            rq_body(APP, item(0x20, b"\x01\x00\x00\x00" + ABSTRACT + TRANSFER + APP)),
            5,
            id="known-item-inside-context",
        ),
        pytest.param(0x01, rq_body(APP, APP, DEFAULT_PC), 5, id="two-application-contexts"),
        pytest.param(
            0x01, rq_body(APP, DEFAULT_PC, item(0x50, b""), item(0x50, b"")), 5, id="two-user-info"
        ),
        pytest.param(
            0x01, rq_body(APP, pdus.PRESENTATION_CONTEXT_AC_ITEM), 5, id="ac-context-in-rq"
        ),
        pytest.param(
            0x02, rq_body(APP, pdus.PRESENTATION_CONTEXT_RQ_ITEM), 5, id="rq-context-in-ac"
        ),
        pytest.param(
            0x01, rq_body(APP, DEFAULT_PC, pdus.MAXIMUM_LENGTH_SUB_ITEM), 5, id="sub-item-at-top"
        ),
        pytest.param(
            0x02, rq_body(APP, item(0x21, b"\x01\x00\x00\x00")), 6, id="accepted-without-ts"
        ),
        pytest.param(
            0x02,
            rq_body(APP, item(0x21, b"\x01\x00\x00\x00" + TRANSFER + TRANSFER)),
            5,
            id="two-ts-in-ac",
        ),
    ],
)
def test_malformed_associate(pdu_type: int, body: bytes, reason: int) -> None:
    assert reason_of(pdu_type, body) == reason


@pytest.mark.parametrize(
    "sub_item",
    [
        pytest.param(item(0x51, b"\x00\x00\x40"), id="max-length-3-bytes"),
        pytest.param(item(0x53, b"\x00\x01\x00\x01\x00"), id="async-window-5-bytes"),
        pytest.param(item(0x54, b"\x00\x03" + b"1.2" + b"\x01"), id="role-selection-short"),
        pytest.param(
            item(0x54, b"\x00\x09" + b"1.2" + b"\x01\x01"), id="role-selection-uid-overrun"
        ),
        pytest.param(item(0x56, b"\x00\x05" + b"1.2"), id="extended-uid-overrun"),
        pytest.param(item(0x56, b"\x00"), id="extended-truncated-length"),
        pytest.param(
            item(0x57, b"\x00\x03" + b"1.2" + b"\x00\x03" + b"1.4"), id="common-no-related-field"
        ),
        pytest.param(
            item(0x57, b"\x00\x03" + b"1.2" + b"\x00\x03" + b"1.4" + b"\x00\x04\x00\x05" + b"1.2"),
            id="common-related-uid-overrun",
        ),
        pytest.param(
            item(0x57, b"\x00\x03" + b"1.2" + b"\x00\x03" + b"1.4" + b"\x00\x00" + b"?"),
            id="common-stray-byte",
        ),
        pytest.param(item(0x58, b"\x01"), id="identity-rq-truncated"),
        pytest.param(item(0x58, b"\x01\x00\x00\x01u\x00\x00!"), id="identity-rq-stray-byte"),
        pytest.param(item(0x58, b"\x01\x00\x00\x09u"), id="identity-rq-primary-overrun"),
        pytest.param(item(0x59, b"\x00\x02a"), id="identity-ac-overrun"),
        pytest.param(item(0x59, b"\x00\x00a"), id="identity-ac-stray-byte"),
        pytest.param(b"\x51\x00\x00\x04\x00", id="sub-item-overruns-user-info"),
    ],
)
def test_malformed_user_sub_item_is_reason_6(sub_item: bytes) -> None:
    assert reason_of(0x01, rq_body(APP, DEFAULT_PC, item(0x50, sub_item))) == 6


# ---- cross-check against an independent implementation -----------------------------------


def test_fixtures_agree_with_pynetdicom() -> None:
    pdu_module = pytest.importorskip("pynetdicom.pdu")
    classes = {
        0x01: pdu_module.A_ASSOCIATE_RQ,
        0x02: pdu_module.A_ASSOCIATE_AC,
        0x03: pdu_module.A_ASSOCIATE_RJ,
        0x04: pdu_module.P_DATA_TF,
        0x05: pdu_module.A_RELEASE_RQ,
        0x06: pdu_module.A_RELEASE_RP,
        0x07: pdu_module.A_ABORT_RQ,
    }
    raw_sub_items = b"".join(getattr(pdus, name) for name in SUB_ITEMS if "UNKNOWN" not in name)
    every_sub_item = pdu(
        0x01, rq_body(APP, pdus.PRESENTATION_CONTEXT_RQ_ITEM, item(0x50, raw_sub_items))
    )
    for raw in [*pdus.ALL_PDUS.values(), every_sub_item]:
        theirs = classes[raw[0]]()
        theirs.decode(raw)
        if raw is not pdus.A_ASSOCIATE_AC:  # pynetdicom cannot re-encode an empty TS name
            assert theirs.encode() == raw
    ac = pdu_module.A_ASSOCIATE_AC()
    ac.decode(pdus.A_ASSOCIATE_AC)
    contexts = [(c.context_id, c.result, c.transfer_syntax) for c in ac.presentation_context]
    assert contexts == [(1, 0, IMPLICIT_LE), (3, 3, None)]
    assert ac.user_information.maximum_length == 32768
    rq = pdu_module.A_ASSOCIATE_RQ()
    rq.decode(pdus.A_ASSOCIATE_RQ)
    assert rq.called_ae_title == "ANY-SCP"
    assert rq.user_information.maximum_length == 16382
    rj = pdu_module.A_ASSOCIATE_RJ()
    rj.decode(pdus.A_ASSOCIATE_RJ)
    assert (rj.result, rj.source, rj.reason_diagnostic) == (1, 1, 7)
