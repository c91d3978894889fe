"""MessageAssembler: PS3.8 Annex E ordering rules and limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.dimse.assembler import (
    AssemblyError,
    CommandComplete,
    DataFragment,
    MessageAssembler,
)
from appliance.dimse.command import CommandSetError
from appliance.dimse.messages import CEchoRQ, CStoreRQ, encode_message
from appliance.ul.pdu import PDV

STORE = encode_message(CStoreRQ(1, "1.2.840.10008.5.1.4.1.1.2", "1.2.3"))
ECHO = encode_message(CEchoRQ(2))


def cmd(data: bytes, last: bool = True, ctx: int = 1) -> PDV:
    return PDV(ctx, True, last, data)


def dat(data: bytes, last: bool = True, ctx: int = 1) -> PDV:
    return PDV(ctx, False, last, memoryview(data))


def test_echo_then_store_stream() -> None:
    a = MessageAssembler()
    [ev] = a.feed(cmd(ECHO))
    assert isinstance(ev, CommandComplete)
    assert ev.command == ECHO and not ev.has_data_set and ev.elements[0x0110] == 2
    assert a.idle
    assert a.feed(cmd(STORE[:10], last=False)) == []
    assert not a.idle and a.buffered_bytes == 10
    [ev] = a.feed(cmd(STORE[10:]))
    assert isinstance(ev, CommandComplete) and ev.command == STORE and ev.has_data_set
    assert not a.idle
    payload = b"0123456789"
    [f1] = a.feed(dat(payload[:4], last=False))
    [f2] = a.feed(dat(payload[4:]))
    assert isinstance(f1, DataFragment) and isinstance(f2, DataFragment)
    assert (bytes(f1.data), f1.is_last, bytes(f2.data), f2.is_last) == (
        b"0123",
        False,
        b"456789",
        True,
    )
    assert a.idle and a.buffered_bytes == 0


def test_data_fragment_is_a_view_not_a_copy() -> None:
    a = MessageAssembler()
    a.feed(cmd(STORE))
    buf = bytearray(b"abc")
    [ev] = a.feed(PDV(1, False, True, memoryview(buf)))
    buf[0:1] = b"Z"
    assert isinstance(ev, DataFragment) and bytes(ev.data) == b"Zbc"


def test_data_without_command() -> None:
    with pytest.raises(AssemblyError, match="without a preceding command"):
        MessageAssembler().feed(dat(b"x"))


def test_data_after_command_without_data_set() -> None:
    a = MessageAssembler()
    a.feed(cmd(ECHO))
    with pytest.raises(AssemblyError):
        a.feed(dat(b"x"))


def test_data_before_command_complete() -> None:
    a = MessageAssembler()
    a.feed(cmd(STORE[:8], last=False))
    with pytest.raises(AssemblyError, match="before the command set was complete"):
        a.feed(dat(b"x"))


def test_context_change_in_command() -> None:
    a = MessageAssembler()
    a.feed(cmd(STORE[:8], last=False, ctx=1))
    with pytest.raises(AssemblyError, match="context 3"):
        a.feed(cmd(STORE[8:], ctx=3))


def test_context_change_in_data_set() -> None:
    a = MessageAssembler()
    a.feed(cmd(STORE, ctx=1))
    a.feed(dat(b"x", last=False, ctx=1))
    with pytest.raises(AssemblyError):
        a.feed(dat(b"y", ctx=5))


def test_new_command_before_data_set_finished() -> None:
    a = MessageAssembler()
    a.feed(cmd(STORE))
    a.feed(dat(b"x", last=False))
    with pytest.raises(AssemblyError, match="data set of the previous message"):
        a.feed(cmd(ECHO))


def test_command_over_limit() -> None:
    a = MessageAssembler(max_command_bytes=64)
    a.feed(cmd(b"\0" * 40, last=False))
    with pytest.raises(AssemblyError, match="larger than 64"):
        a.feed(cmd(b"\0" * 40, last=False))
    assert a.buffered_bytes == 0  # nothing kept after failing


def test_undecodable_command_raises_command_set_error() -> None:
    with pytest.raises(CommandSetError):
        MessageAssembler().feed(cmd(b"\x01\x02\x03"))


def test_failed_assembler_stays_failed() -> None:
    a = MessageAssembler()
    with pytest.raises(AssemblyError):
        a.feed(dat(b"x"))
    with pytest.raises(AssemblyError, match="already failed"):
        a.feed(cmd(ECHO))


@given(
    st.lists(
        st.tuples(st.booleans(), st.booleans(), st.sampled_from([1, 3]), st.binary(max_size=40)),
        max_size=30,
    )
)
def test_any_pdv_sequence_yields_events_or_dimse_errors_within_limit(
    seq: list[tuple[bool, bool, int, bytes]],
) -> None:
    a = MessageAssembler(max_command_bytes=100)
    for is_command, is_last, ctx, data in seq:
        try:
            a.feed(PDV(ctx, is_command, is_last, data))
        except (AssemblyError, CommandSetError):
            break
        assert a.buffered_bytes <= 100
