"""The Query/Retrieve SCP's DIMSE side in a worker: C-FIND, C-GET, C-MOVE, C-CANCEL.

THEORY OF OPERATION
-------------------
Each request becomes a *task* that the worker loop steps between reading its rings, a bounded
amount per step, so one query with a million matches or one large retrieve never starves the
other associations pinned to this worker, and ingest on them goes on:

  FindTask  walks the lazy ``workers.query.find`` generator (one read-only LMDB transaction,
            which never blocks the index writer) and sends one pending C-FIND-RSP per match.
  GetTask   sends C-STORE-RQ sub-operations on the requesting association, one at a time
            (the next after the peer's C-STORE-RSP), streaming each file in slices.
  MoveTask  runs its sub-operations on a thread with its own association to the destination
            (``move.MoveRunner``); the thread posts progress, the loop answers.

Flow control: when the acceptor reports that an association's socket buffer is full (FLOW),
that association's tasks stop producing until it drains. C-CANCEL-RQ (PS3.7 §9.3.2.3) marks
the task; its next step answers Cancel (FE00) with the counts so far. A task whose association
is gone is dropped (a move thread is told to stop).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from pydicom.datadict import keyword_for_tag

from appliance import audit
from appliance.config import Config
from appliance.dimse.fragment import fragment_data, fragment_message
from appliance.dimse.messages import (
    CFindRQ,
    CFindRSP,
    CGetRQ,
    CGetRSP,
    CMoveRQ,
    CMoveRSP,
    CStoreRQ,
    CStoreRSP,
    encode_message,
)
from appliance.dimse.status import Status
from appliance.negotiation.qr_classes import MODALITY_WORKLIST_FIND as MWL_FIND
from metrics import registry as m
from metrics import tracing
from workers.qr.suboperations import (
    CannotSend,
    Counts,
    Prepared,
    RetrieveItem,
    failed_uid_list,
    prepare,
)
from workers.query import (
    Query,
    QueryError,
    ResponseEncoder,
    Result,
    decode_identifier,
    find,
    model_of,
    retrieve,
)
from workers.service import access_denied

if TYPE_CHECKING:
    from workers.index.reader import IndexReader
    from workers.service import AssociationState, Outbox
    from workers.workflow_scp import WorkflowService

log = structlog.get_logger(component="worker")

_FIND_BUDGET = 64  # pending responses per task per loop turn
_GET_SLICE_BYTES = 1024 * 1024  # file bytes read and sent per step of a C-GET sub-operation
_HOLD_MAX_BYTES = 8 * 1024 * 1024  # largest next object queued in the acceptor ahead of time
# Objects queued in the acceptor ahead of the one on the wire, while they hold less than
# _HOLD_MAX_BYTES together: with one, worker and acceptor woke each other once per object in
# lock step with the peer; three ahead let the worker prepare several per wake-up (C-GET of
# 500 0.5 MB objects with getscu: 1.04-1.20 s -> 0.66-0.81 s here).
_GET_AHEAD = 3
QueryRequest = CFindRQ | CGetRQ | CMoveRQ


class Task(Protocol):
    state: AssociationState
    msg_id: int

    def step(self) -> bool: ...  # True when the task has sent its final response
    def runnable(self) -> bool: ...
    def cancel(self) -> None: ...
    def drop(self) -> None: ...  # the association is gone: stop, answer nothing


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path
    ae_title: str
    max_results: int
    pending_interval_s: float
    connect_timeout_s: float


class QueryRetrieve:
    """Every Q/R task of this worker, keyed by (association, Message ID)."""

    def __init__(self, cfg: Config, reader: IndexReader, outbox: Outbox) -> None:
        self.cfg = cfg
        self.settings = Settings(
            data_dir=Path(cfg.storage.data_dir), ae_title=cfg.network.ae_title,
            max_results=cfg.query.max_results,
            pending_interval_s=cfg.query.move_pending_interval_s,
            connect_timeout_s=cfg.query.move_connect_timeout_s,
        )
        self.reader = reader
        self.outbox = outbox
        self.tasks: dict[tuple[int, int], Task] = {}
        self.spans: dict[tuple[int, int], Any] = {}  # dicom.c_find|c_get|c_move (tracing)
        self.workflow: WorkflowService | None = None  # Modality Worklist C-FIND goes there
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def reload(self, cfg: Config) -> None:
        """New AE table / limits (SIGHUP); running tasks keep what they started with."""
        self.cfg = cfg
        self.settings = Settings(
            data_dir=self.settings.data_dir, ae_title=cfg.network.ae_title,
            max_results=cfg.query.max_results,
            pending_interval_s=cfg.query.move_pending_interval_s,
            connect_timeout_s=cfg.query.move_connect_timeout_s,
        )

    @property
    def active(self) -> int:
        return len(self.tasks)

    # ---- requests ------------------------------------------------------------------------

    def request(self, state: AssociationState, context_id: int, rq: QueryRequest,
                identifier: bytes) -> None:
        """A C-FIND/C-GET/C-MOVE-RQ with its whole Identifier."""
        ts = state.contexts[context_id][1]
        sop_class = rq.affected_sop_class_uid
        key = (state.assoc_id, rq.message_id)
        self.spans[key] = tracing.start_span(
            f"dicom.{_command_name(rq).lower().replace('-', '_')}",
            parent=state.traceparent or None, message_id=rq.message_id, sop_class_uid=sop_class)
        if key in self.tasks:  # PS3.7 C.5.x: Message ID already outstanding
            self._final(state, context_id, rq, Status.DUPLICATE_INVOCATION,
                        "Message ID already in use")
            return
        if self.workflow is not None and sop_class == MWL_FIND and isinstance(rq, CFindRQ):
            try:
                self.tasks[key] = self.workflow.find_task(state, context_id, rq, identifier)
            except ValueError as exc:  # DatasetError: the Identifier does not decode
                self._final(state, context_id, rq, Status.UNABLE_TO_PROCESS, str(exc))
            return
        model = model_of(sop_class)
        try:
            if model is None:  # negotiation accepts only Q/R classes on these contexts
                raise QueryError("not a Query/Retrieve SOP Class",
                                 Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS)
            query = decode_identifier(identifier, ts, model[0],
                                      relational=sop_class in state.relational)
        except QueryError as exc:
            log.info("qr.refused", assoc_id=state.assoc_id, status=exc.status, error=exc.comment)
            self._final(state, context_id, rq, exc.status, exc.comment)
            return
        audit.emit(audit.AuditEvent.QUERY, assoc_id=state.assoc_id, calling_ae=state.calling_ae,
                   sop_class_uid=sop_class,
                   **audit.query_fields(query.level, {
                       keyword_for_tag(tag) or f"{tag:08X}": k.value
                       for tag, k in query.keys.items()}))
        task: Task
        if isinstance(rq, CFindRQ):
            log.info("qr.find", assoc_id=state.assoc_id, level=query.level,
                     keys=len(query.keys))
            encoder = ResponseEncoder(query, ts, self.settings.ae_title)
            # PS3.4 C.4.1.1.4: FF01 when optional keys the SCU asked for are not supported
            pending = Status.PENDING_WARNING if query.unsupported else Status.PENDING
            task = FindTask(self, state, context_id, rq,
                            _encoded(find(self.reader, query), encoder), pending)
        else:
            items = self._items(state, context_id, rq, query)
            if items is None:
                return
            if isinstance(rq, CGetRQ):
                task = GetTask(self, state, context_id, rq, items)
            else:
                dest = self.cfg.remote_ae(rq.move_destination)
                allowed = state.move_destinations  # [access] rule of the requestor
                if dest is not None and allowed is not None and dest.ae_title not in allowed:
                    access_denied(state, "move_destination", destination_ae=dest.ae_title)
                    dest = None  # answered as unknown (0xA801): no oracle for the AE table
                if dest is None:
                    self._final(state, context_id, rq, Status.MOVE_DESTINATION_UNKNOWN,
                                f"unknown move destination {rq.move_destination.strip()}")
                    return
                from workers.qr.move import MoveTask
                task = MoveTask(self, state, context_id, rq, items, dest)
            log.info("qr.retrieve", assoc_id=state.assoc_id, level=query.level,
                     operation="C-GET" if isinstance(rq, CGetRQ) else "C-MOVE",
                     instances=len(items))
            audit.emit(audit.AuditEvent.BEGIN_TRANSFERRING, assoc_id=state.assoc_id,
                       calling_ae=state.calling_ae, destination_ae=_destination(state, rq),
                       level=query.level, instances=len(items))
        self.tasks[key] = task

    def _items(self, state: AssociationState, context_id: int, rq: CGetRQ | CMoveRQ,
               query: Query) -> list[RetrieveItem] | None:
        try:
            return [RetrieveItem.of(r) for r in retrieve(self.reader, query)]
        except QueryError as exc:
            self._final(state, context_id, rq, exc.status, exc.comment)
            return None

    def cancel(self, state: AssociationState, msg_id: int) -> None:
        task = self.tasks.get((state.assoc_id, msg_id))
        if task is not None:  # PS3.7 §9.1.2.1.x: a cancel for nothing outstanding is ignored
            task.cancel()

    def store_response(self, state: AssociationState, rsp: CStoreRSP) -> None:
        """A C-STORE-RSP from the peer: the answer to one of our C-GET sub-operations."""
        for (assoc, _), task in self.tasks.items():
            if assoc == state.assoc_id and isinstance(task, GetTask) and task.answers(rsp):
                return
        log.info("qr.unexpected_response", assoc_id=state.assoc_id,
                 responded=rsp.message_id_being_responded_to)

    def close(self, assoc_id: int) -> None:
        for key in [k for k in self.tasks if k[0] == assoc_id]:
            self.tasks.pop(key).drop()
        for key in [k for k in self.spans if k[0] == assoc_id]:
            tracing.end_span(self.spans.pop(key), error="association closed")

    def _end_span(self, state: AssociationState, rq: QueryRequest, status: int) -> None:
        span = self.spans.pop((state.assoc_id, rq.message_id), None)
        tracing.end_span(span, error=None if status in (0, 0xFE00) else hex(status),
                         status=status)

    # ---- the loop's side -------------------------------------------------------------

    def runnable(self) -> bool:
        return any(t.runnable() for t in self.tasks.values())

    def run(self) -> None:
        """One step of every runnable task."""
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        for key, task in list(self.tasks.items()):
            if task.runnable() and task.step():
                self.tasks.pop(key, None)

    def wake(self) -> None:
        """From a move thread: make the loop's poll() return."""
        try:
            os.write(self.wake_w, b"!")
        except BlockingIOError:
            pass  # the pipe is full: the loop has plenty to wake for

    # ---- responses -------------------------------------------------------------------

    def send(self, state: AssociationState, context_id: int, msg_id: int, command: bytes,
             dataset: bytes | None, final: bool) -> None:
        pdus = fragment_message(context_id, command, dataset, state.peer_max_pdu)
        self.outbox.send_pdus(state.assoc_id, msg_id, pdus, final)

    def _final(self, state: AssociationState, context_id: int, rq: QueryRequest, status: int,
               comment: str | None) -> None:
        m.DIMSE_OPERATIONS.labels(_command_name(rq), m.status_class(status)).inc()
        self._end_span(state, rq, status)
        rsp: CFindRSP | CGetRSP | CMoveRSP
        if isinstance(rq, CFindRQ):
            rsp = CFindRSP(rq.message_id, status, rq.affected_sop_class_uid, comment)
        elif isinstance(rq, CGetRQ):
            rsp = CGetRSP(rq.message_id, status, rq.affected_sop_class_uid, error_comment=comment)
        else:
            rsp = CMoveRSP(rq.message_id, status, rq.affected_sop_class_uid,
                           error_comment=comment)
        self.send(state, context_id, rq.message_id, encode_message(rsp), None, True)

    def retrieve_response(self, state: AssociationState, context_id: int,
                          rq: CGetRQ | CMoveRQ, counts: Counts, *, final: bool,
                          cancelled: bool = False, status: int | None = None,
                          comment: str | None = None) -> None:
        """C-GET/C-MOVE-RSP with sub-operation counts (PS3.4 C.4.2.1.3, C.4.3.1.3): pending
        ones carry Remaining; a final one carries it only after a cancel, and the Failed SOP
        Instance UID List when anything failed."""
        if not final:
            status = Status.PENDING
        elif status is None:
            status = counts.final_status(cancelled)
        cls = CGetRSP if isinstance(rq, CGetRQ) else CMoveRSP
        with_list = final and bool(counts.failed_uids) and status != Status.SUCCESS
        rsp = cls(
            rq.message_id, status, rq.affected_sop_class_uid,
            number_of_remaining_suboperations=(
                counts.remaining if (not final or cancelled) else None),
            number_of_completed_suboperations=counts.completed,
            number_of_failed_suboperations=counts.failed,
            number_of_warning_suboperations=counts.warning,
            error_comment=comment, data_set=with_list,
        )
        ts = state.contexts[context_id][1]
        dataset = failed_uid_list(counts.failed_uids, ts) if with_list else None
        if final:
            m.DIMSE_OPERATIONS.labels(_command_name(rq), m.status_class(status)).inc()
            self._end_span(state, rq, status)
            audit.emit(audit.AuditEvent.INSTANCES_SENT,
                       audit.SUCCESS if not counts.failed else audit.MINOR_FAILURE,
                       assoc_id=state.assoc_id, destination_ae=_destination(state, rq),
                       completed=counts.completed, failed=counts.failed,
                       warning=counts.warning, status=status)
            log.info("qr.retrieved", assoc_id=state.assoc_id, operation=_command_name(rq),
                     status=status, completed=counts.completed, failed=counts.failed,
                     warning=counts.warning)
        self.send(state, context_id, rq.message_id, encode_message(rsp), dataset, final)


