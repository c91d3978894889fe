"""Query/Retrieve SOP Classes (PS3.4 Annex C.6) and their extended negotiation (C.5), and the
workflow SOP Classes served beside them (Modality Worklist, MPPS, Storage Commitment).

Patient Root and Study Root, each with FIND, MOVE and GET; Patient/Study Only is retired and
not served.
"""

from __future__ import annotations

PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"

QR_FIND: frozenset[str] = frozenset({PATIENT_ROOT_FIND, STUDY_ROOT_FIND})
QR_MOVE: frozenset[str] = frozenset({PATIENT_ROOT_MOVE, STUDY_ROOT_MOVE})
QR_GET: frozenset[str] = frozenset({PATIENT_ROOT_GET, STUDY_ROOT_GET})
QR_SOP_CLASSES: frozenset[str] = QR_FIND | QR_MOVE | QR_GET


def extended_negotiation_reply(requested: bytes, relational: bool) -> bytes:
    """The SCP's answer to a Q/R SOP Class Extended Negotiation sub-item (PS3.4 C.5.1.1 for
    FIND, C.5.1.1.2/C.5.1.1.3 for MOVE/GET): byte 1 is relational-queries (FIND) or
    relational-retrieval (MOVE/GET), granted only when asked and ``relational``; every other
    option (combined date-time matching, fuzzy person names, timezone adjustment, enhanced
    multi-frame conversion) is answered 0, "not supported". Same length as the request."""
    if not requested:
        return b""
    granted = 1 if (requested[0] == 1 and relational) else 0
    return bytes([granted]) + bytes(len(requested) - 1)


def relational_granted(reply: bytes) -> bool:
    return bool(reply) and reply[0] == 1


# Workflow services (PS3.4 Annexes K, F, J): accepted as SCP.
MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
MODALITY_PERFORMED_PROCEDURE_STEP = "1.2.840.10008.3.1.2.3.3"
STORAGE_COMMITMENT_PUSH_MODEL = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"  # its well-known SOP Instance (J.3)
WORKFLOW_SOP_CLASSES: frozenset[str] = frozenset(
    {MODALITY_WORKLIST_FIND, MODALITY_PERFORMED_PROCEDURE_STEP, STORAGE_COMMITMENT_PUSH_MODEL})
