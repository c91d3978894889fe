"""Storage Commitment Push Model (PS3.4 Annex J) pieces shared by the SCU and the report
listener: the N-ACTION Action Information, the N-EVENT-REPORT Event Information, and
``CommitmentListener``, a Storage Commitment SCU in the association-acceptor role.

THEORY OF OPERATION
-------------------
A Storage Commitment SCP sends its N-EVENT-REPORT on the requesting association when that is
still open, otherwise on a new association it opens to the requester, proposing the SCP role
for Storage Commitment (PS3.4 J.3.3, PS3.7 D.3.3.4). ``CommitmentListener`` accepts those: one
thread, one association at a time, our acceptor-role ``Association`` and ``negotiate``
(Storage Commitment and Verification only; the requestor's SCP role is granted). It answers
N-EVENT-REPORT-RQs and C-ECHO-RQs, refuses every other request with 0x0211, and hands the
reports to ``take`` / ``wait_for``. Given an ``ssl_context`` (server side, appliance.tls) it
accepts DICOM over TLS (PS3.15 B.9) instead: the handshake runs in the thread right after
accept, within ``timeout_s``; a peer that fails it is noted in ``errors`` like any other.

Invariants: every N-EVENT-REPORT-RQ read gets exactly one response, and a report is handed
out only after its Success response was written. One misbehaving peer ends its own
association (A-ABORT) and is noted in ``errors``; the thread serves the next one.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, NamedTuple

from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence

from appliance.dimse.assembler import CommandComplete, DataFragment, MessageAssembler
from appliance.dimse.command import RESPONSE_BIT
from appliance.dimse.fragment import UNLIMITED_PDU_BYTES, fragment_message
from appliance.dimse.messages import (
    CCancelRQ,
    CEchoRQ,
    CEchoRSP,
    Message,
    NEventReportRQ,
    NEventReportRSP,
    encode_message,
    message_from_elements,
)
from appliance.dimse.responses import RequestIdentity, status_response
from appliance.dimse.status import Status
from appliance.errors import DimseError, RemoteULError
from appliance.negotiation.policy import NegotiationPolicy, accepted_contexts, negotiate
from appliance.negotiation.qr_classes import (
    STORAGE_COMMITMENT_INSTANCE,
    STORAGE_COMMITMENT_PUSH_MODEL,
)
from appliance.negotiation.sop_classes import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION
from appliance.qr_scu import decode_identifier
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
    ReleaseRequested,
    ReplyRelease,
    Role,
    ULLimits,
)
from appliance.ul.pdu import (
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    PresentationContextAC,
    PresentationResult,
    RoleSelection,
    UserInformation,
)

ACTION_REQUEST_COMMITMENT: Final = 1  # J.3.2.1: Request Storage Commitment
EVENT_ALL_COMMITTED: Final = 1  # J.3.3.1: Storage Commitment Request Successful
EVENT_FAILURES_EXIST: Final = 2  # J.3.3.1: Storage Commitment Request Complete - Failures

#: Failure Reason (0008,1197) values, PS3.3 C.14.1.1.
FAILURE_REASONS: Final = {
    0x0110: "processing failure",
    0x0112: "no such object instance",
    0x0213: "resource limitation",
    0x0122: "referenced SOP Class not supported",
    0x0119: "class / instance conflict",
    0x0131: "duplicate transaction UID",
}

_TRANSACTION_UID: Final = 0x00081195
_REFERENCED_SOP_SEQUENCE: Final = 0x00081199
_FAILED_SOP_SEQUENCE: Final = 0x00081198
_POLL_S: Final = 0.1
_RECV_BYTES: Final = 256 * 1024


class SOPRef(NamedTuple):
    sop_class_uid: str
    sop_instance_uid: str


class FailedSOP(NamedTuple):
    """One Failed SOP Sequence item; ``failure_reason`` per PS3.3 C.14.1.1 (None if absent)."""

    sop_class_uid: str
    sop_instance_uid: str
    failure_reason: int | None


@dataclass(frozen=True, slots=True)
class CommitmentReport:
    """One Storage Commitment N-EVENT-REPORT (PS3.4 J.3.3)."""

    transaction_uid: str
    event_type_id: int
    committed: tuple[SOPRef, ...]
    failed: tuple[FailedSOP, ...]
    dataset: Dataset = field(compare=False, repr=False)
    same_association: bool = True
    calling_ae: str | None = None  # the reporting AE, for reports on a new association


# ---- data sets -----------------------------------------------------------------------------


def commitment_request(transaction_uid: str, refs: Sequence[tuple[str, str]]) -> Dataset:
    """The N-ACTION Action Information (PS3.4 J.3.2.1.1, Table J.3-1)."""
    if not refs:
        raise ValueError("Storage Commitment needs at least one referenced SOP instance")
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    items = []
    for sop_class, sop_instance in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = DicomSequence(items)
    return ds


def parse_commitment_report(event_type_id: int, ds: Dataset, **kw: Any) -> CommitmentReport:
    """The N-EVENT-REPORT Event Information (PS3.4 J.3.3.1.1, Table J.3-2); raises
    ``ValueError`` for an unknown event type or a missing Transaction UID."""
    if event_type_id not in (EVENT_ALL_COMMITTED, EVENT_FAILURES_EXIST):
        raise ValueError(f"event type {event_type_id} is neither 1 nor 2")
    elem = ds.get(_TRANSACTION_UID)
    tuid = str(elem.value or "").strip() if elem is not None else ""
    if not tuid:
        raise ValueError("Transaction UID (0008,1195) missing")

    def items(tag: int) -> list[Dataset]:
        elem = ds.get(tag)
        return list(elem.value or []) if elem is not None and elem.VR == "SQ" else []

    committed = tuple(SOPRef(str(i.get("ReferencedSOPClassUID", "")),
                             str(i.get("ReferencedSOPInstanceUID", "")))
                      for i in items(_REFERENCED_SOP_SEQUENCE))  # fmt: skip
    failed = []
    for i in items(_FAILED_SOP_SEQUENCE):
        reason = i.get("FailureReason")
        failed.append(FailedSOP(str(i.get("ReferencedSOPClassUID", "")),
                                str(i.get("ReferencedSOPInstanceUID", "")),
                                int(reason) if reason is not None else None))  # fmt: skip
    return CommitmentReport(tuid, event_type_id, committed, tuple(failed), ds, **kw)


def read_report(
    rq: NEventReportRQ, data: bytes | None, ts: str, **kw: Any
) -> tuple[int, CommitmentReport | None]:
    """(N-EVENT-REPORT-RSP status, the report or None when it is refused)."""
    if rq.event_type_id not in (EVENT_ALL_COMMITTED, EVENT_FAILURES_EXIST):
        return Status.NO_SUCH_EVENT_TYPE, None
    try:
        ds = decode_identifier(data or b"", ts)
        return Status.SUCCESS, parse_commitment_report(rq.event_type_id, ds, **kw)
    except ValueError:
        return Status.PROCESSING_FAILURE, None


def report_rsp(rq: NEventReportRQ, status: int) -> NEventReportRSP:
    """N-EVENT-REPORT-RSP (PS3.7 10.1.1.1): echoes class, instance and event type."""
    return NEventReportRSP(rq.message_id, status, rq.affected_sop_class_uid,
                           rq.affected_sop_instance_uid, rq.event_type_id)  # fmt: skip


# ---- reports on a new association ---------------------------------------------------------


class CommitmentListener:
    """Receives Storage Commitment N-EVENT-REPORTs on associations a Storage Commitment SCP
    opens to us (PS3.4 J.3.3; module docstring). ``with CommitmentListener(port) as l:``
    listens at once (``port=0``: the kernel picks, see ``.port``) and serves in a thread;
    with ``ssl_context`` (a server context) over TLS only."""

    def __init__(
        self,
        port: int = 0,
        host: str = "0.0.0.0",  # noqa: S104 - a listener for a peer on another host
        *,
        ae_title: str = "PACS_SCU",
        timeout_s: float = 30.0,
        max_pdu_bytes: int = 1_048_576,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.ssl_context = ssl_context
        self.policy = NegotiationPolicy(
            ae_title=ae_title, max_pdu_bytes=max_pdu_bytes,
            extra_abstract_syntaxes=frozenset({STORAGE_COMMITMENT_PUSH_MODEL}),
            scp_role_sop_classes=frozenset({STORAGE_COMMITMENT_PUSH_MODEL}),
        )  # fmt: skip
        self.timeout_s = timeout_s
        self.reports: list[CommitmentReport] = []  # every report accepted, in order
        self.errors: list[str] = []  # associations that ended badly, for diagnosis
        self._taken: set[int] = set()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._sock = socket.create_server((host, port))
        self._sock.settimeout(_POLL_S)
        self.port = int(self._sock.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, name="commitment-listener",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def __enter__(self) -> CommitmentListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout_s + 1)
        self._sock.close()

    def take(self, transaction_uid: str | None = None) -> CommitmentReport | None:
        """The first report not taken yet (for ``transaction_uid`` if given), or None."""
        with self._cond:
            for n, report in enumerate(self.reports):
                if n not in self._taken and transaction_uid in (None, report.transaction_uid):
                    self._taken.add(n)
                    return report
        return None

    def wait_for(self, transaction_uid: str | None, timeout_s: float) -> CommitmentReport | None:
        """``take`` once a matching report arrives, or None after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while (got := self.take(transaction_uid)) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return got

    # -- the thread

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            with conn:
                conn.settimeout(self.timeout_s)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    if self.ssl_context is None:
                        _ServedAssociation(self, conn).run()
                    else:  # wrap_socket handshakes now (a bad certificate raises SSLError)
                        with self.ssl_context.wrap_socket(conn, server_side=True) as tls_conn:
                            _ServedAssociation(self, tls_conn).run()
                except Exception as exc:  # noqa: BLE001 - one bad peer must not stop the thread
                    self.errors.append(f"{type(exc).__name__}: {exc}")

    def _deliver(self, report: CommitmentReport) -> None:
        with self._cond:
            self.reports.append(report)
            self._cond.notify_all()


