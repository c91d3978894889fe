"""``appliance.workflow_scu`` and ``appliance.commitment``: the Storage Commitment data sets,
then the SCU against a scripted peer (our own acceptor-role ``Association`` in a thread on a
loopback socket) and the listener against a scripted requestor, so every byte the other side
sends is chosen by the test: reports for other transactions, requests in the middle of a
wait, bad event types, a release instead of a report. Every wait is bounded.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from appliance.commitment import (
    CommitmentListener,
    FailedSOP,
    SOPRef,
    commitment_request,
    parse_commitment_report,
)
from appliance.dimse.assembler import CommandComplete, DataFragment, MessageAssembler
from appliance.dimse.messages import (
    CEchoRQ,
    CEchoRSP,
    CFindRSP,
    Message,
    NActionRQ,
    NActionRSP,
    NCreateRQ,
    NCreateRSP,
    NEventReportRQ,
    NEventReportRSP,
    NSetRQ,
    NSetRSP,
    encode_message,
    message_from_elements,
)
from appliance.qr_scu import decode_identifier, encode_identifier
from appliance.ul.association import (
    NEED_DATA,
    AcceptAssociation,
    AssociateAccepted,
    AssociateRequested,
    Association,
    PDataReceived,
    ReleaseConfirmed,
    ReleaseRequested,
    ReplyRelease,
    RequestAssociation,
    RequestRelease,
    Role,
)
from appliance.ul.pdu import (
    AssociateAC,
    AssociateRQ,
    MaximumLength,
    PresentationContextAC,
    PresentationContextRQ,
    PresentationResult,
    RoleSelection,
    UserInformation,
    encode_pdv_header,
)
from appliance.workflow_scu import (
    MODALITY_PERFORMED_PROCEDURE_STEP,
    MODALITY_WORKLIST_FIND,
    STORAGE_COMMITMENT_INSTANCE,
    STORAGE_COMMITMENT_PUSH_MODEL,
    CommitmentOutcome,
    CommitmentResult,
    WorkflowSCU,
    workflow_contexts,
)

SC = STORAGE_COMMITMENT_PUSH_MODEL
REFS = [(CTImageStorage, "1.2.3.1"), (CTImageStorage, "1.2.3.2")]


# ---------------------------------------------------------------------------- pure parts


def _report(
    tuid: str | None, committed: list[str], failed: list[tuple[str, int | None]]
) -> Dataset:
    ds = Dataset()
    if tuid is not None:
        ds.TransactionUID = tuid
    if committed:
        ds.ReferencedSOPSequence = DicomSequence([_ref(uid) for uid in committed])
    if failed:
        items = []
        for uid, reason in failed:
            item = _ref(uid)
            if reason is not None:
                item.FailureReason = reason
            items.append(item)
        ds.FailedSOPSequence = DicomSequence(items)
    return ds


def _ref(uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = CTImageStorage
    item.ReferencedSOPInstanceUID = uid
    return item


def test_commitment_request_is_table_j3_1_and_survives_the_wire() -> None:
    ds = commitment_request("1.2.9", REFS)
    back = decode_identifier(encode_identifier(ds, ImplicitVRLittleEndian), ImplicitVRLittleEndian)
    assert back.TransactionUID == "1.2.9"
    assert [(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID)
            for i in back.ReferencedSOPSequence] == REFS  # fmt: skip
    with pytest.raises(ValueError, match="at least one"):
        commitment_request("1.2.9", [])


def test_parse_report_lists_committed_and_failed_with_reasons() -> None:
    ds = _report("1.2.9", ["1.2.3.1"], [("1.2.3.2", 0x0112), ("1.2.3.3", None)])
    report = parse_commitment_report(2, ds)
    assert report.transaction_uid == "1.2.9" and report.event_type_id == 2
    assert report.committed == (SOPRef(CTImageStorage, "1.2.3.1"),)
    assert report.failed == (FailedSOP(CTImageStorage, "1.2.3.2", 0x0112),
                             FailedSOP(CTImageStorage, "1.2.3.3", None))  # fmt: skip
    result = CommitmentResult("1.2.9", tuple(SOPRef(*r) for r in [*REFS, (CTImageStorage, "9")]),
                              0, CommitmentOutcome.REPORTED, report)  # fmt: skip
    assert result.unreported == (SOPRef(CTImageStorage, "9"),) and not result.all_committed
    with pytest.raises(ValueError, match="Transaction UID"):
        parse_commitment_report(1, _report(None, ["1.2.3.1"], []))
    with pytest.raises(ValueError, match="event type 3"):
        parse_commitment_report(3, ds)


def test_workflow_contexts_propose_the_three_classes_and_verification() -> None:
    got = [c.abstract_syntax for c in workflow_contexts()]
    assert got == [MODALITY_WORKLIST_FIND, MODALITY_PERFORMED_PROCEDURE_STEP, SC,
                   "1.2.840.10008.1.1"]  # fmt: skip


# ---------------------------------------------------------------------------- scripted peers


@dataclass
class Peer:
    """One side of an association over a socket, speaking whole DIMSE messages."""

    sock: socket.socket
    assoc: Association
    assembler: MessageAssembler = field(default_factory=MessageAssembler)
    contexts: dict[int, str] = field(default_factory=dict)  # id -> transfer syntax

    def events(self) -> Iterator[object]:
        while True:
            ev = self.assoc.next_event()
            if ev is NEED_DATA:
                self.assoc.receive_data(self.sock.recv(65536))
                continue
            yield ev

    def accept(self) -> None:
        ev = next(self.events())
        assert isinstance(ev, AssociateRequested)
        rq = ev.rq
        pcs = tuple(PresentationContextAC(pc.context_id, 0, pc.transfer_syntaxes[-1])
                    for pc in rq.presentation_contexts)  # fmt: skip
        self.contexts = {pc.context_id: pc.transfer_syntaxes[-1] for pc in rq.presentation_contexts}
        self.abstract = {pc.abstract_syntax: pc.context_id for pc in rq.presentation_contexts}
        ac = AssociateAC(rq.called_ae, rq.calling_ae, pcs, UserInformation((MaximumLength(16384),)))
        self.sock.sendall(self.assoc.send(AcceptAssociation(ac)))

    def receive(self) -> tuple[int, Message, Dataset | None]:
        """The next whole message: (context id, message, decoded data set or None)."""
        pending: tuple[int, Message] | None = None
        data = bytearray()
        for ev in self.events():
            if isinstance(ev, ReleaseRequested):
                self.sock.sendall(self.assoc.send(ReplyRelease()))
                raise EOFError("released")
            assert isinstance(ev, PDataReceived), ev
            for pdv in ev.pdvs:
                for out in self.assembler.feed(pdv):
                    if isinstance(out, CommandComplete):
                        msg = message_from_elements(out.elements)
                        if not out.has_data_set:
                            return out.context_id, msg, None
                        pending = (out.context_id, msg)
                    elif isinstance(out, DataFragment):
                        data += out.data
                        if out.is_last:
                            assert pending is not None
                            ts = self.contexts[pending[0]]
                            return pending[0], pending[1], decode_identifier(bytes(data), ts)
        raise AssertionError("unreachable")

    def send(self, cid: int, msg: Message, ds: Dataset | None = None) -> None:
        command = encode_message(msg)
        items = [encode_pdv_header(cid, True, True, len(command)), command]
        if ds is not None:
            data = encode_identifier(ds, self.contexts[cid])
            items += [encode_pdv_header(cid, False, True, len(data)), data]
        self.sock.sendall(b"".join(self.assoc.send_pdata_items(items)))


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[Peer], None]], int]]:
    """Run ``script(peer)`` in a thread for the next connection; returns the port."""
    threads: list[threading.Thread] = []
    errors: list[BaseException] = []
    listeners: list[socket.socket] = []

    def start(script: Callable[[Peer], None]) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(10)
        listeners.append(listener)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(10)
                with conn:
                    script(Peer(conn, Association(Role.ACCEPTOR)))
            except BaseException as exc:  # noqa: BLE001 - reported by the fixture
                errors.append(exc)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        threads.append(t)
        return int(listener.getsockname()[1])

    yield start
    for t in threads:
        t.join(10)
        assert not t.is_alive(), "scripted peer still running"
    for listener in listeners:
        listener.close()
    if errors:
        raise errors[0]


def _expect_release(peer: Peer) -> None:
    with pytest.raises(EOFError):
        peer.receive()


def _scu(port: int) -> WorkflowSCU:
    return WorkflowSCU("127.0.0.1", port, timeout_s=10)


# ---------------------------------------------------------------------------- MPPS


def test_mpps_create_with_our_uid_then_scp_uid_then_set(scripted: Callable[..., int]) -> None:
    seen: list[tuple[Message, Dataset | None]] = []

    def script(peer: Peer) -> None:
        peer.accept()
        cid, rq, ds = peer.receive()
        seen.append((rq, ds))
        assert isinstance(rq, NCreateRQ)
        peer.send(cid, NCreateRSP(rq.message_id, 0, MODALITY_PERFORMED_PROCEDURE_STEP))
        cid, rq, ds = peer.receive()
        seen.append((rq, ds))
        assert isinstance(rq, NCreateRQ) and rq.affected_sop_instance_uid is None
        attrs = Dataset()
        attrs.PerformedProcedureStepStatus = "IN PROGRESS"
        peer.send(cid, NCreateRSP(rq.message_id, 0, MODALITY_PERFORMED_PROCEDURE_STEP,
                                  "1.2.99", data_set=True), attrs)  # fmt: skip
        cid, rq, ds = peer.receive()
        seen.append((rq, ds))
        assert isinstance(rq, NSetRQ)
        peer.send(cid, NSetRSP(rq.message_id, 0xC310, MODALITY_PERFORMED_PROCEDURE_STEP,
                               rq.requested_sop_instance_uid, "not in progress"))  # fmt: skip
        _expect_release(peer)

    port = scripted(script)
    create = Dataset()
    create.PerformedProcedureStepStatus = "IN PROGRESS"
    create.Modality = "CT"
    final = Dataset()
    final.PerformedProcedureStepStatus = "COMPLETED"
    with _scu(port) as scu:
        status, uid, rsp = scu.mpps_create(create, "1.2.42")
        assert (status, uid, rsp.affected_sop_instance_uid) == (0, "1.2.42", None)
        assert scu.last_attribute_list is None
        status, uid, _ = scu.mpps_create(create)
        assert (status, uid) == (0, "1.2.99")
        assert scu.last_attribute_list is not None
        assert scu.last_attribute_list.PerformedProcedureStepStatus == "IN PROGRESS"
        status, set_rsp = scu.mpps_set("1.2.99", final)
        assert status == 0xC310 and set_rsp.error_comment == "not in progress"
    first, second, third = seen
    assert isinstance(first[0], NCreateRQ) and first[0].affected_sop_instance_uid == "1.2.42"
    assert first[0].affected_sop_class_uid == MODALITY_PERFORMED_PROCEDURE_STEP
    assert first[1] == create and second[1] == create
    assert isinstance(third[0], NSetRQ) and third[0].requested_sop_instance_uid == "1.2.99"
    assert third[0].requested_sop_class_uid == MODALITY_PERFORMED_PROCEDURE_STEP
    assert third[1] == final


def test_worklist_find_uses_the_worklist_model(scripted: Callable[..., int]) -> None:
    def script(peer: Peer) -> None:
        peer.accept()
        cid, rq, ds = peer.receive()
        assert cid == peer.abstract[MODALITY_WORKLIST_FIND]
        assert rq.affected_sop_class_uid == MODALITY_WORKLIST_FIND  # type: ignore[union-attr]
        assert ds is not None and ds.PatientID == "P1"
        match = Dataset()
        match.PatientID = "P1"
        peer.send(cid, CFindRSP(1, 0xFF00, MODALITY_WORKLIST_FIND, data_set=True), match)
        peer.send(cid, CFindRSP(1, 0x0000, MODALITY_WORKLIST_FIND))
        _expect_release(peer)

    port = scripted(script)
    ident = Dataset()
    ident.PatientID = "P1"
    with _scu(port) as scu:
        got = [(s, d.PatientID if d is not None else None) for s, d in scu.find_worklist(ident)]
    assert got == [(0xFF00, "P1"), (0, None)]


# ---------------------------------------------------------------------------- commitment


def _action_rsp(rq: Message, status: int = 0) -> NActionRSP:
    assert isinstance(rq, NActionRQ)
    return NActionRSP(rq.message_id, status, SC, STORAGE_COMMITMENT_INSTANCE, 1)


def _event(msg_id: int, event_type: int) -> NEventReportRQ:
    return NEventReportRQ(msg_id, SC, STORAGE_COMMITMENT_INSTANCE, event_type, data_set=True)


def test_commitment_on_the_same_association(scripted: Callable[..., int]) -> None:
    answers: list[Message] = []
    seen: dict[str, object] = {}

    def script(peer: Peer) -> None:
        peer.accept()
        cid, rq, ds = peer.receive()
        seen["rq"], seen["ds"] = rq, ds
        assert ds is not None
        peer.send(cid, _action_rsp(rq))
        # A report of another transaction, a bad event type, a C-ECHO, then ours.
        peer.send(cid, _event(10, 1), _report("9.9.9", ["1.2.3.1"], []))
        answers.append(peer.receive()[1])
        peer.send(cid, _event(11, 3), _report(ds.TransactionUID, ["1.2.3.1"], []))
        answers.append(peer.receive()[1])
        peer.send(peer.abstract["1.2.840.10008.1.1"], CEchoRQ(12))
        answers.append(peer.receive()[1])
        ours = _report(ds.TransactionUID, ["1.2.3.1"], [("1.2.3.2", 0x0112)])
        peer.send(cid, _event(13, 2), ours)
        answers.append(peer.receive()[1])
        _expect_release(peer)

    port = scripted(script)
    with _scu(port) as scu:
        result = scu.request_commitment(REFS, "1.2.777", wait_s=10)
        assert [r.transaction_uid for r in scu.other_reports] == ["9.9.9"]
    rq = seen["rq"]
    assert isinstance(rq, NActionRQ)
    assert (rq.requested_sop_class_uid, rq.requested_sop_instance_uid, rq.action_type_id) == (
        SC, STORAGE_COMMITMENT_INSTANCE, 1)  # fmt: skip
    assert seen["ds"] == commitment_request("1.2.777", REFS)
    assert result.outcome is CommitmentOutcome.REPORTED and result.action_status == 0
    assert result.committed == (SOPRef(CTImageStorage, "1.2.3.1"),)
    assert result.failed == (FailedSOP(CTImageStorage, "1.2.3.2", 0x0112),)
    assert result.unreported == () and not result.all_committed
    assert result.report is not None and result.report.same_association
    # PS3.7 10.1.1.1: each report answered, echoing the event type; 0x0113 for type 3.
    assert [(type(a).__name__, getattr(a, "message_id_being_responded_to", None),
             getattr(a, "status", None), getattr(a, "event_type_id", None))
            for a in answers] == [("NEventReportRSP", 10, 0, 1), ("NEventReportRSP", 11, 0x0113, 3),
                                  ("CEchoRSP", 12, 0x0211, None),
                                  ("NEventReportRSP", 13, 0, 2)]  # fmt: skip
    assert isinstance(answers[0], NEventReportRSP)
    assert answers[0].affected_sop_instance_uid == STORAGE_COMMITMENT_INSTANCE
    assert isinstance(answers[2], CEchoRSP)


def test_commitment_wait_times_out_and_the_association_stays_usable(
    scripted: Callable[..., int],
) -> None:
    def script(peer: Peer) -> None:
        peer.accept()
        cid, rq, _ = peer.receive()
        peer.send(cid, _action_rsp(rq))
        _expect_release(peer)

    port = scripted(script)
    with _scu(port) as scu:
        start = time.monotonic()
        result = scu.request_commitment(REFS, wait_s=0.4)
        elapsed = time.monotonic() - start
        assert scu.accepted  # still established: released by the with block
    assert result.outcome is CommitmentOutcome.TIMED_OUT and result.report is None
    assert result.unreported == tuple(SOPRef(*r) for r in REFS)
    assert 0.35 <= elapsed < 5


def test_commitment_refused_does_not_wait(scripted: Callable[..., int]) -> None:
    def script(peer: Peer) -> None:
        peer.accept()
        cid, rq, _ = peer.receive()
        rsp = _action_rsp(rq, 0x0110)
        peer.send(cid, NActionRSP(rsp.message_id_being_responded_to, 0x0110, SC,
                                  error_comment="archive offline"))  # fmt: skip
        _expect_release(peer)

    port = scripted(script)
    with _scu(port) as scu:
        start = time.monotonic()
        result = scu.request_commitment(REFS, wait_s=30)
        assert time.monotonic() - start < 5
    assert result.outcome is CommitmentOutcome.REFUSED and result.action_status == 0x0110
    assert result.action_error_comment == "archive offline"


def test_peer_release_then_report_on_a_new_association_to_the_listener(
    scripted: Callable[..., int],
) -> None:
    with CommitmentListener(0, "127.0.0.1", ae_title="MODALITY", timeout_s=10) as listener:

        def script(peer: Peer) -> None:
            peer.accept()
            cid, rq, ds = peer.receive()
            assert ds is not None
            peer.send(cid, _action_rsp(rq))
            peer.sock.sendall(peer.assoc.send(RequestRelease()))  # the SCP releases first
            assert any(isinstance(ev, ReleaseConfirmed) for ev in _until_release(peer))
            _report_to_listener(listener.port, ds.TransactionUID, "ARCHIVE")

        port = scripted(script)
        with _scu(port) as scu:
            result = scu.request_commitment(REFS, wait_s=10, listener=listener)
            assert not scu.accepted  # the peer's release was answered
    assert result.outcome is CommitmentOutcome.REPORTED and result.all_committed
    assert result.report is not None and not result.report.same_association
    assert result.report.calling_ae == "ARCHIVE"


def test_peer_release_without_listener_is_reported_as_released(
    scripted: Callable[..., int],
) -> None:
    def script(peer: Peer) -> None:
        peer.accept()
        cid, rq, _ = peer.receive()
        peer.send(cid, _action_rsp(rq))
        peer.sock.sendall(peer.assoc.send(RequestRelease()))
        assert any(isinstance(ev, ReleaseConfirmed) for ev in _until_release(peer))

    port = scripted(script)
    with _scu(port) as scu:
        result = scu.request_commitment(REFS, wait_s=10)
    assert result.outcome is CommitmentOutcome.RELEASED and result.report is None


def _until_release(peer: Peer) -> Iterator[object]:
    for ev in peer.events():
        yield ev
        if isinstance(ev, ReleaseConfirmed):
            return


# ---------------------------------------------------------------------------- the listener


def _report_to_listener(port: int, tuid: str, calling_ae: str, event_type: int = 1) -> list[object]:
    """Act as a Storage Commitment SCP opening a new association (PS3.4 J.3.3): propose the
    SCP role, plus a CT storage context the listener must refuse. Returns what came back."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    peer = Peer(sock, Association(Role.REQUESTOR))
    rq = AssociateRQ("MODALITY", calling_ae, (
        PresentationContextRQ(1, SC, (ExplicitVRLittleEndian, ImplicitVRLittleEndian)),
        PresentationContextRQ(3, CTImageStorage, (ImplicitVRLittleEndian,)),
    ), UserInformation((MaximumLength(16384), RoleSelection(SC, False, True))))  # fmt: skip
    peer.assoc.send(RequestAssociation(rq))
    with sock:
        sock.sendall(peer.assoc.connection_established())
        ac = next(peer.events())
        assert isinstance(ac, AssociateAccepted)
        results = {pc.context_id: (pc.result, pc.transfer_syntax)
                   for pc in ac.ac.presentation_contexts}  # fmt: skip
        peer.contexts = {1: results[1][1]}
        peer.send(1, _event(7, event_type), _report(tuid, ["1.2.3.1", "1.2.3.2"], []))
        _, rsp, _ = peer.receive()
        sock.sendall(peer.assoc.send(RequestRelease()))
        list(_until_release(peer))
    return [results, ac.ac.user_information.of_type(RoleSelection), rsp]


