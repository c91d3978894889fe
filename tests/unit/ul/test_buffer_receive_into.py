"""PduBuffer.get_buffer / wrote: receiving straight into the buffer (asyncio.BufferedProtocol).

Checked: the same PDUs as ``feed`` for any read boundaries, many PDUs per read, a large PDU
read in place (never moved), the limits refused from the header alone and never allocated for,
and a shared ReceivePool that an idle buffer holds nothing from.
"""

from __future__ import annotations

import struct

import pytest

from appliance.errors import LocalULError, RemoteULError
from appliance.ul.association import (
    NEED_DATA,
    AcceptAssociation,
    Association,
    Event,
    PDataReceived,
    RequestAssociation,
    SendPData,
)
from appliance.ul.buffer import (
    READ_BYTES,
    TAIL_BYTES,
    PduBuffer,
    ReceivePool,
    receive_buffer_bytes,
)
from appliance.ul.pdu import PDV
from tests.fixtures import pdus
from tests.helpers.ulpair import UlPair, make_ac, make_rq

SMALL = b"".join(pdus.ALL_PDUS.values())
MAX_PDATA = 1 << 20


def p_data(body_len: int, fill: int = 0x41) -> bytes:
    return struct.pack(">BBI", 0x04, 0, body_len) + bytes([fill]) * body_len


def split(stream: bytes) -> list[tuple[int, bytes]]:
    out = []
    while stream:
        length = struct.unpack_from(">I", stream, 2)[0]
        out.append((stream[0], stream[6 : 6 + length]))
        stream = stream[6 + length :]
    return out


def read(buf: PduBuffer, data: bytes) -> int:
    """One transport read of (at most) ``data`` into the buffer; returns the bytes taken."""
    view = buf.get_buffer()
    assert len(view) > 0
    n = min(len(view), len(data))
    view[:n] = data[:n]
    buf.wrote(n)
    return n


def drain(buf: PduBuffer) -> list[tuple[int, bytes]]:
    out = []
    while (got := buf.next_pdu()) is not None:
        out.append((got[0], bytes(got[1])))  # copied: the body is valid only until None
    return out


def receive(buf: PduBuffer, stream: bytes, cuts: list[int]) -> list[tuple[int, bytes]]:
    """``stream`` arriving with segment boundaries at ``cuts``, each segment in as many reads
    as the offers need, the buffer drained after every read (as the acceptor does)."""
    got = []
    edges = [0, *cuts, len(stream)]
    for start, stop in zip(edges, edges[1:], strict=False):
        at = start
        while at < stop:
            at += read(buf, stream[at:stop])
            got += drain(buf)
    return got


def test_split_at_every_byte_boundary() -> None:
    stream = SMALL + p_data(300_000, 0x5A) + SMALL
    expected = split(stream)
    pool = ReceivePool(receive_buffer_bytes(MAX_PDATA))
    big_end = len(stream) - len(SMALL)
    # every byte through the small PDUs, the large one's header and end; every 97th between
    edges = [*range(len(SMALL) + 64), *range(len(SMALL) + 64, big_end - 64, 97),
             *range(big_end - 64, len(stream))]
    for cut in edges:
        buf = PduBuffer(MAX_PDATA, pool=pool)
        assert receive(buf, stream, [cut]) == expected, cut
        assert buf.buffered_bytes == 0


def test_byte_by_byte() -> None:
    buf = PduBuffer(MAX_PDATA)
    assert receive(buf, SMALL, list(range(1, len(SMALL)))) == split(SMALL)


def test_many_small_pdus_in_one_read() -> None:
    stream = SMALL * 20
    assert len(stream) <= READ_BYTES
    buf = PduBuffer(MAX_PDATA)
    assert read(buf, stream) == len(stream)  # one read takes them all
    assert drain(buf) == split(stream)