class _ServedAssociation:
    """One association the listener accepted: negotiate, then serve requests until it ends."""

    def __init__(self, listener: CommitmentListener, conn: socket.socket) -> None:
        self.listener = listener
        self.conn = conn
        policy = listener.policy
        self.assoc = Association(
            Role.ACCEPTOR,
            ULLimits(max_pdu_bytes=policy.max_pdu_bytes, artim_timeout_s=listener.timeout_s),
        )
        self.assembler = MessageAssembler()
        self.accepted: dict[int, tuple[str, str]] = {}
        self.calling_ae = ""
        # The request being received: its command, then its data set as it arrives.
        self._pending: tuple[CommandComplete, Message, bytearray] | None = None

    def run(self) -> None:
        try:
            for ev in self._events():
                if isinstance(ev, AssociateRequested):
                    self._associate(ev)
                elif isinstance(ev, PDataReceived):
                    self._p_data(ev)
                elif isinstance(ev, ReleaseRequested):
                    self.conn.sendall(self.assoc.send(ReplyRelease()))  # AR-4: the peer closes
                    return
                elif isinstance(ev, AbortReceived | ConnectionClosed):
                    return
                if self.assoc.close_requested:
                    return
        except RemoteULError as exc:
            with contextlib.suppress(OSError):
                self.conn.sendall(self.assoc.send(Abort(2, exc.abort_reason)))
            raise
        except (OSError, DimseError, ValueError):
            with contextlib.suppress(OSError):
                self.conn.sendall(self.assoc.send(Abort(0, 0)))
            raise

    def _events(self) -> Iterator[object]:
        while True:
            ev = self.assoc.next_event()
            if ev is NEED_DATA:
                try:
                    chunk = self.conn.recv(_RECV_BYTES)
                except ConnectionResetError:
                    chunk = b""
                self.assoc.receive_data(chunk)
                continue
            yield ev

    def _associate(self, ev: AssociateRequested) -> None:
        rq = ev.rq
        answer: AssociateAC | AssociateRJ = ev.provider_rejection or negotiate(
            self.listener.policy, rq
        )
        if isinstance(answer, AssociateAC):
            answer = _only_commitment(answer, rq)
        if isinstance(answer, AssociateRJ):
            self.conn.sendall(self.assoc.send(RejectAssociation(answer)))
            return
        self.conn.sendall(self.assoc.send(AcceptAssociation(answer)))
        self.accepted = accepted_contexts(answer, rq)
        self.calling_ae = rq.calling_ae.strip()

    def _p_data(self, ev: PDataReceived) -> None:
        for pdv in ev.pdvs:
            for out in self.assembler.feed(pdv):
                if isinstance(out, CommandComplete):
                    self._pending = (out, message_from_elements(out.elements), bytearray())
                    if not out.has_data_set:
                        self._dispatch()
                elif isinstance(out, DataFragment) and self._pending is not None:
                    self._pending[2].extend(out.data)
                    if out.is_last:
                        self._dispatch()

    def _dispatch(self) -> None:
        assert self._pending is not None
        cc, msg, data = self._pending
        self._pending = None
        cid = cc.context_id
        if isinstance(msg, NEventReportRQ) and msg.affected_sop_class_uid == (
            STORAGE_COMMITMENT_PUSH_MODEL
        ):
            ts = self.accepted.get(cid, ("", IMPLICIT_VR_LITTLE_ENDIAN))[1]
            status, report = read_report(msg, bytes(data), ts, same_association=False,
                                          calling_ae=self.calling_ae)  # fmt: skip
            self._send(cid, encode_message(report_rsp(msg, status)))
            if report is not None:
                self.listener._deliver(report)  # after its response went out
        elif isinstance(msg, CEchoRQ):
            self._send(cid, encode_message(CEchoRSP(msg.message_id)))
        elif not isinstance(msg, CCancelRQ):
            identity = RequestIdentity.from_elements(cc.elements)
            if identity is None or identity.command_field & RESPONSE_BIT:
                raise ValueError(f"unexpected {type(msg).__name__}")
            self._send(cid, status_response(identity, Status.UNRECOGNIZED_OPERATION))

    def _send(self, context_id: int, command: bytes) -> None:
        # One small command per response: joined, as an SSLSocket has no sendmsg().
        limit = self.assoc.peer_max_pdu or UNLIMITED_PDU_BYTES
        for parts in fragment_message(context_id, command, None, limit):
            self.conn.sendall(b"".join(self.assoc.send_pdata_items(parts)))


