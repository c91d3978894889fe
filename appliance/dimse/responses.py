"""Generic DIMSE responses built from a request's identity alone (PS3.7 §9.3, §10.3).

Used where the full service is absent: refusing an operation we don't serve (0x0211), and by
the acceptor when a worker dies with operations in flight (0x0110): a response needs only the
request's Command Field, Message ID and affected SOP class/instance.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.dimse.command import (
    RESPONSE_BIT,
    CommandDataSetType,
    CommandElements,
    Tag,
    encode_command_set,
)
from appliance.dimse.command import error_comment as sendable_comment
from appliance.dimse.messages import GenericCommand


@dataclass(frozen=True, slots=True)
class RequestIdentity:
    """What a response must echo from its request."""

    command_field: int
    message_id: int
    affected_sop_class_uid: str | None
    affected_sop_instance_uid: str | None
    has_data_set: bool

    @classmethod
    def from_elements(cls, elements: CommandElements) -> RequestIdentity | None:
        """None when the command has no usable Command Field / Message ID."""
        cmd = GenericCommand(elements)
        msg_id = cmd.message_id
        if cmd.command_field < 0 or msg_id is None:
            return None
        sop_class = elements.get(Tag.AFFECTED_SOP_CLASS_UID) or elements.get(
            Tag.REQUESTED_SOP_CLASS_UID
        )
        sop_inst = elements.get(Tag.AFFECTED_SOP_INSTANCE_UID) or elements.get(
            Tag.REQUESTED_SOP_INSTANCE_UID
        )
        return cls(
            command_field=cmd.command_field,
            message_id=msg_id,
            affected_sop_class_uid=sop_class if isinstance(sop_class, str) else None,
            affected_sop_instance_uid=sop_inst if isinstance(sop_inst, str) else None,
            has_data_set=cmd.has_data_set,
        )


def status_response(rq: RequestIdentity, status: int, error_comment: str | None = None) -> bytes:
    """The command set of the response to ``rq`` carrying ``status`` and no data set."""
    elements: CommandElements = {
        Tag.COMMAND_FIELD: rq.command_field | RESPONSE_BIT,
        Tag.MESSAGE_ID_BEING_RESPONDED_TO: rq.message_id,
        Tag.COMMAND_DATA_SET_TYPE: CommandDataSetType.NO_DATA_SET,
        Tag.STATUS: status,
    }
    if rq.affected_sop_class_uid:
        elements[Tag.AFFECTED_SOP_CLASS_UID] = rq.affected_sop_class_uid
    if rq.affected_sop_instance_uid:
        elements[Tag.AFFECTED_SOP_INSTANCE_UID] = rq.affected_sop_instance_uid
    if error_comment:
        elements[Tag.ERROR_COMMENT] = sendable_comment(error_comment)  # LO, ASCII
    return encode_command_set(elements)
