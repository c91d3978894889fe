"""The PS3.8 §9.2 DICOM Upper Layer state machine as a pure table.

THEORY OF OPERATION
-------------------
``State`` are the thirteen states of PS3.8 §9.2.1 (Tables 9-1 .. 9-5), ``Evt`` the nineteen
events of Table 9-10's rows, and ``TRANSITIONS`` the non-empty cells of Table 9-10: for each
(state, event) the action of §9.2.2 (Tables 9-6 .. 9-9) and the state that action leads to.
Nothing here performs an action; ``appliance.ul.association`` looks the cell up and carries the
action out. The table is data so that a test can compare it cell by cell with an independent
transcription, and a property test can use it as the model of the whole association.

Two things the table cannot express as a plain (action, next state) pair:

* AR-8 (release collision, Sta7 + Evt12) leads to Sta9 for the association-requestor and to
  Sta10 for the association-acceptor. ``TRANSITIONS`` records the requestor's Sta9;
  ``transition(..., requestor=False)`` gives Sta10.
* AE-6 (Sta2 + Evt6) leads to Sta3 when the service provider finds the A-ASSOCIATE-RQ
  acceptable and to Sta13 otherwise. ``TRANSITIONS`` records Sta3; the association core routes
  a provider-level refusal through the local user (AE-8), which also ends in Sta13.

Empty cells. PS3.8 gives no action for them: they are events that cannot happen in that state
(a PDU received in Sta1 or Sta4, where no transport connection is open; ARTIM expiring while it
is not running) or local primitives the service user may not issue in that state.
``transition`` therefore never raises: for an empty cell it returns ``(INVALID, state)``,
meaning "no action; the state does not change". The association core turns an ``INVALID``
local primitive into ``LocalULError`` (our bug) and drops input that arrives in Sta1.
"""

from __future__ import annotations

from enum import IntEnum


class State(IntEnum):
    """PS3.8 §9.2.1 machine states (Tables 9-1 .. 9-5)."""

    STA1_IDLE = 1
    STA2_TRANSPORT_OPEN = 2  # awaiting A-ASSOCIATE-RQ PDU
    STA3_AWAITING_LOCAL_ASSOCIATE_RESPONSE = 3
    STA4_AWAITING_TRANSPORT_OPEN = 4
    STA5_AWAITING_ASSOCIATE_AC_OR_RJ = 5
    STA6_ESTABLISHED = 6
    STA7_AWAITING_RELEASE_RP = 7
    STA8_AWAITING_LOCAL_RELEASE_RESPONSE = 8
    STA9_COLLISION_REQUESTOR_AWAITING_LOCAL_RESPONSE = 9
    STA10_COLLISION_ACCEPTOR_AWAITING_RELEASE_RP = 10
    STA11_COLLISION_REQUESTOR_AWAITING_RELEASE_RP = 11
    STA12_COLLISION_ACCEPTOR_AWAITING_LOCAL_RESPONSE = 12
    STA13_AWAITING_CLOSE = 13


class Evt(IntEnum):
    """PS3.8 Table 9-10 events (rows). "LOCAL" events are primitives from our own user."""

    EVT1_LOCAL_ASSOCIATE_REQUEST = 1
    EVT2_TRANSPORT_CONNECT_CONFIRM = 2
    EVT3_ASSOCIATE_AC_RECEIVED = 3
    EVT4_ASSOCIATE_RJ_RECEIVED = 4
    EVT5_TRANSPORT_CONNECT_INDICATION = 5
    EVT6_ASSOCIATE_RQ_RECEIVED = 6
    EVT7_LOCAL_ASSOCIATE_ACCEPT = 7
    EVT8_LOCAL_ASSOCIATE_REJECT = 8
    EVT9_LOCAL_PDATA_REQUEST = 9
    EVT10_PDATA_TF_RECEIVED = 10
    EVT11_LOCAL_RELEASE_REQUEST = 11
    EVT12_RELEASE_RQ_RECEIVED = 12
    EVT13_RELEASE_RP_RECEIVED = 13
    EVT14_LOCAL_RELEASE_RESPONSE = 14
    EVT15_LOCAL_ABORT_REQUEST = 15
    EVT16_ABORT_RECEIVED = 16
    EVT17_TRANSPORT_CLOSED = 17
    EVT18_ARTIM_EXPIRED = 18
    EVT19_INVALID_PDU_RECEIVED = 19


