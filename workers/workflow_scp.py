"""Workflow services in a worker: Modality Worklist C-FIND, MPPS N-CREATE/N-SET and Storage
Commitment N-ACTION with its N-EVENT-REPORT (PS3.4 Annexes K, F, J).

THEORY OF OPERATION
-------------------
Records live in the workflow LMDB environment (``workers.workflow.store``), written by the
worker handling the request in a short transaction of its own, synced per durability mode,
before the response goes out: a Success N-CREATE/N-SET/N-ACTION-RSP means it is stored.

Storage Commitment (J.3): the request is persisted, the N-ACTION-RSP sent, the referenced
instances checked against the image index, and the N-EVENT-REPORT-RQ sent on the same
association at once. Its Success N-EVENT-REPORT-RSP completes the request. A request whose
report was not acknowledged (the association ended, the appliance restarted) stays pending;
the worker in slot 0 delivers pending reports older than ``commitment_grace_s`` on a new
association to the requester's entry in the AE table, proposing the SCP role for Storage
Commitment (PS3.4 J.3.3, PS3.7 D.3.3.4), from a thread, retrying every
``commitment_retry_s``.
"""

from __future__ import annotations

import dataclasses
import itertools
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from pydicom.dataset import Dataset

from appliance import audit, tls
from appliance.config import Config, Durability
from appliance.dataset_codec import DatasetError, decode_dataset, encode_dataset
from appliance.dimse.command import Tag, encode_command_set
from appliance.dimse.fragment import fragment_message
from appliance.dimse.messages import (
    CFindRQ,
    NActionRQ,
    NActionRSP,
    NCreateRQ,
    NCreateRSP,
    NEventReportRQ,
    NEventReportRSP,
    NSetRQ,
    NSetRSP,
    encode_message,
)
from appliance.dimse.status import Status
from appliance.dimse.transfer_syntax import EXPLICIT_VR_LE, IMPLICIT_VR_LE
from appliance.errors import ConfigError
from appliance.negotiation.qr_classes import MODALITY_PERFORMED_PROCEDURE_STEP as MPPS
from appliance.negotiation.qr_classes import MODALITY_WORKLIST_FIND as MWL_FIND
from appliance.negotiation.qr_classes import STORAGE_COMMITMENT_INSTANCE
from appliance.negotiation.qr_classes import STORAGE_COMMITMENT_PUSH_MODEL as STORAGE_COMMITMENT
from appliance.scu import SCU, ProposedContext, SCUError
from appliance.ul.pdu import RoleSelection, UserSubItem
from metrics import registry as m
from metrics import tracing
from workers.workflow import WorkflowSettings
from workers.workflow.commitment import (
    CommitmentError,
    CommitmentRequest,
    check_commitment,
    event_report_dataset,
)
from workers.workflow.mpps import MppsError
from workers.workflow.mwl_match import find_worklist
from workers.workflow.store import WorkflowStore
from workers.workflow.worklist import import_folder

if TYPE_CHECKING:
    from workers.index.reader import IndexReader
    from workers.qr.service import FindTask, QueryRetrieve
    from workers.service import AssociationState, Outbox

log = structlog.get_logger(component="worker")

NRequest = NCreateRQ | NSetRQ | NActionRQ


def workflow_settings(cfg: Config) -> WorkflowSettings:
    """The ``[workflow]`` section as the workflow package's settings (same fields)."""
    w = cfg.workflow
    return WorkflowSettings(**{f.name: getattr(w, f.name) for f in dataclasses.fields(w)})


def _new_uid() -> str:
    return f"2.25.{uuid.uuid4().int}"  # PS3.5 B.2


