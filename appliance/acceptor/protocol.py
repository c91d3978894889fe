"""One DICOM association in the acceptor: a thin asyncio Protocol around the sans-IO core.

THEORY OF OPERATION
-------------------
Bytes from the socket go into ``Association`` (appliance.ul); its events are acted on here:
negotiation on A-ASSOCIATE-RQ, and for P-DATA the PDVs are forwarded to the pinned worker's
ring, copied exactly once (receive buffer -> ring). The socket is read straight into the
core's receive buffer (asyncio.BufferedProtocol: get_buffer / buffer_updated, also under TLS),
so a large PDU is written by the kernel where it is decoded. The acceptor never parses data sets; it
does decode each command set (small) to know which operations are in flight, so that if the
worker dies it can still answer each of them with a failure status (STYLE 2.5).

Invariants:
  - ``in_flight`` holds every request forwarded whose final response has not been written;
  - ``receiving`` is the Message ID whose data set is arriving (PS3.8 Annex E: one message at
    a time per association), None between messages;
  - ``pending`` holds records that did not fit in the ring, in order; while it is non-empty
    reading is paused and new records queue behind it (never unbounded: one read's worth);
  - no view into the receive buffer outlives the callback that read it: PDV data are copied
    (into the ring, ``cmd_buf``, or ``bytes`` in ``pending``) before ``_pump`` returns, because
    the core reuses that memory for the next read, of any association (ReceivePool);
  - responses are written as one buffer per PDU (header + items), so a response leaves in one
    segment with TCP_NODELAY set.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections import deque
from typing import TYPE_CHECKING, Any

import msgpack
import structlog

from appliance import audit
from appliance.acceptor.echo import EchoTemplate, echo_response_pdus
from appliance.acceptor.silence import SilenceWatch
from appliance.dimse.command import (
    RESPONSE_BIT,
    CommandElements,
    CommandField,
    CommandSetError,
    Tag,
    decode_command_set,
    has_data_set,
)
from appliance.dimse.fragment import fragment_message
from appliance.dimse.responses import RequestIdentity, status_response
from appliance.dimse.status import Status
from appliance.errors import LocalULError, RemoteULError
from appliance.ipc.kinds import Flag, Kind
from appliance.negotiation.policy import (
    PresentationRejectReason,
    accepted_contexts,
    extended_negotiation,
    granted_scp_roles,
    reject_busy,
)
from appliance.negotiation.qr_classes import relational_granted
from appliance.negotiation.sop_classes import VERIFICATION
from appliance.ul.association import (
    NEED_DATA,
    Abort,
    AbortReceived,
    AcceptAssociation,
    AssociateRequested,
    Association,
    ConnectionClosed,
    PDataReceived,
    RejectAssociation,
    ReleaseConfirmed,
    ReleaseRequested,
    ReplyRelease,
    RequestRelease,
    Role,
)
from appliance.ul.buffer import ReceivePool, receive_buffer_bytes
from appliance.ul.fsm import State
from appliance.ul.pdu import AssociateRJ, AssociateRQ
from metrics import fast, tracing
from metrics import registry as m

if TYPE_CHECKING:
    from appliance.acceptor.links import WorkerLink
    from appliance.acceptor.server import AcceptorServer

log = structlog.get_logger(component="acceptor")

TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", 12)
_PendingRecord = tuple[int, int, int, int, bytes]  # kind, msg_id, flags, aux, payload
# Table 9-10 allows P-DATA requests (Evt9) in Sta6 and Sta8 only.
_CAN_SEND = (State.STA6_ESTABLISHED, State.STA8_AWAITING_LOCAL_RELEASE_RESPONSE)
DRAIN_IDLE_S = 1.0
# Receive buffers, per P-DATA-TF limit: one event loop per process reads one socket at a time,
# so all associations share a few (ReceivePool); an idle association holds none.
_RX_POOLS: dict[int, ReceivePool] = {}


def _rx_pool(max_pdu_bytes: int) -> ReceivePool:
    pool = _RX_POOLS.get(max_pdu_bytes)
    if pool is None:
        pool = _RX_POOLS[max_pdu_bytes] = ReceivePool(receive_buffer_bytes(max_pdu_bytes))
    return pool


class _Tallies:
    """Per-PDU metrics go through metrics.fast; one timer per process moves them out."""

    armed = False

    @classmethod
    def arm(cls, loop: asyncio.AbstractEventLoop) -> None:
        if not cls.armed:
            cls.armed = True
            loop.call_later(fast.FLUSH_INTERVAL_S, cls.flush)

    @classmethod
    def flush(cls) -> None:
        cls.armed = False
        fast.flush()


def _own_socket(pseudo: Any) -> socket.socket | None:
    """A duplicate of an associated connection's socket, for the quick-ACK re-arm after each
    read. The transport's own (uvloop's PseudoSocket) builds a socket object, getsockname and
    all, on every call: 9% of the acceptor's CPU under ct x4 (py-spy). Only once associated:
    a flood of pending connections must not cost two descriptors each."""
    if pseudo is None:
        return None
    try:
        return socket.socket(fileno=os.dup(pseudo.fileno()))
    except OSError:  # no fd left: setsockopt is an optimisation, the connection goes on
        return None


def _reject_label(rj: AssociateRJ) -> str:
    """A closed label for a rejection (PS3.8 Table 9-21 source/reason)."""
    if rj.source == 3:
        return "congestion" if rj.reason == 1 else "limit"
    if rj.source == 1:
        return {2: "application_context", 3: "calling_ae", 7: "called_ae"}.get(rj.reason,
                                                                              "no_context")
    return "protocol"


class DicomProtocol(asyncio.BufferedProtocol):
    def __init__(self, server: AcceptorServer, tls_context: ssl.SSLContext | None = None,
                 ) -> None:
        self.server = server
        # [tls] port: the TLS handshake runs first (_handshake), on our own accepted TCP
        # connection, so that it counts as a pending connection and a failure is logged.
        self._tls_context = tls_context
        self.handshaking = False
        self._early: list[bytes] = []  # decrypted before _handshake resumed (see there)
        self.loop = server.loop
        self.assoc_id = server.next_assoc_id()
        self.transport: asyncio.Transport | None = None
        self.sock: Any = None  # the transport's (uvloop's PseudoSocket): options set once
        self._ack_sock: socket.socket | None = None  # ours, once associated (_own_socket)
        limits = server.ul_limits
        self.conn = Association(Role.ACCEPTOR, limits, now=self.loop.time(),
                                rx_pool=_rx_pool(limits.max_pdu_bytes))
        self.link: WorkerLink | None = None
        self.calling_ae = ""
        self.peer = ""
        self.contexts: dict[int, tuple[str, str]] = {}
        self.relational: set[str] = set()  # Q/R SOP classes granted relational queries
        self.scp_roles: frozenset[str] = frozenset()  # SCP role granted (C-GET storage)
        # [access] (appliance/access.py), set by server.negotiate: C-MOVE destinations the
        # worker may use (None = any in [ae_table]); the verified TLS client subject
        self.move_destinations: frozenset[str] | None = None
        self.operations: frozenset[str] | None = None  # None = all
        self.tls_subject: str | None = None
        self.span: Any = None  # the association's trace span (None when tracing is off)
        # HELD records waiting for the peer's answer to one of our requests, in order, and
        # the Message IDs the peer answered lately (our requests are numbered upwards).
        self.held: deque[tuple[int, bytes]] = deque()
        self.answered: deque[int] = deque(maxlen=64)
        # message id -> (request, presentation context it came on: the response goes there)
        self.in_flight: dict[int, tuple[RequestIdentity, int]] = {}
        self.receiving: int | None = None
        self.receiving_ctx = 0
        self.discard_msg: int | None = None
        self.cmd_buf = bytearray()
        self.pending: deque[_PendingRecord] = deque()
        self.paused = False
        self.draining = False
        self.closed = False
        # Our A-ABORT and FIN are out (_half_close): the rest of the peer's input is not read
        # (PS3.8 Sta13) and nothing more may be written (no write after write_eof).
        self.eof_sent = False
        self.outcome = "peer_closed"
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._drain_timer: asyncio.TimerHandle | None = None
        self._last_activity = 0.0
        net = server.cfg.network
        self.silence = SilenceWatch(self.loop, net.idle_timeout_s, net.dimse_timeout_s,
                                    self._silence_limit, self._silence_expired)
        self._rx_failed = False  # get_buffer failed (a bug): input is dropped from then on
        self._rx_pdu: memoryview | None = None  # this read, when it is exactly one whole PDU
        self._echo: EchoTemplate | None = None  # see _echo_fast

    # ---- transport callbacks (the per-association exception boundary) -----------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport
        self.sock = transport.get_extra_info("socket")
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if self._tls_context is not None:
            # [tls] port: pending like a plain connection (evictable, ARTIM) until the
            # ClientHello arrives (data_received), then the handshake (_handshake).
            self.server.track_connection(self)
            self._schedule_timer()
            return
        self._connected()

    def _start_handshake(self, data: bytes, context: ssl.SSLContext) -> None:
        """The first bytes on the [tls] port: hand the connection to TLS. uvloop starts
        reading only after connection_made, so the ClientHello has already been read here;
        it is given to the TLS protocol once start_tls has put it in our place."""
        raw = self.transport
        assert raw is not None
        self._tls_context = None  # the TLS transport's connection_made is ours to call
        self.handshaking = True
        raw.pause_reading()
        self.loop.create_task(self._handshake(raw, context, data))

    async def _handshake(self, raw: asyncio.Transport, context: ssl.SSLContext,
                         early: bytes) -> None:
        artim = self.server.cfg.network.artim_timeout_s
        try:
            starting = self.loop.create_task(self.loop.start_tls(
                raw, self, context, server_side=True, ssl_handshake_timeout=artim))
            await asyncio.sleep(0)  # start_tls's first step has run: its protocol is in place
            tls_protocol: Any = raw.get_protocol()
            if tls_protocol is self:
                raise ConnectionAbortedError("start_tls did not take the connection")
            while early:  # BufferedProtocol: the bytes wait in its incoming BIO
                buf = tls_protocol.get_buffer(len(early))
                n = min(len(buf), len(early))
                buf[:n] = early[:n]
                tls_protocol.buffer_updated(n)
                early = early[n:]
            tls_transport = await starting  # bounded by the handshake timeout (ARTIM)
        except Exception as exc:  # noqa: BLE001 - OSError/ssl.SSLError/timeout: the peer's
            self.handshaking = False
            self.server.untrack_connection(self)
            raw.abort()
            if self.outcome == "evicted":  # logged (with a count) by the server
                m.ASSOCIATIONS.labels("evicted").inc()
            elif not self.conn.close_requested:  # else ARTIM expired and said so
                self._handshake_failed(exc)
            self._finish_handshake_failure()
            return
        self.handshaking = False
        if tls_transport is None or self.outcome == "evicted" or self.closed:
            if tls_transport is not None:
                tls_transport.abort()
            return
        self.connection_made(tls_transport)
        # uvloop delivers what came with the client's Finished (e.g. the A-ASSOCIATE-RQ)
        # before this coroutine resumes: it was kept in _early, in order.
        pending, self._early = self._early, []
        for chunk in pending:
            self.data_received(chunk)

    def _finish_handshake_failure(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _handshake_failed(self, exc: BaseException) -> None:
        """One line per failed handshake. A TLS error (a certificate refused either way, no
        common protocol version or cipher) is a failed node authentication: audited as such.
        A peer that only went silent or hung up is an info line, like ul.artim_expired."""
        if isinstance(exc, ssl.SSLCertVerificationError):
            why = exc.verify_message or str(exc)
        elif isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLEOFError):
            why = exc.reason or str(exc)
        else:
            log.info("tls.handshake_failed", assoc_id=self.assoc_id, peer=self.peer,
                     error=str(exc) or type(exc).__name__)
            return
        m.ASSOCIATIONS.labels("tls_failed").inc()
        log.warning("tls.handshake_failed", assoc_id=self.assoc_id, peer=self.peer, error=why)
        audit.emit(audit.AuditEvent.TLS_HANDSHAKE_FAILED, audit.MINOR_FAILURE,
                   assoc_id=self.assoc_id, peer=self.peer, error=why)

    def _connected(self) -> None:
        if self.sock is not None:
            bufsize = self.server.cfg.network.socket_buffer_bytes
            try:
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)
            except OSError:
                pass
        self.server.register(self)
        self.server.track_connection(self)  # may evict the oldest connection still in Sta2
        self._schedule_timer()
        self.silence.touch()

    def get_buffer(self, sizehint: int) -> memoryview:
        """asyncio.BufferedProtocol: read into the core's receive buffer (the rest of a large
        PDU, in place; between PDUs a large read for many small ones). ``sizehint`` is the
        transport's guess (64 KiB from uvloop's TCP, the TLS record's size from SSL); the
        core knows better what the next bytes are."""
        if not self._rx_failed:
            try:
                return self.conn.get_buffer()
            except Exception:  # noqa: BLE001 - per-association boundary (STYLE 2.5)
                log.exception("acceptor.internal_error", assoc_id=self.assoc_id)
                self._rx_failed = True
                self._abort(0)
        return memoryview(bytearray(4096))  # read and dropped until the connection goes

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` were read into get_buffer's view. Bytes not committed to the core
        (``conn.buffer_updated``) are overwritten by the next read: the special cases copy."""
        if nbytes <= 0:
            return
        fast.counter(m.RECEIVED_BYTES).inc(nbytes)
        if self.eof_sent or self._rx_failed:  # Sta13 after our A-ABORT: never looked at
            return
        conn = self.conn
        if self._tls_context is not None:  # the ClientHello on the [tls] port
            self._start_handshake(bytes(conn.offered(nbytes)), self._tls_context)
            return
        if self.handshaking:  # never onto the raw transport: wait for the TLS one
            self._early.append(bytes(conn.offered(nbytes)))
            return
        _Tallies.arm(self.loop)
        if (self._echo is not None and nbytes == len(self._echo.request)
                and self._echo_fast(bytes(conn.offered(nbytes)))):
            return  # answered without the core, which never sees this echo
        if 6 <= nbytes <= 1024 and not conn.buffered_bytes:
            # One whole small PDU in this read (a C-ECHO-RQ may become _echo_fast's template).
            view = conn.offered(nbytes)
            if view[0] == 0x04 and nbytes == 6 + int.from_bytes(view[2:6], "big"):
                self._rx_pdu = view
        self._receive(None, nbytes)

    def data_received(self, data: bytes) -> None:
        """Bytes given rather than read into get_buffer: the end of the stream (b"", from
        eof_received), input that arrived during the TLS handshake (_handshake replays it),
        and tests. Copied into the receive buffer, then the same path as a read."""
        if not data:
            if self.handshaking:
                self._early.append(data)
            else:
                _Tallies.arm(self.loop)
                self._receive(data, 0)
            return
        src = memoryview(data)
        while src:
            view = self.get_buffer(len(src))
            n = min(len(view), len(src))
            view[:n] = src[:n]
            self.buffer_updated(n)
            src = src[n:]

    def _receive(self, data: bytes | None, nbytes: int) -> None:
        """Input to the core: ``data`` given (b"": end of stream), or ``nbytes`` read into
        the receive buffer; then act on the events. No view into the receive buffer is
        used after this returns (theory of operation)."""
        try:
            self._quickack()
            if data is None:
                self.conn.buffer_updated(nbytes, self.loop.time())
            else:
                self.conn.receive_data(data, self.loop.time())
            self._pump()
        except Exception:  # noqa: BLE001 - per-association boundary (STYLE 2.5)
            log.exception("acceptor.internal_error", assoc_id=self.assoc_id)
            self._abort(0)
        finally:
            self._rx_pdu = None
            if self.link is not None:
                self.link.flush()

    def pause_writing(self) -> None:
        """The transport's send buffer passed its high-water mark: ask the worker to stop
        producing responses for us (a C-FIND with a million matches must not pile up here)."""
        self._forward(Kind.FLOW, 0, Flag.NONE, 1, b"")
        if self.link is not None:
            self.link.flush()

    def resume_writing(self) -> None:
        self._forward(Kind.FLOW, 0, Flag.NONE, 0, b"")
        if self.link is not None:
            self.link.flush()

    def eof_received(self) -> bool | None:
        self.data_received(b"")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handshaking:  # the TLS handshake failed: _handshake says so
            return
        if not self.closed:
            self._finish(self.outcome)

    # ---- core events -------------------------------------------------------------------

    def _pump(self) -> None:
        conn = self.conn
        while not self.closed and not self.eof_sent:
            try:
                ev = conn.next_event()
            except RemoteULError as exc:
                log.warning("ul.abort_sent", assoc_id=self.assoc_id, state=conn.state.name,
                            reason=exc.abort_reason, error=str(exc))
                self.outcome = "aborted_by_us"
                m.UL_ABORTS.labels("sent", str(exc.abort_reason)).inc()
                self._write(conn.send(Abort(source=2, reason=exc.abort_reason), self.loop.time()))
                self._close_worker_side(aborted=True)
                self._half_close()
                break
            if ev is NEED_DATA:
                break
            if isinstance(ev, PDataReceived):
                self._on_pdata(ev)
            elif isinstance(ev, AssociateRequested):
                self._on_associate(ev)
            elif isinstance(ev, ReleaseRequested):
                self._close_worker_side(aborted=False)
                self.outcome = "released"
                self._write(conn.send(ReplyRelease(), self.loop.time()))
            elif isinstance(ev, ReleaseConfirmed):
                self.outcome = "released"
                self._close_worker_side(aborted=False)
            elif isinstance(ev, AbortReceived):
                self.outcome = "aborted_by_peer"
                m.UL_ABORTS.labels("received", str(ev.reason) if ev.source == 2 else "user").inc()
                log.info("ul.abort_received", assoc_id=self.assoc_id, source=ev.source,
                         reason=ev.reason)
                self._close_worker_side(aborted=True)
                if self.transport is not None:
                    self.transport.close()
                break
            elif isinstance(ev, ConnectionClosed):  # reported again on every call: stop here
                self._close_worker_side(aborted=True)
                break
        self._after_core()

    def _after_core(self) -> None:
        if self.conn.close_requested and self.transport is not None:
            self.transport.close()
        self._schedule_timer()

    def _on_associate(self, ev: AssociateRequested) -> None:
        rq = ev.rq
        self.calling_ae = rq.calling_ae
        self.server.untrack_connection(self)
        structlog.contextvars.bind_contextvars()  # role/pid stay bound for the process
        rj = ev.provider_rejection or self._admission(rq)
        if rj is None:
            result = self.server.negotiate(self, rq)  # [access] rules, then the policy
            if isinstance(result, AssociateRJ):
                rj = result
        if rj is not None:
            log.info("assoc.rejected", assoc_id=self.assoc_id, peer=self.peer,
                     calling_ae=rq.calling_ae, called_ae=rq.called_ae, result=rj.result,
                     source=rj.source, reason=rj.reason,
                     **({"error": ev.provider_reason} if ev.provider_reason else {}))
            self.outcome = "rejected"
            m.ASSOCIATIONS.labels("rejected").inc()
            m.REJECTIONS.labels(_reject_label(rj)).inc()
            audit.emit(audit.AuditEvent.ASSOCIATION_REJECTED, audit.MINOR_FAILURE,
                       assoc_id=self.assoc_id, peer=self.peer, calling_ae=rq.calling_ae,
                       called_ae=rq.called_ae, result=rj.result, source=rj.source,
                       reason=rj.reason)
            self._write(self.conn.send(RejectAssociation(rj), self.loop.time()))
            return
        assert not isinstance(result, AssociateRJ)
        link = self.server.pick_link()
        assert link is not None  # _admission checked
        self._write(self.conn.send(AcceptAssociation(result), self.loop.time()))
        self.contexts = accepted_contexts(result, rq)
        self.relational = {uid for uid, reply in extended_negotiation(result).items()
                           if relational_granted(reply)}
        self.scp_roles = granted_scp_roles(result)
        self.link = link
        link.associations.add(self)
        self.server.count_association(self, +1)
        self._ack_sock = _own_socket(self.sock)
        self.span = tracing.start_span("dicom.association", assoc_id=self.assoc_id,
                                       peer=self.peer, calling_ae=rq.calling_ae,
                                       called_ae=rq.called_ae)
        audit.emit(audit.AuditEvent.ASSOCIATION_ACCEPTED, assoc_id=self.assoc_id, peer=self.peer,
                   calling_ae=rq.calling_ae, called_ae=rq.called_ae, contexts=len(self.contexts))
        self._send_open()
        self.outcome = "peer_closed"
        m.ASSOCIATIONS.labels("accepted").inc()
        log.info("assoc.accepted", assoc_id=self.assoc_id, peer=self.peer,
                 calling_ae=rq.calling_ae, called_ae=rq.called_ae, worker=link.slot,
                 contexts=len(self.contexts), peer_max_pdu=self.conn.peer_max_pdu)

    def _admission(self, rq: AssociateRQ) -> AssociateRJ | None:
        """Capacity checks before negotiation (transient rejections, STYLE 2.5)."""
        net = self.server.cfg.network
        if self.server.draining:
            return reject_busy(PresentationRejectReason.TEMPORARY_CONGESTION)
        if self.server.active_total >= net.max_associations:
            return reject_busy(PresentationRejectReason.LOCAL_LIMIT_EXCEEDED)
        if self.server.active_for(rq.calling_ae) >= net.max_associations_per_ae:
            return reject_busy(PresentationRejectReason.LOCAL_LIMIT_EXCEEDED)
        if self.server.pick_link() is None:
            return reject_busy(PresentationRejectReason.TEMPORARY_CONGESTION)
        return None

    def _send_open(self) -> None:
        assert self.link is not None
        info = {
            "calling_ae": self.calling_ae,
            "called_ae": self.server.cfg.network.ae_title,
            "peer": self.peer,
            "peer_max_pdu": self.conn.peer_max_pdu,
            "contexts": {str(k): list(v) for k, v in self.contexts.items()},
            "relational": sorted(self.relational),
            "scp_roles": sorted(self.scp_roles),
            "move_destinations": (None if self.move_destinations is None
                                  else sorted(self.move_destinations)),
            "tls_subject": self.tls_subject,
            "operations": None if self.operations is None else sorted(self.operations),
            "traceparent": tracing.traceparent(self.span),  # W3C context for the worker's spans
        }
        self._forward(Kind.OPEN, 0, Flag.NONE, 0, msgpack.packb(info))

    # ---- P-DATA: forward PDVs to the worker ---------------------------------------------

    def _on_pdata(self, ev: PDataReceived) -> None:
        self.silence.touch()
        self._last_activity = self.loop.time()
        if self.conn.state is State.STA7_AWAITING_RELEASE_RP and any(
            p.is_command for p in ev.pdvs
        ):
            # A request crossed our A-RELEASE-RQ: it can never be answered (no P-DATA in
            # Sta7), so say so at once instead of leaving the peer to time out.
            self._protocol_violation("request received after we asked to release (draining)")
            return
        max_cmd = self.server.cfg.network.max_command_bytes
        for pdv in ev.pdvs:
            if pdv.is_command:
                if self.receiving is not None:
                    self._protocol_violation("command fragment inside a data set")
                    return
                self.cmd_buf += pdv.data
                if len(self.cmd_buf) > max_cmd:
                    self._protocol_violation(f"command set larger than {max_cmd} bytes")
                    return
                if pdv.is_last:
                    if not self._on_command(pdv.context_id):
                        return
            else:
                msg_id = self.receiving
                if msg_id is None or pdv.context_id != self.receiving_ctx:
                    self._protocol_violation("data set fragment without its command")
                    return
                if pdv.is_last:
                    self.receiving = None
                if msg_id == self.discard_msg:
                    if pdv.is_last:
                        self.discard_msg = None
                    continue
                flags = Flag.LAST if pdv.is_last else Flag.NONE
                self._forward(Kind.DATA, msg_id, flags, pdv.context_id, pdv.data)

    def _on_command(self, context_id: int) -> bool:
        command = bytes(self.cmd_buf)
        self.cmd_buf.clear()
        if context_id not in self.contexts:
            self._protocol_violation(f"presentation context {context_id} not accepted")
            return False
        try:
            elements = decode_command_set(command)
            ident = RequestIdentity.from_elements(elements)
        except CommandSetError as exc:
            log.warning("dimse.abort_sent", assoc_id=self.assoc_id, error=str(exc))
            self._abort(0)
            return False
        if ident is None:
            return self._on_non_request(context_id, elements, command)
        if (ident.command_field == CommandField.C_ECHO_RQ and not ident.has_data_set
                and not self.in_flight and self.contexts[context_id][0] == VERIFICATION):
            self._answer_echo(context_id, ident, command)
            return True
        limit = self.server.cfg.network.max_pending_operations
        if limit and len(self.in_flight) >= limit:
            # We grant an Asynchronous Operations Window of 1 (PS3.7 D.3.3.3) at most; a peer
            # pipelining past max_pending_operations would tie up a worker without bound.
            self._protocol_violation(f"more than {limit} operations outstanding")
            return False
        self.in_flight[ident.message_id] = (ident, context_id)
        if ident.has_data_set:
            self.receiving = ident.message_id
            self.receiving_ctx = context_id
        self._forward(Kind.COMMAND, ident.message_id, Flag.NONE, context_id, command)
        return True

    def _answer_echo(self, context_id: int, ident: RequestIdentity, command: bytes) -> None:
        """C-ECHO: answered here (appliance/acceptor/echo.py); this read, if it was exactly
        the request PDU, becomes the template of _echo_fast (only without tracing: a
        per-echo span needs this path)."""
        tracing.end_span(tracing.start_span("dicom.c_echo", parent=self.span,
                                            message_id=ident.message_id), status=0)
        pdus = echo_response_pdus(self.conn, context_id, ident.message_id)
        for pdu in pdus:
            self._write(pdu)
        fast.counter(m.DIMSE_OPERATIONS, "C-ECHO", "success").inc()
        if self._echo is None and self._rx_pdu is not None and self.span is None:
            self._echo = EchoTemplate.learn(bytes(self._rx_pdu), command, context_id, pdus)

    def _echo_fast(self, data: bytes) -> bool:
        """A read that is byte for byte the association's first C-ECHO-RQ but for the Message
        ID is answered with the recorded C-ECHO-RSP, Message ID patched, without the Upper
        Layer core: P-DATA in Sta6 changes no state (DT-2), and nothing else may be pending.
        Only without tracing (a per-echo span would need the slow path)."""
        assert self._echo is not None
        if (self.conn.state is not State.STA6_ESTABLISHED
                or self.conn.buffered_bytes or self.in_flight or self.receiving is not None
                or self.cmd_buf or self.pending or self.held or self.closed or self.draining):
            return False
        response = self._echo.answer(data)
        if response is None:
            return False
        # No TCP_QUICKACK re-arm here: the whole request came in one read and our answer
        # carries the ACK (the Nagle trap needs a segment held back, which this is not).
        self.silence.touch()
        self._last_activity = self.silence.last_rx
        self._write(response)
        fast.counter(m.DIMSE_OPERATIONS, "C-ECHO", "success").inc()
        return True

    def _on_non_request(self, context_id: int, elements: CommandElements,
                        command: bytes) -> bool:
        """A C-CANCEL-RQ (PS3.7 §9.3.2.3) or a response to one of our requests (C-STORE-RSP of
        a C-GET sub-operation): neither has a Message ID of its own, and neither is answered,
        so it goes to the worker under the Message ID it responds to, outside ``in_flight``."""
        responded = elements.get(Tag.MESSAGE_ID_BEING_RESPONDED_TO)
        field = elements.get(Tag.COMMAND_FIELD)
        is_cancel = field == CommandField.C_CANCEL_RQ
        is_response = isinstance(field, int) and bool(field & RESPONSE_BIT)
        if not isinstance(responded, int) or not (is_cancel or is_response):
            self._protocol_violation("command set without Command Field or Message ID")
            return False
        try:
            with_data = has_data_set(elements)
        except CommandSetError:
            self._protocol_violation("command set without Command Data Set Type")
            return False
        if with_data:  # a response with a data set (e.g. N-EVENT-REPORT-RSP) is drained
            self.receiving = self.discard_msg = -responded - 1
            self.receiving_ctx = context_id
            return True
        self._forward(Kind.COMMAND, responded, Flag.NONE, context_id, command)
        if is_response:
            self._release_held(responded)
        return True

    def _release_held(self, responded: int) -> None:
        """The peer answered our request ``responded``: write what waited for that."""
        self.answered.append(responded)
        while self.held and self.held[0][0] in self.answered:
            _, data = self.held.popleft()
            if self.conn.state in _CAN_SEND:
                self._write(data)

    def _forward(self, kind: int, msg_id: int, flags: int, aux: int,
                 payload: bytes | memoryview) -> None:
        link = self.link
        if link is None:
            return
        if not self.pending and link.put(kind, self.assoc_id, msg_id, flags, aux, payload):
            return
        # Ring full: keep order, copy out of the receive buffer, stop reading (backpressure).
        self.pending.append((kind, msg_id, flags, aux, bytes(payload)))
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
            self.server.note_paused(+1)
        link.wait_for_space(self)

    def retry_pending(self) -> bool:
        """Called by the link when the ring has room; True once everything pending is put."""
        link = self.link
        while self.pending and link is not None:
            kind, msg_id, flags, aux, payload = self.pending[0]
            if not link.put(kind, self.assoc_id, msg_id, flags, aux, payload):
                return False
            self.pending.popleft()
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()
            self.server.note_paused(-1)
        return True

    # ---- responses from the worker -------------------------------------------------------

    def deliver(self, kind: int, msg_id: int, flags: int, aux: int, payload: memoryview) -> None:
        """A record from the worker's reply ring for this association."""
        if self.closed:
            return
        try:
            if kind == Kind.SEND:
                if flags & Flag.HELD and (self.held or aux not in self.answered):
                    # A C-GET sub-operation queued ahead: it goes out when the peer answers
                    # our request ``aux`` (kept in order behind anything already held).
                    self.held.append((aux, bytes(payload)))
                elif self.conn.state in _CAN_SEND:
                    if flags & Flag.FRAMED:  # whole P-DATA-TF PDUs: P-DATA changes no state
                        self._write(bytes(payload))  # copied out: the slot is released after
                    else:
                        self._write_pdu_items(payload)
                if flags & Flag.FINAL:
                    self.in_flight.pop(msg_id, None)
                    self._maybe_release()
            elif kind == Kind.ABORT:
                self._abort(aux)
        except Exception:  # noqa: BLE001 - per-association boundary (STYLE 2.5)
            log.exception("acceptor.internal_error", assoc_id=self.assoc_id)
            self._abort(0)
        self._after_core()

    def _write_pdu_items(self, items: bytes | memoryview) -> None:
        bufs = self.conn.send_pdata_items(items)
        self._write(b"".join(bufs))  # copies out of the ring: the slot is released after

    def worker_replaced(self, link: WorkerLink) -> None:
        """The pinned worker died: fail what it had in flight, then rebind (STYLE 2.5)."""
        self.pending.clear()
        self.held.clear()  # a sub-operation queued ahead may be incomplete: never sent
        receiving = self.receiving
        if receiving is not None:
            self.discard_msg = receiving  # drop the rest of the orphaned data set
        self.link = link
        link.associations.add(self)
        failed = len(self.in_flight)
        if self.conn.state in _CAN_SEND:
            # The orphaned data set's request too: its response follows the rest of its PDVs
            # in time, which the peer is still sending (they are discarded above).
            self._fail_in_flight(Status.PROCESSING_FAILURE, "worker process restarted",
                                 include_receiving=True)
            self._send_open()
        self.in_flight.clear()
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
            self.server.note_paused(-1)
        log.warning("assoc.ops_failed", assoc_id=self.assoc_id, failed=failed,
                    worker=link.slot, generation=link.generation)
        self._after_core()

    # ---- endings -------------------------------------------------------------------------

    def start_drain(self) -> None:
        self.draining = True
        self._maybe_release()
        self._after_core()

    def _maybe_release(self) -> None:
        """While draining, an association idle for DRAIN_IDLE_S is asked to release (PS3.8
        AR-1: either side may). Waiting a moment lets a sender that is between two requests
        go on: a request crossing our A-RELEASE-RQ could not be answered (no P-DATA in Sta7)."""
        if not self.draining or self.closed:
            return
        self._last_activity = self.loop.time()
        if self._drain_timer is None:
            self._drain_timer = self.loop.call_later(DRAIN_IDLE_S, self._drain_check)

    def _drain_check(self) -> None:
        self._drain_timer = None
        if self.closed:
            return
        idle_for = self.loop.time() - self._last_activity
        busy = self.in_flight or self.receiving is not None or self.pending
        if busy or idle_for < DRAIN_IDLE_S:
            self._drain_timer = self.loop.call_later(DRAIN_IDLE_S, self._drain_check)
            return
        if self.conn.state is State.STA6_ESTABLISHED:
            log.info("assoc.release_requested", assoc_id=self.assoc_id, reason="draining")
            self._write(self.conn.send(RequestRelease(), self.loop.time()))
            self._after_core()

    def _protocol_violation(self, why: str) -> None:
        log.warning("dimse.abort_sent", assoc_id=self.assoc_id, error=why)
        self._abort(0)

    def _abort(self, reason: int) -> None:
        if self.closed:
            return
        self.outcome = "aborted_by_us"
        m.UL_ABORTS.labels("sent", str(reason)).inc()
        try:
            self._write(self.conn.send(Abort(source=2, reason=reason), self.loop.time()))
        except LocalULError:
            pass
        self._close_worker_side(aborted=True)
        self._half_close()

    def _half_close(self) -> None:
        """After our A-ABORT: FIN right behind it, then drop the connection shortly.

        PS3.8 keeps Sta13 until the peer closes or ARTIM expires; a broken or hostile peer
        would hold the socket for all of ARTIM, so the FIN tells it we are done and a short
        linger bounds the wait (the A-ABORT is not lost to an RST from unread input)."""
        tr = self.transport
        if tr is None or tr.is_closing():
            return
        if tr.can_write_eof():
            tr.write_eof()
            self.eof_sent = True
        self.loop.call_later(min(1.0, self.server.cfg.network.artim_timeout_s), tr.abort)

    def abort_now(self) -> None:
        """Grace period over: fail what is in flight (never silence), then A-ABORT."""
        if self.conn.state in _CAN_SEND and not self.closed:
            self._fail_in_flight(Status.OUT_OF_RESOURCES, "appliance shutting down")
        self._abort(0)

    def _fail_in_flight(self, status: int, comment: str, include_receiving: bool = False) -> int:
        """Answer requests still in flight with ``status``, each on its own context."""
        failed = [(m, i, ctx) for m, (i, ctx) in self.in_flight.items()
                  if include_receiving or m != self.receiving]
        for msg_id, ident, ctx in failed:
            rsp = status_response(ident, status, comment)
            for parts in fragment_message(ctx, rsp, None, self.conn.peer_max_pdu):
                self._write_pdu_items(b"".join(parts))
            self.in_flight.pop(msg_id, None)
        return len(failed)

    def _close_worker_side(self, aborted: bool) -> None:
        link = self.link
        if link is None:
            return
        self.link = None
        link.associations.discard(self)
        if self in link.waiting:
            link.waiting.remove(self)
        flags = Flag.ABORTED if aborted else Flag.NONE
        if not link.put(Kind.CLOSE, self.assoc_id, 0, flags, 0, b""):
            link.jobs.put_blocking(Kind.CLOSE, self.assoc_id, 0, flags, 0, b"", timeout_s=5.0)
        link.flush()
        self.server.count_association(self, -1)

    def _finish(self, outcome: str) -> None:
        self.server.untrack_connection(self)
        self._close_worker_side(aborted=outcome != "released")
        self.closed = True
        self._close_socket()
        if self._timer is not None:
            self._timer.cancel()
        self.silence.stop()
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        if self.paused:
            self.server.note_paused(-1)
        self.server.unregister(self, outcome)

    def _close_socket(self) -> None:
        if self._ack_sock is not None:
            self._ack_sock.close()  # our duplicate only: the transport's is the transport's
            self._ack_sock = None

    def _write(self, data: bytes) -> None:
        if (data and self.transport is not None and not self.eof_sent
                and not self.transport.is_closing()):
            self.transport.write(data)
            fast.counter(m.SENT_BYTES).inc(len(data))

    def _quickack(self) -> None:
        # Re-arm quick ACKs after every read: a Nagle-on client holding its last small segment
        # until our ACK would otherwise wait for the 40 ms delayed-ACK timer (the "Nagle trap").
        sock = self._ack_sock if self._ack_sock is not None else self.sock
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)
            except OSError:
                pass

    # ---- timers (ARTIM from the core; silence limits: appliance/acceptor/silence.py) ------

    def _schedule_timer(self) -> None:
        deadline = self.conn.deadline
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None and not self.closed:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            before = self.conn.state
            self.conn.timer_expired(self.loop.time())
            if self.conn.state is not before:
                log.info("ul.artim_expired", assoc_id=self.assoc_id, state=before.name,
                         peer=self.peer)
        except Exception:  # noqa: BLE001 - per-association boundary (STYLE 2.5)
            log.exception("acceptor.internal_error", assoc_id=self.assoc_id)
        self._after_core()
        if self.conn.close_requested and self.transport is not None:
            self.transport.abort()

    def _silence_limit(self) -> tuple[str, float] | None:
        """Which silence limit applies now: ``dimse`` while the peer owes us the rest of a
        message or the answer to our sub-operation, ``network`` when nothing is in progress,
        None while we owe something (a worker is busy, or we stopped reading)."""
        net = self.server.cfg.network
        if self.paused or self.pending:
            return None
        if self.receiving is not None or self.cmd_buf or self.held:
            timeout = net.dimse_timeout_s or net.idle_timeout_s
            return ("dimse", timeout) if timeout > 0 else None
        if self.in_flight:
            return None
        return ("network", net.idle_timeout_s) if net.idle_timeout_s > 0 else None

    def _silence_expired(self, limit: str, silent_s: float) -> None:
        log.warning("assoc.idle_timeout", assoc_id=self.assoc_id, timeout=limit,
                    silent_s=round(silent_s, 1), receiving=self.receiving is not None)
        self._abort(0)
