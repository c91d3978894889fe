"""``appliance.qr_scu`` (our C-FIND / C-MOVE / C-GET / C-CANCEL SCU) against SCPs nobody here
wrote: DCMTK ``dcmqrscp`` with a small archive indexed by ``dcmqridx``, a DCMTK ``storescp``
as the C-MOVE destination, and pynetdicom as a Q/R SCP whose handler waits for our C-CANCEL.

The archive is synthetic (no PHI): two patients, three studies, five series, nine images in
two SOP classes, plus pydicom's CT_small.dcm, so every level and the wildcard / range / list
matching dcmqrscp implements have a known answer. dcmqrscp advertises a 16 KiB Maximum
Length, so identifiers and retrieved objects cross PDU boundaries.

The fixtures here are reused by ``test_net_cli.py``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from appliance.dimse.messages import CStoreRQ
from appliance.negotiation.qr_classes import (
    PATIENT_ROOT_FIND,
    PATIENT_ROOT_GET,
    PATIENT_ROOT_MOVE,
    STUDY_ROOT_FIND,
    STUDY_ROOT_GET,
    STUDY_ROOT_MOVE,
)
from appliance.qr_scu import (
    DEFAULT_GET_STORAGE_CLASSES,
    QRSCU,
    decode_identifier,
    get_contexts,
    qr_contexts,
)
from appliance.scu_files import read_file_meta
from tests.conftest import free_port, require_tool, run_tool

pytestmark = pytest.mark.interop

ARCHIVE_AE = "ARCHIVE"
DEST_AE = "DEST"
STUDY_DATES = {"S1": "20240105", "S2": "20240215", "S3": "20231120"}


@dataclass
class Archive:
    """A running dcmqrscp with its objects; ``dest_port``/``dest_dir`` are the storescp."""

    port: int
    files: dict[str, Path]  # SOP Instance UID -> file
    datasets: Mapping[str, Dataset]
    dest_port: int
    dest_dir: Path

    def study_uids(self, patient_id: str | None = None) -> set[str]:
        return {
            ds.StudyInstanceUID
            for ds in self.datasets.values()
            if patient_id is None or ds.PatientID == patient_id
        }

    def instances_of_study(self, study_uid: str) -> set[str]:
        return {uid for uid, ds in self.datasets.items() if ds.StudyInstanceUID == study_uid}


def _image(patient: tuple[str, str], study: str, series_no: int, image_no: int,
           modality: str, uids: Mapping[str, str]) -> Dataset:  # fmt: skip
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID = patient
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = uids[study]
    ds.StudyID = study
    ds.StudyDate = STUDY_DATES[study]
    ds.StudyTime = "101010"
    ds.AccessionNumber = f"ACC{study}"
    ds.StudyDescription = f"study {study}"
    ds.ReferringPhysicianName = ""
    ds.SeriesInstanceUID = uids[f"{study}.{series_no}"]
    ds.SeriesNumber = series_no
    ds.Modality = modality
    ds.InstanceNumber = image_no
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(128))
    return ds


def make_objects(folder: Path) -> dict[str, Path]:
    """Write the synthetic archive as Part 10 files; SOP Instance UID -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    uids = {k: generate_uid() for k in ("S1", "S2", "S3", "S1.1", "S1.2", "S2.1", "S3.1",
                                        "S3.2")}  # fmt: skip
    layout = [  # (patient, study, series, images, modality)
        (("DOE^JOHN", "PID001"), "S1", 1, 2, "CT"),
        (("DOE^JOHN", "PID001"), "S1", 2, 2, "MR"),
        (("DOE^JOHN", "PID001"), "S2", 1, 1, "CT"),
        (("SMITH^ANNE", "PID002"), "S3", 1, 2, "MR"),
        (("SMITH^ANNE", "PID002"), "S3", 2, 2, "MR"),
    ]
    out: dict[str, Path] = {}
    for patient, study, series, images, modality in layout:
        for n in range(1, images + 1):
            ds = _image(patient, study, series, n, modality, uids)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = ds.SOPClassUID
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta = meta
            path = folder / f"{study}_{series}_{n}.dcm"
            ds.save_as(path, enforce_file_format=True)
            out[ds.SOPInstanceUID] = path
    ct = get_testdata_file("CT_small.dcm")
    assert ct is not None
    shutil.copy(ct, folder / "ct_small.dcm")
    out[dcmread(ct).SOPInstanceUID] = folder / "ct_small.dcm"
    return out


