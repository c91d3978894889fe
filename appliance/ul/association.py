"""The sans-IO DICOM Upper Layer association (PS3.8 §9), both roles, shaped like h11.

THEORY OF OPERATION
-------------------
One ``Association`` is one transport connection. It owns no socket, clock, logger or metric:
bytes come in through ``receive_data``, facts come out of ``next_event``, commands go in through
``send`` (which returns the bytes to write), and time is an input (``now`` arguments,
``deadline``, ``timer_expired``). Every state change is a Table 9-10 cell looked up with
``fsm.transition`` and carried out by the method named after its action (``_aa_8`` for AA-8).

Invariants:

* ``state`` only changes through a Table 9-10 cell, with the deviations listed below.
* ``deadline`` is not None exactly while ARTIM runs: Sta2 (started by AE-5) and Sta13 (started
  by AE-8, AR-4, AA-1, AA-8). ``timer_expired`` past it is Evt18 -> AA-2.
* ``close_requested`` becomes True when an action says "close transport connection" (AE-4,
  AR-3, AA-2, AA-3) or the peer closed it (Evt17); it never goes back. The caller writes what
  it already has, then closes.
* ``next_event`` raises ``RemoteULError`` and nothing else. Before raising, the core has taken
  the Table 9-10 action (AA-1 in Sta2, AA-8 in Sta3/Sta5..Sta12, AA-7 in Sta13): it is in Sta13
  with ARTIM running, and owes the peer an A-ABORT PDU. Because a sans-IO core cannot write,
  the caller completes the action with ``send(Abort(source=2, reason=err.abort_reason))``,
  which is always legal at that point and returns those bytes.

Deviations from the blank cells of Table 9-10, chosen so that the acceptor can never crash:

* ``Abort`` is accepted in every state. Sta1: nothing to send. Sta2 (blank in the table):
  treated as AA-1, so a peer that has not sent its A-ASSOCIATE-RQ yet still learns why.
  Sta13: returns the owed A-ABORT if there is one, else nothing (the association is gone).
* Input received in Sta1 (the transport is closing) is dropped; the table has no column for it.
* An A-ABORT received in Sta2/Sta13 (AA-2, no indication in PS3.8) is still reported as
  ``AbortReceived`` so the caller can log it; Evt17 is always reported as ``ConnectionClosed``.
* AE-6's provider check (protocol version, ``max_presentation_contexts``) does not reject on
  its own: ``AssociateRequested.provider_rejection`` carries the A-ASSOCIATE-RJ the caller must
  send with ``RejectAssociation`` (AE-8, same bytes and same Sta13 as AE-6's reject branch).
  ``AcceptAssociation`` of such a request raises ``LocalULError``.

P-DATA is the hot path: a P-DATA-TF received in Sta6 is decoded and returned without a table
lookup (Table 9-10 Sta6 + Evt10 = DT-2, state unchanged); its PDV data are memoryviews into
the receive buffer. ``send_pdata_items`` frames PDV items that DIMSE already encoded.

Bytes can also be read straight into the receive buffer (``get_buffer``, then
``buffer_updated``: asyncio.BufferedProtocol's shape), so a large PDU is written once, by the
kernel. Its receive buffers are reused (``buffer.ReceivePool``): PDV data of such input are
valid until ``next_event`` returns ``NEED_DATA`` or more input is given, whichever is first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final, Literal

from appliance.errors import LocalULError, RemoteULError
from appliance.ul.buffer import PduBuffer, ReceivePool
from appliance.ul.fsm import INVALID, Evt, State, transition
from appliance.ul.pdu import (
    PDU,
    PDV,
    PDV_HEADER_BYTES,
    AbortPDU,
    AbortReason,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    PDataTF,
    PduType,
    ReleaseRP,
    ReleaseRQ,
    UserInformation,
    decode_pdu,
    encode_pdata_header,
    encode_pdu,
)


class Role(Enum):
    REQUESTOR = "requestor"
    ACCEPTOR = "acceptor"


@dataclass(frozen=True, slots=True)
class ULLimits:
    """Per-association limits.

    ``max_pdu_bytes`` is the largest P-DATA-TF body we accept, which must be what we advertise
    as Maximum Length (PS3.8 D.1); 0 = unlimited. ``artim_timeout_s`` is PS3.8 §9.1.5's ARTIM.
    ``min_peer_max_pdu_bytes``: a requestor whose Maximum Length is below it is rejected (our
    SCU aborts an acceptor's A-ASSOCIATE-AC below it, appliance/scu.py).
    PS3.8 sets no floor, but under 7 bytes no PDV with data fits at all, and a tiny one would
    make us send every response in thousands of PDUs (12 header bytes each).
    """

    max_pdu_bytes: int = 1_048_576
    # Any other PDU (an A-ASSOCIATE-RQ with 128 contexts of 40 transfer syntaxes each is
    # ~140 KB); each connection still in Sta2 may buffer this much, max_pending_connections
    # of them at once: 1 MiB keeps that under 256 MiB with the defaults.
    max_other_pdu_bytes: int = 1_048_576
    max_presentation_contexts: int = 128
    artim_timeout_s: float = 30.0
    min_peer_max_pdu_bytes: int = 1024


class NeedData(Enum):
    # An enum member so that ``ev is not NEED_DATA`` narrows the type for mypy.
    NEED_DATA = "NEED_DATA"


#: Returned by ``next_event`` when a whole PDU has not arrived yet (h11 convention).
NEED_DATA: Final = NeedData.NEED_DATA


# ---- events out: past-tense facts --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AssociateRequested:
    """A-ASSOCIATE indication (AE-6). When ``provider_rejection`` is set the request failed the
    service provider's checks and the caller must send ``RejectAssociation`` with it."""

    rq: AssociateRQ
    provider_rejection: AssociateRJ | None = None
    provider_reason: str = ""  # why, for the log, when provider_rejection is set


@dataclass(frozen=True, slots=True)
class AssociateAccepted:
    """A-ASSOCIATE confirmation, accept (AE-3)."""

    ac: AssociateAC


@dataclass(frozen=True, slots=True)
class AssociateRejected:
    """A-ASSOCIATE confirmation, reject (AE-4); the transport is to be closed."""

    rj: AssociateRJ


@dataclass(frozen=True, slots=True)
class PDataReceived:
    """P-DATA indication (DT-2, AR-6). PDV data are zero-copy memoryviews of the received
    bytes: after ``receive_data`` only, they stay valid; after ``buffer_updated``, until
    ``next_event`` returns ``NEED_DATA`` (see the module docstring)."""

    pdvs: tuple[PDV, ...]


@dataclass(frozen=True, slots=True)
class ReleaseRequested:
    """A-RELEASE indication (AR-2, or AR-8 in a release collision)."""


@dataclass(frozen=True, slots=True)
class ReleaseConfirmed:
    """A-RELEASE confirmation (AR-3: transport to be closed; AR-10: collision, reply next)."""


@dataclass(frozen=True, slots=True)
class AbortReceived:
    """A-ABORT / A-P-ABORT indication from an A-ABORT PDU (PS3.8 §9.3.8 source and reason)."""

    source: int
    reason: int


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the transport (Evt17)."""


Event = (
    AssociateRequested
    | AssociateAccepted
    | AssociateRejected
    | PDataReceived
    | ReleaseRequested
    | ReleaseConfirmed
    | AbortReceived
    | ConnectionClosed
)


# ---- commands in: imperatives ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestAssociation:
    """A-ASSOCIATE request (requestor only; Evt1). The RQ goes out on connection_established."""

    rq: AssociateRQ


@dataclass(frozen=True, slots=True)
class AcceptAssociation:
    ac: AssociateAC


@dataclass(frozen=True, slots=True)
class RejectAssociation:
    rj: AssociateRJ


@dataclass(frozen=True, slots=True)
class SendPData:
    pdvs: Sequence[PDV]


@dataclass(frozen=True, slots=True)
class RequestRelease:
    pass


@dataclass(frozen=True, slots=True)
class ReplyRelease:
    pass


@dataclass(frozen=True, slots=True)
class Abort:
    """A-ABORT request. ``source`` 0 service-user or 2 service-provider (PS3.8 §9.3.8)."""

    source: int = 0
    reason: int = 0


Command = (
    RequestAssociation
    | AcceptAssociation
    | RejectAssociation
    | SendPData
    | RequestRelease
    | ReplyRelease
    | Abort
)

_COMMAND_EVT: Final[dict[type, Evt]] = {
    RequestAssociation: Evt.EVT1_LOCAL_ASSOCIATE_REQUEST,
    AcceptAssociation: Evt.EVT7_LOCAL_ASSOCIATE_ACCEPT,
    RejectAssociation: Evt.EVT8_LOCAL_ASSOCIATE_REJECT,
    SendPData: Evt.EVT9_LOCAL_PDATA_REQUEST,
    RequestRelease: Evt.EVT11_LOCAL_RELEASE_REQUEST,
    ReplyRelease: Evt.EVT14_LOCAL_RELEASE_RESPONSE,
    Abort: Evt.EVT15_LOCAL_ABORT_REQUEST,
}

_PDU_EVT: Final[dict[int, Evt]] = {
    PduType.ASSOCIATE_RQ: Evt.EVT6_ASSOCIATE_RQ_RECEIVED,
    PduType.ASSOCIATE_AC: Evt.EVT3_ASSOCIATE_AC_RECEIVED,
    PduType.ASSOCIATE_RJ: Evt.EVT4_ASSOCIATE_RJ_RECEIVED,
    PduType.P_DATA_TF: Evt.EVT10_PDATA_TF_RECEIVED,
    PduType.RELEASE_RQ: Evt.EVT12_RELEASE_RQ_RECEIVED,
    PduType.RELEASE_RP: Evt.EVT13_RELEASE_RP_RECEIVED,
    PduType.ABORT: Evt.EVT16_ABORT_RECEIVED,
}

_STA1 = State.STA1_IDLE
_STA2 = State.STA2_TRANSPORT_OPEN
_STA4 = State.STA4_AWAITING_TRANSPORT_OPEN
_STA6 = State.STA6_ESTABLISHED
_STA8 = State.STA8_AWAITING_LOCAL_RELEASE_RESPONSE
_STA13 = State.STA13_AWAITING_CLOSE
_P_DATA_TF = int(PduType.P_DATA_TF)

# PS3.8 §9.3.4 A-ASSOCIATE-RJ values used by the provider check in AE-6.
_RJ_PERMANENT = 1
_RJ_SOURCE_ACSE_PROVIDER = 2
_RJ_SOURCE_PRESENTATION_PROVIDER = 3
_RJ_REASON_PROTOCOL_VERSION = 2  # source 2: protocol-version-not-supported
_RJ_REASON_NO_REASON = 1  # source 2: no-reason-given
_RJ_REASON_LOCAL_LIMIT = 2  # source 3: local-limit-exceeded

_RELEASE_RQ: Final = encode_pdu(ReleaseRQ())
_RELEASE_RP: Final = encode_pdu(ReleaseRP())

_Outcome = Event | None  # what a receive-side action reports (None: nothing to report)


class Association:
    """One DICOM UL association over one transport connection (PS3.8 §9.2)."""

    def __init__(self, role: Role, limits: ULLimits | None = None, now: float = 0.0,
                 rx_pool: ReceivePool | None = None) -> None:
        """``rx_pool``: ``get_buffer``'s receive buffers, shared by the associations of one
        thread (default: a private pool, made on first use)."""
        self.role = role
        self.limits = limits if limits is not None else ULLimits()
        self.state = _STA1
        self.deadline: float | None = None
        self.close_requested = False
        self.peer_max_pdu = 0
        self._requestor = role is Role.REQUESTOR
        self._buffer = PduBuffer(self.limits.max_pdu_bytes, self.limits.max_other_pdu_bytes,
                                 rx_pool)
        self._now = now
        self._eof = False
        self._input_dead = False  # framing lost: the rest of the byte stream is meaningless
        self._abort_owed = False  # AA-1/AA-7/AA-8 taken on receive; the caller sends the bytes
        self._rq: AssociateRQ | None = None  # requestor: what AE-2 sends
        self._provider_rejection: AssociateRJ | None = None
        if not self._requestor:
            # The listener accepted the connection: Evt5 has happened -> AE-5.
            self._apply_local(Evt.EVT5_TRANSPORT_CONNECT_INDICATION, None, now)

    @property
    def buffered_bytes(self) -> int:
        """Received bytes not yet turned into events (a partial PDU, or PDUs not yet taken)."""
        return self._buffer.buffered_bytes

    # ---- input ---------------------------------------------------------------------------

    def receive_data(self, data: bytes | memoryview, now: float = 0.0) -> None:
        """Feed bytes read from the transport; ``b""`` means the peer closed it (Evt17)."""
        self._check_input(bool(data), "receive_data")
        self._now = now
        if not data:
            self._eof = True
        elif not self._input_dead and self.state is not _STA1:
            self._buffer.feed(data)

    def get_buffer(self) -> memoryview:
        """Where to read the next bytes from the transport into (never empty); then say how
        many arrived with ``buffer_updated``. asyncio.BufferedProtocol.get_buffer's shape."""
        return self._buffer.get_buffer()

    def offered(self, nbytes: int) -> memoryview:
        """The first ``nbytes`` of the last ``get_buffer`` view, to look at a read before
        ``buffer_updated`` (or instead: bytes never committed are never seen by the core)."""
        return self._buffer.offered(nbytes)

    def buffer_updated(self, nbytes: int, now: float = 0.0) -> None:
        """``nbytes`` (> 0) were read into the start of the last ``get_buffer`` view; the
        same as ``receive_data`` of those bytes, without a copy."""
        self._check_input(True, "buffer_updated")
        self._now = now
        if not self._input_dead and self.state is not _STA1:
            self._buffer.wrote(nbytes)

    def _check_input(self, has_bytes: bool, what: str) -> None:
        if self._eof:
            raise LocalULError(f"{what} after the peer closed the transport")
        if has_bytes and self.state is _STA4:
            # b"" in Sta4 is a failed connect (Evt17 -> AA-4); bytes cannot arrive yet.
            raise LocalULError(f"{what} before connection_established")

    def next_event(self) -> Event | Literal[NeedData.NEED_DATA]:
        """The next fact about the association, or ``NEED_DATA``.

        Raises ``RemoteULError`` (and nothing else) for a malformed PDU or one Table 9-10 does
        not allow in the current state; see the module docstring for what the caller does next.
        """
        while True:
            if self._input_dead or self.state is _STA1:
                item = None
            else:
                try:
                    item = self._buffer.next_pdu()
                except RemoteULError as exc:
                    # The framing itself is broken (unknown type, too long): nothing after
                    # this point can be parsed, so stop reading the stream.
                    self._input_dead = True
                    raise self._invalid_pdu(exc) from exc
            if item is None:
                if self._eof:
                    return self._transport_closed()
                return NEED_DATA
            pdu_type, body = item
            if pdu_type == _P_DATA_TF and self.state is _STA6:
                # Hot path: Table 9-10 Sta6 + Evt10 = DT-2, next state Sta6.
                try:
                    pdu = decode_pdu(pdu_type, body)
                except RemoteULError as exc:
                    raise self._invalid_pdu(exc) from exc
                assert isinstance(pdu, PDataTF)
                return PDataReceived(pdu.pdvs)
            outcome = self._receive_pdu(pdu_type, body)
            if outcome is not None:
                return outcome
            # AA-6: the PDU was ignored; look at the next one.

    def timer_expired(self, now: float) -> None:
        """Evt18 if ARTIM's ``deadline`` has passed (PS3.8 §9.1.5); otherwise nothing."""
        if self.deadline is not None and now >= self.deadline:
            self._now = now
            self._apply_local(Evt.EVT18_ARTIM_EXPIRED, None, now)

    # ---- output --------------------------------------------------------------------------

    def send(self, command: Command, now: float = 0.0) -> bytes:
        """Carry out a local primitive; return the bytes to write (may be empty).

        Raises ``LocalULError`` when Table 9-10 does not allow it in the current state, or the
        PDU cannot be encoded; the state is then unchanged. ``Abort`` never raises (module doc).
        """
        evt = _COMMAND_EVT[type(command)]
        return self._apply_local(evt, command, now)

    def connection_established(self, now: float = 0.0) -> bytes:
        """Requestor: the transport connect completed (Evt2); returns the A-ASSOCIATE-RQ."""
        return self._apply_local(Evt.EVT2_TRANSPORT_CONNECT_CONFIRM, None, now)

    def send_pdata_items(
        self, items: bytes | bytearray | memoryview | Sequence[bytes | bytearray | memoryview]
    ) -> list[bytes | bytearray | memoryview]:
        """Frame already-encoded PDV items (PS3.8 §9.3.5) as one P-DATA-TF; return the buffers to
        write in order (header first, the items uncopied).

        Allowed where Table 9-10 allows Evt9: Sta6 (DT-1) and Sta8 (AR-7). The total must fit
        the peer's Maximum Length; splitting is the DIMSE fragmenter's job.
        """
        state = self.state
        if state is not _STA6 and state is not _STA8:
            raise LocalULError(f"P-DATA not allowed in {state.name}")
        parts = [items] if isinstance(items, bytes | bytearray | memoryview) else list(items)
        total = 0
        for part in parts:
            total += part.nbytes if isinstance(part, memoryview) else len(part)
        if total < PDV_HEADER_BYTES:
            raise LocalULError("a P-DATA-TF needs at least one PDV item")
        if 0 < self.peer_max_pdu < total:
            raise LocalULError(f"P-DATA-TF of {total} bytes exceeds peer max {self.peer_max_pdu}")
        return [encode_pdata_header(total), *parts]

    # ---- the table -----------------------------------------------------------------------

    def _apply_local(self, evt: Evt, command: Command | None, now: float) -> bytes:
        state = self.state
        action, nxt = transition(state, evt, requestor=self._requestor)
        try:
            if action == INVALID:
                if isinstance(command, Abort):
                    return self._abort_in_blank_cell(command, now)
                raise LocalULError(f"{evt.name} not allowed in {state.name} (PS3.8 Table 9-10)")
            out = _LOCAL_ACTIONS[action](self, command, now)
        except ValueError as exc:  # encode_pdu refused what we were asked to send
            raise LocalULError(f"cannot encode for {action}: {exc}") from exc
        self.state = nxt
        return out

    def _receive_pdu(self, pdu_type: int, body: memoryview) -> _Outcome:
        try:
            pdu = decode_pdu(pdu_type, body)
        except RemoteULError as exc:
            raise self._invalid_pdu(exc) from exc
        evt = _PDU_EVT[pdu_type]
        action, nxt = transition(self.state, evt, requestor=self._requestor)
        if action == INVALID:  # no transport in Sta1/Sta4: cannot happen, drop it
            return None
        if action in ("AA-1", "AA-7", "AA-8"):
            self.state = nxt
            raise self._owe_abort(
                RemoteULError(
                    f"unexpected {type(pdu).__name__} in {self.state.name}",
                    abort_reason=AbortReason.UNEXPECTED_PDU,
                )
            )
        outcome = _RECEIVE_ACTIONS[action](self, pdu)
        self.state = nxt
        return outcome

    def _invalid_pdu(self, exc: RemoteULError) -> RemoteULError:
        """Evt19: Sta2 AA-1, Sta13 AA-7, else AA-8 -- all end in Sta13 owing an A-ABORT."""
        _, nxt = transition(self.state, Evt.EVT19_INVALID_PDU_RECEIVED, requestor=self._requestor)
        self.state = nxt
        return self._owe_abort(exc)

    def _owe_abort(self, exc: RemoteULError) -> RemoteULError:
        # AA-1/AA-8 start ARTIM; AA-7 (already in Sta13) leaves it running.
        if self.deadline is None:
            self._start_artim(self._now)
        self._abort_owed = True
        return exc

    def _transport_closed(self) -> ConnectionClosed:
        """Evt17: AA-5 (Sta2), AA-4 (Sta3..Sta12), AR-5 (Sta13); reported in every state."""
        action, nxt = transition(self.state, Evt.EVT17_TRANSPORT_CLOSED, requestor=self._requestor)
        if action != INVALID:
            self.state = nxt
        self.deadline = None  # AA-5 and AR-5 stop ARTIM; in other states it is not running
        self.close_requested = True
        return ConnectionClosed()

    def _abort_in_blank_cell(self, command: Abort, now: float) -> bytes:
        state = self.state
        if state is _STA2:
            out = self._aa_1(command, now)
            self.state = _STA13
            return out
        if state is _STA13 and self._abort_owed:
            out = encode_pdu(AbortPDU(source=command.source, reason=command.reason))
            self._abort_owed = False
            return out
        return b""  # Sta1, or Sta13 with nothing owed: no association left to abort

    def _start_artim(self, now: float) -> None:
        self.deadline = now + self.limits.artim_timeout_s

    def _check_advertised(self, ui: UserInformation) -> None:
        # Our buffer enforces limits.max_pdu_bytes; advertising more would make a conforming
        # peer's PDUs look malformed to us.
        limit = self.limits.max_pdu_bytes
        advertised = ui.maximum_length
        if limit and (advertised is None or advertised == 0 or advertised > limit):
            raise LocalULError(f"Maximum Length {advertised} does not fit max_pdu_bytes {limit}")

    def _provider_check(self, rq: AssociateRQ) -> tuple[AssociateRJ, str] | None:
        """AE-6's "acceptable by service-provider" test (PS3.8 §9.2.2 Table 9-6): the
        A-ASSOCIATE-RJ to send and why, or None."""
        if not rq.protocol_version & 1:  # PS3.8 §9.3.2: only bit 0 (version 1) is tested
            return (AssociateRJ(_RJ_PERMANENT, _RJ_SOURCE_ACSE_PROVIDER,
                                _RJ_REASON_PROTOCOL_VERSION),
                    f"protocol version {rq.protocol_version:#06x} lacks version 1")
        if len(rq.presentation_contexts) > self.limits.max_presentation_contexts:
            return (AssociateRJ(_RJ_PERMANENT, _RJ_SOURCE_PRESENTATION_PROVIDER,
                                _RJ_REASON_LOCAL_LIMIT),
                    f"{len(rq.presentation_contexts)} presentation contexts, limit is "
                    f"{self.limits.max_presentation_contexts}")
        peer_max = rq.user_information.maximum_length or 0  # 0: no limit (PS3.8 D.1)
        if 0 < peer_max < self.limits.min_peer_max_pdu_bytes:
            return (AssociateRJ(_RJ_PERMANENT, _RJ_SOURCE_ACSE_PROVIDER, _RJ_REASON_NO_REASON),
                    f"Maximum Length {peer_max} is below "
                    f"{self.limits.min_peer_max_pdu_bytes} bytes")
        return None

    # ---- actions on local primitives (PS3.8 §9.2.2); they return the bytes to write -----

    def _ae_1(self, command: Command | None, now: float) -> bytes:
        # Issue TRANSPORT CONNECT: the caller opens the connection, then connection_established.
        if not self._requestor:
            raise LocalULError("only the association-requestor issues A-ASSOCIATE requests")
        assert isinstance(command, RequestAssociation)
        self._check_advertised(command.rq.user_information)
        self._rq = command.rq
        return b""

    def _ae_2(self, command: Command | None, now: float) -> bytes:
        assert self._rq is not None
        return encode_pdu(self._rq)

    def _ae_5(self, command: Command | None, now: float) -> bytes:
        self._start_artim(now)
        return b""

    def _ae_7(self, command: Command | None, now: float) -> bytes:
        assert isinstance(command, AcceptAssociation)
        if self._provider_rejection is not None:
            raise LocalULError("this A-ASSOCIATE-RQ failed the provider check; reject it")
        self._check_advertised(command.ac.user_information)
        return encode_pdu(command.ac)

    def _ae_8(self, command: Command | None, now: float) -> bytes:
        assert isinstance(command, RejectAssociation)
        out = encode_pdu(command.rj)
        self._start_artim(now)
        return out

    def _dt_1(self, command: Command | None, now: float) -> bytes:
        # Also AR-7 (P-DATA in Sta8): same bytes, the state is unchanged either way.
        assert isinstance(command, SendPData)
        pdvs = tuple(command.pdvs)
        total = 0
        for pdv in pdvs:
            data = pdv.data
            total += PDV_HEADER_BYTES + (data.nbytes if isinstance(data, memoryview) else len(data))
        if not pdvs:
            raise LocalULError("a P-DATA-TF needs at least one PDV")
        if 0 < self.peer_max_pdu < total:
            raise LocalULError(f"P-DATA-TF of {total} bytes exceeds peer max {self.peer_max_pdu}")
        return encode_pdu(PDataTF(pdvs))

    def _ar_1(self, command: Command | None, now: float) -> bytes:
        return _RELEASE_RQ

    def _ar_4(self, command: Command | None, now: float) -> bytes:
        self._start_artim(now)
        return _RELEASE_RP

    def _ar_9(self, command: Command | None, now: float) -> bytes:
        return _RELEASE_RP

    def _aa_1(self, command: Command | None, now: float) -> bytes:
        # Send A-ABORT and start (or restart) ARTIM. The source is the caller's: 0 when the
        # service user aborts, 2 when completing a provider-detected error.
        assert isinstance(command, Abort)
        out = encode_pdu(AbortPDU(source=command.source, reason=command.reason))
        self._abort_owed = False
        self._start_artim(now)
        return out

    def _aa_2(self, command: Command | None, now: float) -> bytes:
        # Stop ARTIM if running; close the transport. (Evt15 in Sta4, Evt18 in Sta2/Sta13.)
        self.deadline = None
        self.close_requested = True
        return b""

    # ---- actions on received PDUs; they return the event to report ----------------------

    def _r_ae_3(self, pdu: PDU) -> _Outcome:
        assert isinstance(pdu, AssociateAC)
        self.peer_max_pdu = pdu.user_information.maximum_length or 0
        return AssociateAccepted(pdu)

    def _r_ae_4(self, pdu: PDU) -> _Outcome:
        assert isinstance(pdu, AssociateRJ)
        self.close_requested = True
        return AssociateRejected(pdu)

    def _r_ae_6(self, pdu: PDU) -> _Outcome:
        assert isinstance(pdu, AssociateRQ)
        self.deadline = None  # stop ARTIM
        self.peer_max_pdu = pdu.user_information.maximum_length or 0
        refusal = self._provider_check(pdu)
        if refusal is None:
            self._provider_rejection = None
            return AssociateRequested(pdu)
        self._provider_rejection = refusal[0]
        return AssociateRequested(pdu, refusal[0], refusal[1])

    def _r_dt_2(self, pdu: PDU) -> _Outcome:
        # Also AR-6 (P-DATA received in Sta7 while awaiting A-RELEASE-RP).
        assert isinstance(pdu, PDataTF)
        return PDataReceived(pdu.pdvs)

    def _r_ar_2(self, pdu: PDU) -> _Outcome:
        # Also AR-8 (release collision): the next state already encodes the role.
        return ReleaseRequested()

    def _r_ar_3(self, pdu: PDU) -> _Outcome:
        self.close_requested = True
        return ReleaseConfirmed()

    def _r_ar_10(self, pdu: PDU) -> _Outcome:
        return ReleaseConfirmed()

    def _r_aa_2(self, pdu: PDU) -> _Outcome:
        assert isinstance(pdu, AbortPDU)
        self.deadline = None
        self.close_requested = True
        return AbortReceived(pdu.source, pdu.reason)

    def _r_aa_3(self, pdu: PDU) -> _Outcome:
        # A-ABORT (source 0) or A-P-ABORT (source 2) indication; close the transport.
        assert isinstance(pdu, AbortPDU)
        self.close_requested = True
        return AbortReceived(pdu.source, pdu.reason)

    def _r_aa_6(self, pdu: PDU) -> _Outcome:
        return None  # ignore the PDU


_LocalAction = Callable[[Association, Command | None, float], bytes]
_ReceiveAction = Callable[[Association, PDU], _Outcome]

# Action name (Table 9-10 cell) -> implementation, for the events each side can see.
_LOCAL_ACTIONS: Final[dict[str, _LocalAction]] = {
    "AE-1": Association._ae_1,
    "AE-2": Association._ae_2,
    "AE-5": Association._ae_5,
    "AE-7": Association._ae_7,
    "AE-8": Association._ae_8,
    "DT-1": Association._dt_1,
    "AR-7": Association._dt_1,
    "AR-1": Association._ar_1,
    "AR-4": Association._ar_4,
    "AR-9": Association._ar_9,
    "AA-1": Association._aa_1,
    "AA-2": Association._aa_2,
}

_RECEIVE_ACTIONS: Final[dict[str, _ReceiveAction]] = {
    "AE-3": Association._r_ae_3,
    "AE-4": Association._r_ae_4,
    "AE-6": Association._r_ae_6,
    "DT-2": Association._r_dt_2,
    "AR-6": Association._r_dt_2,
    "AR-2": Association._r_ar_2,
    "AR-8": Association._r_ar_2,
    "AR-3": Association._r_ar_3,
    "AR-10": Association._r_ar_10,
    "AA-2": Association._r_aa_2,
    "AA-3": Association._r_aa_3,
    "AA-6": Association._r_aa_6,
}


__all__ = [
    "NEED_DATA",
    "NeedData",
    "Abort",
    "AbortReceived",
    "AcceptAssociation",
    "Association",
    "AssociateAccepted",
    "AssociateRejected",
    "AssociateRequested",
    "Command",
    "ConnectionClosed",
    "Event",
    "PDataReceived",
    "RejectAssociation",
    "ReleaseConfirmed",
    "ReleaseRequested",
    "ReplyRelease",
    "RequestAssociation",
    "RequestRelease",
    "Role",
    "SendPData",
    "ULLimits",
]
