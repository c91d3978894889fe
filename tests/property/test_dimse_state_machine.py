"""Hypothesis drives ``MessageAssembler`` (appliance/dimse/assembler.py) with a PDV stream and
checks every answer against a small model of PS3.8 Annex E and PS3.7 §6.3.

The stream mixes legal traffic: whole messages cut by ``fragment_message`` for a random peer
Maximum Length (PS3.8 D.1), several PDVs per P-DATA-TF (PS3.8 §9.3.5), successive messages on
different presentation contexts; hand-cut fragments of random sizes, empty ones included;
and violations: a data set PDV before its command (or with none announced), the last-fragment
bit set too early or never, a context id changing mid-message, a command set over
``max_command_bytes``, a new command before the previous data set ended. After a violation
the assembler is spent (every later PDV is refused) until the next association, ``reset``.

The model is the assembler's documented contract, written from PS3.8 E.2 rather than from the
code: IDLE / COMMAND / DATA_SET / FAILED, the command bytes buffered so far and its context.
It uses ``decode_command_set`` as the oracle for whether a finished command set decodes
(that codec has its own tests and fuzz harness).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from appliance.dimse.assembler import (
    AssemblerEvent,
    AssemblyError,
    CommandComplete,
    DataFragment,
    MessageAssembler,
)
from appliance.dimse.command import (
    CommandElements,
    CommandField,
    CommandSetError,
    Tag,
    decode_command_set,
    encode_command_set,
)
from appliance.dimse.fragment import fragment_message
from appliance.ul.pdu import PDV, PDataTF, PduType, decode_pdu

MAX_COMMAND_BYTES = 400  # small, so that an oversized command set is a few fragments away
CONTEXTS = (1, 3, 5, 255)  # presentation context ids are odd (PS3.8 §9.3.2.2)
NO_DATA_SET = 0x0101  # (0000,0800) Command Data Set Type: no data set follows (PS3.7 E.1)

_uids = st.text("0123456789.", min_size=1, max_size=64)


@st.composite
def commands(draw: st.DrawFn) -> CommandElements:
    """A command set's elements: a request or response with or without a data set, or one
    whose (0000,0800) is missing (decodes, but ``has_data_set`` refuses it)."""
    kind = draw(st.sampled_from(("echo", "store", "find", "store_rsp", "no_0800")))
    message_id = draw(st.integers(0, 0xFFFF))
    if kind == "echo":
        return {Tag.AFFECTED_SOP_CLASS_UID: "1.2.840.10008.1.1", Tag.MESSAGE_ID: message_id,
                Tag.COMMAND_FIELD: CommandField.C_ECHO_RQ, Tag.COMMAND_DATA_SET_TYPE: NO_DATA_SET}
    if kind == "store":
        return {Tag.AFFECTED_SOP_CLASS_UID: draw(_uids), Tag.MESSAGE_ID: message_id,
                Tag.COMMAND_FIELD: CommandField.C_STORE_RQ, Tag.PRIORITY: 0,
                Tag.COMMAND_DATA_SET_TYPE: draw(st.sampled_from((0x0000, 0x0001, 0xFEFE))),
                Tag.AFFECTED_SOP_INSTANCE_UID: draw(_uids)}
    if kind == "find":
        return {Tag.AFFECTED_SOP_CLASS_UID: "1.2.840.10008.5.1.4.1.2.2.1",
                Tag.MESSAGE_ID: message_id, Tag.COMMAND_FIELD: CommandField.C_FIND_RQ,
                Tag.PRIORITY: 2, Tag.COMMAND_DATA_SET_TYPE: 0x0001}
    if kind == "store_rsp":
        return {Tag.COMMAND_FIELD: CommandField.C_STORE_RSP, Tag.STATUS: 0xC000,
                Tag.MESSAGE_ID_BEING_RESPONDED_TO: message_id,
                Tag.COMMAND_DATA_SET_TYPE: NO_DATA_SET,
                Tag.ERROR_COMMENT: draw(st.text("ABCxyz-", max_size=80))}
    return {Tag.COMMAND_FIELD: CommandField.C_ECHO_RQ, Tag.MESSAGE_ID: message_id}


def _announces_data_set(elements: CommandElements) -> bool:
    return elements.get(Tag.COMMAND_DATA_SET_TYPE) != NO_DATA_SET


class Mode(Enum):
    IDLE = "idle"
    COMMAND = "command"
    DATA_SET = "data_set"
    FAILED = "failed"


Expected = list[AssemblerEvent] | type[Exception]


@dataclass
class Model:
    """What the assembler must hold after the PDVs fed so far."""

    mode: Mode = Mode.IDLE
    context_id: int = 0
    command: bytearray = field(default_factory=bytearray)

    def _fail(self) -> type[Exception]:
        self.mode, self.command = Mode.FAILED, bytearray()
        return AssemblyError

    def feed(self, pdv: PDV) -> Expected:
        """PS3.8 E.2: the answer to ``pdv``, and the model's next state."""
        if self.mode is Mode.FAILED:
            return AssemblyError  # spent: the association is being aborted
        if self.mode is not Mode.IDLE and pdv.context_id != self.context_id:
            return self._fail()  # every fragment of a message on the context of the first
        data = bytes(pdv.data)
        if not pdv.is_command:
            if self.mode is not Mode.DATA_SET:
                return self._fail()  # a data set only after a command announcing one
            if pdv.is_last:
                self.mode = Mode.IDLE
            return [DataFragment(pdv.context_id, memoryview(data), pdv.is_last)]
        if self.mode is Mode.DATA_SET:
            return self._fail()  # the previous message's data set has not ended
        if len(self.command) + len(data) > MAX_COMMAND_BYTES:
            return self._fail()
        self.context_id = pdv.context_id
        self.command += data
        if not pdv.is_last:
            self.mode = Mode.COMMAND
            return []
        command, self.command = bytes(self.command), bytearray()
        try:
            elements = decode_command_set(command)
        except CommandSetError:
            self.mode = Mode.FAILED
            return CommandSetError
        if not isinstance(elements.get(Tag.COMMAND_DATA_SET_TYPE), int):
            self.mode = Mode.FAILED
            return CommandSetError
        with_data = _announces_data_set(elements)
        self.mode = Mode.DATA_SET if with_data else Mode.IDLE
        return [CommandComplete(pdv.context_id, command, elements, with_data)]


