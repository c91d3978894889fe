"""Q/R messages (PS3.7 §9.3.2-9.3.4): encode -> decode round trips and the data-set flag."""

from __future__ import annotations

import pytest

from appliance.dimse.command import CommandField, CommandSetError, Tag, decode_command_set
from appliance.dimse.messages import (
    CCancelRQ,
    CFindRQ,
    CFindRSP,
    CGetRQ,
    CGetRSP,
    CMoveRQ,
    CMoveRSP,
    NActionRQ,
    NActionRSP,
    NCreateRQ,
    NCreateRSP,
    NEventReportRQ,
    NEventReportRSP,
    NSetRQ,
    NSetRSP,
    decode_message,
    encode_message,
)

STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


@pytest.mark.parametrize("msg", [
    CFindRQ(message_id=7, affected_sop_class_uid=STUDY_FIND),
    CGetRQ(message_id=8, affected_sop_class_uid="1.2.840.10008.5.1.4.1.2.2.3", priority=1),
    CMoveRQ(message_id=9, affected_sop_class_uid="1.2.840.10008.5.1.4.1.2.2.2",
            move_destination="STORESCP"),
    CCancelRQ(message_id_being_responded_to=9),
    CFindRSP(message_id_being_responded_to=7, status=0xFF00,
             affected_sop_class_uid=STUDY_FIND, data_set=True),
    CFindRSP(message_id_being_responded_to=7, status=0, affected_sop_class_uid=STUDY_FIND),
    CGetRSP(message_id_being_responded_to=8, status=0xFF00, number_of_remaining_suboperations=3,
            number_of_completed_suboperations=1, number_of_failed_suboperations=0,
            number_of_warning_suboperations=0),
    CMoveRSP(message_id_being_responded_to=9, status=0xB000, number_of_completed_suboperations=2,
             number_of_failed_suboperations=1, number_of_warning_suboperations=0,
             data_set=True),
])
def test_round_trip(msg: object) -> None:
    decoded = decode_message(encode_message(msg))  # type: ignore[arg-type]
    assert decoded == msg
    assert getattr(decoded, "data_set", None) == getattr(msg, "data_set", None)


def test_requests_announce_their_identifier_and_cancel_does_not() -> None:
    find = decode_command_set(encode_message(CFindRQ(1, STUDY_FIND)))
    cancel = decode_command_set(encode_message(CCancelRQ(1)))
    assert find[Tag.COMMAND_DATA_SET_TYPE] != 0x0101
    assert cancel[Tag.COMMAND_DATA_SET_TYPE] == 0x0101
    assert cancel[Tag.COMMAND_FIELD] == CommandField.C_CANCEL_RQ
    assert Tag.MESSAGE_ID not in cancel


def test_move_without_destination_is_a_command_set_error() -> None:
    elements = CMoveRQ(3, STUDY_FIND, "X").to_elements()
    del elements[Tag.MOVE_DESTINATION]
    from appliance.dimse.command import encode_command_set
    with pytest.raises(CommandSetError) as info:
        decode_message(encode_command_set(elements))
    assert info.value.message_id == 3


@pytest.mark.parametrize("msg", [
    NCreateRQ(message_id=1, affected_sop_class_uid="1.2.840.10008.3.1.2.3.3",
              affected_sop_instance_uid="1.2.3"),
    NCreateRQ(message_id=2, affected_sop_class_uid="1.2.840.10008.3.1.2.3.3"),
    NCreateRSP(message_id_being_responded_to=1, status=0, affected_sop_instance_uid="1.2.3"),
    NSetRQ(message_id=3, requested_sop_class_uid="1.2.840.10008.3.1.2.3.3",
           requested_sop_instance_uid="1.2.3"),
    NSetRSP(message_id_being_responded_to=3, status=0xC310, error_comment="final"),
    NActionRQ(message_id=4, requested_sop_class_uid="1.2.840.10008.1.20.1",
              requested_sop_instance_uid="1.2.840.10008.1.20.1.1", action_type_id=1,
              data_set=True),
    NActionRSP(message_id_being_responded_to=4, status=0, action_type_id=1),
    NEventReportRQ(message_id=5, affected_sop_class_uid="1.2.840.10008.1.20.1",
                   affected_sop_instance_uid="1.2.840.10008.1.20.1.1", event_type_id=2,
                   data_set=True),
    NEventReportRSP(message_id_being_responded_to=5, status=0, event_type_id=2),
])
def test_n_messages_round_trip(msg: object) -> None:
    decoded = decode_message(encode_message(msg))  # type: ignore[arg-type]
    assert decoded == msg
    assert decoded.data_set == msg.data_set  # type: ignore[union-attr, attr-defined]
