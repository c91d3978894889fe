"""DIMSE command set codec (PS3.7 §6.3.1, Annex E) against hand-checked byte fixtures."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from appliance.dimse.command import (
    CommandField,
    CommandSetError,
    Priority,
    Tag,
    decode_command_set,
    encode_command_set,
    has_data_set,
)
from appliance.dimse.messages import (
    CEchoRQ,
    CEchoRSP,
    CStoreRQ,
    CStoreRSP,
    GenericCommand,
    decode_message,
    encode_message,
)
from appliance.dimse.status import Status

# C-ECHO-RQ, Message ID 1. Each line: tag (group LE, element LE), length (UL LE), value.
C_ECHO_RQ = bytes.fromhex(
    "00000000 04000000 38000000"  # (0000,0000) UL 4: group length 56
    "00000200 12000000 312e322e3834302e31303030382e312e3100"  # (0000,0002) UI "1.2.840.10008.1.1\0"
    "00000001 02000000 3000"  # (0000,0100) US 0x0030 C-ECHO-RQ
    "00001001 02000000 0100"  # (0000,0110) US Message ID 1
    "00000008 02000000 0101"  # (0000,0800) US 0x0101 no data set
)

# C-STORE-RQ, Message ID 7, CT Image Storage, instance "1.2.3.4", priority MEDIUM,
# Move Originator AE "MOVER" (odd -> space padded), Move Originator Message ID 3.
C_STORE_RQ = bytes.fromhex(
    "00000000 04000000 72000000"  # group length 114
    "00000200 1a000000 312e322e3834302e31303030382e352e312e342e312e312e3200"  # CT Image Storage
    "00000001 02000000 0100"  # C-STORE-RQ
    "00001001 02000000 0700"  # Message ID 7
    "00000007 02000000 0000"  # Priority MEDIUM
    "00000008 02000000 0100"  # data set present (0x0001)
    "00000010 08000000 312e322e332e3400"  # (0000,1000) UI "1.2.3.4\0"
    "00003010 06000000 4d4f56455220"  # (0000,1030) AE "MOVER "
    "00003110 02000000 0300"  # (0000,1031) US 3
)

# C-STORE-RSP to Message ID 7: status 0xB000 (coercion), Error Comment "odd" (-> "odd "),
# Offending Element (0010,0010).
C_STORE_RSP = bytes.fromhex(
    "00000000 04000000 70000000"  # group length 112
    "00000200 1a000000 312e322e3834302e31303030382e352e312e342e312e312e3200"
    "00000001 02000000 0180"  # C-STORE-RSP 0x8001
    "00002001 02000000 0700"  # (0000,0120) Message ID Being Responded To 7
    "00000008 02000000 0101"  # no data set
    "00000009 02000000 00b0"  # (0000,0900) Status 0xB000
    "00000109 04000000 10001000"  # (0000,0901) AT (0010,0010)
    "00000209 04000000 6f646420"  # (0000,0902) LO "odd "
    "00000010 06000000 312e322e3300"  # (0000,1000) UI "1.2.3\0"
)

CT = "1.2.840.10008.5.1.4.1.1.2"


def test_c_echo_rq_fixture() -> None:
    msg = CEchoRQ(message_id=1)
    assert encode_message(msg) == C_ECHO_RQ
    assert decode_message(C_ECHO_RQ) == msg
    assert decode_command_set(C_ECHO_RQ) == {
        0x0000: 56,
        0x0002: "1.2.840.10008.1.1",
        0x0100: 0x0030,
        0x0110: 1,
        0x0800: 0x0101,
    }


def test_c_store_rq_fixture() -> None:
    msg = CStoreRQ(
        message_id=7,
        affected_sop_class_uid=CT,
        affected_sop_instance_uid="1.2.3.4",
        priority=Priority.MEDIUM,
        move_originator_ae_title="MOVER",
        move_originator_message_id=3,
    )
    assert encode_message(msg) == C_STORE_RQ
    assert decode_message(C_STORE_RQ) == msg
    assert has_data_set(decode_command_set(C_STORE_RQ))


def test_c_store_rsp_fixture() -> None:
    msg = CStoreRSP(
        message_id_being_responded_to=7,
        status=Status.COERCION_OF_DATA_ELEMENTS,
        affected_sop_class_uid=CT,
        affected_sop_instance_uid="1.2.3",
        error_comment="odd",
        offending_element=(0x00100010,),
    )
    assert encode_message(msg) == C_STORE_RSP
    assert decode_message(C_STORE_RSP) == msg


def _pydicom_command(ds: Dataset) -> bytes:
    """An independent encoder: pydicom writing group 0000 in Implicit VR LE."""
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, True
    write_dataset(body, ds)
    return struct.pack("<HHII", 0, 0, 4, len(body.getvalue())) + body.getvalue()


def test_fixtures_agree_with_pydicom() -> None:
    ds = Dataset()
    ds.AffectedSOPClassUID = CT
    ds.CommandField = 0x0001
    ds.MessageID = 7
    ds.Priority = 0
    ds.CommandDataSetType = 0x0001
    ds.AffectedSOPInstanceUID = "1.2.3.4"
    ds.MoveOriginatorApplicationEntityTitle = "MOVER"
    ds.MoveOriginatorMessageID = 3
    assert _pydicom_command(ds) == C_STORE_RQ


def test_optional_fields_absent_when_none() -> None:
    elements = CStoreRSP(message_id_being_responded_to=2, status=0).to_elements()
    assert Tag.ERROR_COMMENT not in elements
    assert Tag.AFFECTED_SOP_INSTANCE_UID not in elements
    rq = decode_message(encode_message(CStoreRQ(5, CT, "9.8")))
    assert isinstance(rq, CStoreRQ)
    assert rq.move_originator_ae_title is None and rq.move_originator_message_id is None


@pytest.mark.parametrize(
    ("tag", "value", "raw"),
    [
        (Tag.AFFECTED_SOP_INSTANCE_UID, "1.2.3", b"1.2.3\0"),  # UI: NUL pad
        (Tag.AFFECTED_SOP_INSTANCE_UID, "1.2.34", b"1.2.34"),  # even: no pad
        (Tag.MOVE_DESTINATION, "ABC", b"ABC "),  # AE: space pad
        (Tag.ERROR_COMMENT, "x", b"x "),  # LO: space pad
        (Tag.ERROR_COMMENT, "", b""),
    ],
)
def test_odd_length_padding(tag: int, value: str, raw: bytes) -> None:
    encoded = encode_command_set({tag: value})
    # group length element (12 bytes) then our element
    assert encoded[12:] == struct.pack("<HHI", 0, tag, len(raw)) + raw
    assert struct.unpack_from("<I", encoded, 8)[0] == 8 + len(raw)
    assert decode_command_set(encoded)[tag] == value


def test_encode_sorts_and_ignores_given_group_length() -> None:
    a = encode_command_set({0x0800: 0x0101, 0x0110: 1, 0x0000: 999, 0x0100: 0x30})
    b = encode_command_set({0x0100: 0x30, 0x0110: 1, 0x0800: 0x0101})
    assert a == b
    assert decode_command_set(a)[0x0000] == len(a) - 12


def test_error_comment_truncated_to_lo_maximum() -> None:
    rsp = CStoreRSP(1, Status.CANNOT_UNDERSTAND, error_comment="e" * 100)
    decoded = decode_message(encode_message(rsp))
    assert isinstance(decoded, CStoreRSP)
    assert decoded.error_comment == "e" * 64


def test_unknown_command_gives_generic() -> None:
    raw = encode_command_set({0x0100: CommandField.N_DELETE_RQ, 0x0110: 9, 0x0800: 0x0101})
    msg = decode_message(raw)
    assert isinstance(msg, GenericCommand)
    assert msg.command_field == CommandField.N_DELETE_RQ
    assert msg.message_id == 9
    assert msg.has_data_set is False


def test_unknown_group_0000_tag_kept_as_bytes() -> None:
    raw = encode_command_set({0x0100: 0x30, 0x0110: 1, 0x0800: 0x0101, 0x7777: b"ab"})
    assert decode_command_set(raw)[0x7777] == b"ab"


def test_echo_rsp_round_trip() -> None:
    rsp = CEchoRSP(message_id_being_responded_to=4)
    assert decode_message(encode_message(rsp)) == rsp


@pytest.mark.parametrize(
    "raw",
    [
        C_ECHO_RQ[:-1],  # truncated value
        C_ECHO_RQ[:-9],  # truncated element header
        C_ECHO_RQ + struct.pack("<HHI", 8, 0x10, 0),  # element outside group 0000
        C_ECHO_RQ + struct.pack("<HHIH", 0, 0x0110, 2, 1),  # duplicate tag
        C_ECHO_RQ.replace(bytes.fromhex("00000008 02000000"), bytes.fromhex("00000008 03000000")),
        encode_command_set({0x0110: 1, 0x0800: 0x0101}),  # no Command Field
        encode_command_set({0x0100: 0x30, 0x0110: 1}),  # no Command Data Set Type
        encode_command_set({0x0100: 1, 0x0110: 1, 0x0800: 1, 0x0002: CT}),  # no instance UID
    ],
)
def test_malformed_command_sets_raise_command_set_error(raw: bytes) -> None:
    with pytest.raises(CommandSetError):
        decode_message(raw)


def test_missing_field_error_carries_message_id() -> None:
    raw = encode_command_set({0x0100: 1, 0x0110: 42, 0x0800: 1, 0x0002: CT})
    with pytest.raises(CommandSetError) as info:
        decode_message(raw)
    assert info.value.message_id == 42
    assert info.value.status == Status.PROCESSING_FAILURE


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_command_set_error(data: bytes) -> None:
    try:
        decode_message(data)
    except CommandSetError:
        pass


@given(
    st.lists(
        st.tuples(
            st.sampled_from([0x0100, 0x0110, 0x0800, 0x0002, 0x1000, 0x0902, 0x0901]),
            st.binary(max_size=24),
        ),
        max_size=8,
    ),
    st.binary(max_size=16),
)
def test_element_shaped_garbage_raises_only_command_set_error(
    elements: list[tuple[int, bytes]], tail: bytes
) -> None:
    raw = b"".join(struct.pack("<HHI", 0, t, len(v)) + v for t, v in elements) + tail
    try:
        decode_message(raw)
    except CommandSetError:
        pass


@given(
    message_id=st.integers(0, 0xFFFF),
    sop_class=st.from_regex(r"[12](\.[1-9][0-9]{0,5}){1,8}", fullmatch=True),
    priority=st.sampled_from(list(Priority)),
    originator=st.one_of(st.none(), st.from_regex(r"[A-Z0-9_]{1,16}", fullmatch=True)),
)
def test_c_store_rq_round_trip(
    message_id: int, sop_class: str, priority: Priority, originator: str | None
) -> None:
    msg = CStoreRQ(message_id, sop_class, sop_class + ".1", priority, originator, None)
    encoded = encode_message(msg)
    assert len(encoded) % 2 == 0
    assert decode_message(encoded) == msg
