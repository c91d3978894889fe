"""Typed DIMSE messages (PS3.7 §9.3, §10.3) over the command-set codec of ``command``.

Every dataclass field is named after a command element: ``name.upper()`` is the ``Tag``
member, so to/from elements is generic. Adding a message = a dataclass + a registry entry.
Responses that may carry a data set (C-FIND/C-GET/C-MOVE-RSP) take ``data_set`` in
``to_elements``; requests know from their class whether one follows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar

from appliance.dimse.command import (
    VERIFICATION_SOP_CLASS,
    CommandDataSetType,
    CommandElements,
    CommandField,
    CommandSetError,
    CommandValue,
    Priority,
    Tag,
    decode_command_set,
    encode_command_set,
    error_comment,
    has_data_set,
)
from appliance.dimse.status import Status


def _message_id(elements: Mapping[int, CommandValue]) -> int | None:
    value = elements.get(Tag.MESSAGE_ID)
    return value if isinstance(value, int) else None


def _to_elements(msg: Any, command_field: int, data_set: bool) -> CommandElements:
    out: CommandElements = {
        Tag.COMMAND_FIELD: command_field,
        Tag.COMMAND_DATA_SET_TYPE: (
            CommandDataSetType.DATA_SET_PRESENT if data_set else CommandDataSetType.NO_DATA_SET
        ),
    }
    for f in dataclasses.fields(msg):
        if f.name == "data_set":
            continue
        value = getattr(msg, f.name)
        if value is not None:
            out[Tag[f.name.upper()]] = int(value) if isinstance(value, IntEnum) else value
    comment = out.get(Tag.ERROR_COMMENT)
    if isinstance(comment, str):  # ours to send: LO, Default Character Repertoire
        out[Tag.ERROR_COMMENT] = error_comment(comment)
    return out


def _from_elements(cls: type[Any], elements: Mapping[int, CommandValue]) -> Any:
    kwargs: dict[str, Any] = {}
    for name, tag, required in _fields_of(cls):
        if tag in elements:
            kwargs[name] = elements[tag]
        elif required:
            raise CommandSetError(
                f"{cls.__name__}: required element {tag.name} ({tag:#010x}) missing",
                _message_id(elements),
            )
    return cls(**kwargs)


_FIELDS: dict[type[Any], tuple[tuple[str, Tag, bool], ...]] = {}


def _fields_of(cls: type[Any]) -> tuple[tuple[str, Tag, bool], ...]:
    """(field name, its tag, required) per command field of ``cls``, worked out once: one
    message is decoded per DIMSE operation, and the Tag[...] lookups by name were half of it."""
    got = _FIELDS.get(cls)
    if got is None:
        got = _FIELDS[cls] = tuple(
            (f.name, Tag[f.name.upper()], f.default is dataclasses.MISSING)
            for f in dataclasses.fields(cls)
            if f.name != "data_set")  # set from (0000,0800) by the caller
    return got


@dataclass(frozen=True, slots=True)
class CEchoRQ:
    """C-ECHO-RQ (PS3.7 §9.3.5.1, Table 9.3-12)."""

    COMMAND_FIELD: ClassVar[int] = CommandField.C_ECHO_RQ
    HAS_DATA_SET: ClassVar[bool] = False

    message_id: int
    affected_sop_class_uid: str = VERIFICATION_SOP_CLASS

    def to_elements(self) -> CommandElements:
        return _to_elements(self, self.COMMAND_FIELD, self.HAS_DATA_SET)

    @classmethod
    def from_elements(cls, elements: Mapping[int, CommandValue]) -> CEchoRQ:
        result: CEchoRQ = _from_elements(cls, elements)
        return result


@dataclass(frozen=True, slots=True)
class CEchoRSP:
    """C-ECHO-RSP (PS3.7 §9.3.5.2, Table 9.3-13)."""

    COMMAND_FIELD: ClassVar[int] = CommandField.C_ECHO_RSP
    HAS_DATA_SET: ClassVar[bool] = False

    message_id_being_responded_to: int
    status: int = Status.SUCCESS
    affected_sop_class_uid: str | None = VERIFICATION_SOP_CLASS
    error_comment: str | None = None

    def to_elements(self) -> CommandElements:
        return _to_elements(self, self.COMMAND_FIELD, self.HAS_DATA_SET)

    @classmethod
    def from_elements(cls, elements: Mapping[int, CommandValue]) -> CEchoRSP:
        result: CEchoRSP = _from_elements(cls, elements)
        return result


@dataclass(frozen=True, slots=True)
class CStoreRQ:
    """C-STORE-RQ (PS3.7 §9.3.1.1, Table 9.3-1); a data set always follows."""

    COMMAND_FIELD: ClassVar[int] = CommandField.C_STORE_RQ
    HAS_DATA_SET: ClassVar[bool] = True

    message_id: int
    affected_sop_class_uid: str
    affected_sop_instance_uid: str
    priority: int = Priority.MEDIUM
    move_originator_ae_title: str | None = None
    move_originator_message_id: int | None = None

    def to_elements(self) -> CommandElements:
        return _to_elements(self, self.COMMAND_FIELD, self.HAS_DATA_SET)

    @classmethod
    def from_elements(cls, elements: Mapping[int, CommandValue]) -> CStoreRQ:
        result: CStoreRQ = _from_elements(cls, elements)
        return result


@dataclass(frozen=True, slots=True)
class CStoreRSP:
    """C-STORE-RSP (PS3.7 §9.3.1.2, Table 9.3-2)."""

    COMMAND_FIELD: ClassVar[int] = CommandField.C_STORE_RSP
    HAS_DATA_SET: ClassVar[bool] = False

    message_id_being_responded_to: int
    status: int
    affected_sop_class_uid: str | None = None
    affected_sop_instance_uid: str | None = None
    error_comment: str | None = None
    offending_element: tuple[int, ...] | None = None

    def to_elements(self) -> CommandElements:
        return _to_elements(self, self.COMMAND_FIELD, self.HAS_DATA_SET)

    @classmethod
    def from_elements(cls, elements: Mapping[int, CommandValue]) -> CStoreRSP:
        result: CStoreRSP = _from_elements(cls, elements)
        return result


# ---- Query/Retrieve (PS3.7 §9.1.2-9.1.4, §9.3.2-9.3.4) -----------------------------------


@dataclass(frozen=True, slots=True)
class _Request:
    """A request whose data set (the Identifier) always follows."""

    COMMAND_FIELD: ClassVar[int] = 0
    HAS_DATA_SET: ClassVar[bool] = True

    def to_elements(self) -> CommandElements:
        return _to_elements(self, self.COMMAND_FIELD, self.HAS_DATA_SET)


@dataclass(frozen=True, slots=True)
class CFindRQ(_Request):
    """C-FIND-RQ (Table 9.3-3)."""

    COMMAND_FIELD: ClassVar[int] = CommandField.C_FIND_RQ

    message_id: int
    affected_sop_class_uid: str
    priority: int = Priority.MEDIUM

    @classmethod
    def from_elements(cls, elements: Mapping[int, CommandValue]) -> CFindRQ:
        result: CFindRQ = _from_elements(cls, elements)
        return result


@dataclass(frozen=True, slots=True)
class CGetRQ(_Request):
    """C-GET-RQ (Table 9.3-9)."""

    COMMAND_FIELD: ClassVar[int] = CommandField.C_GET_RQ

    message_id: int
    affected_sop_class_uid: str
    priority: int = Priority.MEDIUM

    @classmethod
    def from_elements(cls, elements: Mapping[int, CommandValue]) -> CGetRQ:
        result: CGetRQ = _from_elements(cls, elements)
        return result


@dataclass(frozen=True, slots=True)
class CMoveRQ(_Request):
    """C-MOVE-RQ (Table 9.3-6)."""

    COMMAND_FIELD: ClassVar[int] = CommandField.C_MOVE_RQ

    message_id: int
    affected_sop_class_uid: str
    move_destination: str
    priority: int = Priority.MEDIUM

    @classmethod
    def from_elements(cls, elements: Mapping[int, CommandValue]) -> CMoveRQ:
        result: CMoveRQ = _from_elements(cls, elements)
        return result


@dataclass(frozen=True, slots=True)
class CCancelRQ:
    """C-CANCEL-RQ (§9.3.2.3): names the operation to cancel; no Message ID of its own."""

    COMMAND_FIELD: ClassVar[int] = CommandField.C_CANCEL_RQ
    HAS_DATA_SET: ClassVar[bool] = False

    message_id_being_responded_to: int

    def to_elements(self) -> CommandElements:
        return _to_elements(self, self.COMMAND_FIELD, self.HAS_DATA_SET)

    @classmethod
    def from_elements(cls, elements: Mapping[int, CommandValue]) -> CCancelRQ:
        result: CCancelRQ = _from_elements(cls, elements)
        return result


@dataclass(frozen=True, slots=True)
class CFindRSP:
    """C-FIND-RSP (Table 9.3-4): pending responses carry an Identifier, the final one none."""

    COMMAND_FIELD: ClassVar[int] = CommandField.C_FIND_RSP

    message_id_being_responded_to: int
    status: int
    affected_sop_class_uid: str | None = None
    error_comment: str | None = None
    offending_element: tuple[int, ...] | None = None
    data_set: bool = field(default=False, compare=False)

    def to_elements(self) -> CommandElements:
        return _to_elements(self, self.COMMAND_FIELD, self.data_set)

    @classmethod
    def from_elements(cls, elements: Mapping[int, CommandValue]) -> CFindRSP:
        result: CFindRSP = _from_elements(cls, elements)
        return dataclasses.replace(result, data_set=has_data_set(elements))


@dataclass(frozen=True, slots=True)
class _RetrieveRSP:
    """C-GET-RSP / C-MOVE-RSP (Tables 9.3-10, 9.3-7): sub-operation counts; a data set (the
    Failed SOP Instance UID List) only with a final non-Success status (PS3.4 C.4.2.1.3)."""

    COMMAND_FIELD: ClassVar[int] = 0

    message_id_being_responded_to: int
    status: int
    affected_sop_class_uid: str | None = None
    number_of_remaining_suboperations: int | None = None
    number_of_completed_suboperations: int | None = None
    number_of_failed_suboperations: int | None = None
    number_of_warning_suboperations: int | None = None
    error_comment: str | None = None
    offending_element: tuple[int, ...] | None = None
    data_set: bool = field(default=False, compare=False)

    def to_elements(self) -> CommandElements:
        return _to_elements(self, self.COMMAND_FIELD, self.data_set)


@dataclass(frozen=True, slots=True)
class CGetRSP(_RetrieveRSP):
    COMMAND_FIELD: ClassVar[int] = CommandField.C_GET_RSP

    @classmethod
    def from_elements(cls, elements: Mapping[int, CommandValue]) -> CGetRSP:
        result: CGetRSP = _from_elements(cls, elements)
        return dataclasses.replace(result, data_set=has_data_set(elements))


@dataclass(frozen=True, slots=True)
class CMoveRSP(_RetrieveRSP):
    COMMAND_FIELD: ClassVar[int] = CommandField.C_MOVE_RSP

    @classmethod
    def from_elements(cls, elements: Mapping[int, CommandValue]) -> CMoveRSP:
        result: CMoveRSP = _from_elements(cls, elements)
        return dataclasses.replace(result, data_set=has_data_set(elements))


# ---- DIMSE-N (PS3.7 §10.3): N-EVENT-REPORT, N-SET, N-ACTION, N-CREATE ------------------
# Whether a data set follows varies per use, so every one carries ``data_set``.


@dataclass(frozen=True, slots=True)
class _NMessage:
    COMMAND_FIELD: ClassVar[int] = 0

    def to_elements(self) -> CommandElements:
        return _to_elements(self, self.COMMAND_FIELD, getattr(self, "data_set", False))

    @classmethod
    def from_elements(cls, elements: Mapping[int, CommandValue]) -> Any:
        result = _from_elements(cls, elements)
        return dataclasses.replace(result, data_set=has_data_set(elements))


@dataclass(frozen=True, slots=True)
class NEventReportRQ(_NMessage):
    """N-EVENT-REPORT-RQ (Table 10.3-1)."""

    COMMAND_FIELD: ClassVar[int] = CommandField.N_EVENT_REPORT_RQ

    message_id: int
    affected_sop_class_uid: str
    affected_sop_instance_uid: str
    event_type_id: int
    data_set: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class NEventReportRSP(_NMessage):
    """N-EVENT-REPORT-RSP (Table 10.3-2)."""

    COMMAND_FIELD: ClassVar[int] = CommandField.N_EVENT_REPORT_RSP

    message_id_being_responded_to: int
    status: int
    affected_sop_class_uid: str | None = None
    affected_sop_instance_uid: str | None = None
    event_type_id: int | None = None
    error_comment: str | None = None
    data_set: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class NSetRQ(_NMessage):
    """N-SET-RQ (Table 10.3-5): the Modification List follows."""

    COMMAND_FIELD: ClassVar[int] = CommandField.N_SET_RQ

    message_id: int
    requested_sop_class_uid: str
    requested_sop_instance_uid: str
    data_set: bool = field(default=True, compare=False)


@dataclass(frozen=True, slots=True)
class NSetRSP(_NMessage):
    """N-SET-RSP (Table 10.3-6)."""

    COMMAND_FIELD: ClassVar[int] = CommandField.N_SET_RSP

    message_id_being_responded_to: int
    status: int
    affected_sop_class_uid: str | None = None
    affected_sop_instance_uid: str | None = None
    error_comment: str | None = None
    offending_element: tuple[int, ...] | None = None
    data_set: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class NActionRQ(_NMessage):
    """N-ACTION-RQ (Table 10.3-7)."""

    COMMAND_FIELD: ClassVar[int] = CommandField.N_ACTION_RQ

    message_id: int
    requested_sop_class_uid: str
    requested_sop_instance_uid: str
    action_type_id: int
    data_set: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class NActionRSP(_NMessage):
    """N-ACTION-RSP (Table 10.3-8)."""

    COMMAND_FIELD: ClassVar[int] = CommandField.N_ACTION_RSP

    message_id_being_responded_to: int
    status: int
    affected_sop_class_uid: str | None = None
    affected_sop_instance_uid: str | None = None
    action_type_id: int | None = None
    error_comment: str | None = None
    data_set: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class NCreateRQ(_NMessage):
    """N-CREATE-RQ (Table 10.3-9); the SOP Instance UID may be left to the SCP."""

    COMMAND_FIELD: ClassVar[int] = CommandField.N_CREATE_RQ

    message_id: int
    affected_sop_class_uid: str
    affected_sop_instance_uid: str | None = None
    data_set: bool = field(default=True, compare=False)


@dataclass(frozen=True, slots=True)
class NCreateRSP(_NMessage):
    """N-CREATE-RSP (Table 10.3-10)."""

    COMMAND_FIELD: ClassVar[int] = CommandField.N_CREATE_RSP

    message_id_being_responded_to: int
    status: int
    affected_sop_class_uid: str | None = None
    affected_sop_instance_uid: str | None = None
    error_comment: str | None = None
    offending_element: tuple[int, ...] | None = None
    data_set: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class GenericCommand:
    """A command we have no dataclass for; the caller answers 0x0211 (PS3.7 C.5.x) or aborts."""

    elements: CommandElements = field(default_factory=dict)

    @property
    def command_field(self) -> int:
        value = self.elements.get(Tag.COMMAND_FIELD)
        return value if isinstance(value, int) else -1

    @property
    def message_id(self) -> int | None:
        return _message_id(self.elements)

    @property
    def has_data_set(self) -> bool:
        return has_data_set(self.elements)

    def to_elements(self) -> CommandElements:
        return dict(self.elements)


TypedMessage = (CEchoRQ | CEchoRSP | CStoreRQ | CStoreRSP | CFindRQ | CFindRSP | CGetRQ
                | CGetRSP | CMoveRQ | CMoveRSP | CCancelRQ | NEventReportRQ | NEventReportRSP
                | NSetRQ | NSetRSP | NActionRQ | NActionRSP | NCreateRQ | NCreateRSP)
Message = TypedMessage | GenericCommand

MESSAGE_TYPES: dict[int, type[TypedMessage]] = {
    cls.COMMAND_FIELD: cls
    for cls in (CEchoRQ, CEchoRSP, CStoreRQ, CStoreRSP, CFindRQ, CFindRSP, CGetRQ, CGetRSP,
                CMoveRQ, CMoveRSP, CCancelRQ, NEventReportRQ, NEventReportRSP, NSetRQ, NSetRSP,
                NActionRQ, NActionRSP, NCreateRQ, NCreateRSP)
}


def message_from_elements(elements: CommandElements) -> Message:
    """Dispatch decoded elements on (0000,0100) Command Field (PS3.7 Table E.1-1).

    Unknown command fields give ``GenericCommand`` so the caller can answer 0x0211.
    Raises ``CommandSetError`` when Command Field or Command Data Set Type is missing, or a
    known message lacks a required field."""
    command_field = elements.get(Tag.COMMAND_FIELD)
    if not isinstance(command_field, int):
        raise CommandSetError("(0000,0100) Command Field missing", _message_id(elements))
    has_data_set(elements)  # validates (0000,0800) for every message, known or not
    cls = MESSAGE_TYPES.get(command_field)
    if cls is None:
        return GenericCommand(elements)
    return cls.from_elements(elements)


def decode_message(data: bytes | memoryview) -> Message:
    """``decode_command_set`` then ``message_from_elements``; raises only ``CommandSetError``."""
    return message_from_elements(decode_command_set(data))


def encode_message(msg: Message) -> bytes:
    """The command set bytes of ``msg`` (PS3.7 §6.3.1)."""
    return encode_command_set(msg.to_elements())


