"""The acceptor's C-ECHO fast path (DicomProtocol._echo_fast): same answers as the slow path,
and every case it must not take goes the slow way."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appliance.acceptor.echo import EchoTemplate
from appliance.acceptor.protocol import DicomProtocol
from appliance.config import load
from appliance.dimse.messages import CEchoRQ, CEchoRSP, CStoreRQ, decode_message, encode_message
from appliance.ipc.kinds import Kind
from appliance.ul.pdu import PDV
from tests.unit.acceptor.test_protocol import (
    CT,
    VERIFICATION,
    Env,
    MockTransport,
    associate_rq,
    pdata,
)


@pytest.fixture
def env() -> Iterator[Env]:
    e = Env(load(None, {"network": {"ae_title": "PACS"}}))
    yield e
    e.close()


def _echo(message_id: int, context_id: int = 1) -> bytes:
    return pdata([PDV(context_id, True, True, encode_message(CEchoRQ(message_id=message_id)))])


def _answers(tr: MockTransport) -> list[tuple[int, int]]:
    out = []
    for ptype, body in tr.take_pdus():
        assert ptype == 0x04 and body[5] == 0x03  # P-DATA-TF, one PDV: command, last
        rsp = decode_message(body[6:])
        assert isinstance(rsp, CEchoRSP) and rsp.affected_sop_class_uid == VERIFICATION
        out.append((rsp.message_id_being_responded_to, rsp.status))
    return out


def _associated(env: Env) -> tuple[DicomProtocol, MockTransport]:
    proto, tr = env.connect()
    proto.data_received(associate_rq([(1, VERIFICATION), (3, CT)]))
    tr.take_pdus()
    env.job_records()
    return proto, tr


def test_repeated_echoes_answered_with_their_message_ids(env: Env) -> None:
    proto, tr = _associated(env)
    proto.data_received(_echo(6))
    first = bytes(tr.written)
    assert _answers(tr) == [(6, 0)]
    assert proto._echo is not None
    for msg_id in (7, 0x1234, 65535, 6):
        proto.data_received(_echo(msg_id))
        if msg_id == 6:
            assert bytes(tr.written) == first  # byte for byte what the slow path wrote
        assert _answers(tr) == [(msg_id, 0)]
    assert env.job_records() == []


def test_what_the_fast_path_must_not_take(env: Env) -> None:
    proto, tr = _associated(env)
    proto.data_received(_echo(1))
    assert _answers(tr) == [(1, 0)]
    # split across two reads: the core reassembles it
    whole = _echo(2)
    proto.data_received(whole[:5])
    proto.data_received(whole[5:])
    assert _answers(tr) == [(2, 0)]
    # two echoes in one read
    proto.data_received(_echo(3) + _echo(4))
    assert _answers(tr) == [(3, 0), (4, 0)]
    # an echo on another (storage) context goes to the worker, as before
    proto.data_received(_echo(5, context_id=3))
    assert tr.take_pdus() == []
    [(kind, msg_id, _, aux, _)] = env.job_records()
    assert (kind, msg_id, aux) == (Kind.COMMAND, 5, 3)


def test_echo_during_a_store_goes_to_the_worker(env: Env) -> None:
    proto, tr = _associated(env)
    proto.data_received(_echo(1))
    assert _answers(tr) == [(1, 0)]
    store = encode_message(CStoreRQ(message_id=2, affected_sop_class_uid=CT,
                                    affected_sop_instance_uid="1.2.3"))
    proto.data_received(pdata([PDV(3, True, True, store)]))
    proto.data_received(pdata([PDV(3, False, True, b"\x08\x00\x18\x00UI\x00\x00")]))
    env.job_records()
    # C-STORE 2 is in flight: the echo is not answered ahead of it by the acceptor
    proto.data_received(_echo(3))
    assert tr.take_pdus() == []
    [(kind, msg_id, _, _, _)] = env.job_records()
    assert (kind, msg_id) == (Kind.COMMAND, 3)


def test_template_only_from_one_pdu_holding_one_whole_command() -> None:
    """EchoTemplate.learn refuses what answer() could not patch safely."""
    command = encode_message(CEchoRQ(message_id=9))
    request = _echo(9)
    rsp = [b"\x04\x00" + bytes(4) + encode_message(CEchoRSP(9, 0, VERIFICATION))]
    good = EchoTemplate.learn(request, command, 1, rsp)
    assert good is not None
    assert good.answer(_echo(9)) == rsp[0]
    patched = good.answer(_echo(0x0102))
    assert patched is not None and patched != rsp[0]
    assert decode_message(patched[6:]).message_id_being_responded_to == 0x0102
    assert good.answer(_echo(9, context_id=3)) is None  # another context: not the same bytes
    assert good.answer(request + b"\x00") is None
    assert EchoTemplate.learn(request, command, 3, rsp) is None  # not on this context
    assert EchoTemplate.learn(request, command, 1, rsp * 2) is None  # answer in two PDUs
    assert EchoTemplate.learn(request + request, command, 1, rsp) is None  # two PDUs read
    split = pdata([PDV(1, True, False, command[:10]), PDV(1, True, True, command[10:])])
    assert EchoTemplate.learn(split, command, 1, rsp) is None  # command in two fragments
