"""Storage Commitment Push Model requests (PS3.4 Annex J), pure: the request record, the
check against the archive and the N-EVENT-REPORT it produces.

THEORY OF OPERATION
-------------------
An N-ACTION-RQ (Action Type ID 1, "Request Storage Commitment", J.3.2) carries a Transaction
UID and the Referenced SOP Sequence. ``CommitmentRequest.from_action`` turns it into a record
that the store persists *before* the N-ACTION-RSP goes out, so a restart between the response
and the N-EVENT-REPORT still produces the report (J.3.3: the SCP reports whether or not the
association is still open). The record is kept until a Success N-EVENT-REPORT-RSP arrives.

``check_commitment`` is run when the report is built (not when the request arrives), so a
report delivered late reflects what the archive holds then. For each reference it asks
``lookup(sop_instance_uid)`` for the stored SOP Class UID; the Failure Reasons (0008,1197) are
those of J.3.2 / PS3.3 C.14.1.1:

- 0x0112 No such object instance: not in the archive;
- 0x0119 Class-instance conflict: stored under another SOP Class;
- 0x0110 Processing failure: the lookup failed (it raised OSError).

``event_report_dataset`` builds the Event Information (Table J.3-2): Event Type ID 1 when every
instance is committed, 2 when any failed; Transaction UID; Retrieve AE Title (our AE, from
which the instances can be retrieved); Referenced SOP Sequence of the committed ones and
Failed SOP Sequence (each item with its Failure Reason). A reference listed twice in the
request is reported once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pydicom.dataset import Dataset

from appliance.dimse.status import Status
from workers.workflow.vr import problem

EVENT_ALL_COMMITTED: Final = 1  # "Storage Commitment Request Successful"
EVENT_FAILURES: Final = 2  # "Storage Commitment Request Complete - Failures Exist"

Reference = tuple[str, str]  # (SOP Class UID, SOP Instance UID)
Failure = tuple[str, str, int]  # (SOP Class UID, SOP Instance UID, Failure Reason)
Lookup = Callable[[str], str | None]


class CommitmentError(ValueError):
    """An N-ACTION Action Information that cannot be accepted; ``status`` for the RSP."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class CommitmentRequest:
    """One Storage Commitment request as persisted until its report is acknowledged."""

    transaction_uid: str
    requester_ae: str  # the calling AE of the N-ACTION: where a late report goes
    called_ae: str  # our AE title the request was addressed to
    references: tuple[Reference, ...]
    received_at: float  # epoch seconds

    @classmethod
    def from_action(cls, ds: Dataset, *, requester_ae: str, called_ae: str,
                    received_at: float | None = None) -> CommitmentRequest:
        """From the N-ACTION-RQ Action Information (Table J.3-1); CommitmentError (a
        ValueError) names what is missing or malformed."""
        tx = _text(ds, "TransactionUID")
        if "TransactionUID" not in ds:
            raise CommitmentError(Status.MISSING_ATTRIBUTE, "Transaction UID missing")
        if not tx:
            raise CommitmentError(Status.MISSING_ATTRIBUTE_VALUE, "Transaction UID is empty")
        if problem("UI", tx):
            raise CommitmentError(Status.INVALID_ARGUMENT_VALUE, "Transaction UID is not a UID")
        if "ReferencedSOPSequence" not in ds:
            raise CommitmentError(Status.MISSING_ATTRIBUTE, "Referenced SOP Sequence missing")
        refs: list[Reference] = []
        for i, item in enumerate(ds.ReferencedSOPSequence):
            cls_uid = _text(item, "ReferencedSOPClassUID")
            inst_uid = _text(item, "ReferencedSOPInstanceUID")
            if not cls_uid or not inst_uid:
                raise CommitmentError(Status.MISSING_ATTRIBUTE_VALUE,
                                      f"Referenced SOP Sequence item {i + 1} lacks a UID")
            if problem("UI", cls_uid) or problem("UI", inst_uid):
                raise CommitmentError(Status.INVALID_ARGUMENT_VALUE,
                                      f"Referenced SOP Sequence item {i + 1}: not a UID")
            refs.append((cls_uid, inst_uid))
        if not refs:
            raise CommitmentError(Status.MISSING_ATTRIBUTE_VALUE,
                                  "Referenced SOP Sequence is empty")
        return cls(tx, requester_ae, called_ae, tuple(refs),
                   time.time() if received_at is None else received_at)

    def to_json(self) -> bytes:
        return json.dumps({
            "v": 1, "tx": self.transaction_uid, "requester": self.requester_ae,
            "called": self.called_ae, "refs": [list(r) for r in self.references],
            "received_at": self.received_at,
        }, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> CommitmentRequest:
        obj: dict[str, Any] = json.loads(raw)
        refs = tuple((str(c), str(i)) for c, i in obj["refs"])
        return cls(obj["tx"], obj["requester"], obj["called"], refs, float(obj["received_at"]))


def check_commitment(req: CommitmentRequest,
                     lookup: Lookup) -> tuple[list[Reference], list[Failure]]:
    """(committed, failed) for the request's references, in request order (J.3.3)."""
    committed: list[Reference] = []
    failed: list[Failure] = []
    seen: set[Reference] = set()
    for ref in req.references:
        if ref in seen:
            continue
        seen.add(ref)
        cls_uid, inst_uid = ref
        try:
            stored = lookup(inst_uid)
        except OSError:
            failed.append((cls_uid, inst_uid, int(Status.PROCESSING_FAILURE)))
            continue
        if stored is None:
            failed.append((cls_uid, inst_uid, int(Status.NO_SUCH_OBJECT_INSTANCE)))
        elif stored != cls_uid:
            failed.append((cls_uid, inst_uid, int(Status.CLASS_INSTANCE_CONFLICT)))
        else:
            committed.append(ref)
    return committed, failed


def event_report_dataset(req: CommitmentRequest, committed: Sequence[Reference],
                         failed: Sequence[Failure]) -> tuple[int, Dataset]:
    """(Event Type ID, Event Information) of the N-EVENT-REPORT-RQ (Table J.3-2)."""
    ds = Dataset()
    ds.TransactionUID = req.transaction_uid
    if req.called_ae:
        ds.RetrieveAETitle = req.called_ae
    if committed:
        ds.ReferencedSOPSequence = [_ref_item(c, i) for c, i in committed]
    if failed:
        items = []
        for c, i, reason in failed:
            item = _ref_item(c, i)
            item.FailureReason = reason
            items.append(item)
        ds.FailedSOPSequence = items
    return (EVENT_FAILURES if failed else EVENT_ALL_COMMITTED), ds


def _ref_item(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class_uid
    item.ReferencedSOPInstanceUID = sop_instance_uid
    return item


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return str(value).strip() if value is not None else ""


__all__ = [
    "EVENT_ALL_COMMITTED", "EVENT_FAILURES", "CommitmentError", "CommitmentRequest", "Failure",
    "Lookup", "Reference", "check_commitment", "event_report_dataset",
]