def test_large_pdu_is_read_in_place_after_its_header() -> None:
    pool = ReceivePool(receive_buffer_bytes(MAX_PDATA))
    buf = PduBuffer(MAX_PDATA, pool=pool)
    big = p_data(MAX_PDATA, 0x33)
    stream = pdus.P_DATA_TF + big
    first = buf.get_buffer()
    assert len(first) == READ_BYTES
    first[:READ_BYTES] = stream[:READ_BYTES]
    buf.wrote(READ_BYTES)
    assert drain(buf) == [(0x04, pdus.P_DATA_TF[6:])]
    rest = len(stream) - READ_BYTES
    second = buf.get_buffer()
    # exactly behind the bytes already there, in the same memory: the rest of the PDU plus a
    # little of whatever follows, so the read that completes the PDU needs no second one
    assert second.obj is first.obj and len(second) == rest + TAIL_BYTES
    second[:rest] = stream[READ_BYTES:]
    buf.wrote(rest)
    got = buf.next_pdu()
    assert got is not None and got[1].obj is first.obj  # decoded where the kernel wrote it
    assert got[1] == big[6:]
    assert buf.next_pdu() is None and pool.free == 1  # handed back once everything is out


def test_pdu_starting_in_a_tail_is_moved_to_the_front() -> None:
    buf = PduBuffer(MAX_PDATA)
    a, b = p_data(MAX_PDATA, 0x01), p_data(MAX_PDATA, 0x02)
    stream = a + b
    got = receive(buf, stream, [READ_BYTES, len(a) + 5000])  # the tail read takes b's start
    assert got == [(0x04, a[6:]), (0x04, b[6:])]


def test_oversize_pdata_refused_from_its_header_without_allocating_it() -> None:
    pool = ReceivePool(receive_buffer_bytes(4096))
    buf = PduBuffer(4096, pool=pool)
    read(buf, p_data(4097)[:6])
    with pytest.raises(RemoteULError) as info:
        buf.next_pdu()
    assert info.value.abort_reason == 6
    assert len(buf.get_buffer()) == READ_BYTES  # offers a read, not the announced size
    with pytest.raises(RemoteULError):
        buf.next_pdu()


def test_unknown_pdu_type_refused_on_its_first_byte() -> None:
    buf = PduBuffer(MAX_PDATA)
    read(buf, pdus.A_RELEASE_RQ + b"\x99")
    assert buf.next_pdu() is not None
    with pytest.raises(RemoteULError) as info:
        buf.next_pdu()
    assert info.value.abort_reason == 1


def test_announced_length_alone_does_not_size_the_buffer() -> None:
    # No P-DATA limit: a header claiming 4 GiB gets a buffer that grows with what arrives.
    buf = PduBuffer(max_pdata_bytes=0)
    read(buf, struct.pack(">BBI", 0x04, 0, 0xFFFFFFF0))
    assert len(buf.get_buffer()) < 2 * READ_BYTES + TAIL_BYTES


def test_unlimited_pdata_bigger_than_a_pool_buffer() -> None:
    buf = PduBuffer(max_pdata_bytes=0)
    big = p_data(3 * 1024 * 1024 + 7, 0x77)
    assert receive(buf, big + SMALL, list(range(65536, len(big), 65536))) == split(big + SMALL)


def test_idle_buffer_holds_no_pool_memory() -> None:
    pool = ReceivePool(receive_buffer_bytes(MAX_PDATA), keep=2)
    a, b = PduBuffer(MAX_PDATA, pool=pool), PduBuffer(MAX_PDATA, pool=pool)
    read(a, p_data(500_000)[:1000])  # a holds a partial PDU: it keeps its buffer
    assert pool.free == 0
    b.get_buffer()  # a read that found nothing (EAGAIN) claims nothing
    assert pool.free == 1
    read(b, SMALL)
    assert drain(b) == split(SMALL) and pool.free == 1  # b took it and gave it back
    assert a.buffered_bytes == 1000 and drain(a) == []


