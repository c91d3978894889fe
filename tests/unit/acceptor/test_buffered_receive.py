"""DicomProtocol as an asyncio.BufferedProtocol: reads land in the core's receive buffer.

Driven as uvloop drives it (get_buffer, then buffer_updated with what the read returned),
through the MockTransport and real rings of test_protocol.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appliance.acceptor.protocol import DicomProtocol, _rx_pool
from appliance.config import load
from appliance.dimse.messages import CStoreRQ, encode_message
from appliance.ipc.kinds import Flag, Kind
from appliance.ul.pdu import PDV
from tests.unit.acceptor.test_protocol import CT, Env, MockTransport, associate_rq, pdata


@pytest.fixture
def env() -> Iterator[Env]:
    e = Env(load(None, {"network": {"ae_title": "PACS"}}), jobs_bytes=4 << 20)
    yield e
    e.close()


def read(proto: DicomProtocol, data: bytes, limit: int = 1 << 30) -> int:
    """One socket read (``limit``: what the socket has), the way uvloop does it."""
    view = proto.get_buffer(65536)
    n = min(len(view), len(data), limit)
    view[:n] = data[:n]
    proto.buffer_updated(n)
    return n


def read_all(proto: DicomProtocol, data: bytes, limit: int = 1 << 30) -> int:
    reads = 0
    while data:
        data = data[read(proto, data, limit) :]
        reads += 1
    return reads


def associated(env: Env) -> tuple[DicomProtocol, MockTransport]:
    proto, tr = env.connect()
    read_all(proto, associate_rq([(1, CT)]))
    [(ptype, _)] = tr.take_pdus()
    assert ptype == 0x02
    env.job_records()
    return proto, tr


def c_store(msg_id: int, data: bytes) -> bytes:
    cmd = encode_message(CStoreRQ(message_id=msg_id, affected_sop_class_uid=CT,
                                  affected_sop_instance_uid=f"1.2.3.{msg_id}"))
    return pdata([PDV(1, True, True, cmd)]) + pdata([PDV(1, False, True, data)])


def test_large_data_set_in_one_pdu_reaches_the_ring_and_no_buffer_is_kept(env: Env) -> None:
    proto, _ = associated(env)
    pool = _rx_pool(env.server.ul_limits.max_pdu_bytes)
    data = bytes(range(251)) * 2100  # 0.5 MB, one P-DATA-TF (we advertise 1 MiB)
    # first read: the command PDU and the start of the data PDU; the second is the rest of
    # that PDU, offered in place: two reads, as many as the data needs
    assert read_all(proto, c_store(1, data)) == 2
    recs = env.job_records()
    assert [(r[0], r[1]) for r in recs] == [(Kind.COMMAND, 1), (Kind.DATA, 1)]
    assert recs[1][4] == data and recs[1][2] & Flag.LAST
    assert proto.conn.buffered_bytes == 0 and pool.free >= 1  # idle: the buffer went back


def test_many_small_objects_in_one_read(env: Env) -> None:
    proto, _ = associated(env)
    stream = b"".join(c_store(i, bytes([i]) * 8000) for i in range(1, 11))
    assert read_all(proto, stream) == 1
    recs = env.job_records()
    assert [r[4] for r in recs if r[0] == Kind.DATA] == [bytes([i]) * 8000 for i in range(1, 11)]


@pytest.mark.parametrize("limit", [7, 4093, 65536, 300_001])
def test_reads_of_any_size_give_the_same_records(env: Env, limit: int) -> None:
    proto, _ = associated(env)
    data = bytes(range(256)) * 1200
    read_all(proto, c_store(1, data) + c_store(2, b"small"), limit)
    got = env.job_records()
    assert [r[4] for r in got if r[0] == Kind.DATA] == [data, b"small"]


def test_after_our_abort_reads_are_not_committed(env: Env) -> None:
    proto, tr = env.connect()
    read_all(proto, b"\x99" + bytes(20))
    [(ptype, _)] = tr.take_pdus()
    assert ptype == 0x07 and proto.eof_sent
    before = proto.conn.buffered_bytes
    read_all(proto, bytes(300_000))  # Sta13: read and dropped, never buffered
    assert proto.conn.buffered_bytes == before and tr.take_pdus() == []
