"""The worker's DIMSE services (C-ECHO, C-STORE, ingest) with a fake outbox and a real index.

The outbox records what the worker would put on its rings; the index writer's role is played
by applying the requested records with the real IndexWriter and feeding the outcome back, so
"Success only after indexed" is visible as an ordering fact.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from appliance.config import DuplicatePolicy
from appliance.dimse.command import encode_command_set
from appliance.dimse.messages import (
    CEchoRQ,
    CEchoRSP,
    CStoreRQ,
    CStoreRSP,
    GenericCommand,
    decode_message,
    encode_message,
)
from appliance.dimse.status import Status
from workers.index.reader import IndexReader
from workers.index.schema import InstanceRecord
from workers.index.writer import IndexWriter
from workers.service import AssociationState, Services
from workers.store import StoreSettings

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


class FakeOutbox:
    def __init__(self) -> None:
        self.sent: list[tuple[int, int, bytes, bool]] = []
        self.index_requests: list[tuple[int, InstanceRecord, DuplicatePolicy]] = []
        self.aborts: list[int] = []
        self.ingests: list[tuple[int, dict[str, object]]] = []

    def send_pdus(self, assoc_id: int, msg_id: int, pdus: list[Any], final: bool,
                  held_for: int = 0) -> None:
        body = b"".join(bytes(p) for parts in pdus for p in parts)
        self.sent.append((assoc_id, msg_id, body, final))

    def abort(self, assoc_id: int, reason: int) -> None:
        self.aborts.append(assoc_id)

    def request_index(self, token: int, record: InstanceRecord, policy: DuplicatePolicy) -> None:
        self.index_requests.append((token, record, policy))

    def ingested(self, job_id: int, outcome: dict[str, object]) -> None:
        self.ingests.append((job_id, outcome))

    def responses(self) -> list[Any]:
        out = [decode_message(body[6:]) for _, _, body, _ in self.sent]
        self.sent.clear()
        return out


class Harness:
    def __init__(self, tmp: Path, policy: DuplicatePolicy = DuplicatePolicy.KEEP) -> None:
        for sub in ("objects", "tmp", "index"):
            (tmp / sub).mkdir(parents=True, exist_ok=True)
        self.data = tmp
        self.writer = IndexWriter(tmp / "index", map_size=1 << 26, sync=False)
        self.out = FakeOutbox()
        settings = StoreSettings(
            tmp,
            fsync_each=False,
            max_dataset_bytes=0,
            implementation_class_uid="1.2.3",
            implementation_version_name="T",
        )
        # one environment per process (py-lmdb): the reader shares the writer's
        self.reader = IndexReader.sharing(self.writer.index)
        self.svc = Services(settings, policy, self.reader, self.out)
        self.svc.open(
            AssociationState(1, "MODALITY", "PACS", 16384, {1: (CT, ExplicitVRLittleEndian)})
        )

    def commit_index(self) -> None:
        """Play the index writer: apply the pending records, acknowledge them."""
        reqs, self.out.index_requests = self.out.index_requests, []
        for token, record, policy in reqs:
            [res] = self.writer.apply_batch([record], policy)
            self.svc.indexed(token, res.outcome, res.old_relpath or "")

    def store(
        self, msg_id: int, data: bytes, sop_class: str = CT, sop_uid: str = "", chunk: int = 1000
    ) -> None:
        rq = CStoreRQ(
            message_id=msg_id, affected_sop_class_uid=sop_class, affected_sop_instance_uid=sop_uid
        )
        self.svc.command(1, 1, memoryview(encode_message(rq)))
        for i in range(0, max(len(data), 1), chunk):
            piece = data[i : i + chunk]
            self.svc.data(1, 1, memoryview(piece), last=i + chunk >= len(data))

    def tmp_files(self) -> list[Path]:
        return list((self.data / "tmp").iterdir())


def ct_dataset(sop_uid: str | None = None, study: str | None = None) -> tuple[bytes, str]:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "P1"
    ds.PatientName = "DOE^JANE"
    ds.Modality = "CT"
    ds.StudyDate = "20260101"
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = 16
    ds.PixelData = bytes(32)
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=False, little_endian=True, enforce_file_format=False)
    return buf.getvalue(), ds.SOPInstanceUID


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_echo_answers_success(h: Harness) -> None:
    h.svc.command(1, 1, memoryview(encode_message(CEchoRQ(message_id=3))))
    [rsp] = h.out.responses()
    assert isinstance(rsp, CEchoRSP)
    assert rsp.status == Status.SUCCESS and rsp.message_id_being_responded_to == 3


def test_store_success_only_after_index_commit(h: Harness) -> None:
    data, uid = ct_dataset()
    h.store(9, data, sop_uid=uid)
    assert h.out.sent == []  # nothing answered before the index writer acknowledged
    assert len(h.out.index_requests) == 1
    h.commit_index()
    [rsp] = h.out.responses()
    assert isinstance(rsp, CStoreRSP)
    assert (rsp.status, rsp.message_id_being_responded_to) == (Status.SUCCESS, 9)
    rec = h.reader.get_instance(uid)
    assert rec is not None
    stored = pydicom.dcmread(h.data / rec.relpath)
    assert stored.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert stored.file_meta.SourceApplicationEntityTitle == "MODALITY"
    assert stored.file_meta.MediaStorageSOPInstanceUID == uid
    assert (h.data / rec.relpath).read_bytes().endswith(data)  # data set bytes as received
    assert h.tmp_files() == []


def test_sop_instance_mismatch_is_a900_and_leaves_nothing(h: Harness) -> None:
    data, _ = ct_dataset()
    h.store(1, data, sop_uid="1.2.3.4.5")
    [rsp] = h.out.responses()
    assert rsp.status == Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    assert rsp.error_comment
    assert h.out.index_requests == [] and h.tmp_files() == []
    assert not any((h.data / "objects").rglob("*.dcm"))


def test_context_abstract_syntax_mismatch_is_refused(h: Harness) -> None:
    data, uid = ct_dataset()
    h.store(1, data, sop_class=MR, sop_uid=uid)
    [rsp] = h.out.responses()
    assert rsp.status == Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    assert h.tmp_files() == []


def test_garbage_data_set_is_c000(h: Harness) -> None:
    h.store(1, b"\x08\x00\x16\x00UI\xff\x7f" + b"\x00" * 50, sop_uid="1.2.3")
    [rsp] = h.out.responses()
    assert 0xC000 <= rsp.status <= 0xCFFF
    assert h.tmp_files() == []


def test_duplicate_keep_answers_success_without_second_record(h: Harness) -> None:
    data, uid = ct_dataset()
    h.store(1, data, sop_uid=uid)
    h.commit_index()
    h.out.responses()
    h.store(2, data, sop_uid=uid)
    [rsp] = h.out.responses()  # known duplicate: answered at once, index untouched
    assert rsp.status == Status.SUCCESS
    assert h.out.index_requests == []
    assert h.reader.stats().instances == 1
    assert h.svc.counters.duplicates == 1


def test_duplicate_reject_answers_0111(tmp_path: Path) -> None:
    h = Harness(tmp_path, DuplicatePolicy.REJECT)
    data, uid = ct_dataset()
    h.store(1, data, sop_uid=uid)
    h.commit_index()
    h.out.responses()
    h.store(2, data, sop_uid=uid)
    [rsp] = h.out.responses()
    assert rsp.status == Status.DUPLICATE_SOP_INSTANCE


def test_duplicate_overwrite_replaces_the_file(tmp_path: Path) -> None:
    h = Harness(tmp_path, DuplicatePolicy.OVERWRITE)
    uid = generate_uid()
    first, _ = ct_dataset(uid)
    second, _ = ct_dataset(uid)  # same SOP Instance, other study: the object moves
    h.store(1, first, sop_uid=uid)
    h.commit_index()
    old = h.reader.get_instance(uid)
    assert old is not None
    h.store(2, second, sop_uid=uid)
    h.commit_index()
    [r1, r2] = h.out.responses()
    assert r1.status == r2.status == Status.SUCCESS
    reader = h.reader
    new = reader.get_instance(uid)
    assert new is not None and new.relpath != old.relpath
    assert not (tmp_path / old.relpath).exists()  # the replaced file is gone
    assert (tmp_path / new.relpath).read_bytes().endswith(second)
    assert reader.stats().instances == 1


def test_close_mid_data_set_removes_spool(h: Harness) -> None:
    data, uid = ct_dataset()
    rq = CStoreRQ(message_id=1, affected_sop_class_uid=CT, affected_sop_instance_uid=uid)
    h.svc.command(1, 1, memoryview(encode_message(rq)))
    h.svc.data(1, 1, memoryview(data[:100]), last=False)
    assert len(h.tmp_files()) == 1
    h.svc.close(1)
    assert h.tmp_files() == []
    assert h.out.sent == []


def test_unknown_operation_is_0211_after_draining(h: Harness) -> None:
    # an N-GET-RQ (0x0110) with a data set announced: drained, then refused
    cmd = encode_command_set(
        {0x00000002: CT, 0x00000100: 0x0110, 0x00000110: 4, 0x00000800: 0x0001}
    )
    h.svc.command(1, 1, memoryview(cmd))
    assert h.out.sent == []
    h.svc.data(1, 1, memoryview(b"\x00" * 10), last=True)
    [rsp] = h.out.responses()
    assert isinstance(rsp, GenericCommand)
    assert rsp.elements[0x00000900] == Status.UNRECOGNIZED_OPERATION
    assert rsp.elements[0x00000100] == 0x8110


def test_undecodable_command_aborts(h: Harness) -> None:
    h.svc.command(1, 1, memoryview(b"\x00\x00\x00\x00\xff\xff\xff\xff"))
    assert h.out.aborts == [1]


def test_ingest_uses_data_set_uids_and_is_idempotent(h: Harness, tmp_path: Path) -> None:
    data, uid = ct_dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT
    meta.MediaStorageSOPInstanceUID = "9.9.9"  # disagrees with the data set
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    ds.file_meta = meta
    path = tmp_path / "in.dcm"
    ds.save_as(path, enforce_file_format=True)
    h.svc.ingest_file(1, path)
    h.commit_index()
    assert h.out.ingests == [(1, {"outcome": "stored", "status": Status.SUCCESS})]
    assert h.reader.get_instance(uid) is not None
    h.svc.ingest_file(2, path)
    assert h.out.ingests[-1] == (2, {"outcome": "duplicate"})


def test_ingest_not_dicom(h: Harness, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, not a DICOM file at all" * 10)
    h.svc.ingest_file(1, path)
    assert h.out.ingests[0][1]["outcome"] == "not_dicom"


def test_concurrent_duplicates_leave_exactly_the_indexed_copy(h: Harness) -> None:
    # Regression: two copies of one SOP Instance in flight at once (two workers, or `pacs
    # ingest` beside `pacs serve`) used to rename onto one path, so the file on disk could be
    # the copy the index had refused (index size != file size).
    uid = generate_uid()
    first, _ = ct_dataset(uid)
    second, _ = ct_dataset(uid)
    h.store(1, first, sop_uid=uid)
    h.store(2, second, sop_uid=uid)  # passes the pre-check: the first is not indexed yet
    assert len(h.out.index_requests) == 2
    h.commit_index()
    [r1, r2] = h.out.responses()
    assert r1.status == r2.status == Status.SUCCESS
    rec = h.reader.get_instance(uid)
    assert rec is not None
    files = list((h.data / "objects").rglob("*.dcm"))
    assert files == [h.data / rec.relpath]
    assert files[0].stat().st_size == rec.size_bytes
    assert files[0].read_bytes().endswith(first)  # keep: the first copy stays


def test_max_dataset_bytes_refuses_with_a700_and_keeps_draining(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.svc.settings = StoreSettings(tmp_path, fsync_each=False, max_dataset_bytes=200,
                                   implementation_class_uid="1.2.3",
                                   implementation_version_name="T")
    data, uid = ct_dataset()
    assert len(data) > 200
    h.store(1, data, sop_uid=uid, chunk=100)
    [rsp] = h.out.responses()
    assert rsp.status == Status.OUT_OF_RESOURCES
    assert h.tmp_files() == [] and h.out.index_requests == []
    h.store(2, data[:150], sop_uid=uid)  # the association goes on; next message is answered
    assert len(h.out.responses()) == 1


def test_typed_n_request_without_a_service_is_0211_not_an_abort(h: Harness) -> None:
    """An N-ACTION-RQ decodes to a typed message; with no workflow service it is refused
    like any unserved operation, never by aborting the association."""
    cmd = encode_command_set({0x00000003: "1.2.840.10008.1.20.1", 0x00000100: 0x0130,
                              0x00000110: 6, 0x00000800: 0x0101, 0x00001001: "1.2.3",
                              0x00001008: 1})
    h.svc.command(1, 1, memoryview(cmd))
    [rsp] = h.out.responses()
    assert h.out.aborts == []
    assert rsp.status == Status.UNRECOGNIZED_OPERATION
    assert rsp.message_id_being_responded_to == 6