def wait_listening(proc: subprocess.Popen[bytes], port: int, what: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                out = proc.communicate()[0]
                pytest.fail(f"{what} did not listen on {port}: {out!r}")
            time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)  # the group this test created
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    """dcmqrscp (single process, 16 KiB PDUs) serving the synthetic archive as ARCHIVE, and
    storescp as DEST (known to dcmqrscp's HostTable) for C-MOVE."""
    dcmqrscp, dcmqridx = require_tool("dcmqrscp"), require_tool("dcmqridx")
    storescp = require_tool("storescp")
    root = tmp_path_factory.mktemp("dcmqrscp")
    area = root / "db" / ARCHIVE_AE
    files = make_objects(area)
    cp = run_tool([dcmqridx, str(area), *map(str, files.values())], timeout_s=60)
    assert cp.returncode == 0, cp.stderr
    port, dest_port = free_port(), free_port()
    (root / "dcmqrscp.cfg").write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n"
        f"HostTable BEGIN\ndest = ({DEST_AE}, localhost, {dest_port})\nHostTable END\n"
        "VendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\n{ARCHIVE_AE} {area} RW (200, 1024mb) ANY\nAETable END\n"
    )
    dest_dir = root / "dest"
    dest_dir.mkdir()
    dest = subprocess.Popen(
        [storescp, "-aet", DEST_AE, "-od", str(dest_dir), "+B", str(dest_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    # Fork mode (one child per association, its own process group so teardown reaps them):
    # DCMTK 3.6.7's --single-process crashes (SIGSEGV) after the first association's release.
    scp = subprocess.Popen(
        [dcmqrscp, "-c", str(root / "dcmqrscp.cfg"), str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=root, start_new_session=True,
    )  # fmt: skip
    try:
        wait_listening(dest, dest_port, "storescp")
        wait_listening(scp, port, "dcmqrscp")
        datasets = {uid: dcmread(p) for uid, p in files.items()}
        yield Archive(port, files, datasets, dest_port, dest_dir)
    finally:
        stop(scp)
        stop(dest)


def find_scu(archive: Archive, **kwargs: object) -> QRSCU:
    contexts = qr_contexts([PATIENT_ROOT_FIND, STUDY_ROOT_FIND, PATIENT_ROOT_MOVE,
                            STUDY_ROOT_MOVE])  # fmt: skip
    return QRSCU("127.0.0.1", archive.port, called_ae=ARCHIVE_AE, contexts=contexts,
                 timeout_s=20, **kwargs)  # type: ignore[arg-type]  # fmt: skip


def query(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def matches(scu: QRSCU, model: str, identifier: Dataset) -> list[Dataset]:
    out: list[Dataset] = []
    final = None
    for status, ds in scu.find(model, identifier):
        if status in (0xFF00, 0xFF01):
            assert ds is not None
            out.append(ds)
        else:
            assert ds is None
            final = status
    assert final == 0x0000
    return out


# ---------------------------------------------------------------------------- C-FIND


def test_find_every_level_both_models(archive: Archive) -> None:
    with find_scu(archive) as scu:
        # Patient root, PATIENT level, wildcard on the name.
        found = matches(scu, PATIENT_ROOT_FIND, query("PATIENT", PatientName="DOE*",
                                                      PatientID=""))  # fmt: skip
        assert [(str(d.PatientName), d.PatientID) for d in found] == [("DOE^JOHN", "PID001")]
        assert found[0].QueryRetrieveLevel == "PATIENT"
        # Patient root, STUDY level under that patient.
        ident = query("STUDY", PatientID="PID001", StudyInstanceUID="", StudyDate="")
        found = matches(scu, PATIENT_ROOT_FIND, ident)
        assert {d.StudyInstanceUID for d in found} == archive.study_uids("PID001")
        # Study root, STUDY level, date range (PS3.4 C.2.2.2.5): S1 and S2, not S3 (2023).
        ident = query("STUDY", StudyDate="20240101-20241231", StudyInstanceUID="",
                      PatientName="")  # fmt: skip
        found = matches(scu, STUDY_ROOT_FIND, ident)
        assert {d.StudyDate for d in found} == {"20240105", "20240215"}
        # Study root, SERIES level within one study.
        s1 = next(d for d in archive.datasets.values() if d.StudyID == "S1")
        found = matches(scu, STUDY_ROOT_FIND, query("SERIES", StudyInstanceUID=s1.StudyInstanceUID,
                                                    SeriesInstanceUID="", Modality=""))  # fmt: skip
        assert sorted(d.Modality for d in found) == ["CT", "MR"]
        # Study root, IMAGE level with a "?" wildcard key on a second attribute.
        series = next(d for d in found if d.Modality == "MR").SeriesInstanceUID
        found = matches(scu, STUDY_ROOT_FIND, query(
            "IMAGE", StudyInstanceUID=s1.StudyInstanceUID, SeriesInstanceUID=series,
            SOPInstanceUID="", InstanceNumber=""))  # fmt: skip
        expected = {u for u, d in archive.datasets.items() if d.SeriesInstanceUID == series}
        assert {d.SOPInstanceUID for d in found} == expected and len(expected) == 2
        # A wildcard that matches nothing: only the final Success.
        assert matches(scu, STUDY_ROOT_FIND, query("STUDY", PatientName="NOBODY*",
                                                   StudyInstanceUID="")) == []  # fmt: skip


def test_find_list_of_uids_and_identifier_bytes(archive: Archive) -> None:
    uids = sorted(archive.study_uids())[:2]
    ident = query("STUDY", StudyInstanceUID="\\".join(uids), PatientID="")
    contexts = qr_contexts([STUDY_ROOT_FIND], [ImplicitVRLittleEndian])
    with QRSCU("127.0.0.1", archive.port, called_ae=ARCHIVE_AE, contexts=contexts,
               timeout_s=20) as scu:  # fmt: skip
        (ts,) = {t for _, t in scu.accepted.values()}
        assert ts == ImplicitVRLittleEndian
        found = matches(scu, STUDY_ROOT_FIND, ident)
        assert sorted(d.StudyInstanceUID for d in found) == uids
        # Pre-encoded bytes go out as they are (the caller vouches for the encoding).
        from appliance.qr_scu import encode_identifier

        raw = encode_identifier(ident, ts)
        assert decode_identifier(raw, ts) == ident
        again = [d for s, d in scu.find(STUDY_ROOT_FIND, raw) if d is not None]
        assert sorted(d.StudyInstanceUID for d in again) == uids


def test_relational_negotiation_is_proposed_and_answered(archive: Archive) -> None:
    with find_scu(archive, relational=True) as scu:
        # dcmqrscp does not grant relational queries; asking must not break the association,
        # and the reply is read from its A-ASSOCIATE-AC (absent -> not granted).
        assert scu.relational_accepted(STUDY_ROOT_FIND) is False
        found = matches(scu, STUDY_ROOT_FIND, query("STUDY", StudyInstanceUID=""))
        assert len(found) == 4


# ---------------------------------------------------------------------------- C-MOVE


def test_move_study_to_storescp(archive: Archive) -> None:
    study = next(d for d in archive.datasets.values() if d.StudyID == "S1").StudyInstanceUID
    expected = archive.instances_of_study(study)
    before = set(archive.dest_dir.iterdir())
    with find_scu(archive) as scu:
        responses = list(scu.move(STUDY_ROOT_MOVE, DEST_AE,
                                  query("STUDY", StudyInstanceUID=study)))  # fmt: skip
    final = responses[-1]
    assert final.status == 0x0000 and not final.pending
    assert final.completed == len(expected) and final.failed in (0, None)
    assert all(r.pending for r in responses[:-1])
    # Pending responses count down (PS3.4 C.4.2.1.5).
    remaining = [r.remaining or 0 for r in responses[:-1]]
    assert remaining == sorted(remaining, reverse=True)
    written = set(archive.dest_dir.iterdir()) - before
    received = {dcmread(p).SOPInstanceUID for p in written}
    assert received == expected
    for path in written:  # bit-preserving storescp: the data set bytes are the archive's
        uid = dcmread(path).SOPInstanceUID
        assert _dataset_bytes(path) == _dataset_bytes(archive.files[uid])


def test_move_to_unknown_destination_fails_with_a801(archive: Archive) -> None:
    with find_scu(archive) as scu:
        responses = list(scu.move(PATIENT_ROOT_MOVE, "NOWHERE",
                                  query("PATIENT", PatientID="PID002")))  # fmt: skip
        assert responses[-1].status == 0xA801
        assert len(matches(scu, PATIENT_ROOT_FIND, query("PATIENT", PatientID=""))) == 3


def _elements(ds: Dataset) -> dict[int, object]:
    # Group lengths, File Meta and (FFFC,FFFC) trailing padding are dropped by dcmqrscp.
    return {int(e.tag): e.value for e in ds
            if e.tag.element != 0 and e.tag.group not in (0x0002, 0xFFFC)}  # fmt: skip


def _dataset_bytes(path: Path) -> bytes:
    with open(path, "rb") as fp:
        offset = read_file_meta(fp).dataset_offset
    return path.read_bytes()[offset:]


# ---------------------------------------------------------------------------- C-GET


def test_get_series_with_role_selection(archive: Archive, tmp_path: Path) -> None:
    received: dict[str, tuple[bytes, str]] = {}

    def on_store(rq: CStoreRQ, data: bytes | Path, ts: str) -> int:
        assert isinstance(data, bytes)
        received[rq.affected_sop_instance_uid] = (data, ts)
        return 0x0000

    study = next(d for d in archive.datasets.values() if d.StudyID == "S3").StudyInstanceUID
    expected = archive.instances_of_study(study)
    contexts = get_contexts()
    with QRSCU("127.0.0.1", archive.port, called_ae=ARCHIVE_AE, contexts=contexts,
               scp_role_for=DEFAULT_GET_STORAGE_CLASSES, timeout_s=20) as scu:  # fmt: skip
        assert scu.scp_role_accepted(MRImageStorage)
        responses = list(scu.get(STUDY_ROOT_GET, query("STUDY", StudyInstanceUID=study),
                                 on_store))  # fmt: skip
        final = responses[-1]
        assert final.status == 0x0000 and final.completed == len(expected) == 4
        assert set(received) == expected
        for uid, (data, ts) in received.items():
            assert ts == ExplicitVRLittleEndian  # what dcmqrscp picked among ours
            assert data == _dataset_bytes(archive.files[uid])
        # The association goes on: a second C-GET where our callback refuses everything.
        received.clear()
        refusals = list(scu.get(PATIENT_ROOT_GET, query("IMAGE", PatientID="PID001",
                                StudyInstanceUID=next(iter(archive.study_uids("PID001"))),
                                SeriesInstanceUID="", SOPInstanceUID=""),
                                lambda rq, data, ts: 0xA700))  # fmt: skip
        assert refusals[-1].status in (0xA702, 0xB000, 0xC000, 0xA700)
        assert (refusals[-1].failed or 0) >= 1
        assert refusals[-1].failed_sop_instance_uids


def test_get_spools_large_objects_to_files(archive: Archive, tmp_path: Path) -> None:
    paths: list[tuple[Path, bytes]] = []

    def on_store(rq: CStoreRQ, data: bytes | Path, ts: str) -> int:
        assert isinstance(data, Path) and data.parent == tmp_path
        paths.append((data, data.read_bytes()))
        return 0x0000

    uid = next(u for u, p in archive.files.items() if p.name == "ct_small.dcm")
    ds = archive.datasets[uid]
    contexts = get_contexts([STUDY_ROOT_GET], [CTImageStorage])
    with QRSCU("127.0.0.1", archive.port, called_ae=ARCHIVE_AE, contexts=contexts,
               scp_role_for=[CTImageStorage], spool_dir=tmp_path,
               spool_threshold_bytes=1000, timeout_s=20) as scu:  # fmt: skip
        ident = query("IMAGE", StudyInstanceUID=ds.StudyInstanceUID,
                      SeriesInstanceUID=ds.SeriesInstanceUID, SOPInstanceUID=uid)  # fmt: skip
        final = list(scu.get(STUDY_ROOT_GET, ident, on_store))[-1]
    assert final.status == 0x0000 and final.completed == 1
    ((path, data),) = paths
    # dcmqrscp re-encodes this one (CT_small has group lengths and odd padding), so compare
    # element by element rather than byte for byte.
    got = decode_identifier(data, ExplicitVRLittleEndian)
    want = dcmread(archive.files[uid])
    assert _elements(got) == _elements(want)
    assert not path.exists()  # the spool file is removed after on_store


# ---------------------------------------------------------------------------- C-CANCEL


@pytest.fixture
def slow_find_scp() -> Iterator[tuple[int, threading.Event, list[int]]]:
    """pynetdicom Q/R FIND SCP that yields pending matches slowly until it sees a cancel."""
    pytest.importorskip("pynetdicom")
    from pynetdicom import AE, evt

    cancelled = threading.Event()
    yielded: list[int] = []

    def handle_find(event: object) -> Iterator[tuple[int, Dataset | None]]:
        for i in range(50):
            if event.is_cancelled:  # type: ignore[attr-defined]
                cancelled.set()
                yield 0xFE00, None
                return
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.StudyID = str(i)
            yielded.append(i)
            yield 0xFF00, ds
            time.sleep(0.05)
        yield 0x0000, None

    ae = AE(ae_title="PYQR")
    ae.add_supported_context(STUDY_ROOT_FIND, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_C_FIND, handle_find)])  # fmt: skip
    assert server is not None
    try:
        yield port, cancelled, yielded
    finally:
        server.shutdown()


def test_cancel_mid_query_against_pynetdicom(
    slow_find_scp: tuple[int, threading.Event, list[int]],
) -> None:
    port, cancelled, yielded = slow_find_scp
    with QRSCU("127.0.0.1", port, called_ae="PYQR", contexts=qr_contexts([STUDY_ROOT_FIND]),
               timeout_s=20) as scu:  # fmt: skip
        it = scu.find(STUDY_ROOT_FIND, query("STUDY", StudyID=""))
        statuses = []
        for status, _ in it:
            statuses.append(status)
            if len(statuses) == 2:
                assert it.cancel() is True
                assert it.cancel() is False  # once per operation
        assert statuses[-1] == 0xFE00 and all(s == 0xFF00 for s in statuses[:-1])
        assert cancelled.is_set() and len(yielded) < 10
        # An abandoned iterator is cancelled and drained before the next operation.
        abandoned = scu.find(STUDY_ROOT_FIND, query("STUDY", StudyID=""))
        assert next(abandoned).status == 0xFF00
        cancelled.clear()
        again = list(scu.find(STUDY_ROOT_FIND, query("STUDY", StudyID="")))
        assert abandoned.done and cancelled.is_set()
        assert again[-1].status == 0x0000 and len(again) == 51