def test_listener_accepts_the_scp_role_and_answers_reports() -> None:
    with CommitmentListener(0, "127.0.0.1", timeout_s=10) as listener:
        results, roles, rsp = _report_to_listener(listener.port, "1.2.5", "ARCHIVE")
        bad = _report_to_listener(listener.port, "1.2.6", "ARCHIVE", event_type=7)[2]
        report = listener.wait_for("1.2.5", 5)
        assert listener.take() is None  # taken once; the bad one never delivered
    assert results[1][0] == PresentationResult.ACCEPTANCE  # type: ignore[index]
    assert results[1][1] == ExplicitVRLittleEndian  # type: ignore[index]
    assert results[3][0] == PresentationResult.ABSTRACT_SYNTAX_NOT_SUPPORTED  # type: ignore[index]
    assert roles == [RoleSelection(SC, False, True)]  # PS3.7 D.3.3.4: SCP role granted
    assert isinstance(rsp, NEventReportRSP) and rsp.status == 0 and rsp.event_type_id == 1
    assert isinstance(bad, NEventReportRSP) and bad.status == 0x0113
    assert report is not None and report.calling_ae == "ARCHIVE"
    assert [r.sop_instance_uid for r in report.committed] == ["1.2.3.1", "1.2.3.2"]
    assert listener.errors == []


def test_listener_wait_for_times_out() -> None:
    with CommitmentListener(0, "127.0.0.1", timeout_s=5) as listener:
        start = time.monotonic()
        assert listener.wait_for("1.2.3", 0.2) is None
        assert 0.15 <= time.monotonic() - start < 3