def _only_commitment(ac: AssociateAC, rq: AssociateRQ) -> AssociateAC | AssociateRJ:
    """``negotiate`` also accepts storage classes; a listener serves Storage Commitment and
    Verification only, and answers role selection for those only (PS3.7 D.3.3.4)."""
    wanted = {STORAGE_COMMITMENT_PUSH_MODEL, VERIFICATION}
    abstract = {pc.context_id: pc.abstract_syntax for pc in rq.presentation_contexts}
    pcs = tuple(
        pc if pc.result != PresentationResult.ACCEPTANCE or abstract.get(pc.context_id) in wanted
        else PresentationContextAC(pc.context_id, PresentationResult.ABSTRACT_SYNTAX_NOT_SUPPORTED,
                                   pc.transfer_syntax)
        for pc in ac.presentation_contexts
    )  # fmt: skip
    if not any(pc.result == PresentationResult.ACCEPTANCE for pc in pcs):
        return AssociateRJ(result=1, source=1, reason=1)  # PS3.8 Table 9-21, as negotiate does
    items = tuple(i for i in ac.user_information.items
                  if not isinstance(i, RoleSelection) or i.sop_class_uid in wanted)  # fmt: skip
    return replace(ac, presentation_contexts=pcs, user_information=UserInformation(items))


__all__ = [
    "ACTION_REQUEST_COMMITMENT",
    "EVENT_ALL_COMMITTED",
    "EVENT_FAILURES_EXIST",
    "FAILURE_REASONS",
    "STORAGE_COMMITMENT_INSTANCE",
    "STORAGE_COMMITMENT_PUSH_MODEL",
    "CommitmentListener",
    "CommitmentReport",
    "FailedSOP",
    "SOPRef",
    "commitment_request",
    "parse_commitment_report",
    "read_report",
    "report_rsp",
]
