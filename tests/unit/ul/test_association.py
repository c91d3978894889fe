"""The sans-IO Association (PS3.8 §9.2), both roles, run back to back through ``UlPair``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from appliance.errors import LocalULError, RemoteULError
from appliance.ul.association import (
    NEED_DATA,
    Abort,
    AbortReceived,
    AcceptAssociation,
    AssociateAccepted,
    AssociateRejected,
    AssociateRequested,
    Association,
    ConnectionClosed,
    PDataReceived,
    RejectAssociation,
    ReleaseConfirmed,
    ReleaseRequested,
    ReplyRelease,
    RequestAssociation,
    RequestRelease,
    Role,
    SendPData,
    ULLimits,
)
from appliance.ul.fsm import Evt, State, transition
from appliance.ul.pdu import (
    PDV,
    AbortPDU,
    AssociateRJ,
    PDataTF,
    ReleaseRP,
    ReleaseRQ,
    decode_pdu,
    encode_pdu,
    encode_pdv_header,
)
from tests.helpers.ulpair import UlPair, drain, make_ac, make_rq

S = State


def _decode(data: bytes) -> object:
    assert len(data) >= 6 and int.from_bytes(data[2:6], "big") == len(data) - 6
    return decode_pdu(data[0], memoryview(data)[6:])


def _pdvs(n: int = 100, ctx: int = 1) -> list[PDV]:
    return [PDV(ctx, True, True, bytes(range(256)) * (n // 256) + b"c" * (n % 256))]


def test_full_association_pdata_both_ways_and_release() -> None:
    pair = UlPair(now=5.0)
    rq, ac = pair.requestor, pair.acceptor
    assert (rq.state, ac.state) == (S.STA1_IDLE, S.STA2_TRANSPORT_OPEN)
    assert ac.deadline == 35.0 and rq.deadline is None  # AE-5 started ARTIM on the acceptor

    ac_events, rq_events = pair.associate()
    assert [type(e) for e in ac_events] == [AssociateRequested]
    assert isinstance(ac_events[0], AssociateRequested)
    assert ac_events[0].rq == make_rq() and ac_events[0].provider_rejection is None
    assert rq_events == [AssociateAccepted(make_ac(make_rq()))]
    assert rq.state is ac.state is S.STA6_ESTABLISHED
    assert ac.deadline is None  # AE-6 stopped ARTIM
    assert rq.peer_max_pdu == ac.peer_max_pdu == 1_048_576

    pdvs = _pdvs(1000) + [PDV(1, False, True, b"\x00" * 10)]
    assert pair.send(rq, SendPData(pdvs)) == [PDataReceived(tuple(pdvs))]
    back = [PDV(3, True, True, b"rsp")]
    assert pair.send(ac, SendPData(back)) == [PDataReceived(tuple(back))]

    assert pair.send(rq, RequestRelease()) == [ReleaseRequested()]
    assert rq.state is S.STA7_AWAITING_RELEASE_RP
    assert ac.state is S.STA8_AWAITING_LOCAL_RELEASE_RESPONSE
    assert pair.send(ac, ReplyRelease()) == [ReleaseConfirmed()]
    assert rq.state is S.STA1_IDLE and rq.close_requested
    assert ac.state is S.STA13_AWAITING_CLOSE and ac.deadline == 35.0 and not ac.close_requested
    # The requestor closes the transport (AR-3); the acceptor sees Evt17 -> AR-5.
    ac.receive_data(b"", now=6.0)
    assert drain(ac) == [ConnectionClosed()]
    assert ac.state is S.STA1_IDLE and ac.deadline is None and ac.close_requested
    assert ac.next_event() == ConnectionClosed()  # idempotent, h11 style


def test_byte_by_byte_delivery_gives_the_same_events() -> None:
    pair = UlPair()
    rq, ac = pair.requestor, pair.acceptor
    rq.send(RequestAssociation(make_rq()))
    events = pair.deliver(ac, rq.connection_established(), byte_by_byte=True)
    assert [type(e) for e in events] == [AssociateRequested]
    assert pair.send(ac, AcceptAssociation(make_ac(make_rq())), byte_by_byte=True) == [
        AssociateAccepted(make_ac(make_rq()))
    ]
    pdvs = _pdvs(300)
    assert pair.send(rq, SendPData(pdvs), byte_by_byte=True) == [PDataReceived(tuple(pdvs))]
    assert pair.send(rq, RequestRelease(), byte_by_byte=True) == [ReleaseRequested()]
    assert pair.send(ac, ReplyRelease(), byte_by_byte=True) == [ReleaseConfirmed()]


def test_several_pdus_in_one_read_then_peer_close() -> None:
    pair = UlPair()
    pair.associate()
    rq, ac = pair.requestor, pair.acceptor
    data = rq.send(SendPData(_pdvs(10))) + rq.send(SendPData(_pdvs(20))) + rq.send(Abort())
    ac.receive_data(data)
    ac.receive_data(b"")
    events = drain(ac)
    assert events == [
        PDataReceived(tuple(_pdvs(10))),
        PDataReceived(tuple(_pdvs(20))),
        AbortReceived(0, 0),
        ConnectionClosed(),
    ]


def test_reject() -> None:
    pair = UlPair(now=1.0)
    rq, ac = pair.requestor, pair.acceptor
    rq.send(RequestAssociation(make_rq()))
    pair.deliver(ac, rq.connection_established())
    rj = AssociateRJ(1, 1, 3)
    assert pair.send(ac, RejectAssociation(rj)) == [AssociateRejected(rj)]
    assert rq.state is S.STA1_IDLE and rq.close_requested  # AE-4
    assert ac.state is S.STA13_AWAITING_CLOSE and ac.deadline == 31.0  # AE-8


@pytest.mark.parametrize("aborter", ["requestor", "acceptor"])
def test_abort_both_ways(aborter: str) -> None:
    pair = UlPair(now=2.0)
    pair.associate()
    side = getattr(pair, aborter)
    peer = pair.peer_of(side)
    assert pair.send(side, Abort(source=0, reason=0)) == [AbortReceived(0, 0)]
    assert side.state is S.STA13_AWAITING_CLOSE and side.deadline == 32.0  # AA-1
    assert peer.state is S.STA1_IDLE and peer.close_requested  # AA-3
    assert _decode(pair.wire[-1]) == AbortPDU(0, 0)


def _collide(pair: UlPair) -> None:
    pair.associate()
    rq, ac = pair.requestor, pair.acceptor
    from_rq, from_ac = rq.send(RequestRelease()), ac.send(RequestRelease())
    assert pair.deliver(rq, from_ac) == [ReleaseRequested()]  # AR-8
    assert pair.deliver(ac, from_rq) == [ReleaseRequested()]  # AR-8


def test_release_collision() -> None:
    pair = UlPair(now=3.0)
    _collide(pair)
    rq, ac = pair.requestor, pair.acceptor
    assert rq.state is S.STA9_COLLISION_REQUESTOR_AWAITING_LOCAL_RESPONSE
    assert ac.state is S.STA10_COLLISION_ACCEPTOR_AWAITING_RELEASE_RP
    with pytest.raises(LocalULError):  # Sta10 + Evt14 is empty: the acceptor waits first
        ac.send(ReplyRelease())
    assert pair.send(rq, ReplyRelease()) == [ReleaseConfirmed()]  # AR-9, then AR-10
    assert rq.state is S.STA11_COLLISION_REQUESTOR_AWAITING_RELEASE_RP
    assert ac.state is S.STA12_COLLISION_ACCEPTOR_AWAITING_LOCAL_RESPONSE
    assert pair.send(ac, ReplyRelease()) == [ReleaseConfirmed()]  # AR-4, then AR-3
    assert rq.state is S.STA1_IDLE and rq.close_requested
    assert ac.state is S.STA13_AWAITING_CLOSE and ac.deadline == 33.0
    rq_events, ac_events = pair.close_transport()
    assert ac_events == [ConnectionClosed()] and ac.state is S.STA1_IDLE


def test_pdata_continues_while_the_peer_waits_for_release_reply() -> None:
    pair = UlPair()
    pair.associate()
    pair.send(pair.requestor, RequestRelease())
    # AR-7 on the acceptor (Sta8), AR-6 on the requestor (Sta7).
    assert pair.send(pair.acceptor, SendPData(_pdvs(5))) == [PDataReceived(tuple(_pdvs(5)))]
    assert pair.requestor.state is S.STA7_AWAITING_RELEASE_RP
    with pytest.raises(LocalULError):  # Sta7 + Evt9 is empty
        pair.requestor.send(SendPData(_pdvs(5)))


def test_artim_expiry_in_sta2() -> None:
    ac = Association(Role.ACCEPTOR, ULLimits(artim_timeout_s=10.0), now=100.0)
    assert ac.deadline == 110.0
    ac.timer_expired(109.9)
    assert ac.state is S.STA2_TRANSPORT_OPEN and not ac.close_requested
    ac.timer_expired(110.0)
    assert ac.state is S.STA1_IDLE and ac.close_requested and ac.deadline is None  # AA-2


def test_artim_expiry_in_sta13() -> None:
    pair = UlPair(ac_limits=ULLimits(artim_timeout_s=4.0), now=50.0)
    pair.associate()
    pair.send(pair.requestor, RequestRelease())
    pair.now = 51.0
    pair.send(pair.acceptor, ReplyRelease())
    ac = pair.acceptor
    assert ac.state is S.STA13_AWAITING_CLOSE and ac.deadline == 55.0
    ac.timer_expired(54.0)
    assert ac.state is S.STA13_AWAITING_CLOSE
    ac.timer_expired(56.0)
    assert ac.state is S.STA1_IDLE and ac.close_requested and ac.deadline is None


# ---- every received PDU type in every state reachable on each side ----------------------


def _to_sta3(p: UlPair) -> Association:
    p.requestor.send(RequestAssociation(make_rq()))
    p.deliver(p.acceptor, p.requestor.connection_established())
    return p.acceptor


def _to_sta5(p: UlPair) -> Association:
    p.requestor.send(RequestAssociation(make_rq()))
    p.requestor.connection_established()
    return p.requestor


def _to_sta6(role: str) -> Callable[[UlPair], Association]:
    def go(p: UlPair) -> Association:
        p.associate()
        return getattr(p, role)  # type: ignore[no-any-return]

    return go


def _to_sta7(p: UlPair) -> Association:
    p.associate()
    p.requestor.send(RequestRelease())
    return p.requestor


def _to_sta8(p: UlPair) -> Association:
    p.associate()
    p.send(p.requestor, RequestRelease())
    return p.acceptor


def _to_sta9(p: UlPair) -> Association:
    _collide(p)
    return p.requestor


def _to_sta10(p: UlPair) -> Association:
    _collide(p)
    return p.acceptor


def _to_sta11(p: UlPair) -> Association:
    _collide(p)
    p.requestor.send(ReplyRelease())
    return p.requestor


def _to_sta12(p: UlPair) -> Association:
    _collide(p)
    p.send(p.requestor, ReplyRelease())
    return p.acceptor


def _to_sta13(p: UlPair) -> Association:
    _to_sta3(p)
    p.acceptor.send(RejectAssociation(AssociateRJ(1, 1, 1)))
    return p.acceptor


SETUPS: dict[str, tuple[State, Callable[[UlPair], Association]]] = {
    "Sta2-acceptor": (S.STA2_TRANSPORT_OPEN, lambda p: p.acceptor),
    "Sta3-acceptor": (S.STA3_AWAITING_LOCAL_ASSOCIATE_RESPONSE, _to_sta3),
    "Sta5-requestor": (S.STA5_AWAITING_ASSOCIATE_AC_OR_RJ, _to_sta5),
    "Sta6-requestor": (S.STA6_ESTABLISHED, _to_sta6("requestor")),
    "Sta6-acceptor": (S.STA6_ESTABLISHED, _to_sta6("acceptor")),
    "Sta7-requestor": (S.STA7_AWAITING_RELEASE_RP, _to_sta7),
    "Sta8-acceptor": (S.STA8_AWAITING_LOCAL_RELEASE_RESPONSE, _to_sta8),
    "Sta9-requestor": (S.STA9_COLLISION_REQUESTOR_AWAITING_LOCAL_RESPONSE, _to_sta9),
    "Sta10-acceptor": (S.STA10_COLLISION_ACCEPTOR_AWAITING_RELEASE_RP, _to_sta10),
    "Sta11-requestor": (S.STA11_COLLISION_REQUESTOR_AWAITING_RELEASE_RP, _to_sta11),
    "Sta12-acceptor": (S.STA12_COLLISION_ACCEPTOR_AWAITING_LOCAL_RESPONSE, _to_sta12),
    "Sta13-acceptor": (S.STA13_AWAITING_CLOSE, _to_sta13),
}

RECEIVED: dict[str, tuple[Evt, bytes]] = {
    "RQ": (Evt.EVT6_ASSOCIATE_RQ_RECEIVED, encode_pdu(make_rq())),
    "AC": (Evt.EVT3_ASSOCIATE_AC_RECEIVED, encode_pdu(make_ac(make_rq()))),
    "RJ": (Evt.EVT4_ASSOCIATE_RJ_RECEIVED, encode_pdu(AssociateRJ(1, 1, 1))),
    "PDATA": (Evt.EVT10_PDATA_TF_RECEIVED, encode_pdu(PDataTF((PDV(1, True, True, b"x"),)))),
    "RELEASE-RQ": (Evt.EVT12_RELEASE_RQ_RECEIVED, encode_pdu(ReleaseRQ())),
    "RELEASE-RP": (Evt.EVT13_RELEASE_RP_RECEIVED, encode_pdu(ReleaseRP())),
    "ABORT": (Evt.EVT16_ABORT_RECEIVED, encode_pdu(AbortPDU(2, 5))),
}

EXPECTED_EVENT = {
    "AE-3": AssociateAccepted,
    "AE-4": AssociateRejected,
    "AE-6": AssociateRequested,
    "DT-2": PDataReceived,
    "AR-6": PDataReceived,
    "AR-2": ReleaseRequested,
    "AR-8": ReleaseRequested,
    "AR-3": ReleaseConfirmed,
    "AR-10": ReleaseConfirmed,
    "AA-2": AbortReceived,
    "AA-3": AbortReceived,
}


@pytest.mark.parametrize("pdu", list(RECEIVED))
@pytest.mark.parametrize("setup", list(SETUPS))
def test_received_pdu_follows_table_9_10(setup: str, pdu: str) -> None:
    pair = UlPair(now=7.0)
    state, go = SETUPS[setup]
    side = go(pair)
    assert side.state is state
    evt, data = RECEIVED[pdu]
    requestor = side.role is Role.REQUESTOR
    action, nxt = transition(state, evt, requestor=requestor)
    side.receive_data(data, now=8.0)
    if action in ("AA-1", "AA-7", "AA-8"):
        with pytest.raises(RemoteULError) as info:
            side.next_event()
        assert info.value.abort_reason == 2  # unexpected PDU
        assert side.state is S.STA13_AWAITING_CLOSE and side.deadline is not None
        # The caller completes AA-8 by sending the A-ABORT; legal right after the error.
        assert _decode(side.send(Abort(2, info.value.abort_reason))) == AbortPDU(2, 2)
        assert side.send(Abort(2, 2)) == b""  # owed once only
        return
    events = drain(side)
    if action == "AA-6":
        assert events == [] and side.state is S.STA13_AWAITING_CLOSE
        return
    assert [type(e) for e in events] == [EXPECTED_EVENT[action]], action
    assert side.state is nxt
    if nxt is S.STA1_IDLE:
        assert side.close_requested


def test_malformed_pdu_aborts_with_the_codec_reason() -> None:
    pair = UlPair()
    pair.associate()
    ac = pair.acceptor
    ac.receive_data(b"\x05\x00\x00\x00\x00\x03\x00\x00\x00", now=1.0)  # A-RELEASE-RQ, length 3
    with pytest.raises(RemoteULError) as info:
        ac.next_event()
    assert info.value.abort_reason == 6
    assert ac.state is S.STA13_AWAITING_CLOSE and ac.deadline == 31.0
    assert _decode(ac.send(Abort(2, info.value.abort_reason))) == AbortPDU(2, 6)


def test_unknown_pdu_type_aborts_with_reason_1_and_stops_reading() -> None:
    pair = UlPair()
    ac = pair.acceptor
    ac.receive_data(b"\x09\x00\x00\x00\x00\x00")
    with pytest.raises(RemoteULError) as info:
        ac.next_event()
    assert info.value.abort_reason == 1
    assert ac.state is S.STA13_AWAITING_CLOSE  # AA-1 in Sta2
    assert _decode(ac.send(Abort(2, 1))) == AbortPDU(2, 1)
    ac.receive_data(encode_pdu(make_rq()))  # framing is lost: the rest is not parsed
    assert ac.next_event() is NEED_DATA
    ac.receive_data(b"")
    assert ac.next_event() == ConnectionClosed() and ac.state is S.STA1_IDLE  # AR-5


def test_pdata_larger_than_our_maximum_aborts_with_reason_6() -> None:
    pair = UlPair(ac_limits=ULLimits(max_pdu_bytes=4096))
    pair.associate()
    ac = pair.acceptor
    big = encode_pdu(PDataTF((PDV(1, False, True, b"\x00" * 4096),)))  # body 4102 > 4096
    ac.receive_data(big[:6])  # rejected on the header alone, before the body arrives
    with pytest.raises(RemoteULError) as info:
        ac.next_event()
    assert info.value.abort_reason == 6
    assert _decode(ac.send(Abort(2, 6))) == AbortPDU(2, 6)
    # Exactly the maximum is fine on a fresh association.
    pair = UlPair(ac_limits=ULLimits(max_pdu_bytes=4096))
    pair.associate()
    pdvs = [PDV(1, False, True, b"\x00" * 4090)]
    assert pair.send(pair.requestor, SendPData(pdvs)) == [PDataReceived(tuple(pdvs))]


def test_sending_more_than_the_peer_maximum_is_our_bug() -> None:
    pair = UlPair(ac_limits=ULLimits(max_pdu_bytes=4096))
    pair.associate()
    rq = pair.requestor
    assert rq.peer_max_pdu == 4096
    with pytest.raises(LocalULError):
        rq.send(SendPData([PDV(1, False, True, b"\x00" * 4091)]))
    with pytest.raises(LocalULError):
        rq.send_pdata_items(encode_pdv_header(1, False, True, 4091) + b"\x00" * 4091)
    assert rq.state is S.STA6_ESTABLISHED


def test_send_pdata_items_frames_preencoded_items() -> None:
    pair = UlPair()
    pair.associate()
    rq, ac = pair.requestor, pair.acceptor
    data_item = memoryview(b"\x00\x00\x00\x06\x01\x02data")  # length 6, ctx 1, last data
    items = [encode_pdv_header(1, True, True, 3) + b"cmd", data_item]
    buffers = rq.send_pdata_items(items)
    assert buffers[1:] == items and len(buffers[0]) == 6
    events = pair.deliver(ac, b"".join(bytes(b) for b in buffers))
    assert events == [PDataReceived((PDV(1, True, True, b"cmd"), PDV(1, False, True, b"data")))]
    pair.send(rq, RequestRelease())
    with pytest.raises(LocalULError):  # Sta7: Evt9 is empty
        rq.send_pdata_items(items)
    assert len(ac.send_pdata_items(items[0])) == 2  # Sta8: AR-7


def test_provider_rejects_too_many_presentation_contexts() -> None:
    pair = UlPair(ac_limits=ULLimits(max_presentation_contexts=3))
    rq = make_rq(n_contexts=4)
    pair.requestor.send(RequestAssociation(rq))
    (event,) = pair.deliver(pair.acceptor, pair.requestor.connection_established())
    assert isinstance(event, AssociateRequested)
    assert event.provider_rejection == AssociateRJ(1, 3, 2)  # permanent, presentation, local limit
    with pytest.raises(LocalULError):
        pair.acceptor.send(AcceptAssociation(make_ac(rq)))
    assert pair.send(pair.acceptor, RejectAssociation(event.provider_rejection)) == [
        AssociateRejected(AssociateRJ(1, 3, 2))
    ]


def test_provider_rejects_unsupported_protocol_version() -> None:
    ac = Association(Role.ACCEPTOR)
    ac.receive_data(encode_pdu(replace(make_rq(), protocol_version=2)))
    (event,) = drain(ac)
    assert isinstance(event, AssociateRequested)
    assert event.provider_rejection == AssociateRJ(1, 2, 2)  # ACSE provider, protocol version


def test_illegal_local_commands_raise_and_change_nothing() -> None:
    ac = Association(Role.ACCEPTOR)
    with pytest.raises(LocalULError):
        ac.send(RequestAssociation(make_rq()))  # Sta2 + Evt1 is empty
    with pytest.raises(LocalULError):
        ac.send(SendPData(_pdvs(1)))
    rq = Association(Role.REQUESTOR)
    with pytest.raises(LocalULError):
        rq.connection_established()  # Sta1 + Evt2 is empty
    with pytest.raises(LocalULError):  # advertising more than we accept
        rq.send(RequestAssociation(make_rq(max_pdu=2_000_000)))
    assert (ac.state, rq.state) == (S.STA2_TRANSPORT_OPEN, S.STA1_IDLE)
    rq.send(RequestAssociation(make_rq()))
    with pytest.raises(LocalULError):  # Sta4: no transport yet
        rq.receive_data(b"\x01")


def test_failed_connect_in_sta4_is_aa_4() -> None:
    rq = Association(Role.REQUESTOR)
    rq.send(RequestAssociation(make_rq()))
    rq.receive_data(b"")  # the transport connect failed: Evt17
    assert drain(rq) == [ConnectionClosed()]
    assert rq.state is S.STA1_IDLE and rq.close_requested


def test_abort_is_always_accepted() -> None:
    assert Association(Role.REQUESTOR).send(Abort()) == b""  # Sta1: nothing to abort
    rq = Association(Role.REQUESTOR)
    rq.send(RequestAssociation(make_rq()))
    assert rq.send(Abort()) == b"" and rq.state is S.STA1_IDLE and rq.close_requested  # AA-2
    ac = Association(Role.ACCEPTOR, now=1.0)
    assert _decode(ac.send(Abort(2, 0), now=2.0)) == AbortPDU(2, 0)  # Sta2: as AA-1
    assert ac.state is S.STA13_AWAITING_CLOSE and ac.deadline == 32.0
    assert ac.send(Abort()) == b""  # Sta13, nothing owed


def test_peer_close_in_sta6_is_a_provider_abort() -> None:
    pair = UlPair()
    pair.associate()
    pair.acceptor.receive_data(b"")
    assert drain(pair.acceptor) == [ConnectionClosed()]  # AA-4
    assert pair.acceptor.state is S.STA1_IDLE
    with pytest.raises(LocalULError):
        pair.acceptor.receive_data(b"more")


def test_an_associate_rq_announcing_more_than_1_mib_is_aborted_at_its_header() -> None:
    """Connections still sending their A-ASSOCIATE-RQ are not evicted, so what each may buffer
    is bounded by the header alone: 1 MiB for any PDU but P-DATA-TF (README limits table)."""
    pair = UlPair()
    ac = pair.acceptor
    ac.receive_data(b"\x01\x00" + (1024 * 1024 + 1).to_bytes(4, "big"), now=1.0)
    with pytest.raises(RemoteULError) as info:
        ac.next_event()
    assert info.value.abort_reason == 6
    pair2 = UlPair()
    pair2.acceptor.receive_data(b"\x01\x00" + (1024 * 1024).to_bytes(4, "big"), now=1.0)
    assert pair2.acceptor.next_event() is NEED_DATA  # at the limit: buffered, waiting for it