#: Action name of an empty Table 9-10 cell (see the module docstring).
INVALID = "INVALID"

_S = State
_E = Evt

# States in which an association exists or is being negotiated over an open transport and any
# unexpected PDU is answered with AA-8 (PS3.8 Table 9-10, columns Sta3 and Sta5..Sta12).
_AA8_STATES = (_S(3), _S(5), _S(6), _S(7), _S(8), _S(9), _S(10), _S(11), _S(12))


def _build() -> dict[tuple[State, Evt], tuple[str, State]]:
    t: dict[tuple[State, Evt], tuple[str, State]] = {}

    # Evt1 A-ASSOCIATE request (local user): Sta1 AE-1 (issue TRANSPORT CONNECT) -> Sta4.
    t[_S(1), _E(1)] = ("AE-1", _S(4))
    # Evt2 Transport connect confirmation: Sta4 AE-2 (send A-ASSOCIATE-RQ) -> Sta5.
    t[_S(4), _E(2)] = ("AE-2", _S(5))

    # Evt3 A-ASSOCIATE-AC PDU received: Sta2 AA-1, Sta5 AE-3, Sta13 AA-6, else AA-8.
    t[_S(2), _E(3)] = ("AA-1", _S(13))
    t[_S(5), _E(3)] = ("AE-3", _S(6))
    t[_S(13), _E(3)] = ("AA-6", _S(13))
    # Evt4 A-ASSOCIATE-RJ PDU received: Sta2 AA-1, Sta5 AE-4, Sta13 AA-6, else AA-8.
    t[_S(2), _E(4)] = ("AA-1", _S(13))
    t[_S(5), _E(4)] = ("AE-4", _S(1))
    t[_S(13), _E(4)] = ("AA-6", _S(13))

    # Evt5 Transport connection indication: Sta1 AE-5 (respond, start ARTIM) -> Sta2.
    t[_S(1), _E(5)] = ("AE-5", _S(2))

    # Evt6 A-ASSOCIATE-RQ PDU received: Sta2 AE-6, Sta13 AA-7, else AA-8.
    t[_S(2), _E(6)] = ("AE-6", _S(3))  # Sta13 instead when the provider refuses (module doc)
    t[_S(13), _E(6)] = ("AA-7", _S(13))

    # Evt7 / Evt8 A-ASSOCIATE response primitive (accept / reject): Sta3 only.
    t[_S(3), _E(7)] = ("AE-7", _S(6))
    t[_S(3), _E(8)] = ("AE-8", _S(13))

    # Evt9 P-DATA request primitive: Sta6 DT-1, Sta8 AR-7 (data may still flow after the peer
    # asked to release and before we reply).
    t[_S(6), _E(9)] = ("DT-1", _S(6))
    t[_S(8), _E(9)] = ("AR-7", _S(8))

    # Evt10 P-DATA-TF PDU received: Sta2 AA-1, Sta6 DT-2, Sta7 AR-6, Sta13 AA-6, else AA-8.
    t[_S(2), _E(10)] = ("AA-1", _S(13))
    t[_S(6), _E(10)] = ("DT-2", _S(6))
    t[_S(7), _E(10)] = ("AR-6", _S(7))
    t[_S(13), _E(10)] = ("AA-6", _S(13))

    # Evt11 A-RELEASE request primitive: Sta6 AR-1 -> Sta7.
    t[_S(6), _E(11)] = ("AR-1", _S(7))

    # Evt12 A-RELEASE-RQ PDU received: Sta2 AA-1, Sta6 AR-2, Sta7 AR-8 (collision),
    # Sta13 AA-6, else AA-8.
    t[_S(2), _E(12)] = ("AA-1", _S(13))
    t[_S(6), _E(12)] = ("AR-2", _S(8))
    t[_S(7), _E(12)] = ("AR-8", _S(9))  # Sta10 for the association-acceptor (module doc)
    t[_S(13), _E(12)] = ("AA-6", _S(13))

    # Evt13 A-RELEASE-RP PDU received: Sta2 AA-1, Sta7 AR-3, Sta10 AR-10, Sta11 AR-3,
    # Sta13 AA-6, else AA-8.
    t[_S(2), _E(13)] = ("AA-1", _S(13))
    t[_S(7), _E(13)] = ("AR-3", _S(1))
    t[_S(10), _E(13)] = ("AR-10", _S(12))
    t[_S(11), _E(13)] = ("AR-3", _S(1))
    t[_S(13), _E(13)] = ("AA-6", _S(13))

    # Evt14 A-RELEASE response primitive: Sta8 AR-4, Sta9 AR-9, Sta12 AR-4.
    t[_S(8), _E(14)] = ("AR-4", _S(13))
    t[_S(9), _E(14)] = ("AR-9", _S(11))
    t[_S(12), _E(14)] = ("AR-4", _S(13))

    # Evt15 A-ABORT request primitive: Sta4 AA-2 (nothing was sent yet: just close),
    # Sta3 and Sta5..Sta12 AA-1. Sta1, Sta2 and Sta13 are empty.
    t[_S(4), _E(15)] = ("AA-2", _S(1))
    for s in _AA8_STATES:
        t[s, _E(15)] = ("AA-1", _S(13))

    # Evt16 A-ABORT PDU received: Sta2 AA-2, Sta13 AA-2, Sta3 and Sta5..Sta12 AA-3.
    t[_S(2), _E(16)] = ("AA-2", _S(1))
    t[_S(13), _E(16)] = ("AA-2", _S(1))
    for s in _AA8_STATES:
        t[s, _E(16)] = ("AA-3", _S(1))

    # Evt17 Transport connection closed indication: Sta2 AA-5, Sta3..Sta12 AA-4 (including
    # Sta4: the connect failed), Sta13 AR-5 (the normal end after release or abort).
    t[_S(2), _E(17)] = ("AA-5", _S(1))
    for s in (_S(4), *_AA8_STATES):
        t[s, _E(17)] = ("AA-4", _S(1))
    t[_S(13), _E(17)] = ("AR-5", _S(1))

    # Evt18 ARTIM timer expired: Sta2 AA-2, Sta13 AA-2 (the only states in which it runs).
    t[_S(2), _E(18)] = ("AA-2", _S(1))
    t[_S(13), _E(18)] = ("AA-2", _S(1))

    # Evt19 Unrecognized or invalid PDU received: Sta2 AA-1, Sta13 AA-7, else AA-8.
    t[_S(2), _E(19)] = ("AA-1", _S(13))
    t[_S(13), _E(19)] = ("AA-7", _S(13))

    # The AA-8 column entries of the received-PDU rows Evt3, 4, 6, 10, 12, 13, 19: every state
    # of _AA8_STATES whose cell was not set above.
    for evt in (_E(3), _E(4), _E(6), _E(10), _E(12), _E(13), _E(19)):
        for s in _AA8_STATES:
            t.setdefault((s, evt), ("AA-8", _S(13)))
    return t


#: PS3.8 Table 9-10: (state, event) -> (action, next state); non-empty cells only.
TRANSITIONS: dict[tuple[State, Evt], tuple[str, State]] = _build()


def transition(state: State, evt: Evt, *, requestor: bool) -> tuple[str, State]:
    """The Table 9-10 cell for ``state`` and ``evt``: (action, next state).

    ``requestor`` selects the AR-8 branch (PS3.8 Table 9-8). An empty cell gives
    ``(INVALID, state)``; this function never raises for valid enum members.
    """
    cell = TRANSITIONS.get((state, evt))
    if cell is None:
        return (INVALID, state)
    if not requestor and cell[0] == "AR-8":
        return ("AR-8", State.STA10_COLLISION_ACCEPTOR_AWAITING_RELEASE_RP)
    return cell


__all__ = ["INVALID", "TRANSITIONS", "Evt", "State", "transition"]
