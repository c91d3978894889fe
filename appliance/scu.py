"""A blocking C-ECHO / C-STORE SCU over plain sockets, built on our own sans-IO core.

THEORY OF OPERATION
-------------------
``SCU`` owns one TCP socket and one requestor-role ``Association`` (PS3.8 §9.2). The socket is
the only I/O: bytes read go into ``Association.receive_data``; bytes to write come back from
``Association.send`` / ``send_pdata_items`` and are written at once with ``sendmsg`` (gather
writes, so data set slices are never concatenated). Every socket operation is bounded by
``timeout_s`` (``TimeoutError``); the core's ARTIM timer is not needed because we close the
socket ourselves after release or abort. With an ``ssl_context`` (DICOM over TLS, PS3.15 B.9)
the socket is wrapped right after connect; an ``SSLSocket`` has no ``sendmsg``, so small
buffers are coalesced into one write and data set slices are written as they are.

DIMSE is strictly synchronous (no Asynchronous Operations Window is proposed, PS3.7 D.3.3.3):
one request is outstanding at a time, so the first response with a matching Message ID
Being Responded To is the answer. Message IDs start at 1 and increase per association.

Data sets are sent exactly as given, in the transfer syntax of the chosen presentation
context: nothing is transcoded. ``store_file`` streams the data set from disk in blocks that
are a whole number of PDVs; each block is written completely before the next is read into
the same buffer, so memory stays bounded whatever the file size.

Invariants:

* ``accepted`` is non-empty only between a successful ``associate`` and the end of the
  association; after release, abort or any failure the socket is closed.
* Every failure after the association is established leaves it aborted (A-ABORT sent when
  the transport still works) before the exception reaches the caller, except the failures
  the caller can recover from (``NoAcceptedContext``, a ``store_file`` argument error).
* Any A-ABORT or transport close from the peer surfaces as ``AssociationAborted``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, NoReturn

from appliance.dimse.assembler import CommandComplete, MessageAssembler
from appliance.dimse.fragment import UNLIMITED_PDU_BYTES, PduParts, fragment_message
from appliance.dimse.messages import (
    CEchoRQ,
    CEchoRSP,
    CStoreRQ,
    CStoreRSP,
    Message,
    encode_message,
    message_from_elements,
)
from appliance.errors import ApplianceError, DimseError, LocalULError, RemoteULError
from appliance.negotiation.policy import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from appliance.negotiation.sop_classes import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION
from appliance.scu_files import file_pdus, read_file_meta
from appliance.ul.association import (
    NEED_DATA,
    Abort,
    AbortReceived,
    AssociateAccepted,
    AssociateRejected,
    Association,
    ConnectionClosed,
    Event,
    PDataReceived,
    ReleaseConfirmed,
    ReleaseRequested,
    ReplyRelease,
    RequestAssociation,
    RequestRelease,
    Role,
    ULLimits,
)
from appliance.ul.pdu import (
    PDV_HEADER_BYTES,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    ImplementationClassUID,
    ImplementationVersionName,
    MaximumLength,
    PresentationContextRQ,
    PresentationResult,
    UserInformation,
    UserSubItem,
)

_RECV_BYTES: Final = 256 * 1024
# Gather-write batching: flush when this many buffers or bytes are queued. 3 buffers per PDU,
# and Linux's IOV_MAX is 1024.
_MAX_IOVECS: Final = 960
_FLUSH_BYTES: Final = 1024 * 1024
# Over TLS, buffers smaller than this are gathered into one write (one TLS record is 16 KiB).
_TLS_COALESCE_BYTES: Final = 16 * 1024
_MAX_CONTEXTS: Final = 128  # odd context ids 1..255 (PS3.8 §9.3.2.2)
_MESSAGE_ID_MAX: Final = 0xFFFF  # (0000,0110) is US
_AE_TITLE_MAX: Final = 16

_ABORT_SOURCE_USER: Final = 0  # PS3.8 §9.3.8: DICOM UL service-user initiated abort
_ABORT_SOURCE_PROVIDER: Final = 2


# ---- errors and results --------------------------------------------------------------------


class SCUError(ApplianceError):
    """Base of the SCU's own failures."""


