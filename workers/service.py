"""DIMSE services inside a worker: C-ECHO and C-STORE SCP, plus file ingest (PS3.4 A, B).

THEORY OF OPERATION
-------------------
The acceptor hands this worker whole command sets (COMMAND) and streamed data set fragments
(DATA) of the associations pinned to it. Per association at most one message is being received
at a time (PS3.8 Annex E: PDVs of different messages are not interleaved on an association),
so ``AssociationState.receiving`` is the one StoreJob (or sink) the next DATA belongs to.

A finished StoreJob becomes an index record sent to the index writer under a token; the
C-STORE-RSP is emitted only when the writer's INDEXED acknowledgement for that token comes back
(Success = on disk and indexed, per the durability mode). Every exit path of a store either
answers the peer or was dropped because the association itself is gone.

The service talks to the outside world only through the ``Outbox`` protocol, so it is tested
without rings or processes.
"""

from __future__ import annotations

import itertools
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from appliance import audit
from appliance.config import DuplicatePolicy
from appliance.dimse.command import CommandSetError
from appliance.dimse.fragment import PduParts, fragment_message
from appliance.dimse.messages import (
    CCancelRQ,
    CEchoRQ,
    CEchoRSP,
    CFindRQ,
    CGetRQ,
    CMoveRQ,
    CStoreRQ,
    CStoreRSP,
    NActionRQ,
    NCreateRQ,
    NEventReportRSP,
    NSetRQ,
    decode_message,
    encode_message,
)
from appliance.dimse.responses import RequestIdentity, status_response
from appliance.dimse.status import Status
from appliance.errors import IngestError
from metrics import fast, tracing
from metrics import registry as m
from workers.header import IndexAttributes, NeedMoreData, read_index_attributes
from workers.index.reader import IndexReader
from workers.index.schema import InstanceRecord, Outcome
from workers.part10 import NotDicomError, read_part10_header
from workers.store import HEAD_BYTES, StoreJob, StoreSettings

if TYPE_CHECKING:
    from workers.qr.service import QueryRetrieve
    from workers.workflow_scp import WorkflowService

log = structlog.get_logger(component="worker")
QueryRequest = CFindRQ | CGetRQ | CMoveRQ | NCreateRQ | NSetRQ | NActionRQ

VERIFICATION = "1.2.840.10008.1.1"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR (PS3.10 §8), not an instance
_MAX_IDENTIFIER_BYTES = 1024 * 1024  # a C-FIND/GET/MOVE Identifier; larger is refused A700
_INGEST_CHUNK = 1024 * 1024


class Outbox(Protocol):
    def send_pdus(self, assoc_id: int, msg_id: int, pdus: list[PduParts], final: bool,
                  held_for: int = 0) -> None:
        ...
    def abort(self, assoc_id: int, reason: int) -> None: ...
    def request_index(self, token: int, record: InstanceRecord, policy: DuplicatePolicy) -> None:
        ...
    def ingested(self, job_id: int, outcome: dict[str, object]) -> None: ...


@dataclass(slots=True)
class Receiving:
    """The message whose data set is arriving on an association."""

    msg_id: int
    context_id: int
    command: CStoreRQ | None  # None: a data set we only drain (unsupported operation)
    job: StoreJob | None
    refusal: tuple[int, str] | None = None  # answer this status once the data set is drained
    drained_rsp: bytes = b""  # the response to send after draining an unsupported operation
    query: QueryRequest | None = None  # a C-FIND/GET/MOVE-RQ whose Identifier is arriving
    identifier: bytearray | None = None
    span: Any = None  # dicom.c_store (tracing)


