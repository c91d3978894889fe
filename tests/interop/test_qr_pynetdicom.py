"""Query/Retrieve against pynetdicom as the SCU: relational queries through SOP Class
Extended Negotiation, C-CANCEL mid-query and mid-move, and C-GET of compressed objects through
a context that accepts only Explicit VR Little Endian (transcoding on retrieve: the pixels
must equal pydicom's decoding of the original).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.conftest import PYTHON, REPO, Appliance, free_port
from tests.fixtures.qr_corpus import Corpus, write_qr_corpus

pynetdicom = pytest.importorskip("pynetdicom")
from pynetdicom import AE, build_role, evt  # noqa: E402
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation  # noqa: E402
from pynetdicom.sop_class import (  # noqa: E402
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

pytestmark = pytest.mark.interop

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
# Compressed objects retrieved through an Explicit VR Little Endian-only context.
COMPRESSED = ["MR_small_RLE.dcm", "SC_rgb_rle_16bit_2frame.dcm", "MR_small_jp2klossless.dcm",
              "MR_small_jpeg_ls_lossless.dcm", "JPGExtended.dcm", "MR_small_bigendian.dcm"]
SLOW_STORE_S = 0.15


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return write_qr_corpus(tmp_path_factory.mktemp("qr_corpus_pn"))


@pytest.fixture(scope="module")
def dest_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def compressed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("qr_compressed")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, corpus: Corpus, compressed_dir: Path,
            dest_port: int) -> Iterator[Appliance]:
    root = tmp_path_factory.mktemp("qr_archive_pn")
    data = root / "data"
    extra = compressed_dir
    for name in COMPRESSED:
        # pydicom's test files share UIDs: each copy gets its own study/series/instance
        ds = pydicom.dcmread(TEST_FILES / name)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(extra / name)
    folder = corpus.instances[0].path.parent
    done = subprocess.run([PYTHON, "-m", "appliance", "ingest", "--data", str(data),
                           "--workers", "1", "--no-progress", str(folder), str(extra)],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    config = (f'[ae_table.PYDEST]\nhost = "127.0.0.1"\nport = {dest_port}\n'
              "[query]\nmove_pending_interval_s = 0.0\n")
    app = Appliance(root, data=data, workers=2, config=config).start()
    yield app
    app.stop()


def _ext(sop_class: str) -> SOPClassExtendedNegotiation:
    item = SOPClassExtendedNegotiation()
    item.sop_class_uid = sop_class
    item.service_class_application_information = b"\x01"
    return item


def _find(assoc: Any, query: Dataset, model: str, msg_id: int = 1) -> list[tuple[int, Any]]:
    return [(int(st.Status), ds) for st, ds in assoc.send_c_find(query, model, msg_id=msg_id)
            if st]


def test_relational_query_only_when_negotiated(archive: Appliance, corpus: Corpus) -> None:
    """IMAGE level by Modality alone, no upper unique keys: relational (PS3.4 C.4.1.3.2)."""
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.PatientID = "P001"
    query.Modality = "MR"
    query.SOPInstanceUID = ""
    model = PatientRootQueryRetrieveInformationModelFind
    want = {i.sop_uid for p, st in corpus.studies for se in st.series
            if se.modality == "MR" and p.patient_id == "P001" for i in se.instances}

    ae = AE(ae_title="PYNET")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", archive.port, ae_title=archive.ae_title,
                         ext_neg=[_ext(model)])
    assert assoc.is_established
    try:
        results = _find(assoc, query, model)
    finally:
        assoc.release()
    assert results[-1][0] == 0x0000
    assert {ds.SOPInstanceUID for st, ds in results if st == 0xFF00} == want

    plain = ae.associate("127.0.0.1", archive.port, ae_title=archive.ae_title)
    try:
        results = _find(plain, query, model)
    finally:
        plain.release()
    assert [st for st, _ in results if st == 0xFF00] == []
    assert results[-1][0] not in (0x0000, 0xFF00)  # hierarchical query lacks its unique keys


BIG_INDEX_INSTANCES = 20_000


@pytest.fixture(scope="module")
def big_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    """An index of 20,000 instances written directly (C-FIND reads only the index), so a
    query has far more matches than fit in the sockets' buffers and a cancel lands midway."""
    from appliance.config import DuplicatePolicy
    from workers.index.schema import InstanceRecord
    from workers.index.writer import IndexWriter

    root = tmp_path_factory.mktemp("qr_big")
    writer = IndexWriter(root / "data" / "index", sync=False)
    records = [
        InstanceRecord(
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2", sop_instance_uid=f"2.25.{n}",
            study_instance_uid=f"2.25.9{n // 1000}", series_instance_uid=f"2.25.8{n // 100}",
            patient_id=f"BIG{n // 1000}", patient_name=f"BIG^{n // 1000}", modality="CT",
            study_date="20240101", relpath=f"objects/none/{n}.dcm", size_bytes=1,
            transfer_syntax_uid="1.2.840.10008.1.2.1", received_at=0.0, calling_ae="X")
        for n in range(BIG_INDEX_INSTANCES)]
    writer.apply_batch(records, DuplicatePolicy.KEEP)
    writer.close()
    app = Appliance(root, workers=1).start()
    yield app
    app.stop()


