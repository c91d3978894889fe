"""Reassemble DIMSE messages from PDVs (PS3.8 Annex E; PS3.7 §6.3), streaming the data set.

THEORY OF OPERATION
-------------------
One ``MessageAssembler`` per association, fed every PDV in arrival order. It is a three-state
machine::

    IDLE ──command PDV──► COMMAND ──last command PDV, (0000,0800) != 0x0101──► DATA_SET
      ▲                      │                                                    │
      └──── last command PDV, (0000,0800) == 0x0101 ─┘     last data PDV ─────────┘

Outputs are facts: ``CommandComplete`` once per message with the whole command set (bytes
and decoded elements, so the caller does not decode twice), then zero or more
``DataFragment`` events whose ``data`` is the PDV's own memoryview: the data set is never
accumulated or copied here, the caller spools it.

Invariants (each violation raises ``AssemblyError``, the caller sends A-ABORT):
- every fragment of a message (command and data set) has the context id of its first one;
- a data PDV arrives only in DATA_SET, i.e. after a complete command announcing a data set;
- a command PDV never arrives in DATA_SET (the previous message's data set is unfinished);
- the buffered command never exceeds ``max_command_bytes``: the only state held is that
  buffer plus a context id, so memory is bounded whatever the peer sends.
A complete command set that cannot be decoded raises ``CommandSetError`` (also a
``DimseError`` that leads to A-ABORT). After any error the assembler is spent: the
association is being aborted, and further ``feed`` calls raise again.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from appliance.dimse.command import CommandElements, decode_command_set, has_data_set
from appliance.dimse.status import Status
from appliance.errors import DimseError
from appliance.ul.pdu import PDV


class AssemblyError(DimseError):
    """PDVs violate PS3.8 Annex E ordering or our limits; the association must be aborted."""

    def __init__(self, message: str) -> None:
        super().__init__(message, Status.PROCESSING_FAILURE)


@dataclass(frozen=True, slots=True)
class CommandComplete:
    """A whole command set arrived on ``context_id``."""

    context_id: int
    command: bytes
    elements: CommandElements
    has_data_set: bool


@dataclass(frozen=True, slots=True)
class DataFragment:
    """One data set fragment: a view of the PDV's data, not a copy, so it is valid only as
    long as the buffer the PDV was decoded from; consume or copy it before reusing that."""

    context_id: int
    data: memoryview
    is_last: bool


AssemblerEvent = CommandComplete | DataFragment


class _State(Enum):
    IDLE = "idle"
    COMMAND = "command"
    DATA_SET = "data_set"
    FAILED = "failed"


class MessageAssembler:
    """Turns a PDV stream into ``CommandComplete`` / ``DataFragment`` events (PS3.8 E.2)."""

    def __init__(self, max_command_bytes: int = 64 * 1024) -> None:
        self.max_command_bytes = max_command_bytes
        self._state = _State.IDLE
        self._context_id = 0
        self._command = bytearray()

    @property
    def idle(self) -> bool:
        """True between messages (nothing partial held): a release is clean here."""
        return self._state is _State.IDLE

    @property
    def buffered_bytes(self) -> int:
        return len(self._command)

    def _fail(self, reason: str) -> AssemblyError:
        self._state = _State.FAILED
        self._command = bytearray()
        return AssemblyError(reason)

    def feed(self, pdv: PDV) -> list[AssemblerEvent]:
        """Consume one PDV; returns the events it completes (zero or one)."""
        state = self._state
        if state is _State.FAILED:
            raise AssemblyError("assembler already failed; the association is being aborted")
        if state is not _State.IDLE and pdv.context_id != self._context_id:
            raise self._fail(
                f"PDV on context {pdv.context_id} in the middle of a message on context "
                f"{self._context_id}"
            )
        if pdv.is_command:
            if state is _State.DATA_SET:
                raise self._fail("command PDV before the data set of the previous message ended")
            return self._feed_command(pdv)
        if state is not _State.DATA_SET:
            raise self._fail(
                "data set PDV without a preceding command announcing a data set"
                if state is _State.IDLE
                else "data set PDV before the command set was complete"
            )
        if pdv.is_last:
            self._state = _State.IDLE
        data = pdv.data if isinstance(pdv.data, memoryview) else memoryview(pdv.data)
        return [DataFragment(pdv.context_id, data, pdv.is_last)]

    def _feed_command(self, pdv: PDV) -> list[AssemblerEvent]:
        if len(self._command) + len(pdv.data) > self.max_command_bytes:
            raise self._fail(f"command set larger than {self.max_command_bytes} bytes")
        self._context_id = pdv.context_id
        self._command += pdv.data
        if not pdv.is_last:
            self._state = _State.COMMAND
            return []
        command = bytes(self._command)
        self._command = bytearray()
        try:
            elements = decode_command_set(command)
            data_set = has_data_set(elements)
        except DimseError:
            self._state = _State.FAILED
            raise
        self._state = _State.DATA_SET if data_set else _State.IDLE
        return [CommandComplete(pdv.context_id, command, elements, data_set)]


__all__ = ["AssemblerEvent", "AssemblyError", "CommandComplete", "DataFragment", "MessageAssembler"]