@dataclass(slots=True)
class AssociationState:
    assoc_id: int
    calling_ae: str
    called_ae: str
    peer_max_pdu: int
    contexts: dict[int, tuple[str, str]]  # context id -> (abstract syntax, transfer syntax)
    receiving: Receiving | None = None
    relational: frozenset[str] = frozenset()  # Q/R SOP classes granted relational queries
    scp_roles: frozenset[str] = frozenset()  # SOP classes the peer is SCP of (C-GET)
    send_paused: bool = False  # the acceptor's socket buffer is full (FLOW)
    peer: str = ""
    traceparent: str = ""  # the association span's W3C context (tracing), "" when off
    # [access] C-MOVE destinations this peer may use (appliance/access.py); None = any
    move_destinations: frozenset[str] | None = None
    operations: frozenset[str] | None = None  # [access] operations; None = all


def access_denied(state: AssociationState, reason: str, **detail: str) -> None:
    """Log, count and audit one operation the requestor's [access] rule refuses (the
    acceptor reports the refusals of whole associations and contexts itself)."""
    fields = dict(assoc_id=state.assoc_id, peer=state.peer, calling_ae=state.calling_ae,
                  **detail, reason=reason)
    log.warning("access.denied", **fields)
    m.ACCESS_DENIED.labels(reason).inc()
    audit.emit(audit.AuditEvent.ACCESS_DENIED, audit.MINOR_FAILURE, **fields)


@dataclass(slots=True)
class PendingIndex:
    """A store waiting for the index writer."""

    assoc_id: int  # 0 for headless ingest
    msg_id: int  # message id, or the ingest job id
    context_id: int
    sop_class_uid: str
    sop_instance_uid: str
    relpath: str
    size_bytes: int
    started_ns: int = field(default_factory=time.monotonic_ns)  # last fragment received
    requested_ns: int = field(default_factory=time.monotonic_ns)  # sent to the index writer
    span: Any = None  # dicom.c_store, ended with the response
    index_span: Any = None  # ingest.index: request to acknowledgement


@dataclass
class ServiceCounters:
    """Per-worker tallies, mirrored into Prometheus (closed label sets)."""

    stored: int = 0
    duplicates: int = 0
    failed: int = 0
    echoes: int = 0

    def count(self, result: str, network: bool = True) -> None:
        if result == "stored":
            self.stored += 1
        elif result == "duplicate":
            self.duplicates += 1
        else:
            self.failed += 1
        fast.counter(m.INSTANCES, result, "network" if network else "ingest").inc()