def _destination(state: AssociationState, rq: CGetRQ | CMoveRQ) -> str:
    return state.calling_ae if isinstance(rq, CGetRQ) else rq.move_destination.strip()


def _command_name(rq: QueryRequest) -> str:
    return "C-FIND" if isinstance(rq, CFindRQ) else "C-GET" if isinstance(rq, CGetRQ) else "C-MOVE"


def _encoded(results: Iterator[Result], encoder: ResponseEncoder) -> Iterator[bytes]:
    try:
        for result in results:
            yield encoder.encode(result)
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()  # the read transaction ends with the task, cancelled or not


class FindTask:
    """Pending C-FIND-RSPs as matches come (PS3.4 C.4.1.2), then the final status."""

    def __init__(self, qr: QueryRetrieve, state: AssociationState, context_id: int,
                 rq: CFindRQ, identifiers: Iterator[bytes],
                 pending: int = Status.PENDING) -> None:
        self.qr = qr
        self.state = state
        self.msg_id = rq.message_id
        self.context_id = context_id
        self.rq = rq
        self.results = identifiers  # each match's response Identifier, encoded
        self.cancelled = False
        self.sent = 0
        self.pending = pending

    def runnable(self) -> bool:
        return self.cancelled or not self.state.send_paused

    def cancel(self) -> None:
        self.cancelled = True

    def drop(self) -> None:
        self._close()

    def _close(self) -> None:
        close = getattr(self.results, "close", None)
        if close is not None:
            close()  # ends the generator's read transaction now

    def _finish(self, status: int, comment: str | None = None) -> bool:
        self._close()
        self.qr._final(self.state, self.context_id, self.rq, status, comment)
        log.info("qr.found", assoc_id=self.state.assoc_id, matches=self.sent, status=status)
        return True

    def step(self) -> bool:
        if self.cancelled:
            return self._finish(Status.CANCEL)
        limit = self.qr.settings.max_results
        for _ in range(_FIND_BUDGET):
            if self.state.send_paused:
                return False
            try:
                identifier = next(self.results)
            except StopIteration:
                return self._finish(Status.SUCCESS)
            except QueryError as exc:
                return self._finish(exc.status, exc.comment)
            if limit and self.sent >= limit:
                # PS3.4 C.4.1.1.4: A700 Refused: Out of Resources; the matches sent stand.
                return self._finish(Status.OUT_OF_RESOURCES,
                                    f"more than {limit} matches: narrow the query")
            rsp = CFindRSP(self.msg_id, self.pending, self.rq.affected_sop_class_uid,
                           data_set=True)
            self.qr.send(self.state, self.context_id, self.msg_id, encode_message(rsp),
                         identifier, False)
            self.sent += 1
        return False


