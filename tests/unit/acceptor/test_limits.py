"""Resource limits and timeouts of the acceptor, driven through a MockTransport.

Time is a fake clock set on the (never running) event loop, and the silence timer is fired by
hand, so nothing sleeps. What the peer sees (A-ABORT / A-ASSOCIATE-RJ bytes) and what reaches
the worker's ring (CLOSE with ABORTED, so the worker deletes its spool) are both checked.
"""

from __future__ import annotations

import resource
import struct
from collections.abc import Iterator

import pytest

from appliance.acceptor.protocol import DicomProtocol
from appliance.acceptor.server import raise_fd_limit
from appliance.config import load
from appliance.dimse.fragment import fragment_message
from appliance.dimse.messages import CStoreRQ, encode_message
from appliance.ipc.kinds import Flag, Kind
from appliance.ul.pdu import (
    AssociateRQ,
    MaximumLength,
    PresentationContextRQ,
    UserInformation,
    encode_pdata_header,
    encode_pdu,
)
from tests.unit.acceptor.test_protocol import CT, EXPLICIT_LE, Env, MockTransport, associate_rq

ABORT_REASON_NOT_SPECIFIED = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 2, 0])


class Clock:
    def __init__(self, env: Env) -> None:
        self.now = 1000.0
        env.loop.time = lambda: self.now  # type: ignore[method-assign]


def make_env(**network: object) -> Env:
    return Env(load(None, {"network": {"ae_title": "PACS", **network}}))


@pytest.fixture
def env() -> Iterator[Env]:
    e = make_env()
    yield e
    e.close()


@pytest.fixture
def timed() -> Iterator[tuple[Env, Clock]]:
    e = make_env(idle_timeout_s=100.0, dimse_timeout_s=5.0)
    clock = Clock(e)
    yield e, clock
    e.close()


def associated(env: Env, calling_ae: str = "MODALITY") -> tuple[DicomProtocol, MockTransport]:
    proto, tr = env.connect()
    rq = associate_rq([(1, CT)]).replace(b"MODALITY".ljust(16), calling_ae.encode().ljust(16))
    proto.data_received(rq)
    [(ptype, _)] = tr.take_pdus()
    assert ptype == 0x02
    env.job_records()
    return proto, tr


def store_stream(msg_id: int, data: bytes, max_pdu: int = 4096) -> bytes:
    cmd = encode_message(CStoreRQ(message_id=msg_id, affected_sop_class_uid=CT,
                                  affected_sop_instance_uid=f"1.2.3.{msg_id}"))
    return b"".join(encode_pdata_header(sum(len(p) for p in parts)) + b"".join(parts)
                    for parts in fragment_message(1, cmd, data, max_pdu))


def fire_silence_timer(proto: DicomProtocol) -> None:
    assert proto.silence.armed_at is not None, "no silence timer armed"
    proto.silence.check()


def assert_aborted(env: Env, proto: DicomProtocol, tr: MockTransport) -> None:
    assert bytes(tr.written[:10]) == ABORT_REASON_NOT_SPECIFIED, tr.written[:16].hex(" ")
    assert tr.eof and proto.outcome == "aborted_by_us"
    closes = [r for r in env.job_records() if r[0] == Kind.CLOSE]
    assert closes and closes[-1][2] & Flag.ABORTED  # the worker discards the spool


# ---- DIMSE timeout vs network idle timeout ----------------------------------------------