class Services:
    """Per-worker DIMSE state machine over all associations pinned to this worker."""

    def __init__(
        self,
        settings: StoreSettings,
        policy: DuplicatePolicy,
        index: IndexReader,
        outbox: Outbox,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.index = index
        self.outbox = outbox
        self.associations: dict[int, AssociationState] = {}
        self.pending: dict[int, PendingIndex] = {}
        self.counters = ServiceCounters()
        self._tokens = itertools.count(1)
        self.qr: QueryRetrieve | None = None  # set by the worker: Q/R is served
        self.workflow: WorkflowService | None = None  # MWL, MPPS, Storage Commitment

    # ---- association lifecycle ---------------------------------------------------------

    def open(self, state: AssociationState) -> None:
        self.associations[state.assoc_id] = state

    def close(self, assoc_id: int) -> None:
        if self.qr is not None:
            self.qr.close(assoc_id)
        if self.workflow is not None:
            self.workflow.close(assoc_id)
        state = self.associations.pop(assoc_id, None)
        if state is not None and state.receiving is not None and state.receiving.job:
            state.receiving.job.discard()  # peer gone mid-dataset: no half-written file

    def flow(self, assoc_id: int, paused: bool) -> None:
        state = self.associations.get(assoc_id)
        if state is not None:
            state.send_paused = paused

    @property
    def in_flight(self) -> int:
        tasks = self.qr.active if self.qr is not None else 0
        return tasks + len(self.pending) + sum(
            1 for a in self.associations.values() if a.receiving is not None
        )

    # ---- DIMSE messages ----------------------------------------------------------------

    def command(self, assoc_id: int, context_id: int, data: memoryview) -> None:
        state = self.associations.get(assoc_id)
        if state is None:
            return
        try:
            msg = decode_message(data)
        except CommandSetError as exc:
            log.warning("dimse.abort_sent", assoc_id=assoc_id, error=str(exc))
            self.outbox.abort(assoc_id, 0)
            return
        if isinstance(msg, CEchoRQ):
            self.counters.echoes += 1
            fast.counter(m.DIMSE_OPERATIONS, "C-ECHO", "success").inc()
            rsp = CEchoRSP(
                message_id_being_responded_to=msg.message_id,
                affected_sop_class_uid=msg.affected_sop_class_uid or VERIFICATION,
                status=Status.SUCCESS,
            )
            self._respond(state, context_id, msg.message_id, encode_message(rsp))
        elif isinstance(msg, CStoreRQ):
            self._begin_store(state, context_id, msg)
        elif self.qr is not None and isinstance(msg, CFindRQ | CGetRQ | CMoveRQ):
            self._begin_query(state, context_id, msg)
        elif self.qr is not None and isinstance(msg, CCancelRQ):
            self.qr.cancel(state, msg.message_id_being_responded_to)
        elif self.qr is not None and isinstance(msg, CStoreRSP):
            self.qr.store_response(state, msg)
        elif self.workflow is not None and isinstance(msg, NCreateRQ | NSetRQ | NActionRQ):
            if msg.data_set:
                state.receiving = Receiving(msg.message_id, context_id, None, None,
                                            query=msg, identifier=bytearray())
            else:
                self.workflow.request(state, context_id, msg, b"")
        elif self.workflow is not None and isinstance(msg, NEventReportRSP):
            self.workflow.event_report_response(state, msg)
        elif isinstance(msg, CCancelRQ | CStoreRSP | NEventReportRSP):
            log.info("dimse.unexpected", assoc_id=assoc_id, message=type(msg).__name__)
        else:
            self._refuse(state, context_id, msg)

    def _begin_query(self, state: AssociationState, context_id: int,
                     rq: CFindRQ | CGetRQ | CMoveRQ) -> None:
        """Collect the Identifier; the request goes to the Q/R service once it is whole.
        A request on a context of another SOP class is answered A900 then (PS3.4 C.4.1.1.4)."""
        ctx = state.contexts.get(context_id)
        refusal: tuple[int, str] | None = None
        if ctx is None or ctx[0] != rq.affected_sop_class_uid:
            refusal = (Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
                       "Affected SOP Class UID differs from the presentation context's")
        state.receiving = Receiving(rq.message_id, context_id, None, None, refusal,
                                    query=rq, identifier=bytearray())

    def _refuse(self, state: AssociationState, context_id: int, msg: object) -> None:
        """An operation we don't serve: 0x0211 (PS3.7 C.5.x), after draining its data set."""
        to_elements = getattr(msg, "to_elements", None)
        elements = to_elements() if to_elements is not None else {}
        rq = RequestIdentity.from_elements(elements)
        if rq is None:  # e.g. a response sent to us: nothing to answer, protocol misuse
            self.outbox.abort(state.assoc_id, 0)
            return
        rsp = status_response(rq, Status.UNRECOGNIZED_OPERATION)
        m.DIMSE_OPERATIONS.labels("unsupported", "failure").inc()
        log.info("dimse.refused", assoc_id=state.assoc_id, command_field=rq.command_field,
                 status=Status.UNRECOGNIZED_OPERATION)
        if rq.has_data_set:
            state.receiving = Receiving(rq.message_id, context_id, None, None, None, rsp)
        else:
            self._respond(state, context_id, rq.message_id, rsp)

    def _begin_store(self, state: AssociationState, context_id: int, rq: CStoreRQ) -> None:
        ctx = state.contexts.get(context_id)
        refusal: tuple[int, str] | None = None
        if ctx is None:
            refusal = (Status.SOP_CLASS_NOT_SUPPORTED, "presentation context not accepted")
        elif state.operations is not None and "store" not in state.operations:
            # A peer allowed C-GET but not storage got storage contexts for the C-GET
            # sub-operations only (SCP role; appliance/negotiation/policy.py): 0x0124.
            refusal = (Status.NOT_AUTHORIZED, "storage not permitted for this peer")
            access_denied(state, "operation", sop_class_uid=rq.affected_sop_class_uid)
        elif ctx[0] != rq.affected_sop_class_uid:
            refusal = (
                Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                "Affected SOP Class UID differs from the presentation context's",
            )
        job: StoreJob | None = None
        if refusal is None and ctx is not None:
            try:
                job = StoreJob(
                    self.settings,
                    sop_class_uid=rq.affected_sop_class_uid,
                    sop_instance_uid=rq.affected_sop_instance_uid,
                    transfer_syntax_uid=ctx[1],
                    calling_ae=state.calling_ae,
                )
            except OSError as exc:
                refusal = (Status.OUT_OF_RESOURCES, f"cannot create spool file: {exc.strerror}")
            except ValueError as exc:  # e.g. a non-ASCII UID in the command
                refusal = (Status.CANNOT_UNDERSTAND, f"invalid command: {exc}")
        span = tracing.start_span("dicom.c_store", parent=state.traceparent or None,
                                  message_id=rq.message_id)
        state.receiving = Receiving(rq.message_id, context_id, rq, job, refusal, span=span)

    def data(self, assoc_id: int, context_id: int, data: memoryview, last: bool) -> None:
        state = self.associations.get(assoc_id)
        if state is None or state.receiving is None:
            return
        rcv = state.receiving
        if rcv.job is not None:
            rcv.job.feed(data, last=last)
        elif rcv.identifier is not None and len(rcv.identifier) <= _MAX_IDENTIFIER_BYTES:
            rcv.identifier += data
        if not last:
            return
        state.receiving = None
        if rcv.query is not None and rcv.identifier is not None:
            self._query_received(state, rcv, rcv.query, rcv.identifier)
            return
        if rcv.command is None:  # drained an unsupported operation's data set
            self._respond(state, rcv.context_id, rcv.msg_id, rcv.drained_rsp)
            return
        if rcv.job is None:
            status, comment = rcv.refusal or (Status.PROCESSING_FAILURE, "")
            tracing.end_span(rcv.span, error=hex(status), status=status)
            self._store_rsp(state, rcv.context_id, rcv.command, status, comment)
            return
        if rcv.span is None:  # tracing off: no context manager per object
            self._finish_store(state, rcv.context_id, rcv.command, rcv.job)
            return
        with tracing.use(rcv.span):
            self._finish_store(state, rcv.context_id, rcv.command, rcv.job, rcv.span)

    def _query_received(self, state: AssociationState, rcv: Receiving, rq: QueryRequest,
                        identifier: bytearray) -> None:
        assert self.qr is not None
        refusal = rcv.refusal
        if refusal is None and len(identifier) > _MAX_IDENTIFIER_BYTES:
            refusal = (Status.OUT_OF_RESOURCES, "Identifier too large")
        if refusal is None:
            if isinstance(rq, NCreateRQ | NSetRQ | NActionRQ):
                assert self.workflow is not None
                self.workflow.request(state, rcv.context_id, rq, bytes(identifier))
            else:
                self.qr.request(state, rcv.context_id, rq, bytes(identifier))
            return
        ident = RequestIdentity.from_elements(rq.to_elements())
        assert ident is not None
        self._respond(state, rcv.context_id, rq.message_id,
                      status_response(ident, refusal[0], refusal[1]))

    def _finish_store(
        self, state: AssociationState, context_id: int, rq: CStoreRQ, job: StoreJob,
        span: Any = None,
    ) -> None:
        t_last_ns = time.monotonic_ns()
        try:
            record = self._place(job)
        except IngestError as exc:
            tracing.end_span(span, error=hex(exc.status), status=exc.status)
            self.counters.count("failed")
            m.STORE_FAILURES.labels(_failure_reason(exc.status)).inc()
            log.warning("store.failed", assoc_id=state.assoc_id, status=exc.status,
                        error=str(exc))
            self._store_rsp(state, context_id, rq, exc.status, str(exc)[:64])
            return
        if record is None:  # known duplicate, not stored again
            tracing.end_span(span, duplicate=True)
            if self.policy is DuplicatePolicy.REJECT:
                self.counters.count("failed")
                m.STORE_FAILURES.labels("duplicate").inc()
                self._store_rsp(state, context_id, rq, Status.DUPLICATE_SOP_INSTANCE,
                                "SOP Instance already stored")
            else:
                self.counters.count("duplicate")
                self._store_rsp(state, context_id, rq, Status.SUCCESS, None)
            return
        self._submit(record, PendingIndex(
            state.assoc_id, rq.message_id, context_id, rq.affected_sop_class_uid,
            rq.affected_sop_instance_uid, record.relpath, record.size_bytes, t_last_ns,
            span=span,
        ))

    def _place(self, job: StoreJob) -> InstanceRecord | None:
        """Parse and validate, then put the file in place; None for a SOP Instance already
        indexed (unless overwriting), whose copy is discarded. Raises IngestError."""
        t_start = time.monotonic_ns()
        attrs, relpath = job.prepare()
        if (self.policy is not DuplicatePolicy.OVERWRITE
                and self.index.get_instance(job.sop_instance_uid) is not None):
            job.discard()
            return None
        t_write = time.monotonic_ns()
        fast.histogram(m.STAGE_SECONDS, "parse").observe((t_write - t_start) / 1e9)
        record = job.commit(attrs, relpath)
        fast.histogram(m.STAGE_SECONDS, "write").observe((time.monotonic_ns() - t_write) / 1e9)
        return record

    def _submit(self, record: InstanceRecord, pending: PendingIndex) -> None:
        """Send the record to the index writer; the answer waits for its acknowledgement."""
        token = next(self._tokens)
        pending.index_span = tracing.start_span("ingest.index", parent=pending.span)
        self.pending[token] = pending
        self.outbox.request_index(token, record, self.policy)

    def index_failed(self, token: int, reason: str,
                     status: int = Status.PROCESSING_FAILURE) -> None:
        """The index writer could not index the record: answer ``status`` (0xA700 when its
        commit failed for lack of space), drop the file."""
        p = self.pending.pop(token, None)
        if p is None:
            return
        tracing.end_span(p.index_span, error=reason[:64])
        _unlink_quietly(self.settings.data_dir / p.relpath)
        self.counters.count("failed", p.assoc_id != 0)
        m.STORE_FAILURES.labels("other").inc()
        if p.assoc_id == 0:
            self.outbox.ingested(p.msg_id, {"outcome": "failed", "reason": reason})
            return
        state = self.associations.get(p.assoc_id)
        if state is not None:
            self._answer_pending(state, p, status, reason[:64])

    def indexed(self, token: int, outcome: Outcome, old_relpath: str) -> None:
        """The index writer committed (durably, per mode) the record sent under ``token``."""
        p = self.pending.pop(token, None)
        if p is None:
            return
        tracing.end_span(p.index_span, outcome=outcome.name)
        if outcome is Outcome.OVERWRITTEN and old_relpath and old_relpath != p.relpath:
            _unlink_quietly(self.settings.data_dir / old_relpath)
        elif outcome in (Outcome.DUPLICATE_KEPT, Outcome.REJECTED):
            # Another copy won inside the index transaction (a concurrent store of the same
            # SOP Instance): ours was placed under its own name and is not referenced.
            _unlink_quietly(self.settings.data_dir / p.relpath)
        network = p.assoc_id != 0
        if outcome is Outcome.REJECTED:
            status, comment = Status.DUPLICATE_SOP_INSTANCE, "SOP Instance already stored"
            self.counters.count("failed", network)
            m.STORE_FAILURES.labels("duplicate").inc()
        else:
            status, comment = Status.SUCCESS, None
            self.counters.count("duplicate" if outcome is Outcome.DUPLICATE_KEPT else "stored",
                                network)
        now = time.monotonic_ns()
        fast.histogram(m.STAGE_SECONDS, "index").observe((now - p.requested_ns) / 1e9)
        fast.histogram(m.INGEST_LATENCY).observe((now - p.started_ns) / 1e9)
        if p.assoc_id == 0:
            self.outbox.ingested(p.msg_id, {"outcome": outcome.name.lower(), "status": status})
            return
        state = self.associations.get(p.assoc_id)
        if state is None:
            return  # association gone; the object is stored and indexed all the same
        self._answer_pending(state, p, status, comment)

    def _answer_pending(self, state: AssociationState, p: PendingIndex, status: int,
                        comment: str | None) -> None:
        tracing.end_span(p.span, error=None if status == Status.SUCCESS else hex(status),
                         status=status)
        self._store_rsp_to(state, p.context_id, p.msg_id, p.sop_class_uid, p.sop_instance_uid,
                           status, comment)

    def _store_rsp(
        self, state: AssociationState, context_id: int, rq: CStoreRQ, status: int,
        comment: str | None,
    ) -> None:
        self._store_rsp_to(state, context_id, rq.message_id, rq.affected_sop_class_uid,
                           rq.affected_sop_instance_uid, status, comment)

    def _store_rsp_to(self, state: AssociationState, context_id: int, msg_id: int,
                      sop_class_uid: str, sop_instance_uid: str, status: int,
                      comment: str | None) -> None:
        """C-STORE-RSP (PS3.7 §9.3.1.2) echoing the request's SOP Class/Instance."""
        fast.counter(m.DIMSE_OPERATIONS, "C-STORE", m.status_class(status)).inc()
        cmd = store_rsp_command(msg_id, sop_class_uid, sop_instance_uid, status) \
            if comment is None else None
        if cmd is None:
            cmd = encode_message(CStoreRSP(
                message_id_being_responded_to=msg_id,
                affected_sop_class_uid=sop_class_uid,
                affected_sop_instance_uid=sop_instance_uid,
                status=status,
                error_comment=comment,
            ))
        self._respond(state, context_id, msg_id, cmd)

    def _respond(self, state: AssociationState, context_id: int, msg_id: int, cmd: bytes) -> None:
        pdus = fragment_message(context_id, cmd, None, state.peer_max_pdu)
        self.outbox.send_pdus(state.assoc_id, msg_id, pdus, True)

    # ---- headless ingest (`pacs ingest`) --------------------------------------------

    def ingest_file(self, job_id: int, path: Path) -> None:
        """Store one file through the same pipeline as C-STORE (no network)."""
        outcome = self._ingest(job_id, path)
        if outcome is not None:
            self.outbox.ingested(job_id, outcome)

    def _ingest(self, job_id: int, path: Path) -> dict[str, object] | None:
        try:
            info = read_part10_header(path)
            if info.sop_class_uid == MEDIA_STORAGE_DIRECTORY:
                return {"outcome": "skipped", "reason": "DICOMDIR (a directory, not an instance)"}
            # The data set is authoritative: a File Meta group that disagrees with it (old
            # writers copied UIDs badly) must not get the object refused or mislabelled.
            attrs = _peek_attributes(path, info.dataset_offset, info.transfer_syntax_uid)
            job = StoreJob(
                self.settings,
                sop_class_uid=attrs.sop_class_uid or info.sop_class_uid,
                sop_instance_uid=attrs.sop_instance_uid or info.sop_instance_uid,
                transfer_syntax_uid=info.transfer_syntax_uid,
                calling_ae=info.source_ae,
            )
        except NotDicomError as exc:
            return {"outcome": "not_dicom", "reason": str(exc)}
        except (IngestError, ValueError) as exc:
            return {"outcome": "failed", "reason": str(exc)}
        except OSError as exc:
            return {"outcome": "failed", "reason": exc.strerror or str(exc)}
        try:
            with open(path, "rb") as fh:
                fh.seek(info.dataset_offset)
                chunk = fh.read(_INGEST_CHUNK)
                while chunk:
                    nxt = fh.read(_INGEST_CHUNK)
                    job.feed(memoryview(chunk), last=not nxt)
                    chunk = nxt
            record = self._place(job)
        except (IngestError, OSError) as exc:
            job.discard()
            self.counters.count("failed", False)
            return {"outcome": "failed", "reason": str(exc)}
        if record is None:
            outcome = "duplicate" if self.policy is DuplicatePolicy.KEEP else "rejected"
            self.counters.count("duplicate" if outcome == "duplicate" else "failed", False)
            return {"outcome": outcome}
        self._submit(record, PendingIndex(
            0, job_id, 0, job.sop_class_uid, job.sop_instance_uid, record.relpath,
            record.size_bytes,
        ))
        return None


def _peek_attributes(path: Path, offset: int, transfer_syntax_uid: str) -> IndexAttributes:
    with open(path, "rb") as fh:
        fh.seek(offset)
        head = fh.read(HEAD_BYTES)
        try:
            return read_index_attributes(head, transfer_syntax_uid,
                                         complete=len(head) < HEAD_BYTES)
        except NeedMoreData:
            fh.seek(offset)
            return read_index_attributes(fh.read(), transfer_syntax_uid)


_ELEMENT = struct.Struct("<HHI")  # Implicit VR LE element header: group, element, length
_US_ELEMENT = struct.Struct("<HHIH")


def store_rsp_command(msg_id: int, sop_class_uid: str, sop_instance_uid: str,
                      status: int) -> bytes | None:
    """The C-STORE-RSP command set without an Error Comment, packed by hand: byte for byte
    what ``encode_message(CStoreRSP(...))`` gives (tests/unit/workers/test_store_rsp.py) at
    a tenth of its cost (one per stored object; profiled ~50 µs). None when a UID is not
    Latin-1 (the generic encoder replaces such characters)."""
    try:
        cls = sop_class_uid.encode("latin-1")
        inst = sop_instance_uid.encode("latin-1")
    except UnicodeEncodeError:
        return None
    if len(cls) % 2:
        cls += b"\0"
    if len(inst) % 2:
        inst += b"\0"
    body = b"".join((
        _ELEMENT.pack(0, 0x0002, len(cls)), cls,  # Affected SOP Class UID
        _US_ELEMENT.pack(0, 0x0100, 2, 0x8001),  # Command Field: C-STORE-RSP
        _US_ELEMENT.pack(0, 0x0120, 2, msg_id),  # Message ID Being Responded To
        _US_ELEMENT.pack(0, 0x0800, 2, 0x0101),  # Command Data Set Type: none
        _US_ELEMENT.pack(0, 0x0900, 2, status),  # Status
        _ELEMENT.pack(0, 0x1000, len(inst)), inst,  # Affected SOP Instance UID
    ))
    return _ELEMENT.pack(0, 0x0000, 4) + struct.pack("<I", len(body)) + body


def _failure_reason(status: int) -> str:
    """A closed label for a refused store (PS3.4 B.2.3 status ranges)."""
    if 0xA700 <= status <= 0xA7FF:
        return "out_of_resources"
    if 0xA900 <= status <= 0xA9FF:
        return "mismatch"
    if 0xC000 <= status <= 0xCFFF:
        return "cannot_understand"
    if status == 0x0122:
        return "refused"
    return "other"


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
