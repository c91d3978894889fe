"""Workflow services as SCU on our own core: Modality Worklist C-FIND (PS3.4 Annex K), MPPS
N-CREATE/N-SET (Annex F) and Storage Commitment Push Model N-ACTION with its N-EVENT-REPORT
(Annex J). Reports that come on a new association: ``appliance.commitment``.

THEORY OF OPERATION
-------------------
``WorkflowSCU`` is a ``QRSCU``: Worklist C-FIND is the Q/R ``find`` on another SOP Class, and
the DIMSE-N requests reuse its one-operation-at-a-time machinery (a ``Responses`` whose single
response is the final one), so a peer's own requests in between are answered 0x0211 as there.

Storage Commitment (PS3.4 J.3): ``request_commitment`` sends N-ACTION-RQ (action type 1,
Transaction UID + Referenced SOP Sequence) to the well-known instance and reads the
N-ACTION-RSP. Unless that is a failure, it then waits up to ``wait_s`` on the SAME association
for N-EVENT-REPORT-RQ (event type 1 all committed, 2 failures exist, J.3.3), answers each with
N-EVENT-REPORT-RSP Success, and returns when the one naming our Transaction UID came. Reports
for other transactions are answered and kept in ``other_reports``. While waiting:

* the peer's A-RELEASE-RQ is answered (the SCP may release and report on a new association,
  J.3.3), and an A-ABORT ends the association; neither raises: the result says so;
* with a ``CommitmentListener`` the wait watches it too (polled every 0.1 s), so the report
  may come either way; after a release or an abort the wait goes on on the listener alone;
* the wait expiring leaves the association established (the caller releases it).

Only the wait is not bounded by ``timeout_s`` per read: ``_recv`` is overridden to select on
the socket until the wait's deadline, then ``_WaitOver`` unwinds before anything was read, so
the association is untouched.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Final, NamedTuple

from pydicom import Dataset

from appliance.commitment import (
    ACTION_REQUEST_COMMITMENT,
    STORAGE_COMMITMENT_INSTANCE,
    STORAGE_COMMITMENT_PUSH_MODEL,
    CommitmentListener,
    CommitmentReport,
    FailedSOP,
    SOPRef,
    commitment_request,
    read_report,
    report_rsp,
)
from appliance.dimse.assembler import CommandComplete
from appliance.dimse.command import RESPONSE_BIT, Priority, Tag
from appliance.dimse.fragment import fragment_message
from appliance.dimse.messages import (
    Message,
    NActionRQ,
    NActionRSP,
    NCreateRQ,
    NCreateRSP,
    NEventReportRQ,
    NSetRQ,
    NSetRSP,
    TypedMessage,
    encode_message,
)
from appliance.dimse.status import StatusCategory, category
from appliance.dimse.transfer_syntax import IMPLICIT_VR_LE
from appliance.negotiation.sop_classes import VERIFICATION
from appliance.qr_scu import (
    NATIVE_TRANSFER_SYNTAXES,
    QRSCU,
    FindResponse,
    Responses,
    _Spool,
)
from appliance.scu import AssociationAborted, ProposedContext
from appliance.ul.association import PDataReceived, ReleaseRequested, ReplyRelease
from appliance.ul.pdu import PDV

MODALITY_WORKLIST_FIND: Final = "1.2.840.10008.5.1.4.31"  # PS3.4 K.6.1.2
MODALITY_PERFORMED_PROCEDURE_STEP: Final = "1.2.840.10008.3.1.2.3.3"  # PS3.4 F.7.1
_POLL_S: Final = 0.1  # how often a wait with a listener looks at it


def new_uid() -> str:
    """A UUID-derived UID (PS3.5 B.2): no organisation root needed."""
    return f"2.25.{uuid.uuid4().int}"


def workflow_contexts(
    sop_classes: Sequence[str] = (
        MODALITY_WORKLIST_FIND,
        MODALITY_PERFORMED_PROCEDURE_STEP,
        STORAGE_COMMITMENT_PUSH_MODEL,
    ),
    transfer_syntaxes: Sequence[str] = NATIVE_TRANSFER_SYNTAXES,
) -> list[ProposedContext]:
    """One context per workflow SOP Class, then Verification (for C-ECHO)."""
    out = [ProposedContext(uid, tuple(transfer_syntaxes)) for uid in dict.fromkeys(sop_classes)]
    out.append(ProposedContext(VERIFICATION, (IMPLICIT_VR_LE,)))
    return out


# ---- results -------------------------------------------------------------------------------


class NCreateResult(NamedTuple):
    """N-CREATE-RSP: status, the instance's UID (ours, or the SCP's from the response)."""

    status: int
    sop_instance_uid: str | None
    rsp: NCreateRSP


class NSetResult(NamedTuple):
    status: int
    rsp: NSetRSP


class CommitmentOutcome(Enum):
    REPORTED = "reported"  # the N-EVENT-REPORT for our transaction came
    REFUSED = "refused"  # the N-ACTION-RSP was a failure: nothing to wait for
    RELEASED = "released"  # the peer released first (its report should come elsewhere)
    ABORTED = "aborted"  # the association ended abnormally after the N-ACTION-RSP
    TIMED_OUT = "timed out"  # no report within wait_s


@dataclass(frozen=True, slots=True)
class CommitmentResult:
    transaction_uid: str
    requested: tuple[SOPRef, ...]
    action_status: int
    outcome: CommitmentOutcome
    report: CommitmentReport | None = None
    action_error_comment: str | None = None

    @property
    def committed(self) -> tuple[SOPRef, ...]:
        return self.report.committed if self.report is not None else ()

    @property
    def failed(self) -> tuple[FailedSOP, ...]:
        return self.report.failed if self.report is not None else ()

    @property
    def unreported(self) -> tuple[SOPRef, ...]:
        """Requested instances the report names in neither list (or all, without report)."""
        seen = set(self.committed) | {SOPRef(f.sop_class_uid, f.sop_instance_uid)
                                      for f in self.failed}  # fmt: skip
        return tuple(r for r in self.requested if r not in seen)

    @property
    def all_committed(self) -> bool:
        return self.report is not None and not self.failed and not self.unreported


# ---- the SCU -------------------------------------------------------------------------------


class _WaitOver(Exception):
    """The commitment wait reached its deadline with nothing to read."""


class _PeerReleased(Exception):
    """The peer released the association during the commitment wait (answered)."""


class _ReportElsewhere(Exception):
    def __init__(self, report: CommitmentReport) -> None:
        super().__init__(report.transaction_uid)
        self.report = report


class WorkflowSCU(QRSCU):
    """Modality Worklist, MPPS and Storage Commitment SCU (module docstring); everything
    ``QRSCU`` and ``SCU`` do as well. ``contexts`` defaults to ``workflow_contexts()``."""

    def __init__(
        self, host: str, port: int, *, contexts: Sequence[ProposedContext] | None = None,
        **kw: Any,
    ) -> None:  # fmt: skip
        super().__init__(host, port, contexts=contexts or workflow_contexts(), **kw)
        #: The Attribute List of the last N-CREATE/N-SET-RSP, when the SCP sent one.
        self.last_attribute_list: Dataset | None = None
        #: Storage Commitment reports received here for transactions we were not waiting for.
        self.other_reports: list[CommitmentReport] = []
        self._deadline: float | None = None
        self._listener: CommitmentListener | None = None
        self._awaited = ""

    def __enter__(self) -> WorkflowSCU:
        super().__enter__()
        return self

    # -- Modality Worklist, MPPS

    def find_worklist(
        self, identifier: Dataset | bytes, *, priority: int = Priority.MEDIUM
    ) -> Responses[FindResponse]:
        """C-FIND on the Modality Worklist Information Model (PS3.4 K.6.1)."""
        return self.find(MODALITY_WORKLIST_FIND, identifier, priority=priority)

    def mpps_create(self, ds: Dataset, sop_instance_uid: str | None = None) -> NCreateResult:
        """N-CREATE of a Modality Performed Procedure Step (PS3.4 F.7.2.1). Our UID goes in
        Affected SOP Instance UID; without one the SCP's comes back in the response."""
        rq = NCreateRQ(self._next_message_id(), MODALITY_PERFORMED_PROCEDURE_STEP,
                       sop_instance_uid)  # fmt: skip
        rsp = self._n_request(rq, MODALITY_PERFORMED_PROCEDURE_STEP, ds, NCreateRSP)
        assert isinstance(rsp, NCreateRSP)
        return NCreateResult(rsp.status, rsp.affected_sop_instance_uid or sop_instance_uid, rsp)

    def mpps_set(self, sop_instance_uid: str, modification: Dataset) -> NSetResult:
        """N-SET of an MPPS's Modification List (PS3.4 F.7.2.2)."""
        rq = NSetRQ(self._next_message_id(), MODALITY_PERFORMED_PROCEDURE_STEP, sop_instance_uid)
        rsp = self._n_request(rq, MODALITY_PERFORMED_PROCEDURE_STEP, modification, NSetRSP)
        assert isinstance(rsp, NSetRSP)
        return NSetResult(rsp.status, rsp)

    def _n_request(
        self, rq: Message, sop_class: str, ds: Dataset, rsp_type: type[TypedMessage]
    ) -> Message:
        context_id, ts, data = self._prepare(sop_class, ds)
        message_id = getattr(rq, "message_id", 0)

        def convert(msg: Message, raw: bytes | None) -> Message:
            self.last_attribute_list = self._decode(raw, ts) if raw else None
            return msg

        ops = Responses(self, message_id, context_id, rsp_type, convert)
        rsp = next(self._start(message_id, context_id, encode_message(rq), data, ops))
        if not ops.done:  # a Pending status: DIMSE-N has none (PS3.7 10.1)
            self._protocol_abort(f"{type(rsp).__name__} with a Pending status")
        return rsp

    # -- Storage Commitment

    def request_commitment(
        self,
        refs: Sequence[tuple[str, str]],
        transaction_uid: str | None = None,
        *,
        wait_s: float = 30.0,
        listener: CommitmentListener | None = None,
    ) -> CommitmentResult:
        """N-ACTION Request Storage Commitment (PS3.4 J.3.2), then wait for its
        N-EVENT-REPORT (J.3.3) as the module docstring says."""
        tuid = transaction_uid or new_uid()
        requested = tuple(SOPRef(c, i) for c, i in refs)
        rq = NActionRQ(
            self._next_message_id(),
            STORAGE_COMMITMENT_PUSH_MODEL,
            STORAGE_COMMITMENT_INSTANCE,
            ACTION_REQUEST_COMMITMENT,
            data_set=True,
        )
        rsp = self._n_request(rq, STORAGE_COMMITMENT_PUSH_MODEL,
                              commitment_request(tuid, requested), NActionRSP)  # fmt: skip
        assert isinstance(rsp, NActionRSP)
        result = CommitmentResult(tuid, requested, rsp.status, CommitmentOutcome.REFUSED,
                                  action_error_comment=rsp.error_comment)  # fmt: skip
        if category(rsp.status) is StatusCategory.FAILURE:
            return result
        outcome, report = self._await_report(tuid, time.monotonic() + wait_s, listener)
        return replace(result, outcome=outcome, report=report)

    def _await_report(
        self, tuid: str, deadline: float, listener: CommitmentListener | None
    ) -> tuple[CommitmentOutcome, CommitmentReport | None]:
        self._deadline, self._listener, self._awaited = deadline, listener, tuid
        try:
            while True:
                report = self._next_report()
                if report.transaction_uid == tuid:
                    return CommitmentOutcome.REPORTED, report
                self.other_reports.append(report)
        except _ReportElsewhere as exc:
            return CommitmentOutcome.REPORTED, exc.report
        except _WaitOver:
            return CommitmentOutcome.TIMED_OUT, None
        except (_PeerReleased, AssociationAborted) as exc:
            ended = (CommitmentOutcome.RELEASED if isinstance(exc, _PeerReleased)
                     else CommitmentOutcome.ABORTED)  # fmt: skip
            if listener is None:
                return ended, None
            got = listener.wait_for(tuid, max(0.0, deadline - time.monotonic()))
            return (CommitmentOutcome.REPORTED, got) if got is not None else (ended, None)
        finally:
            self._deadline, self._listener = None, None

    def _next_report(self) -> CommitmentReport:
        """Serve the peer's requests until a Storage Commitment N-EVENT-REPORT-RQ comes."""
        while True:
            cc, msg = self._next_command()
            data: bytes | None = None
            if cc.has_data_set:
                sink = _Spool(1 << 62, None)  # a report is small: always in memory
                self._read_data_set(sink)
                got = sink.result()
                assert isinstance(got, bytes)
                data = got
            field_ = cc.elements.get(Tag.COMMAND_FIELD)
            if not isinstance(field_, int) or field_ & RESPONSE_BIT:
                self._protocol_abort(f"{type(msg).__name__} with no request outstanding")
            if not isinstance(msg, NEventReportRQ) or (
                msg.affected_sop_class_uid != STORAGE_COMMITMENT_PUSH_MODEL
            ):
                self._refuse_read(cc, msg)
                continue
            ts = self.accepted.get(cc.context_id, ("", IMPLICIT_VR_LE))[1]
            status, report = read_report(msg, data, ts, same_association=True)
            rsp = encode_message(report_rsp(msg, status))
            self._send_pdus(fragment_message(cc.context_id, rsp, None, self._peer_limit()))
            if report is not None:
                return report

    def _refuse_read(self, cc: CommandComplete, msg: Message) -> None:
        # The data set was read already; QRSCU._refuse answers 0x0211 (C-CANCEL: nothing).
        self._refuse(replace(cc, has_data_set=False), msg)

    # -- the wait's deadline, in the receive path

    def _recv(self, sock: socket.socket) -> bytes:
        deadline = self._deadline
        while deadline is not None:
            listener = self._listener
            if listener is not None and (got := listener.take(self._awaited)) is not None:
                raise _ReportElsewhere(got)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _WaitOver
            wait = min(remaining, _POLL_S) if listener is not None else remaining
            # TLS: decrypted bytes already buffered in the SSLSocket do not wake select
            if (isinstance(sock, ssl.SSLSocket) and sock.pending()) or select.select(
                    [sock], [], [], wait)[0]:
                break
        return super()._recv(sock)

    def _next_pdv(self) -> PDV:
        if self._deadline is None:
            return super()._next_pdv()
        while not self._pdvs:
            ev = self._next_event()
            if isinstance(ev, ReleaseRequested) and self._assoc is not None:
                # The SCP may release and send the report on a new association (J.3.3).
                self._write([self._assoc.send(ReplyRelease(), time.monotonic())])
                self._close()
                raise _PeerReleased
            if isinstance(ev, PDataReceived):
                self._pdvs.extend(ev.pdvs)
        return self._pdvs.popleft()


__all__ = [
    "MODALITY_PERFORMED_PROCEDURE_STEP",
    "MODALITY_WORKLIST_FIND",
    "STORAGE_COMMITMENT_INSTANCE",
    "STORAGE_COMMITMENT_PUSH_MODEL",
    "CommitmentListener",
    "CommitmentOutcome",
    "CommitmentReport",
    "CommitmentResult",
    "FailedSOP",
    "NCreateResult",
    "NSetResult",
    "SOPRef",
    "WorkflowSCU",
    "new_uid",
    "workflow_contexts",
]
