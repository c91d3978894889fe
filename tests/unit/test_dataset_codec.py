"""The transfer syntax table (appliance.dimse.transfer_syntax) and the pydicom data set codec
the SCUs and the workflow SCP share (appliance.dataset_codec)."""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset

from appliance.config import Config
from appliance.dataset_codec import DatasetError, decode_dataset, encode_dataset
from appliance.dimse.messages import NCreateRQ, NCreateRSP, decode_message
from appliance.dimse.status import Status
from appliance.dimse.transfer_syntax import (
    DEFLATED_EXPLICIT_VR_LE,
    ENCAPSULATED,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    JPEG_BASELINE_8BIT,
    JPIP_HTJ2K_REFERENCED_DEFLATE,
    JPIP_REFERENCED_DEFLATE,
    Encoding,
    data_set_encoding,
)
from appliance.negotiation.qr_classes import MODALITY_PERFORMED_PROCEDURE_STEP as MPPS
from workers.header import read_index_attributes
from workers.query.identifier import decode_identifier
from workers.service import AssociationState
from workers.transcode.syntaxes import encoding_of


@pytest.mark.parametrize(("ts", "expected"), [
    (IMPLICIT_VR_LE, Encoding(implicit=True, little=True, deflated=False, encapsulated=False)),
    (EXPLICIT_VR_LE, Encoding(implicit=False, little=True, deflated=False, encapsulated=False)),
    (EXPLICIT_VR_BE, Encoding(implicit=False, little=False, deflated=False, encapsulated=False)),
    (DEFLATED_EXPLICIT_VR_LE,
     Encoding(implicit=False, little=True, deflated=True, encapsulated=False)),
    (JPIP_REFERENCED_DEFLATE,
     Encoding(implicit=False, little=True, deflated=True, encapsulated=False)),
    (JPEG_BASELINE_8BIT, ENCAPSULATED),
    # PS3.5 A.12: deflated like A.5 (pydicom's DeflatedTransferSyntaxes agrees)
    (JPIP_HTJ2K_REFERENCED_DEFLATE,
     Encoding(implicit=False, little=True, deflated=True, encapsulated=False)),
    ("1.2.826.0.1.3680043.99.1", ENCAPSULATED),  # private: read as Explicit VR LE
])
def test_data_set_encoding(ts: str, expected: Encoding) -> None:
    assert data_set_encoding(ts) == expected


@pytest.mark.parametrize("ts", [IMPLICIT_VR_LE, EXPLICIT_VR_LE, EXPLICIT_VR_BE,
                                DEFLATED_EXPLICIT_VR_LE, JPEG_BASELINE_8BIT])
def test_transcoder_agrees_on_the_syntaxes_it_knows(ts: str) -> None:
    assert encoding_of(ts) == data_set_encoding(ts)


def _identifier() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientName = "Müller^Jürgen*"
    ds.StudyInstanceUID = ""
    return ds


@pytest.mark.parametrize("ts", [IMPLICIT_VR_LE, EXPLICIT_VR_LE, EXPLICIT_VR_BE,
                                DEFLATED_EXPLICIT_VR_LE, JPIP_REFERENCED_DEFLATE,
                                JPEG_BASELINE_8BIT])
def test_round_trip(ts: str) -> None:
    raw = encode_dataset(_identifier(), ts)
    assert decode_dataset(raw, ts) == _identifier()
    assert decode_dataset(memoryview(raw), ts) == _identifier()


def test_jpip_referenced_deflate_data_set_is_deflated() -> None:
    # The SCU codec used to send it as plain Explicit VR LE (pydicom's is_deflated says no)
    # while the ingest walker inflated it: one table now, and PS3.5 deflates it.
    raw = encode_dataset(_identifier(), JPIP_REFERENCED_DEFLATE)
    assert zlib.decompress(raw, -zlib.MAX_WBITS) == encode_dataset(_identifier(), EXPLICIT_VR_LE)


def test_qr_identifier_in_jpip_referenced_deflate_is_inflated() -> None:
    # workers.query.identifier read it as uncompressed Explicit VR LE and refused it
    raw = encode_dataset(_identifier(), JPIP_REFERENCED_DEFLATE)
    query = decode_identifier(raw, JPIP_REFERENCED_DEFLATE, "STUDY")
    assert query.level == "STUDY" and query.value(0x00100010) == "Müller^Jürgen*"


def test_header_reads_what_the_codec_writes_in_jpip_referenced_deflate() -> None:
    ds = _identifier()
    ds.StudyInstanceUID = "1.2.3"
    attrs = read_index_attributes(encode_dataset(ds, JPIP_REFERENCED_DEFLATE),
                                  JPIP_REFERENCED_DEFLATE, walker="python")
    assert attrs.study_instance_uid == "1.2.3"


_UNKNOWN_VR = b"\x08\x00\x05\x00ZZ\x02\x00AB"


def _deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(("data", "ts"), [
    (b"not a deflate stream", DEFLATED_EXPLICIT_VR_LE),
    (_deflate(_UNKNOWN_VR), DEFLATED_EXPLICIT_VR_LE),
    (_UNKNOWN_VR, EXPLICIT_VR_LE),
])
def test_garbage_is_a_dataset_error(data: bytes, ts: str) -> None:
    with pytest.raises(DatasetError, match="undecodable") as info:
        decode_dataset(data, ts)
    assert isinstance(info.value, ValueError)  # what the SCUs' callers catch


class _Outbox:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_pdus(self, assoc_id: int, msg_id: int, pdus: list[Any], final: bool,
                  held_for: int = 0) -> None:
        self.sent.append(b"".join(bytes(p) for parts in pdus for p in parts))


def test_workflow_scp_answers_an_uninflatable_n_create_with_c000(tmp_path: Path) -> None:
    # Regression: the SCP inflated outside its error handling, so a corrupt Deflated
    # attribute list escaped as zlib.error instead of an N-CREATE-RSP.
    from workers.workflow_scp import WorkflowService, workflow_settings

    cfg = Config()
    cfg = dataclasses.replace(cfg, storage=dataclasses.replace(cfg.storage, data_dir=tmp_path))
    out = _Outbox()
    svc = WorkflowService(cfg, workflow_settings(cfg), None, out, None, 0)  # type: ignore[arg-type]
    state = AssociationState(1, "MODALITY", "PACS", 16384, {1: (MPPS, DEFLATED_EXPLICIT_VR_LE)})
    svc.request(state, 1, NCreateRQ(7, MPPS, "1.2.3.4"), b"not a deflate stream")
    [body] = out.sent
    rsp = decode_message(body[6:])
    assert isinstance(rsp, NCreateRSP)
    assert rsp.message_id_being_responded_to == 7 and rsp.status == Status.CANNOT_UNDERSTAND
    assert rsp.error_comment is not None and rsp.error_comment.startswith("undecodable")


def test_deflated_data_sets_have_even_length() -> None:
    """PS3.5 A.5: an odd-length deflated stream is padded with one NUL, which inflating
    ignores (it follows the end of the deflate stream)."""
    odd = 0
    for n in range(16):
        ds = _identifier()
        ds.PatientID = "X" * n
        packer = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
        plain = encode_dataset(ds, EXPLICIT_VR_LE)
        odd += len(packer.compress(plain) + packer.flush()) % 2
        raw = encode_dataset(ds, DEFLATED_EXPLICIT_VR_LE)
        assert len(raw) % 2 == 0, n
        assert decode_dataset(raw, DEFLATED_EXPLICIT_VR_LE).PatientID == "X" * n
    assert odd  # some of these streams needed the pad