def test_associations_sharing_a_pool_keep_their_bytes_apart() -> None:
    pool = ReceivePool(receive_buffer_bytes(MAX_PDATA))
    x, y = p_data(400_000, 0x58), p_data(400_000, 0x59)
    a, b = PduBuffer(MAX_PDATA, pool=pool), PduBuffer(MAX_PDATA, pool=pool)
    got_a: list[tuple[int, bytes]] = []
    got_b: list[tuple[int, bytes]] = []
    for i in range(0, len(x), 50_000):  # interleaved reads, one callback each
        read(a, x[i : i + 50_000])
        got_a += drain(a)
        read(b, y[i : i + 50_000])
        got_b += drain(b)
    assert got_a == split(x) and got_b == split(y)


def test_wrote_more_than_offered_is_a_local_error() -> None:
    buf = PduBuffer(MAX_PDATA)
    view = buf.get_buffer()
    with pytest.raises(LocalULError):
        buf.wrote(len(view) + 1)
    buf.wrote(0)  # a read of nothing commits nothing
    assert buf.buffered_bytes == 0


def test_feed_and_receive_into_mixed() -> None:
    buf = PduBuffer(MAX_PDATA)
    buf.feed(SMALL[:10])
    read(buf, SMALL[10:500])  # the fed partial PDU moves into the receive buffer
    buf.feed(SMALL[500:])  # and fed bytes now go behind it
    assert drain(buf) == split(SMALL)


def read_into(assoc: Association, data: bytes, chunk: int) -> list[Event]:
    """``data`` read into ``assoc`` in reads of at most ``chunk`` bytes; PDV data copied."""
    events: list[Event] = []
    while data:
        view = assoc.get_buffer()
        n = min(len(view), len(data), chunk)
        view[:n] = data[:n]
        assoc.buffer_updated(n)
        data = data[n:]
        while (ev := assoc.next_event()) is not NEED_DATA:
            if isinstance(ev, PDataReceived):  # views valid until NEED_DATA: copy them now
                copied = PDataReceived(tuple(PDV(p.context_id, p.is_command, p.is_last,
                                                 bytes(p.data)) for p in ev.pdvs))
                events.append(copied)
            else:
                events.append(ev)
    return events


def test_association_buffer_updated_gives_the_events_receive_data_gives() -> None:
    fed, into = UlPair(), UlPair()
    fed_events, _ = fed.associate()
    assert into.requestor.send(RequestAssociation(make_rq())) == b""
    rq_bytes = into.requestor.connection_established()
    assert read_into(into.acceptor, rq_bytes, 7) == fed_events  # A-ASSOCIATE-RQ, 7 at a time
    ac = into.acceptor.send(AcceptAssociation(make_ac(make_rq())))
    into.deliver(into.requestor, ac)
    pdvs = [PDV(3, True, True, b"command"), PDV(3, False, True, bytes(range(256)) * 3000)]
    wire = into.requestor.send(SendPData(pdvs))
    assert read_into(into.acceptor, wire, 100_000) == fed.send(fed.requestor, SendPData(pdvs))


def test_offered_shows_a_read_before_it_is_committed() -> None:
    buf = PduBuffer(MAX_PDATA)
    view = buf.get_buffer()
    view[:4] = b"\x07\x00\x00\x00"
    assert bytes(buf.offered(4)) == b"\x07\x00\x00\x00"
    buf.get_buffer()  # not committed: the next read goes to the same place
    assert buf.buffered_bytes == 0


def test_a_peeked_buffer_taken_in_between_is_refused() -> None:
    # One event loop makes this impossible (a read and its commit are one callback); the pool
    # still refuses rather than commit bytes that landed in another association's buffer.
    pool = ReceivePool(receive_buffer_bytes(MAX_PDATA))
    a, b = PduBuffer(MAX_PDATA, pool=pool), PduBuffer(MAX_PDATA, pool=pool)
    a.get_buffer()
    read(b, SMALL[:10])  # b claims the buffer a was offered
    with pytest.raises(LocalULError):
        a.wrote(5)
