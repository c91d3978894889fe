"""Storage Commitment requests (PS3.4 J.3): parsing, the archive check, the event report, and
persistence until the report is acknowledged."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from appliance.dimse.status import Status
from workers.workflow.commitment import (
    CommitmentError,
    CommitmentRequest,
    check_commitment,
    event_report_dataset,
)
from workers.workflow.store import WorkflowStore

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
TX = "1.2.826.0.1.3680043.9.7.100"


def action(refs: list[tuple[str, str]], tx: str | None = TX) -> Dataset:
    ds = Dataset()
    if tx is not None:
        ds.TransactionUID = tx
    items = []
    for cls, inst in refs:
        it = Dataset()
        it.ReferencedSOPClassUID = cls
        it.ReferencedSOPInstanceUID = inst
        items.append(it)
    ds.ReferencedSOPSequence = items
    return ds


def request(refs: list[tuple[str, str]]) -> CommitmentRequest:
    return CommitmentRequest.from_action(action(refs), requester_ae="MODALITY",
                                         called_ae="PACS", received_at=1000.0)


def test_from_action() -> None:
    req = request([(CT, "1.2.3.1"), (MR, "1.2.3.2")])
    assert req.transaction_uid == TX
    assert req.requester_ae == "MODALITY" and req.called_ae == "PACS"
    assert req.references == ((CT, "1.2.3.1"), (MR, "1.2.3.2"))
    assert req.received_at == 1000.0


@pytest.mark.parametrize(("ds", "status", "text"), [
    (action([(CT, "1.2.3")], tx=None), Status.MISSING_ATTRIBUTE, "Transaction UID missing"),
    (action([(CT, "1.2.3")], tx=""), Status.MISSING_ATTRIBUTE_VALUE, "Transaction UID is empty"),
    (action([(CT, "1.2.3")], tx="1.2.x"), Status.INVALID_ARGUMENT_VALUE, "not a UID"),
    (action([]), Status.MISSING_ATTRIBUTE_VALUE, "Referenced SOP Sequence is empty"),
    (action([(CT, "")]), Status.MISSING_ATTRIBUTE_VALUE, "item 1 lacks a UID"),
    (action([(CT, "1.2.3"), ("", "1.2.4")]), Status.MISSING_ATTRIBUTE_VALUE,
     "item 2 lacks a UID"),
    (action([(CT, "1.02.3")]), Status.INVALID_ARGUMENT_VALUE, "item 1: not a UID"),
])
def test_bad_action_information(ds: Dataset, status: int, text: str) -> None:
    with pytest.raises(CommitmentError) as info:
        CommitmentRequest.from_action(ds, requester_ae="A", called_ae="B")
    assert info.value.status == status and text in str(info.value)
    assert isinstance(info.value, ValueError)  # the SCP catches ValueError


def test_no_referenced_sop_sequence() -> None:
    ds = Dataset()
    ds.TransactionUID = TX
    with pytest.raises(CommitmentError, match="Referenced SOP Sequence missing"):
        CommitmentRequest.from_action(ds, requester_ae="A", called_ae="B")


ARCHIVE = {"1.2.3.1": CT, "1.2.3.2": MR}


def lookup(uid: str) -> str | None:
    if uid == "1.2.3.99":
        raise OSError("disk on fire")
    return ARCHIVE.get(uid)


def test_check_all_committed() -> None:
    req = request([(CT, "1.2.3.1"), (MR, "1.2.3.2")])
    committed, failed = check_commitment(req, lookup)
    assert committed == [(CT, "1.2.3.1"), (MR, "1.2.3.2")] and failed == []
    event, ds = event_report_dataset(req, committed, failed)
    assert event == 1
    assert ds.TransactionUID == TX and ds.RetrieveAETitle == "PACS"
    assert [(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID)
            for i in ds.ReferencedSOPSequence] == committed
    assert "FailedSOPSequence" not in ds


def test_check_failure_reasons() -> None:
    req = request([(CT, "1.2.3.1"), (CT, "1.2.3.2"), (CT, "1.2.3.3"), (CT, "1.2.3.99"),
                   (CT, "1.2.3.1")])
    committed, failed = check_commitment(req, lookup)
    assert committed == [(CT, "1.2.3.1")]  # listed twice, reported once
    assert failed == [(CT, "1.2.3.2", 0x0119), (CT, "1.2.3.3", 0x0112),
                      (CT, "1.2.3.99", 0x0110)]
    event, ds = event_report_dataset(req, committed, failed)
    assert event == 2
    assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in ds.FailedSOPSequence] == [
        ("1.2.3.2", 0x0119), ("1.2.3.3", 0x0112), ("1.2.3.99", 0x0110)]
    assert all(i.ReferencedSOPClassUID == CT for i in ds.FailedSOPSequence)
    assert [i.ReferencedSOPInstanceUID for i in ds.ReferencedSOPSequence] == ["1.2.3.1"]


def test_all_failed_has_no_referenced_sop_sequence() -> None:
    req = request([(CT, "1.2.3.3")])
    event, ds = event_report_dataset(req, *check_commitment(req, lookup))
    assert event == 2 and "ReferencedSOPSequence" not in ds
    assert ds.FailedSOPSequence[0].FailureReason == 0x0112


def test_requests_persist_until_completed(tmp_path: Path) -> None:
    a = CommitmentRequest.from_action(action([(CT, "1.2.3.1")], tx="1.2.9.1"),
                                      requester_ae="M1", called_ae="PACS", received_at=20.0)
    b = CommitmentRequest.from_action(action([(MR, "1.2.3.2")], tx="1.2.9.2"),
                                      requester_ae="M2", called_ae="PACS", received_at=10.0)
    with WorkflowStore(tmp_path) as store:
        store.add_commitment(a)
        store.add_commitment(b)
    with WorkflowStore(tmp_path) as store:  # "after a restart"
        assert store.pending_commitments() == [b, a]  # oldest first, equal after the trip
        store.complete_commitment("1.2.9.2")
        store.complete_commitment("1.2.9.404")  # unknown: fine
    with WorkflowStore(tmp_path) as store:
        assert store.pending_commitments() == [a]