def test_peer_silent_mid_data_set_is_aborted_after_the_dimse_timeout(
    timed: tuple[Env, Clock],
) -> None:
    env, clock = timed
    proto, tr = associated(env)
    stream = store_stream(1, bytes(20_000))
    proto.data_received(stream[: len(stream) // 2])  # half the PDVs, then silence
    assert proto.receiving == 1
    clock.now += 4.0
    fire_silence_timer(proto)
    armed_at = proto.silence.armed_at
    assert tr.written == b"" and armed_at is not None  # 4 s < 5 s: re-armed
    assert armed_at <= clock.now + 1.0 + 1e-6  # ...for when the 5 s run out
    clock.now += 1.5
    fire_silence_timer(proto)
    assert_aborted(env, proto, tr)


def test_a_pdu_mid_message_restarts_the_dimse_timeout(timed: tuple[Env, Clock]) -> None:
    env, clock = timed
    proto, tr = associated(env)
    stream = store_stream(1, bytes(20_000))
    proto.data_received(stream[:5000])
    clock.now += 4.0
    proto.data_received(stream[5000:10000])  # a slow but live peer
    clock.now += 4.0
    fire_silence_timer(proto)
    assert tr.written == b""
    proto.data_received(stream[10000:])
    assert proto.receiving is None and 1 in proto.in_flight


def test_operation_in_the_worker_is_not_peer_silence(timed: tuple[Env, Clock]) -> None:
    env, clock = timed
    proto, tr = associated(env)
    proto.data_received(store_stream(1, bytes(1000)))
    assert 1 in proto.in_flight and proto.receiving is None
    clock.now += 1000.0  # the worker is slow (a C-MOVE, a full disk): the peer owes nothing
    fire_silence_timer(proto)
    assert tr.written == b"" and proto.silence.armed_at is not None


def test_paused_reading_is_not_peer_silence(timed: tuple[Env, Clock]) -> None:
    env, clock = timed
    proto, tr = associated(env)
    proto.data_received(store_stream(1, bytes(20_000))[:8000])
    proto.paused = True  # backpressure: we stopped reading, so no PDU can arrive
    clock.now += 50.0
    fire_silence_timer(proto)
    assert tr.written == b""


def test_network_idle_timeout_between_operations(timed: tuple[Env, Clock]) -> None:
    env, clock = timed
    proto, tr = associated(env)
    clock.now += 60.0  # past the DIMSE timeout, but nothing is in progress
    fire_silence_timer(proto)
    assert tr.written == b""
    clock.now += 41.0
    fire_silence_timer(proto)
    assert_aborted(env, proto, tr)


def test_dimse_timeout_zero_falls_back_to_idle_timeout() -> None:
    env = make_env(idle_timeout_s=30.0, dimse_timeout_s=0.0)
    clock = Clock(env)
    try:
        proto, tr = associated(env)
        proto.data_received(store_stream(1, bytes(20_000))[:8000])
        clock.now += 29.0
        fire_silence_timer(proto)
        assert tr.written == b""
        clock.now += 2.0
        fire_silence_timer(proto)
        assert_aborted(env, proto, tr)
    finally:
        env.close()


# ---- per-message limits -----------------------------------------------------------------


def test_pipelining_past_max_pending_operations_is_aborted() -> None:
    env = make_env(max_pending_operations=2)
    try:
        proto, tr = associated(env)
        proto.data_received(store_stream(1, b"a" * 100) + store_stream(2, b"b" * 100))
        assert proto.in_flight.keys() == {1, 2} and tr.written == b""
        proto.data_received(store_stream(3, b"c" * 100))
        assert_aborted(env, proto, tr)
    finally:
        env.close()


def test_command_set_over_max_command_bytes_is_aborted() -> None:
    env = make_env(max_command_bytes=256)
    try:
        proto, tr = associated(env)
        item = struct.pack(">IBB", 2 + 200, 1, 0x01) + bytes(200)  # command, not last
        pdu = encode_pdata_header(len(item)) + item
        proto.data_received(pdu)
        assert tr.written == b""
        proto.data_received(pdu)  # 400 bytes of command set so far
        assert_aborted(env, proto, tr)
        assert len(proto.cmd_buf) <= 256 + 200  # never more than the limit plus one PDV
    finally:
        env.close()


def test_pdata_announcing_4gb_is_aborted_with_invalid_parameter_value(env: Env) -> None:
    proto, tr = associated(env)
    proto.data_received(struct.pack(">BBI", 0x04, 0, 0xFFFF_FFFF) + bytes(6))
    [(ptype, body)] = tr.take_pdus()
    assert ptype == 0x07 and body[2:4] == b"\x02\x06"  # source 2, reason 6 (PS3.8 9.3.8)
    assert tr.eof


def test_1000_presentation_contexts_rejected_local_limit_exceeded(env: Env) -> None:
    proto, tr = env.connect()
    rq = AssociateRQ(
        called_ae="PACS", calling_ae="FLOODER",
        presentation_contexts=tuple(
            PresentationContextRQ(2 * (i % 128) + 1, CT, (EXPLICIT_LE,)) for i in range(1000)
        ),
        user_information=UserInformation((MaximumLength(16384),)),
    )
    proto.data_received(encode_pdu(rq))
    [(ptype, body)] = tr.take_pdus()
    assert ptype == 0x03
    assert tuple(body[1:4]) == (1, 3, 2)  # permanent, provider (presentation), local limit
    assert env.job_records() == []  # no worker ever heard of it


# ---- association and connection limits --------------------------------------------------


def test_per_ae_limit_rejects_the_extra_association_only_for_that_ae() -> None:
    env = make_env(max_associations_per_ae=2)
    try:
        associated(env, "BUSY")
        associated(env, "BUSY")
        proto, tr = env.connect()
        rq = associate_rq([(1, CT)]).replace(b"MODALITY".ljust(16), b"BUSY".ljust(16))
        proto.data_received(rq)
        [(ptype, body)] = tr.take_pdus()
        assert ptype == 0x03 and tuple(body[1:4]) == (2, 3, 2)  # transient, local limit
        associated(env, "OTHER")  # another AE still gets in
    finally:
        env.close()


def test_connections_beyond_the_pending_limit_evict_the_oldest() -> None:
    env = make_env(max_pending_connections=3)
    try:
        good, good_tr = associated(env)  # associated: no longer pending, never evicted
        silent = [env.connect() for _ in range(3)]
        assert not any(tr.closing for _, tr in silent)
        newest = [env.connect() for _ in range(2)]
        assert [tr.closing for _, tr in silent] == [True, True, False]
        assert not any(tr.closing for _, tr in newest) and not good_tr.closing
        assert all(p.outcome == "evicted" for p, _ in silent[:2])
        assert len(env.server.unassociated) == 3
        for proto, _ in silent[:2]:
            proto.connection_lost(None)  # what the transport reports after abort()
        assert silent[0][0].assoc_id not in env.server.protocols
        # the newest pending connection still associates
        proto, tr = newest[-1]
        proto.data_received(associate_rq([(1, CT)]))
        assert tr.take_pdus()[0][0] == 0x02
        assert proto not in env.server.unassociated
    finally:
        env.close()


def test_raise_fd_limit_lifts_the_soft_limit_to_the_hard_one() -> None:
    soft, hard = raise_fd_limit()
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)
    if hard != resource.RLIM_INFINITY:
        assert soft == hard


def test_eviction_spares_a_connection_whose_request_is_arriving() -> None:
    env = make_env(max_pending_connections=2)
    try:
        (talker, talker_tr), (silent, silent_tr) = env.connect(), env.connect()
        talker.data_received(associate_rq([(1, CT)])[:10])  # part of its A-ASSOCIATE-RQ
        env.connect()
        assert silent_tr.closing and not talker_tr.closing
        assert silent.outcome == "evicted"
    finally:
        env.close()