class AssociationRejected(SCUError):
    """The peer answered A-ASSOCIATE-RJ (PS3.8 §9.3.4); ``rj`` holds result, source, reason."""

    def __init__(self, rj: AssociateRJ) -> None:
        super().__init__(
            f"association rejected: result {rj.result}, source {rj.source}, reason {rj.reason}"
        )
        self.rj = rj


class AssociationAborted(SCUError):
    """The association ended abnormally (PS3.8 §9.3.8).

    ``source``/``reason`` are the A-ABORT fields, None when the peer just closed the
    transport. ``by_peer`` is False when we aborted because the peer broke PS3.7/PS3.8.
    """

    def __init__(
        self, message: str, source: int | None = None, reason: int | None = None,
        *, by_peer: bool = True,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.source = source
        self.reason = reason
        self.by_peer = by_peer


class NoAcceptedContext(SCUError):
    """No accepted presentation context fits the request (PS3.7 §9.1.1.1.1); nothing was
    sent and the association is still usable."""


@dataclass(frozen=True, slots=True)
class ProposedContext:
    """One presentation context to propose (PS3.8 §9.3.2.2)."""

    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StoreResult:
    """The C-STORE-RSP outcome (PS3.7 §9.3.1.2; statuses PS3.4 B.2.3)."""

    status: int
    error_comment: str | None = None


def contexts_for_files(paths: Iterable[str | os.PathLike[str]]) -> list[ProposedContext]:
    """One context per (SOP Class, transfer syntax) found in the files' File Meta, so each
    file can be sent as-is, plus Verification (Implicit VR LE, PS3.5 §10.1) for C-ECHO.

    Raises ``ValueError`` for a file that is not Part 10 or for more than 128 contexts.
    """
    seen: dict[tuple[str, str], None] = {}
    for path in paths:
        with open(path, "rb") as fp:
            meta = read_file_meta(fp)
        seen[(meta.sop_class_uid, meta.transfer_syntax_uid)] = None
    out = [ProposedContext(sop, (ts,)) for sop, ts in seen]
    out.append(ProposedContext(VERIFICATION, (IMPLICIT_VR_LITTLE_ENDIAN,)))
    if len(out) > _MAX_CONTEXTS:
        raise ValueError(f"{len(out)} presentation contexts; PS3.8 allows at most 128")
    return out


# ---- the SCU -------------------------------------------------------------------------------


class SCU:
    """A blocking DICOM SCU for C-ECHO (PS3.7 §9.1.5) and C-STORE (PS3.7 §9.1.1).

    ``with SCU(...) as scu:`` associates on entry, releases on normal exit and aborts when
    the block raises.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        calling_ae: str = "PACS_SCU",
        called_ae: str = "PACS",
        contexts: Sequence[ProposedContext],
        max_pdu_bytes: int = 1_048_576,
        timeout_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not contexts:
            raise ValueError("at least one presentation context must be proposed")
        if len(contexts) > _MAX_CONTEXTS:
            raise ValueError(f"{len(contexts)} presentation contexts; PS3.8 allows 128")
        if any(not c.transfer_syntaxes for c in contexts):
            raise ValueError("every proposed context needs at least one transfer syntax")
        for title in (calling_ae, called_ae):
            # PS3.8 §9.3.2: AE titles are 1-16 characters, leading/trailing spaces insignificant
            if not 0 < len(title.strip()) <= _AE_TITLE_MAX:
                raise ValueError(f"AE title {title!r} must be 1-16 characters")
        self.host = host
        self.port = port
        self.calling_ae = calling_ae
        self.called_ae = called_ae
        self.contexts = tuple(contexts)
        self.max_pdu_bytes = max_pdu_bytes
        self.timeout_s = timeout_s
        # DICOM over TLS (PS3.15 B.9; appliance.tls.client_context): the handshake runs right
        # after connect, within timeout_s, with ``host`` as server_hostname (SNI, and the name
        # checked when the context has check_hostname).
        self.ssl_context = ssl_context
        self.accepted: dict[int, tuple[str, str]] = {}
        # The A-ASSOCIATE-AC of the current association (its user information carries the
        # peer's answers to role selection and extended negotiation, PS3.7 D.3.3).
        self.associate_ac: AssociateAC | None = None
        self._sock: socket.socket | None = None
        self._assoc: Association | None = None
        self._assembler = MessageAssembler()
        self._message_id = 0

    # -- context manager

    def __enter__(self) -> SCU:
        if self._assoc is None:
            self.associate()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.release()
        else:
            self.abort()

    # -- association

    @property
    def peer_max_pdu(self) -> int:
        """The peer's Maximum Length Received (PS3.8 D.1); 0 = unlimited."""
        return self._assoc.peer_max_pdu if self._assoc is not None else 0

    @property
    def tls_session(self) -> tuple[str, str] | None:
        """(TLS version, cipher) of the open connection; None over plain TCP."""
        sock = self._sock
        if not isinstance(sock, ssl.SSLSocket):
            return None
        cipher = sock.cipher()
        return (sock.version() or "", cipher[0] if cipher else "")

    def associate(self) -> None:
        """Connect and negotiate (PS3.8 §9.3.2-9.3.4); fills ``accepted``.

        Raises ``AssociationRejected``, ``AssociationAborted`` (also when we abort an AC
        whose Maximum Length is too small to use), ``TimeoutError``,
        ``ConnectionError`` or, with an ``ssl_context``, ``ssl.SSLError`` (handshake
        failed: the peer's certificate is not trusted, or it refused ours).
        """
        if self._sock is not None:
            raise LocalULError("already associated")
        rq = self._associate_rq()
        assoc = Association(
            Role.REQUESTOR,
            ULLimits(max_pdu_bytes=self.max_pdu_bytes, artim_timeout_s=self.timeout_s),
            now=time.monotonic(),
        )
        assoc.send(RequestAssociation(rq))  # AE-1: the bytes come on connection_established
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        # Small PDUs (A-ASSOCIATE-RQ, command sets) must not wait for Nagle's algorithm.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is not None:
            try:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        self._sock, self._assoc = sock, assoc
        self._assembler = MessageAssembler()
        self._message_id = 0
        try:
            self._write([assoc.connection_established(time.monotonic())])
            ev = self._next_event()
        except AssociationAborted as exc:
            self._close()
            if self.ssl_context is None or exc.source is not None:
                raise
            # TLS 1.3: a server that refuses our certificate (or our lack of one) does so
            # after the client's side of the handshake is done, often by just closing.
            raise AssociationAborted(f"{exc} right after the TLS handshake (does it require "
                                     "a client certificate?)", by_peer=True) from exc
        except BaseException:
            self._close()
            raise
        if isinstance(ev, AssociateRejected):
            self._close()
            raise AssociationRejected(ev.rj)
        if not isinstance(ev, AssociateAccepted):
            self.abort()  # Table 9-10 has no such event in Sta5; _next_event already raised
            raise AssociationAborted(f"unexpected {type(ev).__name__} while associating")
        self._refuse_tiny_peer_max_pdu(ev.ac, assoc.limits.min_peer_max_pdu_bytes)
        proposed = {2 * i + 1: c.abstract_syntax for i, c in enumerate(self.contexts)}
        self.associate_ac = ev.ac
        self.accepted = {
            pc.context_id: (proposed[pc.context_id], pc.transfer_syntax)
            for pc in ev.ac.presentation_contexts
            if pc.result == PresentationResult.ACCEPTANCE and pc.context_id in proposed
        }

    def _refuse_tiny_peer_max_pdu(self, ac: AssociateAC, floor: int) -> None:
        """A-ABORT an A-ASSOCIATE-AC whose Maximum Length Received (PS3.8 D.1) is 1..floor-1.

        PS3.8 sets no floor (0 = unlimited), but a P-DATA-TF of at most 6 bytes cannot hold a
        PDV with any data (PS3.8 §9.3.5.1: 6 header bytes, then the value), and a few hundred
        bytes means thousands of PDUs per object. ``floor`` is the one our acceptor applies
        to requestors (``ULLimits.min_peer_max_pdu_bytes``, 1024; they get A-ASSOCIATE-RJ
        1-2-1), so both roles hold peers to the same rule; real implementations advertise far
        more (DCMTK's tools at least 4096). A requestor cannot reject an AC, so this is an
        A-ABORT, and from the service user (source 0, PS3.8 §9.3.8): the AC is well-formed,
        it is our policy that refuses it, not a protocol error of the peer's.
        """
        peer_max = ac.user_information.maximum_length or 0
        if 0 < peer_max < floor:
            self.abort()
            raise AssociationAborted(
                f"peer maximum PDU length {peer_max} is too small (at least {floor} bytes "
                "needed)", _ABORT_SOURCE_USER, 0, by_peer=False,
            )  # fmt: skip

    def _associate_rq(self) -> AssociateRQ:
        pcs = tuple(
            PresentationContextRQ(2 * i + 1, c.abstract_syntax, c.transfer_syntaxes)
            for i, c in enumerate(self.contexts)
        )
        ui = UserInformation(
            (
                MaximumLength(self.max_pdu_bytes),
                ImplementationClassUID(IMPLEMENTATION_CLASS_UID),
                ImplementationVersionName(IMPLEMENTATION_VERSION_NAME),
                *self._extra_user_items(),
            )
        )
        return AssociateRQ(self.called_ae, self.calling_ae, pcs, ui)

    def _extra_user_items(self) -> tuple[UserSubItem, ...]:
        """User Information sub-items a subclass proposes after the mandatory ones (role
        selection, extended negotiation: PS3.7 D.3.3); none here."""
        return ()

    def release(self) -> None:
        """A-RELEASE (PS3.8 §9.3.6-9.3.7), then close. A release collision is answered
        (AR-8/AR-9). Falls back to abort on timeout or a broken peer."""
        assoc = self._assoc
        if assoc is None or self._sock is None:
            return
        try:
            self._write([assoc.send(RequestRelease(), time.monotonic())])
            while True:
                ev = self._next_event()
                if isinstance(ev, ReleaseConfirmed) and assoc.close_requested:
                    break  # AR-3
                if isinstance(ev, ReleaseRequested):
                    self._write([assoc.send(ReplyRelease(), time.monotonic())])  # AR-9
                # PDataReceived here (AR-6) answers nothing we still wait for: dropped.
        except AssociationAborted:
            pass  # the association is over either way; release has nothing left to do
        except BaseException:
            self.abort()
            raise
        self._close()

    def abort(self) -> None:
        """A-ABORT as service user (PS3.8 §9.3.8, source 0), then close. Never raises for
        transport errors: the point is to end the association."""
        self._abort(_ABORT_SOURCE_USER, 0)

    def _abort(self, source: int, reason: int) -> None:
        assoc, sock = self._assoc, self._sock
        if assoc is not None and sock is not None:
            out = assoc.send(Abort(source=source, reason=reason), time.monotonic())
            if out:
                with contextlib.suppress(OSError):
                    sock.sendall(out)
        self._close()

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        self._assoc = None
        self.accepted = {}
        self.associate_ac = None
        if sock is not None:
            sock.close()

    # -- DIMSE services

    def echo(self) -> int:
        """C-ECHO (PS3.7 §9.1.5) on an accepted Verification context; returns the status."""
        context_id = self._context_for(VERIFICATION, None)
        message_id = self._next_message_id()
        command = encode_message(CEchoRQ(message_id))
        self._send_pdus(fragment_message(context_id, command, None, self._peer_limit()))
        rsp = self._await_response(message_id)
        if not isinstance(rsp, CEchoRSP):
            self._protocol_abort(f"C-ECHO answered by {type(rsp).__name__}")
        return int(rsp.status)

    def store(
        self,
        dataset_bytes: bytes | memoryview,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str | None = None,
        *,
        priority: int = 0,
        move_originator_ae: str | None = None,
        move_originator_msg_id: int | None = None,
    ) -> StoreResult:
        """C-STORE (PS3.7 §9.1.1) of an already-encoded data set, sent as-is.

        ``transfer_syntax_uid`` is the encoding of ``dataset_bytes``; the context used is the
        lowest-id accepted one for the SOP Class with that transfer syntax. ``None`` takes
        the lowest-id accepted context for the SOP Class whatever its transfer syntax (the
        caller vouches for the encoding). Raises ``NoAcceptedContext`` when none fits.
        """
        return self.store_result(self.send_store(
            dataset_bytes, sop_class_uid, sop_instance_uid, transfer_syntax_uid,
            priority=priority, move_originator_ae=move_originator_ae,
            move_originator_msg_id=move_originator_msg_id))

    def send_store(
        self,
        dataset_bytes: bytes | memoryview,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str | None = None,
        *,
        priority: int = 0,
        move_originator_ae: str | None = None,
        move_originator_msg_id: int | None = None,
    ) -> int:
        """``store``'s first half: the C-STORE-RQ and its data set are written (the buffer
        may be released on return); returns the Message ID to pass to ``store_result``. One
        operation is outstanding at a time (PS3.7): wait for its result before the next."""
        context_id = self._context_for(sop_class_uid, transfer_syntax_uid)
        rq = self._store_rq(
            sop_class_uid, sop_instance_uid, priority, move_originator_ae, move_originator_msg_id
        )
        data = memoryview(dataset_bytes).cast("B")
        self._send_pdus(fragment_message(context_id, encode_message(rq), data, self._peer_limit()))
        return rq.message_id

    def store_result(self, message_id: int) -> StoreResult:
        """``store``'s second half: wait for the C-STORE-RSP to ``message_id``."""
        return self._store_result(message_id)

    def store_file(
        self,
        path: str | os.PathLike[str],
        *,
        move_originator_ae: str | None = None,
        move_originator_msg_id: int | None = None,
    ) -> StoreResult:
        """C-STORE of a Part 10 file's data set, streamed from disk as-is (PS3.10 §7.1:
        SOP Class, Instance and transfer syntax come from its File Meta). The move
        originator arguments mark a C-MOVE sub-operation (PS3.7 §9.1.1.1.9-10)."""
        with open(path, "rb") as fp:
            meta = read_file_meta(fp)
            context_id = self._context_for(meta.sop_class_uid, meta.transfer_syntax_uid)
            rq = self._store_rq(
                meta.sop_class_uid, meta.sop_instance_uid, 0,
                move_originator_ae, move_originator_msg_id,
            )  # fmt: skip
            length = os.fstat(fp.fileno()).st_size - meta.dataset_offset
            limit = self._peer_limit()
            self._send_pdus(fragment_message(context_id, encode_message(rq), None, limit))
            try:
                for block in file_pdus(fp, context_id, length, limit - PDV_HEADER_BYTES):
                    self._send_pdus(block)
            except SCUError:
                raise  # the association is already over
            except BaseException:
                # The command went out, so the peer expects the rest of the data set: a
                # half-sent message cannot be taken back except by aborting (PS3.8 E.2).
                self.abort()
                raise
        return self._store_result(rq.message_id)

    def _store_rq(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        priority: int,
        move_originator_ae: str | None,
        move_originator_msg_id: int | None,
    ) -> CStoreRQ:
        return CStoreRQ(
            message_id=self._next_message_id(),
            affected_sop_class_uid=sop_class_uid,
            affected_sop_instance_uid=sop_instance_uid,
            priority=priority,
            move_originator_ae_title=move_originator_ae,
            move_originator_message_id=move_originator_msg_id,
        )

    def _store_result(self, message_id: int) -> StoreResult:
        rsp = self._await_response(message_id)
        if not isinstance(rsp, CStoreRSP):
            self._protocol_abort(f"C-STORE answered by {type(rsp).__name__}")
        return StoreResult(int(rsp.status), rsp.error_comment)

    def _context_for(self, abstract_syntax: str, transfer_syntax: str | None) -> int:
        if self._assoc is None:
            raise LocalULError("not associated: call associate() first")
        for context_id in sorted(self.accepted):
            abstract, ts = self.accepted[context_id]
            if abstract == abstract_syntax and transfer_syntax in (None, ts):
                return context_id
        raise NoAcceptedContext(
            f"no accepted presentation context for {abstract_syntax}"
            + (f" with transfer syntax {transfer_syntax}" if transfer_syntax else "")
        )

    def _next_message_id(self) -> int:
        # PS3.7 §9.1.1.1.2: unique among the operations outstanding on this association;
        # after 65535 numbering starts again at 1.
        self._message_id = self._message_id % _MESSAGE_ID_MAX + 1
        return self._message_id

    def _peer_limit(self) -> int:
        # PS3.8 D.1: 0 means no limit; we still cut PDUs so memory stays bounded.
        return self.peer_max_pdu or UNLIMITED_PDU_BYTES

    # -- receiving

    def _await_response(self, message_id: int) -> Message:
        """The response to ``message_id``; PS3.7 says nothing else can arrive meanwhile on a
        synchronous association, so anything else is a protocol error and aborts."""
        while True:
            ev = self._next_event()
            if isinstance(ev, ReleaseRequested):
                # Replying would end the association with our request unanswered; the peer is
                # broken or shutting down, and an abort says so (PS3.8 §7.2 leaves release
                # to the service user once its operations are done).
                self._protocol_abort("peer requested release with a response outstanding")
            if not isinstance(ev, PDataReceived):
                continue
            for pdv in ev.pdvs:
                try:
                    events = self._assembler.feed(pdv)
                    done = [e for e in events if isinstance(e, CommandComplete)]
                    msg = message_from_elements(done[0].elements) if done else None
                except DimseError as exc:
                    self._protocol_abort(f"undecodable response: {exc}", exc)
                if msg is None:
                    continue  # a partial command, or data set bytes nobody asked for
                responded = getattr(msg, "message_id_being_responded_to", None)
                if responded != message_id:
                    self._protocol_abort(f"response to message {responded}, expected {message_id}")
                return msg

    def _next_event(self) -> Event:
        """The next UL event, reading as needed. A-ABORT / close raise ``AssociationAborted``;
        a PS3.8 violation by the peer is answered with A-ABORT and raises the same."""
        assoc, sock = self._assoc, self._sock
        if assoc is None or sock is None:
            raise LocalULError("not associated")
        while True:
            try:
                ev = assoc.next_event()
            except RemoteULError as exc:
                self._abort(_ABORT_SOURCE_PROVIDER, exc.abort_reason)
                raise AssociationAborted(
                    f"peer broke PS3.8: {exc}", _ABORT_SOURCE_PROVIDER, exc.abort_reason,
                    by_peer=False,
                ) from exc  # fmt: skip
            if ev is NEED_DATA:
                assoc.receive_data(self._recv(sock), time.monotonic())
                continue
            if isinstance(ev, AbortReceived):
                self._close()
                raise AssociationAborted(
                    f"A-ABORT from peer: source {ev.source}, reason {ev.reason}",
                    ev.source,
                    ev.reason,
                )
            if isinstance(ev, ConnectionClosed):
                self._close()
                raise AssociationAborted("peer closed the connection")
            return ev

    def _recv(self, sock: socket.socket) -> bytes:
        try:
            return sock.recv(_RECV_BYTES)
        except (ConnectionResetError, ssl.SSLEOFError):
            return b""  # same as an orderly close for the UL: Evt17
        except BaseException:
            self.abort()
            raise

    def _protocol_abort(self, message: str, cause: BaseException | None = None) -> NoReturn:
        self._abort(_ABORT_SOURCE_USER, 0)
        raise AssociationAborted(message, _ABORT_SOURCE_USER, 0, by_peer=False) from cause

    # -- sending

    def _send_pdus(self, pdus: Iterable[PduParts]) -> None:
        """Frame each PDU's PDV items as a P-DATA-TF and write them in batched gather writes."""
        assoc = self._assoc
        if assoc is None:
            raise LocalULError("not associated")
        batch: list[bytes | bytearray | memoryview] = []
        queued = 0
        for parts in pdus:
            batch += assoc.send_pdata_items(parts)
            queued += sum(len(p) for p in parts)
            if len(batch) >= _MAX_IOVECS or queued >= _FLUSH_BYTES:
                self._write(batch)
                batch, queued = [], 0
        if batch:
            self._write(batch)

    def _write(self, buffers: Sequence[bytes | bytearray | memoryview]) -> None:
        """Write every buffer, in order, handling partial ``sendmsg`` results. A transport
        error while sending is checked for an A-ABORT the peer sent first."""
        sock = self._sock
        if sock is None:
            raise LocalULError("not connected")
        views = [memoryview(b).cast("B") for b in buffers if len(b)]
        first = 0
        try:
            if isinstance(sock, ssl.SSLSocket):
                _write_tls(sock, views)  # no sendmsg on an SSLSocket
                return
            while first < len(views):
                sent = sock.sendmsg(views[first : first + _MAX_IOVECS])
                while sent:
                    size = views[first].nbytes
                    if sent >= size:
                        sent -= size
                        first += 1
                    else:
                        views[first] = views[first][sent:]
                        sent = 0
        except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError) as exc:
            self._raise_pending_abort(exc)
        except BaseException:
            self.abort()
            raise

    def _raise_pending_abort(self, exc: OSError) -> NoReturn:
        # A peer that aborts mid-data set (e.g. storescp refusing it) makes our write fail;
        # its A-ABORT may already be in our receive buffer and says why.
        abort = self._drain_for_abort()
        self._close()
        if abort is not None:
            raise AssociationAborted(
                f"A-ABORT from peer: source {abort.source}, reason {abort.reason}",
                abort.source,
                abort.reason,
            ) from exc
        raise AssociationAborted(f"peer closed the connection: {exc}") from exc

    def _drain_for_abort(self) -> AbortReceived | None:
        assoc, sock = self._assoc, self._sock
        if assoc is None or sock is None:
            return None
        with contextlib.suppress(OSError, RemoteULError):
            sock.settimeout(min(self.timeout_s, 1.0))
            while chunk := sock.recv(_RECV_BYTES):
                assoc.receive_data(chunk, time.monotonic())
                while (ev := assoc.next_event()) is not NEED_DATA:
                    if isinstance(ev, AbortReceived):
                        return ev
        return None


def _write_tls(sock: ssl.SSLSocket, views: list[memoryview]) -> None:
    """``views`` in order over TLS. Small pieces (PDU and PDV headers, command sets) are
    coalesced so each does not become a TLS record of its own; large data set slices are
    written as they are, without a copy."""
    pending = bytearray()
    for view in views:
        if view.nbytes < _TLS_COALESCE_BYTES:
            pending += view
            if len(pending) >= _TLS_COALESCE_BYTES:
                sock.sendall(pending)
                pending.clear()
            continue
        if pending:
            sock.sendall(pending)
            pending.clear()
        sock.sendall(view)
    if pending:
        sock.sendall(pending)


__all__ = [
    "AssociationAborted",
    "AssociationRejected",
    "NoAcceptedContext",
    "ProposedContext",
    "SCU",
    "SCUError",
    "StoreResult",
    "contexts_for_files",
]
