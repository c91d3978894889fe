"""Hypothesis drives a requestor/acceptor pair with random legal and illegal commands and
PDUs; PS3.8 Table 9-10 (``appliance.ul.fsm.transition``) is the model each step is checked
against, with the deviations the Association documents for Abort in blank cells."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from appliance.errors import LocalULError, RemoteULError
from appliance.ul.association import (
    Abort,
    AbortReceived,
    AcceptAssociation,
    AssociateAccepted,
    AssociateRejected,
    AssociateRequested,
    Association,
    Command,
    ConnectionClosed,
    PDataReceived,
    RejectAssociation,
    ReleaseConfirmed,
    ReleaseRequested,
    ReplyRelease,
    RequestAssociation,
    RequestRelease,
    SendPData,
)
from appliance.ul.fsm import INVALID, Evt, State, transition
from appliance.ul.pdu import PDV, AbortPDU, AssociateRJ, PDataTF, ReleaseRP, ReleaseRQ, encode_pdu
from tests.helpers.ulpair import UlPair, drain, make_ac, make_rq

SIDES = ("requestor", "acceptor")
STA1, STA2, STA4, STA13 = State.STA1_IDLE, State(2), State(4), State.STA13_AWAITING_CLOSE

COMMANDS: dict[str, tuple[Evt, Command | None]] = {
    "associate": (Evt.EVT1_LOCAL_ASSOCIATE_REQUEST, RequestAssociation(make_rq())),
    "connected": (Evt.EVT2_TRANSPORT_CONNECT_CONFIRM, None),
    "accept": (Evt.EVT7_LOCAL_ASSOCIATE_ACCEPT, AcceptAssociation(make_ac(make_rq()))),
    "reject": (Evt.EVT8_LOCAL_ASSOCIATE_REJECT, RejectAssociation(AssociateRJ(1, 1, 1))),
    "pdata": (Evt.EVT9_LOCAL_PDATA_REQUEST, SendPData([PDV(1, True, True, b"cmd")])),
    "release": (Evt.EVT11_LOCAL_RELEASE_REQUEST, RequestRelease()),
    "reply": (Evt.EVT14_LOCAL_RELEASE_RESPONSE, ReplyRelease()),
    "abort": (Evt.EVT15_LOCAL_ABORT_REQUEST, Abort(0, 0)),
}

# PDU type byte each sending action puts on the wire (b"" for the others).
SENT_TYPE = {"AE-2": 1, "AE-7": 2, "AE-8": 3, "DT-1": 4, "AR-7": 4, "AR-1": 5, "AR-4": 6,
             "AR-9": 6, "AA-1": 7}  # fmt: skip

PDUS: dict[int, bytes] = {
    1: encode_pdu(make_rq()),
    2: encode_pdu(make_ac(make_rq())),
    3: encode_pdu(AssociateRJ(1, 1, 1)),
    4: encode_pdu(PDataTF((PDV(1, False, True, b"data"),))),
    5: encode_pdu(ReleaseRQ()),
    6: encode_pdu(ReleaseRP()),
    7: encode_pdu(AbortPDU(2, 5)),
    0x0B: b"\x0b\x00\x00\x00\x00\x00",  # unknown PDU type: Evt19, framing lost
}
RECEIVED_EVT = {1: Evt(6), 2: Evt(3), 3: Evt(4), 4: Evt(10), 5: Evt(12), 6: Evt(13), 7: Evt(16)}

EVENT_OF = {"AE-3": AssociateAccepted, "AE-4": AssociateRejected, "AE-6": AssociateRequested,
            "DT-2": PDataReceived, "AR-6": PDataReceived, "AR-2": ReleaseRequested,
            "AR-8": ReleaseRequested, "AR-3": ReleaseConfirmed, "AR-10": ReleaseConfirmed,
            "AA-2": AbortReceived, "AA-3": AbortReceived}  # fmt: skip


@dataclass
class Model:
    state: State
    owed: bool = False  # an A-ABORT is owed after a RemoteULError
    dead: bool = False  # input framing lost


class ULStateMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._reset("fresh")

    def _reset(self, start: str) -> None:
        self.pair = UlPair()
        self.now = 0.0
        self.model = {"requestor": Model(STA1), "acceptor": Model(STA2)}
        self.queue: dict[str, list[bytes]] = {"requestor": [], "acceptor": []}  # to that side
        self.closed = False
        self._start(start)

    @initialize(start=st.sampled_from(["fresh", "connected", "established", "established"]))
    def start(self, start: str) -> None:
        """Most runs start further along, so the release and collision states get explored."""
        self._reset(start)

    def _start(self, start: str) -> None:
        if start == "established":
            self.pair.associate()
            self.model["requestor"].state = self.model["acceptor"].state = State(6)
        elif start == "connected":
            rq = self.pair.requestor
            rq.send(RequestAssociation(make_rq()))
            self.queue["acceptor"].append(rq.connection_established())
            self.model["requestor"].state = State(5)

    def assoc(self, side: str) -> Association:
        return getattr(self.pair, side)  # type: ignore[no-any-return]

    def other(self, side: str) -> str:
        return "acceptor" if side == "requestor" else "requestor"

    # ---- local primitives ---------------------------------------------------------------

    @precondition(lambda self: not self.closed)
    @rule(side=st.sampled_from(SIDES), legal=st.integers(0, 3), flush=st.booleans(), data=st.data())
    def command(self, side: str, legal: int, flush: bool, data: st.DataObject) -> None:
        """Mostly a command the table allows now (else runs rarely get past Sta6), sometimes any
        command; ``flush`` delivers the resulting PDU at once, otherwise it stays in flight."""
        if self.closed:
            return
        model = self.model[side]
        names = sorted(COMMANDS)
        if legal:
            allowed = [
                n
                for n in names
                if transition(model.state, COMMANDS[n][0], requestor=side == "requestor")[0]
                not in (INVALID, "AE-1" if side == "acceptor" else "")
                and n != "abort"  # legal everywhere; it would end most runs early
            ]
            names = allowed or names
        self._command(side, data.draw(st.sampled_from(names)))
        if flush:
            self.deliver(self.other(side))

    def _command(self, side: str, name: str) -> None:
        assoc, model = self.assoc(side), self.model[side]
        evt, cmd = COMMANDS[name]
        action, nxt = transition(model.state, evt, requestor=side == "requestor")
        if action == INVALID and name == "abort":  # documented deviations
            if model.state is STA2 or (model.state is STA13 and model.owed):
                action, nxt = "AA-1", STA13
            else:
                action, nxt = "NONE", model.state
        illegal = action == INVALID or (action == "AE-1" and side == "acceptor")
        before = assoc.state
        try:
            if cmd is None:
                out = assoc.connection_established(self.now)
            else:
                out = assoc.send(cmd, self.now)
        except LocalULError:
            assert illegal, (name, model.state)
            assert assoc.state is before
            return
        assert not illegal, (name, model.state)
        assert assoc.state is nxt, (name, action)
        if action in SENT_TYPE:
            assert out[0] == SENT_TYPE[action], action
            self.queue[self.other(side)].append(out)
        else:
            assert out == b""
        if action == "AA-1":
            model.owed = False
        model.state = nxt

    @precondition(
        lambda self: not self.closed and all(self.model[s].state is State(6) for s in SIDES)
    )
    @rule()
    def release_collision(self) -> None:
        """Both users ask to release at once (PS3.8 §9.2, Sta9..Sta12); the PDUs cross."""
        self._command("requestor", "release")
        self._command("acceptor", "release")

    # ---- the wire -----------------------------------------------------------------------

    def _receive(self, side: str, data: bytes, pdu_type: int) -> None:
        assoc, model = self.assoc(side), self.model[side]
        if model.state is STA4:  # no transport yet: the bytes wait in the queue
            return
        assoc.receive_data(data, self.now)
        if model.state is STA1 or model.dead:
            assert drain(assoc) == []
            return
        evt = RECEIVED_EVT.get(pdu_type, Evt.EVT19_INVALID_PDU_RECEIVED)
        action, nxt = transition(model.state, evt, requestor=side == "requestor")
        if action in ("AA-1", "AA-7", "AA-8"):
            with pytest.raises(RemoteULError) as info:
                assoc.next_event()
            assert info.value.abort_reason == (2 if evt is not Evt(19) else 1)
            assert assoc.state is STA13
            model.state, model.dead = STA13, evt is Evt(19)
            out = assoc.send(Abort(2, info.value.abort_reason), self.now)
            assert out[0] == 7
            self.queue[self.other(side)].append(out)
            model.owed = False
            return
        events = drain(assoc)
        if action == "AA-6":
            assert events == []
        else:
            assert [type(e) for e in events] == [EVENT_OF[action]], action
        assert assoc.state is nxt, action
        if nxt is STA1:
            assert assoc.close_requested
        model.state = nxt

    def _deliverable(self) -> list[str]:
        return [s for s in SIDES if self.queue[s] and self.model[s].state is not STA4]

    @precondition(lambda self: not self.closed and self._deliverable())
    @rule(data=st.data())
    def deliver_one(self, data: st.DataObject) -> None:
        self.deliver(data.draw(st.sampled_from(self._deliverable())))

    def deliver(self, side: str) -> None:
        if self.closed or not self.queue[side] or self.model[side].state is STA4:
            return
        data = self.queue[side].pop(0)
        self._receive(side, data, data[0])

    @precondition(lambda self: not self.closed)
    @rule(side=st.sampled_from(SIDES), pdu_type=st.sampled_from(sorted(PDUS)))
    def inject(self, side: str, pdu_type: int) -> None:
        """A misbehaving peer: any PDU, in any state."""
        self._receive(side, PDUS[pdu_type], pdu_type)

    # ---- time and transport -------------------------------------------------------------

    @rule(side=st.sampled_from(SIDES), dt=st.sampled_from([1.0, 29.0, 31.0]))
    def time_passes(self, side: str, dt: float) -> None:
        self.now += dt
        assoc, model = self.assoc(side), self.model[side]
        expired = assoc.deadline is not None and self.now >= assoc.deadline
        assoc.timer_expired(self.now)
        if expired:
            action, nxt = transition(model.state, Evt.EVT18_ARTIM_EXPIRED, requestor=True)
            assert action == "AA-2"
            assert assoc.state is nxt and assoc.close_requested and assoc.deadline is None
            model.state = nxt
        else:
            assert assoc.state is model.state

    @precondition(lambda self: not self.closed)
    @rule(dice=st.integers(0, 4))
    def transport_closed(self, dice: int) -> None:
        if self.closed or dice:  # rarely: it ends the interesting part of a run
            return
        self.closed = True
        for side in SIDES:
            assoc, model = self.assoc(side), self.model[side]
            action, _ = transition(model.state, Evt.EVT17_TRANSPORT_CLOSED, requestor=True)
            # AA-4/AA-5/AR-5, or nothing in Sta1: always reported, always ends in Sta1.
            assert action in ("AA-4", "AA-5", "AR-5", INVALID)
            assoc.receive_data(b"", self.now)
            assert drain(assoc) == [ConnectionClosed()]
            assert assoc.state is STA1 and assoc.close_requested and assoc.deadline is None
            model.state = STA1

    @precondition(lambda self: self.closed or all(self.model[s].state is STA1 for s in SIDES))
    @rule(start=st.sampled_from(["fresh", "connected", "established"]))
    def new_connection(self, start: str) -> None:
        """Once both ends are done, a new transport connection (and pair) starts over."""
        self._reset(start)

    @invariant()
    def artim_runs_exactly_in_sta2_and_sta13(self) -> None:
        for side in SIDES:
            assoc = self.assoc(side)
            assert assoc.state is self.model[side].state
            assert (assoc.deadline is not None) == (assoc.state in (STA2, STA13)), assoc.state


ULStateMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_ul_state_machine = ULStateMachine.TestCase