@dataclass(slots=True)
class _Sending:
    """The sub-operation whose data set is going out."""

    message_id: int
    item: RetrieveItem
    context_id: int
    prepared: Prepared
    sent: int = 0
    held_for: int = 0  # our previous C-STORE-RQ whose answer releases this one (HELD)


class GetTask:
    """C-GET sub-operations: C-STORE-RQs on the requesting association, with the SCP role
    the requestor negotiated for each SOP class (PS3.4 C.4.3.1, PS3.7 D.3.3.4)."""

    _ids = itertools.count(1)

    def __init__(self, qr: QueryRetrieve, state: AssociationState, context_id: int,
                 rq: CGetRQ, items: list[RetrieveItem]) -> None:
        self.qr = qr
        self.state = state
        self.msg_id = rq.message_id
        self.context_id = context_id
        self.rq = rq
        self.items = items
        self.next_item = 0
        self.counts = Counts(len(items))
        self.cancelled = False
        self.sending: _Sending | None = None
        # Sent, answer awaited, oldest first: at most _GET_AHEAD + 1. Those after the first
        # were queued while it was outstanding, each HELD in the acceptor until the peer
        # answers the one before (PS3.7: one operation outstanding on the wire), so the next
        # object leaves the moment the answer arrives instead of after two process hops.
        self.awaiting: list[_Sending] = []
        # An object too large to wait whole in the acceptor's memory: sent unheld, once the
        # previous one is answered.
        self.deferred: tuple[RetrieveItem, Prepared] | None = None
        self.last_pending = time.monotonic()

    def runnable(self) -> bool:
        if self.sending is not None:
            return not self.state.send_paused
        if self.deferred is not None:
            return not self.awaiting and not self.state.send_paused
        if self.cancelled or self.next_item >= len(self.items):
            return not self.awaiting  # the final response waits for every answer
        held = sum(a.prepared.length for a in self.awaiting[1:])
        return (len(self.awaiting) <= _GET_AHEAD and held < _HOLD_MAX_BYTES
                and not self.state.send_paused)

    def cancel(self) -> None:
        self.cancelled = True

    def drop(self) -> None:
        self.sending = None
        self.awaiting = []

    def answers(self, rsp: CStoreRSP) -> bool:
        responded = rsp.message_id_being_responded_to
        awaiting = next((a for a in self.awaiting if a.message_id == responded), None)
        if awaiting is None:
            return False
        self.awaiting.remove(awaiting)
        self.counts.record(awaiting.item.sop_instance_uid, int(rsp.status))
        if int(rsp.status) not in (Status.SUCCESS,):
            log.info("qr.suboperation", assoc_id=self.state.assoc_id, status=rsp.status,
                     comment=rsp.error_comment)
        self._maybe_pending()
        return True

    def _maybe_pending(self) -> None:
        now = time.monotonic()
        if self.counts.remaining and now - self.last_pending >= self.qr.settings.pending_interval_s:
            self.last_pending = now
            self.qr.retrieve_response(self.state, self.context_id, self.rq, self.counts,
                                      final=False)

    def step(self) -> bool:
        if self.sending is not None:
            self._send_slice(self.sending)
            return False
        if self.deferred is not None:
            if self.awaiting:
                return False
            item, prepared = self.deferred
            self.deferred = None
            self._start(item, prepared)
            return False
        if self.cancelled or self.next_item >= len(self.items):
            if self.awaiting:
                return False
            self.qr.retrieve_response(self.state, self.context_id, self.rq, self.counts,
                                      final=True, cancelled=self.cancelled)
            return True
        item = self.items[self.next_item]
        self.next_item += 1
        try:
            self._begin(item)
        except CannotSend as exc:
            log.warning("qr.cannot_send", assoc_id=self.state.assoc_id, error=str(exc))
            self.counts.record(item.sop_instance_uid, Status.UNABLE_TO_PROCESS)
            self._maybe_pending()
        return False

    def _begin(self, item: RetrieveItem) -> None:
        state = self.state
        if item.sop_class_uid not in state.scp_roles:
            raise CannotSend(f"SCP role for {item.sop_class_uid} was not negotiated")
        offered = {ctx: ts for ctx, (abstract, ts) in state.contexts.items()
                   if abstract == item.sop_class_uid}
        if not offered:
            raise CannotSend(f"no presentation context for {item.sop_class_uid}")
        prepared = prepare(self.qr.settings.data_dir, item, set(offered.values()))
        if self.awaiting and prepared.length > _HOLD_MAX_BYTES:
            self.deferred = (item, prepared)
            return
        self._start(item, prepared)

    def _start(self, item: RetrieveItem, prepared: Prepared) -> None:
        state = self.state
        context_id = min(c for c, (abstract, ts) in state.contexts.items()
                         if abstract == item.sop_class_uid
                         and ts == prepared.transfer_syntax_uid)
        message_id = next(self._ids) % 0xFFFF + 1
        held_for = self.awaiting[-1].message_id if self.awaiting else 0
        rq = CStoreRQ(message_id, item.sop_class_uid, item.sop_instance_uid)
        pdus = fragment_message(context_id, encode_message(rq), None, state.peer_max_pdu)
        self.qr.outbox.send_pdus(state.assoc_id, self.msg_id, pdus, False, held_for)
        self.sending = _Sending(message_id, item, context_id, prepared, held_for=held_for)
        self._send_slice(self.sending)

    def _send_slice(self, s: _Sending) -> None:
        p = s.prepared
        if p.converted is not None:
            chunk: bytes = p.converted[s.sent:s.sent + _GET_SLICE_BYTES]
        else:
            with open(p.path, "rb") as fh:
                fh.seek(p.offset + s.sent)
                chunk = fh.read(min(_GET_SLICE_BYTES, p.length - s.sent))
            if not chunk and s.sent < p.length:
                chunk = b""  # the file shrank: end the data set; the peer judges it
                s.sent = p.length
        s.sent += len(chunk)
        done = s.sent >= p.length
        pdus = fragment_data(s.context_id, chunk, done, self.state.peer_max_pdu)
        self.qr.outbox.send_pdus(self.state.assoc_id, self.msg_id, pdus, False, s.held_for)
        if done:
            self.sending = None
            self.awaiting.append(s)
