"""Message fragmentation (PS3.8 Annex E, D.1) and its inverse through the assembler."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.dimse.assembler import CommandComplete, DataFragment, MessageAssembler
from appliance.dimse.fragment import PduParts, fragment_message, pdu_body_length
from appliance.dimse.messages import CStoreRQ, encode_message
from appliance.ul.pdu import PDV

COMMAND = encode_message(CStoreRQ(1, "1.2.840.10008.5.1.4.1.1.2", "1.2.3"))


def parse_body(parts: PduParts) -> list[PDV]:
    """Decode the PDV items of one P-DATA-TF variable field by hand (PS3.8 §9.3.5.1)."""
    body = b"".join(bytes(p) for p in parts)
    pdvs, pos = [], 0
    while pos < len(body):
        item_length, context_id, control = struct.unpack_from(">IBB", body, pos)
        data = body[pos + 6 : pos + 4 + item_length]
        assert len(data) == item_length - 2
        assert control & ~0x03 == 0
        pdvs.append(PDV(context_id, bool(control & 1), bool(control & 2), data))
        pos += 4 + item_length
    assert pos == len(body)
    return pdvs


def reassemble(pdus: list[PduParts]) -> tuple[bytes, bytes | None]:
    assembler = MessageAssembler()
    command: bytes | None = None
    data: list[bytes] = []
    finished = False
    for parts in pdus:
        for pdv in parse_body(parts):
            assert not finished
            for ev in assembler.feed(pdv):
                if isinstance(ev, CommandComplete):
                    command = ev.command
                    finished = not ev.has_data_set
                else:
                    assert isinstance(ev, DataFragment)
                    data.append(bytes(ev.data))
                    finished = ev.is_last
    assert finished and assembler.idle and command is not None
    return command, b"".join(data) if data else None


@pytest.mark.parametrize("max_pdu", [0, 7, 8, 16, 6 + len(COMMAND), 6 + len(COMMAND) + 1, 4096])
@pytest.mark.parametrize("size", [0, 1, 1000, 4090, 4096, 10_000])
def test_limits_respected_and_reassembly_exact(max_pdu: int, size: int) -> None:
    dataset = bytes(range(256)) * (size // 256) + bytes(size % 256)
    pdus = fragment_message(3, COMMAND, dataset, max_pdu)
    for parts in pdus:
        if max_pdu:
            assert pdu_body_length(parts) <= max_pdu
        pdvs = parse_body(parts)
        assert len(pdvs) == 1  # one PDV per PDU
        assert pdvs[0].context_id == 3
    assert reassemble(pdus) == (COMMAND, dataset)


def test_exact_boundary_fills_pdus_completely() -> None:
    # 3 data PDVs of exactly max - 6 bytes: no empty trailing PDV, last bit on the third.
    pdus = fragment_message(1, COMMAND, bytes(3 * 100), 106)
    data_pdvs = [p for parts in pdus for p in parse_body(parts) if not p.is_command]
    assert [len(p.data) for p in data_pdvs] == [100, 100, 100]
    assert [p.is_last for p in data_pdvs] == [False, False, True]
    assert all(pdu_body_length(parts) == 106 for parts in pdus[-3:])


def test_command_and_data_never_share_a_pdv_and_last_bits() -> None:
    pdus = fragment_message(5, COMMAND, b"x" * 50, 0)
    pdvs = [p for parts in pdus for p in parse_body(parts)]
    assert [(p.is_command, p.is_last) for p in pdvs] == [(True, True), (False, True)]
    assert pdvs[0].data == COMMAND and pdvs[1].data == b"x" * 50


def test_no_dataset_sends_command_only() -> None:
    pdus = fragment_message(1, COMMAND, None, 20)
    pdvs = [p for parts in pdus for p in parse_body(parts)]
    assert all(p.is_command for p in pdvs)
    assert [p.is_last for p in pdvs] == [False] * (len(pdvs) - 1) + [True]
    assert b"".join(bytes(p.data) for p in pdvs) == COMMAND


def test_unlimited_still_cut_at_configured_size() -> None:
    pdus = fragment_message(1, COMMAND, bytes(1000), 0, unlimited_pdu_bytes=406)
    assert [pdu_body_length(p) for p in pdus] == [6 + len(COMMAND), 406, 406, 206]


def test_dataset_is_not_copied() -> None:
    dataset = bytearray(b"abcdefgh" * 100)
    pdus = fragment_message(1, COMMAND, memoryview(dataset), 106)
    dataset[0:1] = b"Z"  # visible through the views if they are views
    first_data = pdus[1][1]
    assert isinstance(first_data, memoryview)
    assert bytes(first_data[:2]) == b"Zb"


@pytest.mark.parametrize("max_pdu", [1, 5, 6])
def test_max_pdu_too_small_for_any_payload(max_pdu: int) -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        fragment_message(1, COMMAND, b"", max_pdu)


@pytest.mark.parametrize("context_id", [0, 2, 256])
def test_invalid_context_id(context_id: int) -> None:
    with pytest.raises(ValueError):
        fragment_message(context_id, COMMAND, None, 0)


@given(st.integers(7, 300), st.binary(max_size=2000), st.sampled_from([1, 7, 255]))
def test_fragment_reassemble_property(max_pdu: int, dataset: bytes, context_id: int) -> None:
    pdus = fragment_message(context_id, COMMAND, dataset, max_pdu)
    assert all(pdu_body_length(parts) <= max_pdu for parts in pdus)
    assert reassemble(pdus) == (COMMAND, dataset)