class WorkflowService:
    def __init__(self, cfg: Config, settings: WorkflowSettings, reader: IndexReader,
                 outbox: Outbox, qr: QueryRetrieve, slot: int) -> None:
        self.cfg = cfg
        self.settings = settings
        self.reader = reader
        self.outbox = outbox
        self.qr = qr
        self.slot = slot
        self.store = WorkflowStore(Path(cfg.storage.data_dir),
                                   sync=cfg.storage.durability is not Durability.OS)
        # N-EVENT-REPORT-RQs sent on open associations: (assoc, message id) -> Transaction UID
        self.reports: dict[tuple[int, int], str] = {}
        self._ids = itertools.count(1)
        self._delivering: threading.Thread | None = None
        self._next_delivery = 0.0
        self._next_watch = 0.0

    def _import_watched(self) -> None:
        """One pass over ``worklist_dir``: each settled file imported all or nothing, then
        moved to imported/ or rejected/ (with the reason) by ``import_folder``."""
        folder = Path(self.settings.worklist_dir)
        try:
            results = import_folder(self.store, folder, settle_s=self.settings.watch_settle_s)
        except OSError as exc:
            log.warning("worklist.watch_failed", folder=str(folder), error=str(exc))
            return
        for r in results:
            if r.error is None:
                log.info("worklist.imported", file=r.path.name, items=r.items)
                audit.emit(audit.AuditEvent.WORKLIST_CHANGED, operation="import",
                           file=r.path.name, items=r.items)
            else:
                log.warning("worklist.rejected", file=r.path.name, error=r.error)

    def reload(self, cfg: Config, settings: WorkflowSettings) -> None:
        self.cfg = cfg
        self.settings = settings

    # ---- Modality Worklist (PS3.4 K) -----------------------------------------------

    def find_task(self, state: AssociationState, context_id: int, rq: CFindRQ,
                  identifier: bytes) -> FindTask:
        from workers.qr.service import FindTask

        ts = state.contexts[context_id][1]
        query = decode_dataset(identifier, ts)
        log.info("mwl.find", assoc_id=state.assoc_id, keys=len(query))
        audit.emit(audit.AuditEvent.QUERY, assoc_id=state.assoc_id, calling_ae=state.calling_ae,
                   sop_class_uid=MWL_FIND, keys=sorted(e.keyword or str(e.tag) for e in query))
        matches = find_worklist(self.store, query,
                                hide_completed=self.settings.hide_completed,
                                combined_datetime=self.settings.combined_datetime)
        return FindTask(self.qr, state, context_id, rq, _encoded(matches, ts))

    # ---- N-CREATE / N-SET / N-ACTION ---------------------------------------------------

    def request(self, state: AssociationState, context_id: int, rq: NRequest,
                data: bytes) -> None:
        name = {NCreateRQ: "n_create", NSetRQ: "n_set", NActionRQ: "n_action"}[type(rq)]
        with tracing.span(f"dicom.{name}", parent=state.traceparent or None,
                          message_id=rq.message_id):
            self._request(state, context_id, rq, data)

    def _request(self, state: AssociationState, context_id: int, rq: NRequest,
                 data: bytes) -> None:
        ts = state.contexts[context_id][1]
        try:
            ds = decode_dataset(data, ts) if data else Dataset()
        except DatasetError as exc:
            self._answer_failure(state, context_id, rq, Status.CANNOT_UNDERSTAND, str(exc))
            return
        if isinstance(rq, NCreateRQ) and rq.affected_sop_class_uid == MPPS:
            self._mpps_create(state, context_id, rq, ds)
        elif isinstance(rq, NSetRQ) and rq.requested_sop_class_uid == MPPS:
            self._mpps_set(state, context_id, rq, ds)
        elif isinstance(rq, NActionRQ) and rq.requested_sop_class_uid == STORAGE_COMMITMENT:
            self._commitment(state, context_id, rq, ds)
        else:
            self._answer_failure(state, context_id, rq, Status.UNRECOGNIZED_OPERATION,
                                 "operation not supported for this SOP Class")

    def _send(self, state: AssociationState, context_id: int, msg_id: int, command: bytes,
              dataset: bytes | None = None) -> None:
        pdus = fragment_message(context_id, command, dataset, state.peer_max_pdu)
        self.outbox.send_pdus(state.assoc_id, msg_id, pdus, True)

    def _answer_failure(self, state: AssociationState, context_id: int, rq: NRequest,
                        status: int, comment: str, error_id: int | None = None) -> None:
        comment = comment[:64]
        rsp: NCreateRSP | NSetRSP | NActionRSP
        if isinstance(rq, NCreateRQ):
            rsp = NCreateRSP(rq.message_id, status, rq.affected_sop_class_uid,
                             rq.affected_sop_instance_uid, comment)
            name = "N-CREATE"
        elif isinstance(rq, NSetRQ):
            rsp = NSetRSP(rq.message_id, status, rq.requested_sop_class_uid,
                          rq.requested_sop_instance_uid, comment)
            name = "N-SET"
        else:
            rsp = NActionRSP(rq.message_id, status, rq.requested_sop_class_uid,
                             rq.requested_sop_instance_uid, rq.action_type_id, comment)
            name = "N-ACTION"
        m.DIMSE_OPERATIONS.labels(name, m.status_class(status)).inc()
        log.info("workflow.refused", assoc_id=state.assoc_id, operation=name, status=status,
                 error=comment)
        elements = rsp.to_elements()
        if error_id is not None:  # (0000,0903), e.g. A710 for a final-state MPPS (F.7.2.2.3)
            elements[Tag.ERROR_ID] = error_id
        self._send(state, context_id, rq.message_id, encode_command_set(elements))

    def _mpps_create(self, state: AssociationState, context_id: int, rq: NCreateRQ,
                     ds: Dataset) -> None:
        uid = rq.affected_sop_instance_uid or _new_uid()
        try:
            self.store.create_mpps(uid, ds, state.calling_ae)
        except MppsError as exc:
            self._answer_failure(state, context_id, rq, exc.status, exc.comment, exc.error_id)
            return
        log.info("mpps.created", assoc_id=state.assoc_id, calling_ae=state.calling_ae)
        audit.emit(audit.AuditEvent.MPPS_CHANGED, assoc_id=state.assoc_id,
                   calling_ae=state.calling_ae, operation="create", sop_instance_uid=uid)
        m.DIMSE_OPERATIONS.labels("N-CREATE", "success").inc()
        rsp = NCreateRSP(rq.message_id, Status.SUCCESS, MPPS, uid)
        self._send(state, context_id, rq.message_id, encode_message(rsp))

    def _mpps_set(self, state: AssociationState, context_id: int, rq: NSetRQ,
                  ds: Dataset) -> None:
        uid = rq.requested_sop_instance_uid
        try:
            current = self.store.set_mpps(uid, ds)
        except MppsError as exc:
            self._answer_failure(state, context_id, rq, exc.status, exc.comment, exc.error_id)
            return
        status_value = str(current.get("PerformedProcedureStepStatus", ""))
        log.info("mpps.set", assoc_id=state.assoc_id, status=status_value)
        audit.emit(audit.AuditEvent.MPPS_CHANGED, assoc_id=state.assoc_id,
                   calling_ae=state.calling_ae, operation="set", sop_instance_uid=uid,
                   pps_status=status_value)
        m.DIMSE_OPERATIONS.labels("N-SET", "success").inc()
        rsp = NSetRSP(rq.message_id, Status.SUCCESS, MPPS, uid)
        self._send(state, context_id, rq.message_id, encode_message(rsp))

    # ---- Storage Commitment (PS3.4 J) ---------------------------------------------

    def _commitment(self, state: AssociationState, context_id: int, rq: NActionRQ,
                    ds: Dataset) -> None:
        if rq.requested_sop_instance_uid != STORAGE_COMMITMENT_INSTANCE:
            self._answer_failure(state, context_id, rq, Status.NO_SUCH_OBJECT_INSTANCE,
                                 "not the Storage Commitment well-known instance")
            return
        if rq.action_type_id != 1:
            self._answer_failure(state, context_id, rq, Status.NO_SUCH_ACTION_TYPE,
                                 "Action Type ID must be 1 (J.3.2)")
            return
        try:
            req = CommitmentRequest.from_action(ds, requester_ae=state.calling_ae,
                                                called_ae=self.cfg.network.ae_title)
        except CommitmentError as exc:
            self._answer_failure(state, context_id, rq, exc.status, str(exc))
            return
        self.store.add_commitment(req)  # persisted before the answer: a restart still reports
        m.DIMSE_OPERATIONS.labels("N-ACTION", "success").inc()
        rsp = NActionRSP(rq.message_id, Status.SUCCESS, STORAGE_COMMITMENT,
                         STORAGE_COMMITMENT_INSTANCE, 1)
        self._send(state, context_id, rq.message_id, encode_message(rsp))
        log.info("commitment.requested", assoc_id=state.assoc_id,
                 instances=len(req.references))
        event_type, info = self._report(req)
        msg_id = next(self._ids) % 0xFFFF + 1
        report = NEventReportRQ(msg_id, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE,
                                event_type, data_set=True)
        ts = state.contexts[context_id][1]
        self.reports[(state.assoc_id, msg_id)] = req.transaction_uid
        pdus = fragment_message(context_id, encode_message(report), encode_dataset(info, ts),
                                state.peer_max_pdu)
        self.outbox.send_pdus(state.assoc_id, rq.message_id, pdus, False)

    def _report(self, req: CommitmentRequest) -> tuple[int, Dataset]:
        def lookup(sop_instance_uid: str) -> str | None:
            record = self.reader.get_instance(sop_instance_uid)
            return record.sop_class_uid if record is not None else None

        committed, failed = check_commitment(req, lookup)
        return event_report_dataset(req, committed, failed)

    def event_report_response(self, state: AssociationState, rsp: NEventReportRSP) -> bool:
        """True when ``rsp`` answers one of our N-EVENT-REPORT-RQs on this association."""
        tx = self.reports.pop((state.assoc_id, rsp.message_id_being_responded_to), None)
        if tx is None:
            return False
        if rsp.status == Status.SUCCESS:
            self.store.complete_commitment(tx)
            log.info("commitment.reported", assoc_id=state.assoc_id, route="same_association")
        else:
            log.warning("commitment.report_refused", assoc_id=state.assoc_id,
                        status=rsp.status)
        return True

    def close(self, assoc_id: int) -> None:
        for key in [k for k in self.reports if k[0] == assoc_id]:
            del self.reports[key]  # still pending in the store: delivered on a new association

    # ---- pending reports (slot 0) -----------------------------------------------------

    def tick(self, now: float) -> None:
        """Called by the worker loop (slot 0 only acts): import the watched worklist folder
        and start a delivery pass of pending commitment reports, each when due."""
        if self.slot != 0:
            return
        if self.settings.worklist_dir and now >= self._next_watch:
            self._next_watch = now + self.settings.watch_interval_s
            self._import_watched()
        if now < self._next_delivery:
            return
        if self._delivering is not None and self._delivering.is_alive():
            return
        self._next_delivery = now + self.settings.commitment_retry_s
        in_flight = set(self.reports.values())
        due = [r for r in self.store.pending_commitments()
               if r.transaction_uid not in in_flight
               and time.time() - r.received_at >= self.settings.commitment_grace_s]
        if not due:
            return
        self._delivering = threading.Thread(target=self._deliver, args=(due,),
                                            name="commitment-reports", daemon=True)
        self._delivering.start()

    def _deliver(self, due: list[CommitmentRequest]) -> None:
        for req in due:
            dest = self.cfg.remote_ae(req.requester_ae)
            if dest is None:
                log.warning("commitment.requester_unknown", requester=req.requester_ae)
                continue
            try:
                event_type, info = self._report(req)
                ssl_context = tls.scu_context(self.cfg.tls) if dest.tls else None
                status = _send_report(dest.host, dest.port, self.cfg.network.ae_title,
                                      dest.ae_title, event_type, info,
                                      self.settings.commitment_timeout_s, ssl_context)
            except (SCUError, OSError, ConfigError) as exc:
                log.warning("commitment.report_failed", requester=req.requester_ae,
                            error=str(exc))
                continue
            except Exception:  # noqa: BLE001 - the thread's boundary: log, retry later
                log.exception("commitment.report_failed", requester=req.requester_ae)
                continue
            if status == Status.SUCCESS:
                self.store.complete_commitment(req.transaction_uid)
                log.info("commitment.reported", requester=req.requester_ae,
                         route="new_association")
            else:
                log.warning("commitment.report_refused", requester=req.requester_ae,
                            status=status)


