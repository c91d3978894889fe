"""appliance.ul.buffer.PduBuffer: framing, limits, view lifetime (PS3.8 §9.3.1, D.1)."""

from __future__ import annotations

import struct

import pytest

from appliance.errors import RemoteULError
from appliance.ul.buffer import PduBuffer
from tests.fixtures import pdus

STREAM = b"".join(pdus.ALL_PDUS.values())
EXPECTED = [(raw[0], raw[6:]) for raw in pdus.ALL_PDUS.values()]


def p_data(body_len: int, fill: int = 0x41) -> bytes:
    return struct.pack(">BBI", 0x04, 0, body_len) + bytes([fill]) * body_len


def drain(buf: PduBuffer) -> list[tuple[int, bytes]]:
    out = []
    while (got := buf.next_pdu()) is not None:
        out.append((got[0], bytes(got[1])))
    return out


def test_whole_stream_yields_every_pdu_in_order() -> None:
    buf = PduBuffer(max_pdata_bytes=16384)
    buf.feed(STREAM)
    assert drain(buf) == EXPECTED
    assert buf.buffered_bytes == 0
    assert buf.next_pdu() is None


def test_byte_by_byte_yields_the_same_pdus() -> None:
    buf = PduBuffer(max_pdata_bytes=16384)
    got = []
    for i in range(len(STREAM)):
        buf.feed(STREAM[i : i + 1])
        got.extend(drain(buf))
    assert got == EXPECTED
    assert buf.buffered_bytes == 0


def test_incomplete_header_and_body_wait_for_more() -> None:
    buf = PduBuffer(max_pdata_bytes=0)
    buf.feed(pdus.A_ABORT[:3])
    assert buf.next_pdu() is None
    assert buf.buffered_bytes == 3
    buf.feed(pdus.A_ABORT[3:8])
    assert buf.next_pdu() is None
    buf.feed(pdus.A_ABORT[8:] + pdus.A_RELEASE_RQ[:1])
    assert drain(buf) == [(0x07, pdus.A_ABORT[6:])]
    assert buf.buffered_bytes == 1


def test_returned_views_survive_later_feeds() -> None:
    buf = PduBuffer(max_pdata_bytes=0)
    buf.feed(pdus.P_DATA_TF + pdus.A_ABORT[:4])
    first = buf.next_pdu()
    assert first is not None and buf.next_pdu() is None
    for _ in range(3):  # compaction, then in-place growth must not disturb ``first``
        buf.feed(pdus.A_ABORT[4:] + pdus.A_ABORT[:4])
        assert drain(buf) == [(0x07, pdus.A_ABORT[6:])]
    assert bytes(first[1]) == pdus.P_DATA_TF[6:]


def test_feed_copies_memoryview_input() -> None:
    staging = bytearray(pdus.A_RELEASE_RP)
    buf = PduBuffer(max_pdata_bytes=0)
    buf.feed(memoryview(staging))
    staging[:] = bytes(len(staging))  # the caller reuses its receive buffer
    assert drain(buf) == [(0x06, pdus.A_RELEASE_RP[6:])]


def test_one_mib_pdu_in_256_kib_reads() -> None:
    size = 1024 * 1024
    raw = p_data(size, fill=0x5A)
    buf = PduBuffer(max_pdata_bytes=size)
    chunk = 256 * 1024
    results = []
    for start in range(0, len(raw), chunk):
        buf.feed(memoryview(raw)[start : start + chunk])
        results.append(buf.next_pdu())
    done = [r for r in results if r is not None]
    assert len(done) == 1
    assert done[0][0] == 0x04 and done[0][1].nbytes == size and done[0][1] == raw[6:]
    assert buf.buffered_bytes == 0


def test_empty_feed_is_a_no_op() -> None:
    buf = PduBuffer(max_pdata_bytes=0)
    buf.feed(b"")
    buf.feed(memoryview(b""))
    assert buf.buffered_bytes == 0 and buf.next_pdu() is None


@pytest.mark.parametrize("type_byte", [0x00, 0x08, 0x10, 0xFF])
def test_unknown_pdu_type_is_reason_1_on_the_first_byte(type_byte: int) -> None:
    buf = PduBuffer(max_pdata_bytes=0)
    buf.feed(pdus.A_RELEASE_RQ + bytes([type_byte]))
    assert buf.next_pdu() is not None
    with pytest.raises(RemoteULError) as info:
        buf.next_pdu()
    assert info.value.abort_reason == 1
    with pytest.raises(RemoteULError):  # the buffer keeps refusing
        buf.next_pdu()


def test_p_data_over_advertised_maximum_is_reason_6_from_the_header_alone() -> None:
    buf = PduBuffer(max_pdata_bytes=4096)
    buf.feed(p_data(4097)[:6])
    with pytest.raises(RemoteULError) as info:
        buf.next_pdu()
    assert info.value.abort_reason == 6


def test_p_data_at_the_maximum_is_accepted() -> None:
    buf = PduBuffer(max_pdata_bytes=4096)
    buf.feed(p_data(4096))
    got = buf.next_pdu()
    assert got is not None and got[1].nbytes == 4096


def test_zero_maximum_means_unlimited_p_data() -> None:
    buf = PduBuffer(max_pdata_bytes=0, max_other_pdu_bytes=8)
    buf.feed(p_data(70000))
    got = buf.next_pdu()
    assert got is not None and got[1].nbytes == 70000


def test_other_pdus_use_their_own_limit() -> None:
    buf = PduBuffer(max_pdata_bytes=1_000_000, max_other_pdu_bytes=100)
    buf.feed(struct.pack(">BBI", 0x01, 0, 101))
    with pytest.raises(RemoteULError) as info:
        buf.next_pdu()
    assert info.value.abort_reason == 6
    small = PduBuffer(max_pdata_bytes=10, max_other_pdu_bytes=4 * 1024 * 1024)
    small.feed(pdus.A_ASSOCIATE_RQ)  # 184-byte body: the P-DATA limit does not apply
    assert drain(small) == [(0x01, pdus.A_ASSOCIATE_RQ[6:])]