@dataclass
class Pending:
    """A command being sent fragment by fragment."""

    context_id: int
    command: bytes
    elements: CommandElements | None
    sent: int = 0


class DimseAssemblyMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.assembler = MessageAssembler(MAX_COMMAND_BYTES)
        self.model = Model()
        self.pending: Pending | None = None

    def _feed(self, pdv: PDV) -> list[AssemblerEvent]:
        expected = self.model.feed(pdv)
        if isinstance(expected, type):
            with pytest.raises(expected):
                self.assembler.feed(pdv)
            return []
        got = self.assembler.feed(pdv)
        assert got == expected, (pdv, got, expected)
        for event in got:  # a data set fragment is the PDV's own buffer, not a copy
            if isinstance(event, DataFragment):
                assert event.data is pdv.data or event.data.obj is pdv.data
        return got

    # ---- a new association ------------------------------------------------------------

    @precondition(lambda self: self.model.mode is Mode.FAILED)
    @rule()
    def reset(self) -> None:
        self.assembler = MessageAssembler(MAX_COMMAND_BYTES)
        self.model = Model()
        self.pending = None

    # ---- legal traffic: whole messages ------------------------------------------------

    @precondition(lambda self: self.model.mode is Mode.IDLE and self.pending is None)
    @rule(
        context_id=st.sampled_from(CONTEXTS),
        elements=commands().filter(lambda e: Tag.COMMAND_DATA_SET_TYPE in e),
        data_set=st.binary(max_size=600),
        peer_max_pdu=st.one_of(st.just(0), st.integers(7, 300)),
        grouping=st.lists(st.integers(1, 4), max_size=8),
    )
    def whole_message(self, context_id: int, elements: CommandElements, data_set: bytes,
                      peer_max_pdu: int, grouping: list[int]) -> None:
        """fragment_message -> P-DATA-TF PDUs (several PDVs in some) -> decode -> assembler."""
        command = encode_command_set(elements)
        if len(command) > MAX_COMMAND_BYTES:
            return
        with_data = _announces_data_set(elements)
        parts = fragment_message(context_id, command, data_set if with_data else None,
                                 peer_max_pdu)
        items = [b"".join(bytes(p) for p in pdu) for pdu in parts]
        sizes = iter(grouping)
        events: list[AssemblerEvent] = []
        while items:
            take = next(sizes, 1)
            body, items = b"".join(items[:take]), items[take:]
            pdu = decode_pdu(PduType.P_DATA_TF, memoryview(body))
            assert isinstance(pdu, PDataTF)
            for pdv in pdu.pdvs:
                events += self._feed(pdv)
        assert self.model.mode is Mode.IDLE
        first, *fragments = events
        assert isinstance(first, CommandComplete) and first.command == command
        assert first.context_id == context_id and first.has_data_set == with_data
        assert {k: v for k, v in first.elements.items() if k} == elements
        assert all(isinstance(f, DataFragment) and f.context_id == context_id
                   for f in fragments)
        received = b"".join(bytes(f.data) for f in fragments if isinstance(f, DataFragment))
        assert received == (data_set if with_data else b"")
        assert bool(fragments) == with_data
        assert not with_data or (isinstance(fragments[-1], DataFragment)
                                 and fragments[-1].is_last)

    # ---- hand-cut fragments, with wrong last bits and contexts ---------------------------

    @precondition(lambda self: self.pending is None and self.model.mode is not Mode.FAILED)
    @rule(context_id=st.sampled_from(CONTEXTS),
          source=st.one_of(commands().map(encode_command_set), st.binary(max_size=40)))
    def start_command(self, context_id: int, source: bytes) -> None:
        """Choose the next command set to send in pieces (random bytes: an undecodable one)."""
        try:
            elements: CommandElements | None = decode_command_set(source)
        except CommandSetError:
            elements = None
        self.pending = Pending(context_id, source, elements)

    @precondition(lambda self: self.pending is not None)
    @rule(size=st.integers(0, 120), early_last=st.integers(0, 9), late_last=st.integers(0, 9),
          other_context=st.integers(0, 9))
    def command_fragment(self, size: int, early_last: int, late_last: int,
                         other_context: int) -> None:
        """The next piece of the pending command; 1 in 10 sets the last bit too early or
        omits it on the real last piece, 1 in 10 uses another context id."""
        pending = self.pending
        assert pending is not None
        chunk = pending.command[pending.sent : pending.sent + size]
        pending.sent += len(chunk)
        at_end = pending.sent == len(pending.command)
        is_last = (early_last == 0) if not at_end else (late_last != 0)
        context_id = pending.context_id
        if other_context == 0:
            context_id = CONTEXTS[(CONTEXTS.index(context_id) + 1) % len(CONTEXTS)]
        events = self._feed(PDV(context_id, True, is_last, chunk))
        if is_last or self.model.mode is Mode.FAILED:
            self.pending = None
        if events and at_end and pending.sent == len(pending.command):
            (complete,) = events
            assert isinstance(complete, CommandComplete)
            assert complete.elements == pending.elements  # the whole set, as encoded

    @rule(size=st.integers(0, 200), is_last=st.booleans(), other_context=st.integers(0, 9))
    def data_fragment(self, size: int, is_last: bool, other_context: int) -> None:
        """A data set PDV, in any state: legal only after a command announcing a data set."""
        context_id = self.model.context_id or CONTEXTS[0]
        if other_context == 0:
            context_id = CONTEXTS[(CONTEXTS.index(context_id) + 1) % len(CONTEXTS)]
        self._feed(PDV(context_id, False, is_last, bytes(range(256))[:size]))

    @precondition(lambda self: self.model.mode is not Mode.FAILED)
    @rule(extra=st.integers(1, 64))
    def oversized_command(self, extra: int) -> None:
        """A command PDV that takes the buffered command set over ``max_command_bytes``."""
        room = MAX_COMMAND_BYTES - len(self.model.command)
        context_id = self.model.context_id or CONTEXTS[0]
        self._feed(PDV(context_id, True, False, bytes(room + extra)))
        self.pending = None

    # ---- what the assembler exposes -----------------------------------------------------

    @invariant()
    def matches_model(self) -> None:
        assert self.assembler.buffered_bytes == len(self.model.command) <= MAX_COMMAND_BYTES
        assert self.assembler.idle == (self.model.mode is Mode.IDLE)


DimseAssemblyMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=30,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),  # CI: the same examples on every run
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_dimse_state_machine = DimseAssemblyMachine.TestCase