def _encoded(matches: Iterator[Dataset], ts: str) -> Iterator[bytes]:
    for ds in matches:
        yield encode_dataset(ds, ts)


class _ReportSCU(SCU):
    """We, the Storage Commitment SCP, open the association: role selection says so."""

    def _extra_user_items(self) -> tuple[UserSubItem, ...]:
        return (RoleSelection(STORAGE_COMMITMENT, scu_role=False, scp_role=True),)

    def event_report(self, event_type: int, info: Dataset) -> int:
        """N-EVENT-REPORT-RQ (PS3.7 §10.1.1) on the commitment context; the RSP's status."""
        context_id = self._context_for(STORAGE_COMMITMENT, None)
        ts = self.accepted[context_id][1]
        rq = NEventReportRQ(self._next_message_id(), STORAGE_COMMITMENT,
                            STORAGE_COMMITMENT_INSTANCE, event_type, data_set=True)
        self._send_pdus(fragment_message(context_id, encode_message(rq),
                                         encode_dataset(info, ts), self._peer_limit()))
        rsp = self._await_response(rq.message_id)
        if not isinstance(rsp, NEventReportRSP):
            self._protocol_abort(f"N-EVENT-REPORT answered by {type(rsp).__name__}")
        return int(rsp.status)


def _send_report(host: str, port: int, calling_ae: str, called_ae: str, event_type: int,
                 info: Dataset, timeout_s: float, ssl_context: ssl.SSLContext | None = None,
                 ) -> int:
    contexts = [ProposedContext(STORAGE_COMMITMENT, (EXPLICIT_VR_LE, IMPLICIT_VR_LE))]
    scu = _ReportSCU(host, port, calling_ae=calling_ae, called_ae=called_ae,
                     contexts=contexts, timeout_s=timeout_s, ssl_context=ssl_context)
    with scu:
        return scu.event_report(event_type, info)
