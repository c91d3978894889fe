"""The acceptor's per-association protocol, driven through a MockTransport (uvicorn style).

Real rings and a real control block, one process, no sockets: what the acceptor writes to the
peer and what it puts on the worker's ring are both checked.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from appliance.acceptor.protocol import DicomProtocol
from appliance.acceptor.server import AcceptorServer, AcceptorSetup
from appliance.config import Config, NetworkConfig, load
from appliance.dimse.fragment import fragment_message
from appliance.dimse.messages import (
    CEchoRQ,
    CEchoRSP,
    CStoreRQ,
    CStoreRSP,
    decode_message,
    encode_message,
)
from appliance.dimse.status import Status
from appliance.ipc.channels import WorkerChannels
from appliance.ipc.control import ControlBlock, ProcState, Role
from appliance.ipc.kinds import Flag, Kind
from appliance.ipc.ring import Ring
from appliance.ul.pdu import (
    PDV,
    AssociateRQ,
    MaximumLength,
    PDataTF,
    PresentationContextRQ,
    UserInformation,
    encode_pdata_header,
    encode_pdu,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
VERIFICATION = "1.2.840.10008.1.1"


class MockTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False
        self.paused = False
        self.eof = False

    def write(self, data: Any) -> None:
        self.written += data

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def take_pdus(self) -> list[tuple[int, bytes]]:
        out = []
        data = bytes(self.written)
        self.written.clear()
        while data:
            ptype, length = data[0], struct.unpack(">I", data[2:6])[0]
            out.append((ptype, data[6 : 6 + length]))
            data = data[6 + length :]
        return out


class Env:
    def __init__(self, cfg: Config, jobs_bytes: int = 1 << 20) -> None:
        self.loop = asyncio.new_event_loop()
        self.cb = ControlBlock.create(5)
        self.cb.slot(4).claim(Role.WORKER, 1)
        self.cb.slot(4).state = ProcState.READY
        ch, self.rings = WorkerChannels.create(0, 1, jobs_bytes, 1 << 20)
        setup = AcceptorSetup(cfg, None, self.cb, 1, {0: 4},
                              [(0, 1, ch.jobs, ch.replies)], None)
        self.server = AcceptorServer(setup, self.loop)
        self.jobs = Ring.attach(ch.jobs)  # the worker's consumer end
        self.replies = Ring.attach(ch.replies)  # the worker's producer end

    def connect(self) -> tuple[DicomProtocol, MockTransport]:
        proto = DicomProtocol(self.server)
        tr = MockTransport()
        proto.connection_made(tr)
        return proto, tr

    def job_records(self) -> list[tuple[int, int, int, int, bytes]]:
        self.jobs.drain_doorbell()
        out = []
        while (got := self.jobs.get_copy()) is not None:
            h, payload = got
            out.append((h.kind, h.msg_id, h.flags, h.aux, payload))
        return out

    def close(self) -> None:
        self.loop.close()


@pytest.fixture
def env() -> Iterator[Env]:
    e = Env(load(None, {"network": {"ae_title": "PACS"}}))
    yield e
    e.close()


def associate_rq(contexts: list[tuple[int, str]], max_pdu: int = 16384) -> bytes:
    rq = AssociateRQ(
        called_ae="PACS",
        calling_ae="MODALITY",
        presentation_contexts=tuple(
            PresentationContextRQ(cid, uid, (EXPLICIT_LE,)) for cid, uid in contexts
        ),
        user_information=UserInformation((MaximumLength(max_pdu),)),
    )
    return encode_pdu(rq)


def pdata(pdvs: list[PDV]) -> bytes:
    return encode_pdu(PDataTF(tuple(pdvs)))


def test_associate_then_echo_forwarded_and_answered(env: Env) -> None:
    proto, tr = env.connect()
    proto.data_received(associate_rq([(1, VERIFICATION), (3, CT)]))
    [(ptype, _)] = tr.take_pdus()
    assert ptype == 0x02  # A-ASSOCIATE-AC
    [(kind, _, _, _, payload)] = env.job_records()
    assert kind == Kind.OPEN
    info = msgpack.unpackb(payload)
    assert info["calling_ae"] == "MODALITY" and info["peer_max_pdu"] == 16384
    assert info["contexts"] == {"1": [VERIFICATION, EXPLICIT_LE], "3": [CT, EXPLICIT_LE]}

    # a C-ECHO on a Verification context is answered by the acceptor itself
    cmd = encode_message(CEchoRQ(message_id=6))
    proto.data_received(pdata([PDV(1, True, True, cmd)]))
    assert env.job_records() == []
    [(ptype, body)] = tr.take_pdus()
    rsp_cmd = decode_message(body[6:])
    assert ptype == 0x04 and isinstance(rsp_cmd, CEchoRSP)
    assert (rsp_cmd.message_id_being_responded_to, rsp_cmd.status) == (6, 0)

    # anything else goes to the worker (here an echo on a storage context, which it refuses)
    cmd = encode_message(CEchoRQ(message_id=7))
    proto.data_received(pdata([PDV(3, True, True, cmd)]))
    [(kind, msg_id, _, aux, payload)] = env.job_records()
    assert (kind, msg_id, aux, payload) == (Kind.COMMAND, 7, 3, cmd)
    assert proto.in_flight.keys() == {7}

    # the worker answers through the reply ring; the acceptor frames and writes it
    rsp = b"\x02\x00\x00\x00\x00\x00\x00\x00"  # opaque to the acceptor
    item = struct.pack(">IBB", len(rsp) + 2, 3, 0x03) + rsp
    env.replies.try_put(Kind.SEND, proto.assoc_id, 7, Flag.FINAL, 0, item)
    env.server._on_replies(env.server.links[0])
    [(ptype, body)] = tr.take_pdus()
    assert ptype == 0x04 and body == item
    assert not proto.in_flight


def test_store_data_streams_to_ring_with_last_flag(env: Env) -> None:
    proto, tr = env.connect()
    proto.data_received(associate_rq([(1, CT)]))
    tr.take_pdus()
    env.job_records()
    cmd = encode_message(CStoreRQ(message_id=1, affected_sop_class_uid=CT,
                                  affected_sop_instance_uid="1.2.3"))
    data = bytes(range(256)) * 100
    pdus = fragment_message(1, cmd, data, 4096)
    stream = b"".join(encode_pdata_header(sum(len(p) for p in parts)) + b"".join(parts)
                      for parts in pdus)
    for i in range(0, len(stream), 1000):  # arbitrary read boundaries
        proto.data_received(stream[i : i + 1000])
    recs = env.job_records()
    assert recs[0][0] == Kind.COMMAND
    datas = recs[1:]
    assert all(r[0] == Kind.DATA and r[1] == 1 for r in datas)
    assert b"".join(r[4] for r in datas) == data
    assert [bool(r[2] & Flag.LAST) for r in datas] == [False] * (len(datas) - 1) + [True]
    assert proto.receiving is None


def test_full_ring_pauses_reading_and_resumes_in_order() -> None:
    e = Env(load(None, {}), jobs_bytes=64 * 1024)
    try:
        proto, tr = e.connect()
        proto.data_received(associate_rq([(1, CT)], max_pdu=0))
        e.job_records()
        cmd = encode_message(CStoreRQ(message_id=1, affected_sop_class_uid=CT,
                                      affected_sop_instance_uid="1.2.3"))
        data = bytes(200_000)
        pdus = fragment_message(1, cmd, data, 16384)
        stream = b"".join(encode_pdata_header(sum(len(p) for p in parts)) + b"".join(parts)
                          for parts in pdus)
        proto.data_received(stream)
        assert tr.paused and proto.pending  # ring full: backpressure, nothing dropped
        got = []
        for _ in range(100):  # the worker consumes; the space doorbell lets pending records in
            got += e.job_records()
            e.server.links[0].on_space()
            if not proto.pending:
                break
        got += e.job_records()
        assert not tr.paused and not proto.pending
        assert b"".join(r[4] for r in got if r[0] == Kind.DATA) == data
    finally:
        e.close()


def test_garbage_gets_abort_reason_1(env: Env) -> None:
    proto, tr = env.connect()
    proto.data_received(b"\x99" + bytes(20))
    [(ptype, body)] = tr.take_pdus()
    assert ptype == 0x07 and body[2:4] == b"\x02\x01"  # source 2, reason 1
    assert tr.eof  # FIN right behind the A-ABORT; the rest of the garbage is not read
    proto.data_received(b"\x00" * 100)
    proto.eof_received()  # must terminate (ConnectionClosed repeats in the core)
    assert tr.take_pdus() == []


def test_pdata_before_association_is_unexpected(env: Env) -> None:
    proto, tr = env.connect()
    proto.data_received(pdata([PDV(1, True, True, b"\x00" * 8)]))
    [(ptype, body)] = tr.take_pdus()
    assert ptype == 0x07 and body[3] == 2  # unexpected PDU


def test_worker_replaced_fails_in_flight_with_0110(env: Env) -> None:
    proto, tr = env.connect()
    proto.data_received(associate_rq([(1, VERIFICATION), (3, CT)]))
    tr.take_pdus()
    cmd = encode_message(CStoreRQ(message_id=5, affected_sop_class_uid=CT,
                                  affected_sop_instance_uid="1.2.3.4"))
    proto.data_received(pdata([PDV(3, True, True, cmd), PDV(3, False, False, b"x" * 10)]))
    env.job_records()
    ch2, rings2 = WorkerChannels.create(0, 2, 1 << 20, 1 << 20)
    from appliance.acceptor.links import WorkerLink

    new = WorkerLink(0, 2, Ring.attach(ch2.jobs), Ring.attach(ch2.replies))
    env.server.links[0].associations.discard(proto)
    proto.worker_replaced(new)
    [(ptype, body)] = tr.take_pdus()
    assert ptype == 0x04
    assert body[4] == 3  # answered on the request's own presentation context
    msg = decode_message(body[6:])
    assert isinstance(msg, CStoreRSP)
    assert msg.status == Status.PROCESSING_FAILURE and msg.message_id_being_responded_to == 5
    assert msg.affected_sop_instance_uid == "1.2.3.4"
    # the rest of the orphaned data set is dropped, the next message goes to the new worker
    proto.data_received(pdata([PDV(3, False, True, b"y" * 10)]))
    new.flush()
    jobs2 = Ring.attach(ch2.jobs)
    jobs2.drain_doorbell()
    kinds = []
    while (got := jobs2.get_copy()) is not None:
        kinds.append(got[0].kind)
    assert kinds == [Kind.OPEN]


def test_association_limit_rejects_transient() -> None:
    e = Env(Config(network=NetworkConfig(max_associations=1)))
    try:
        p1, t1 = e.connect()
        p1.data_received(associate_rq([(1, CT)]))
        assert t1.take_pdus()[0][0] == 0x02
        p2, t2 = e.connect()
        p2.data_received(associate_rq([(1, CT)]))
        [(ptype, body)] = t2.take_pdus()
        assert ptype == 0x03
        assert tuple(body[1:4]) == (2, 3, 2)  # transient, provider (presentation), local limit
    finally:
        e.close()


def test_artim_after_release_runs_from_now(env: Env) -> None:
    # Regression: the core was told now=0, so ARTIM after our A-RELEASE-RP had already
    # expired and the connection was cut at once instead of waiting for the peer to close.
    from appliance.ul.pdu import ReleaseRQ

    proto, tr = env.connect()
    proto.data_received(associate_rq([(1, CT)]))
    tr.take_pdus()
    proto.data_received(encode_pdu(ReleaseRQ()))
    [(ptype, _)] = tr.take_pdus()
    assert ptype == 0x06
    deadline = proto.conn.deadline
    assert deadline is not None
    artim = env.server.cfg.network.artim_timeout_s
    assert deadline - env.loop.time() > artim - 1


def test_framed_send_records_are_written_as_they_are(env: Env) -> None:
    """A FRAMED SEND record carries whole P-DATA-TF PDUs (several): written unchanged."""
    proto, tr = env.connect()
    proto.data_received(associate_rq([(1, VERIFICATION), (3, CT)]))
    tr.take_pdus()
    env.job_records()
    cmd = encode_message(CEchoRQ(message_id=9))
    proto.data_received(pdata([PDV(3, True, True, cmd)]))  # forwarded: in flight
    env.job_records()
    pdus = fragment_message(3, b"\x02\x00" * 10, b"\x07" * 100, 64)
    wire = b"".join(encode_pdata_header(sum(len(p) for p in parts)) + b"".join(parts)
                    for parts in pdus)
    env.replies.try_put(Kind.SEND, proto.assoc_id, 9, Flag.FRAMED | Flag.FINAL, 0, wire)
    env.server._on_replies(env.server.links[0])
    got = tr.take_pdus()
    assert len(got) == len(pdus) > 2
    assert b"".join(struct.pack(">BBI", t, 0, len(b)) + b for t, b in got) == wire
    assert not proto.in_flight


def test_held_records_wait_for_the_peers_answer(env: Env) -> None:
    """HELD (aux = our request's Message ID): written only once the peer answered it, in
    order; later ones whose answer came first go out at once."""
    proto, tr = env.connect()
    proto.data_received(associate_rq([(1, VERIFICATION), (3, CT)]))
    tr.take_pdus()
    env.job_records()
    first = encode_pdata_header(8) + struct.pack(">IBB", 4, 3, 0x03) + b"\x01\x02"
    second = encode_pdata_header(8) + struct.pack(">IBB", 4, 3, 0x03) + b"\x03\x04"
    flags = Flag.FRAMED | Flag.HELD
    env.replies.try_put(Kind.SEND, proto.assoc_id, 9, flags, 41, first)
    env.server._on_replies(env.server.links[0])
    assert tr.take_pdus() == []  # our request 41 is not answered yet
    rsp = encode_message(CStoreRSP(message_id_being_responded_to=41, status=0,
                                   affected_sop_class_uid=CT, affected_sop_instance_uid="1.2"))
    proto.data_received(pdata([PDV(3, True, True, rsp)]))
    [(kind, msg_id, _, _, _)] = env.job_records()
    assert (kind, msg_id) == (Kind.COMMAND, 41)  # the worker still counts the answer
    assert [body for _, body in tr.take_pdus()] == [first[6:]]
    env.replies.try_put(Kind.SEND, proto.assoc_id, 9, flags, 41, second)  # answer came first
    env.server._on_replies(env.server.links[0])
    assert [body for _, body in tr.take_pdus()] == [second[6:]]


def test_a_chain_of_held_records_goes_out_one_answer_at_a_time(env: Env) -> None:
    """C-GET queues several sub-operations ahead (workers/qr/service.py _GET_AHEAD), each HELD
    for the one before it: the peer still sees one C-STORE-RQ outstanding at a time."""
    proto, tr = env.connect()
    proto.data_received(associate_rq([(1, VERIFICATION), (3, CT)]))
    tr.take_pdus()
    env.job_records()
    bodies = [encode_pdata_header(8) + struct.pack(">IBB", 4, 3, 0x03) + bytes([i, i])
              for i in range(3)]
    flags = Flag.FRAMED | Flag.HELD
    for held_for, body in zip((41, 42, 43), bodies, strict=True):
        env.replies.try_put(Kind.SEND, proto.assoc_id, 9, flags, held_for, body)
    env.server._on_replies(env.server.links[0])
    assert tr.take_pdus() == []  # 41 (on the wire) is not answered yet
    for answered, body in zip((41, 42, 43), bodies, strict=True):
        rsp = encode_message(CStoreRSP(message_id_being_responded_to=answered, status=0,
                                       affected_sop_class_uid=CT,
                                       affected_sop_instance_uid="1.2"))
        proto.data_received(pdata([PDV(3, True, True, rsp)]))
        assert [b for _, b in tr.take_pdus()] == [body[6:]]