def test_cancel_mid_query(big_archive: Appliance) -> None:
    archive = big_archive
    model = StudyRootQueryRetrieveInformationModelFind
    ae = AE(ae_title="PYNET")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", archive.port, ae_title=archive.ae_title,
                         ext_neg=[_ext(model)])
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.SOPInstanceUID = ""
    statuses = []
    try:
        ctx = assoc.accepted_contexts[0].context_id
        for st, _ in assoc.send_c_find(query, model, msg_id=5):
            statuses.append(int(st.Status))
            if len(statuses) == 1:
                assoc.send_c_cancel(5, ctx)
    finally:
        assoc.release()
    assert statuses[-1] == 0xFE00
    assert 1 <= statuses.count(0xFF00) < BIG_INDEX_INSTANCES


class SlowDestination:
    """A pynetdicom Storage SCP that takes its time, so a move can be cancelled midway."""

    def __init__(self, port: int) -> None:
        self.received: list[tuple[str, str | None]] = []  # (SOP Instance, Move Originator)
        ae = AE(ae_title="PYDEST")
        from pynetdicom import AllStoragePresentationContexts
        ae.supported_contexts = AllStoragePresentationContexts
        self.server = ae.start_server(("127.0.0.1", port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self.on_store)])

    def on_store(self, event: Any) -> int:
        time.sleep(SLOW_STORE_S)
        self.received.append((event.request.AffectedSOPInstanceUID,
                              event.request.MoveOriginatorApplicationEntityTitle))
        return 0x0000

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def slow_destination(dest_port: int) -> Iterator[SlowDestination]:
    dest = SlowDestination(dest_port)
    try:
        yield dest
    finally:
        dest.close()


def test_move_with_originator_then_cancel_midway(archive: Appliance, corpus: Corpus,
                                                 slow_destination: SlowDestination) -> None:
    model = StudyRootQueryRetrieveInformationModelMove
    ae = AE(ae_title="MOVER")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", archive.port, ae_title=archive.ae_title)
    assert assoc.is_established
    _, study = next((p, st) for p, st in corpus.studies if st.instance_count >= 4)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study.uid
    responses: list[tuple[int, Any]] = []
    try:
        ctx = assoc.accepted_contexts[0].context_id
        for st, ds in assoc.send_c_move(query, "PYDEST", model, msg_id=9):
            responses.append((int(st.Status), st))
            if int(st.Status) == 0xFF00 and len(responses) == 1:
                assoc.send_c_cancel(9, ctx)
    finally:
        assoc.release()
    final_status, final = responses[-1]
    assert final_status == 0xFE00, responses
    completed = int(final.NumberOfCompletedSuboperations)
    assert 1 <= completed < study.instance_count
    assert int(final.NumberOfRemainingSuboperations) > 0
    assert len(slow_destination.received) == completed
    assert {orig for _, orig in slow_destination.received} == {"MOVER"}


def test_get_transcodes_to_explicit_little_endian(archive: Appliance,
                                                  compressed_dir: Path) -> None:
    originals = {}
    for name in COMPRESSED:
        ds = pydicom.dcmread(compressed_dir / name)
        originals[str(ds.SOPInstanceUID)] = ds
    classes = {str(ds.SOPClassUID) for ds in originals.values()}
    model = StudyRootQueryRetrieveInformationModelGet
    ae = AE(ae_title="GETTER")
    ae.add_requested_context(model)
    for uid in classes:
        ae.add_requested_context(uid, [ExplicitVRLittleEndian])
    received: dict[str, Dataset] = {}
    lock = threading.Lock()

    def on_store(event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        with lock:
            received[str(ds.SOPInstanceUID)] = ds
        return 0x0000

    assoc = ae.associate("127.0.0.1", archive.port, ae_title=archive.ae_title,
                         ext_neg=[build_role(uid, scp_role=True) for uid in classes],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    statuses = []
    try:
        for ds in originals.values():
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = ds.StudyInstanceUID
            statuses += [int(st.Status) for st, _ in assoc.send_c_get(query, model) if st]
    finally:
        assoc.release()
    assert set(received) == set(originals), statuses
    for uid, ds in received.items():
        orig = originals[uid]
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert (ds.pixel_array == orig.pixel_array).all(), uid
        assert ds.PatientName == orig.PatientName
