"""``appliance.scu`` (our C-ECHO / C-STORE SCU on our own sans-IO core) against peers nobody
here wrote: DCMTK ``storescp`` and a pynetdicom AE.

``storescp +B`` (bit-preserving) writes the data set exactly as it arrived, and the pynetdicom
handler records the raw data set bytes, so "sent as-is, no transcoding" is checked byte for
byte, not just element by element. pynetdicom's SCP advertises a 4 KiB Maximum Length in some
tests so that a 20 MB data set goes out as ~5000 PDUs; its EVT_PDU_RECV hook sees every PDU,
so the PS3.8 D.1 limit is checked on what was actually received.

The first tests need no peer: the File Meta reader, the context builder, the streaming
fragmenter and connect/timeout failures.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_file_meta_info
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from appliance.dimse.fragment import UNLIMITED_PDU_BYTES
from appliance.scu import (
    SCU,
    AssociationAborted,
    AssociationRejected,
    NoAcceptedContext,
    ProposedContext,
    StoreResult,
    contexts_for_files,
)
from appliance.scu_files import file_pdus, read_file_meta
from tests.conftest import free_port, require_tool

VERIFICATION = "1.2.840.10008.1.1"

# Explicit LE, Explicit LE, Explicit BE, JPEG Baseline, JPEG 2000, Implicit LE: every file has
# its own SOP Instance UID except the MR_small variants, which are sent to separate peers.
SAMPLE_FILES = (
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_bigendian.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "JPEG2000.dcm",
    "MR_small_implicit.dcm",
)


def sample(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path)


def dataset_bytes(path: Path) -> bytes:
    with open(path, "rb") as fp:
        offset = read_file_meta(fp).dataset_offset
    return path.read_bytes()[offset:]


def without_meta(ds: Dataset) -> dict[int, Any]:
    return {int(e.tag): (e.VR, e.value) for e in ds if e.tag.group != 0x0002}


# ---------------------------------------------------------------------------- no peer


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_read_file_meta_agrees_with_pydicom(name: str) -> None:
    path = sample(name)
    with open(path, "rb") as fp:
        meta = read_file_meta(fp)
        assert fp.tell() == meta.dataset_offset
    ref = read_file_meta_info(path)
    assert meta.sop_class_uid == ref.MediaStorageSOPClassUID
    assert meta.sop_instance_uid == ref.MediaStorageSOPInstanceUID
    assert meta.transfer_syntax_uid == ref.TransferSyntaxUID
    # The offset is where the data set starts: parsing from there in the file's transfer
    # syntax gives pydicom's data set.
    raw = path.read_bytes()[meta.dataset_offset :]
    ts = pydicom.uid.UID(meta.transfer_syntax_uid)
    parsed = pydicom.filereader.read_dataset(
        io.BytesIO(raw), ts.is_implicit_VR, ts.is_little_endian
    )
    assert without_meta(parsed) == without_meta(dcmread(path))


def test_read_file_meta_rejects_non_part10(tmp_path: Path) -> None:
    no_preamble = tmp_path / "raw.dcm"
    no_preamble.write_bytes(dataset_bytes(sample("CT_small.dcm")))
    with pytest.raises(ValueError, match="DICM"), open(no_preamble, "rb") as fp:
        read_file_meta(fp)
    # A File Meta without (0002,0010): nobody can know the data set's encoding.
    ds = dcmread(sample("CT_small.dcm"))
    del ds.file_meta.TransferSyntaxUID
    buf = DicomBytesIO()
    buf.write(b"\0" * 128 + b"DICM")
    pydicom.filewriter.write_file_meta_info(buf, ds.file_meta, enforce_standard=False)
    buf.write(b"\x08\x00\x05\x00CS\x00\x00")
    with pytest.raises(ValueError, match="ts"):
        read_file_meta(io.BytesIO(buf.getvalue()))


def test_contexts_for_files_one_per_sop_class_and_ts() -> None:
    paths = [sample(n) for n in ("CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm")]
    contexts = contexts_for_files([*paths, paths[0]])  # a duplicate adds nothing
    assert contexts == [
        ProposedContext(CTImageStorage, (ExplicitVRLittleEndian,)),
        ProposedContext("1.2.840.10008.5.1.4.1.1.4", (ExplicitVRLittleEndian,)),
        ProposedContext("1.2.840.10008.5.1.4.1.1.4", ("1.2.840.10008.1.2.2",)),
        ProposedContext(VERIFICATION, (ImplicitVRLittleEndian,)),
    ]


@pytest.mark.parametrize(
    ("length", "max_data"),
    [(0, 100), (1, 100), (100, 100), (101, 100), (10_000, 4090), (9_000_000, 4090)],
)
def test_file_pdus_streams_every_byte_with_one_last_bit(length: int, max_data: int) -> None:
    payload = os.urandom(length)
    received = bytearray()
    lasts: list[bool] = []
    blocks = 0
    for block in file_pdus(io.BufferedReader(io.BytesIO(payload)), 7, length, max_data):
        blocks += 1
        for header, data in block:  # consume the block before the buffer is reused
            assert header[4] == 7 and header[5] & 1 == 0  # context 7, data set PDV
            assert 0 < len(data) <= max_data or length == 0
            received += data
            lasts.append(bool(header[5] & 2))
    assert bytes(received) == payload
    assert lasts[-1] and not any(lasts[:-1])  # PS3.8 E.2: last bit on the last PDV only
    assert blocks == max(1, -(-length // (4 * 1024 * 1024 // max_data * max_data)))


def test_file_pdus_fails_when_the_file_is_shorter_than_announced() -> None:
    with pytest.raises(OSError, match="shrank"):
        for _ in file_pdus(io.BufferedReader(io.BytesIO(b"abc")), 1, 10, 100):
            pass


def test_constructor_validates_ae_titles_and_contexts() -> None:
    ctx = [ProposedContext(VERIFICATION, (ImplicitVRLittleEndian,))]
    with pytest.raises(ValueError, match="AE title"):
        SCU("127.0.0.1", 104, calling_ae="X" * 17, contexts=ctx)
    with pytest.raises(ValueError, match="AE title"):
        SCU("127.0.0.1", 104, called_ae="  ", contexts=ctx)
    with pytest.raises(ValueError, match="at least one"):
        SCU("127.0.0.1", 104, contexts=[])
    with pytest.raises(ValueError, match="128"):
        SCU("127.0.0.1", 104, contexts=ctx * 129)


def test_refused_connection_is_a_connection_error() -> None:
    ctx = [ProposedContext(VERIFICATION, (ImplicitVRLittleEndian,))]
    scu = SCU("127.0.0.1", free_port(), contexts=ctx, timeout_s=2.0)
    with pytest.raises(ConnectionError):
        scu.associate()


def test_silent_peer_times_out() -> None:
    # The kernel completes the TCP handshake from the backlog, nobody ever answers.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        ctx = [ProposedContext(VERIFICATION, (ImplicitVRLittleEndian,))]
        scu = SCU("127.0.0.1", listener.getsockname()[1], contexts=ctx, timeout_s=0.3)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            scu.associate()
        assert time.monotonic() - start < 2.0
        assert scu.accepted == {}


# ---------------------------------------------------------------------------- DCMTK storescp


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """``storescp +xa +B`` (every supported TS, bit-preserving) on a free port: (port, dir)."""
    exe = require_tool("storescp")
    out = tmp_path / "storescp"
    out.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [exe, "-od", str(out), "-aet", "PACS", "+xa", "+B", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"storescp did not listen: {proc.communicate()[0]!r}")
                time.sleep(0.05)
        yield port, out
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.interop
def test_storescp_receives_files_unchanged(storescp: tuple[int, Path]) -> None:
    port, out = storescp
    paths = [sample(n) for n in SAMPLE_FILES]
    with SCU("127.0.0.1", port, contexts=contexts_for_files(paths), timeout_s=10) as scu:
        assert len(scu.accepted) == len(SAMPLE_FILES) + 1  # storescp +xa accepts them all
        assert scu.echo() == 0x0000
        for path in paths:
            before = set(out.iterdir())
            assert scu.store_file(path) == StoreResult(0x0000, None)
            (written,) = set(out.iterdir()) - before
            assert dataset_bytes(written) == dataset_bytes(path), path.name
            stored, original = dcmread(written), dcmread(path)
            assert without_meta(stored) == without_meta(original), path.name
            assert stored.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
            os.unlink(written)  # the MR_small variants share one SOP Instance UID
        assert scu.echo() == 0x0000


@pytest.mark.interop
def test_storescp_store_bytes_and_no_accepted_context(storescp: tuple[int, Path]) -> None:
    port, out = storescp
    path = sample("CT_small.dcm")
    ds = dcmread(path)
    contexts = [ProposedContext(CTImageStorage, (ExplicitVRLittleEndian,))]
    with SCU("127.0.0.1", port, contexts=contexts, timeout_s=10) as scu:
        with pytest.raises(NoAcceptedContext):
            scu.echo()  # Verification was not proposed
        with pytest.raises(NoAcceptedContext):
            scu.store(b"", CTImageStorage, generate_uid(), ImplicitVRLittleEndian)
        with pytest.raises(NoAcceptedContext):
            scu.store_file(sample("MR_small.dcm"))
        # Nothing was sent for those: the association is still good.
        raw = dataset_bytes(path)
        result = scu.store(memoryview(raw), CTImageStorage, ds.SOPInstanceUID)
        assert result.status == 0x0000
    (written,) = out.iterdir()
    assert dataset_bytes(written) == raw


# ---------------------------------------------------------------------------- pynetdicom SCP


@dataclass
class Received:
    message_id: int
    sop_class: str
    sop_instance: str
    transfer_syntax: str
    priority: int
    move_originator: tuple[str | None, int | None]
    data: bytes


@dataclass
class PynetdicomSCP:
    port: int
    received: list[Received] = field(default_factory=list)
    echo_ids: list[int] = field(default_factory=list)
    pdata_lengths: list[int] = field(default_factory=list)
    answer: Callable[[Any], Any] = lambda event: 0x0000


def _start_scp(max_pdu: int, require_called: bool = False) -> tuple[Any, PynetdicomSCP]:
    pytest.importorskip("pynetdicom")
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt
    from pynetdicom.pdu import P_DATA_TF

    scp = PynetdicomSCP(free_port())
    ae = AE(ae_title="PACS")
    ae.maximum_pdu_size = max_pdu
    ae.require_called_aet = require_called
    for cx in StoragePresentationContexts:  # the default offers native syntaxes only
        assert cx.abstract_syntax is not None
        ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(VERIFICATION)
    lock = threading.Lock()

    def on_store(event: Any) -> Any:
        rq = event.request
        with lock:
            scp.received.append(
                Received(
                    int(rq.MessageID),
                    str(rq.AffectedSOPClassUID),
                    str(rq.AffectedSOPInstanceUID),
                    str(event.context.transfer_syntax),
                    int(rq.Priority),
                    (rq.MoveOriginatorApplicationEntityTitle, rq.MoveOriginatorMessageID),
                    rq.DataSet.getvalue(),
                )
            )
        return scp.answer(event)

    def on_echo(event: Any) -> int:
        scp.echo_ids.append(int(event.request.MessageID))
        return 0x0000

    def on_pdu(event: Any) -> None:
        if isinstance(event.pdu, P_DATA_TF):
            scp.pdata_lengths.append(len(event.pdu) - 6)  # the PS3.8 D.1 variable field

    handlers: list[Any] = [
        (evt.EVT_C_STORE, on_store),
        (evt.EVT_C_ECHO, on_echo),
        (evt.EVT_PDU_RECV, on_pdu),
    ]
    server = ae.start_server(("127.0.0.1", scp.port), block=False, evt_handlers=handlers)
    return server, scp


@pytest.fixture
def pynetdicom_scp(request: pytest.FixtureRequest) -> Iterator[PynetdicomSCP]:
    max_pdu, require_called = getattr(request, "param", (4096, False))
    server, scp = _start_scp(max_pdu, require_called)
    try:
        yield scp
    finally:
        server.shutdown()


def _big_dataset(path: Path, size: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "SCU^Large"
    ds.Modality = "OT"
    ds.Rows, ds.Columns = 1024, 1024
    ds.NumberOfFrames = size // (1024 * 1024)
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 8, 8, 7
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = os.urandom(size)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return ds


@pytest.mark.interop
def test_pynetdicom_small_pdus_large_dataset_and_message_ids(
    pynetdicom_scp: PynetdicomSCP, tmp_path: Path
) -> None:
    scp = pynetdicom_scp
    big = tmp_path / "big.dcm"
    big_ds = _big_dataset(big, 20 * 1024 * 1024)
    paths = [sample("CT_small.dcm"), sample("SC_rgb_jpeg_dcmtk.dcm"), big]
    with SCU("127.0.0.1", scp.port, contexts=contexts_for_files(paths), timeout_s=10) as scu:
        assert scu.peer_max_pdu == 4096
        assert scu.echo() == 0x0000
        for path in paths:
            assert scu.store_file(path).status == 0x0000
        # The same instance again from memory, with the optional C-STORE-RQ fields.
        raw = dataset_bytes(paths[0])
        result = scu.store(
            raw, CTImageStorage, dcmread(paths[0]).SOPInstanceUID, ExplicitVRLittleEndian,
            priority=2, move_originator_ae="MOVER", move_originator_msg_id=77,
        )  # fmt: skip
        assert result.status == 0x0000
    assert scp.echo_ids == [1]
    assert [r.message_id for r in scp.received] == [2, 3, 4, 5]
    for rec, path in zip(scp.received, [*paths, paths[0]], strict=True):
        meta = read_file_meta_info(path)
        assert rec.sop_class == meta.MediaStorageSOPClassUID
        assert rec.sop_instance == meta.MediaStorageSOPInstanceUID
        assert rec.transfer_syntax == meta.TransferSyntaxUID
        assert rec.data == dataset_bytes(path), path.name  # byte for byte: no transcoding
    assert [(r.priority, r.move_originator) for r in scp.received] == [
        (0, (None, None)), (0, (None, None)), (0, (None, None)), (2, ("MOVER", 77)),
    ]  # fmt: skip
    assert big_ds.SOPInstanceUID == scp.received[2].sop_instance
    # PS3.8 D.1: no P-DATA-TF above the SCP's 4096, and the big data set really was split.
    assert max(scp.pdata_lengths) == 4096
    assert len(scp.pdata_lengths) > 20 * 1024 * 1024 // 4096


@pytest.mark.interop
@pytest.mark.parametrize("pynetdicom_scp", [(0, False)], indirect=True)
def test_pynetdicom_unlimited_max_pdu(pynetdicom_scp: PynetdicomSCP) -> None:
    scp = pynetdicom_scp
    raw = os.urandom(9 * 1024 * 1024)  # not a valid data set: the handler never parses it
    contexts = [ProposedContext(SecondaryCaptureImageStorage, (ExplicitVRLittleEndian,))]
    with SCU("127.0.0.1", scp.port, contexts=contexts, timeout_s=10) as scu:
        assert scu.peer_max_pdu == 0
        uid = generate_uid()
        assert scu.store(raw, SecondaryCaptureImageStorage, uid).status == 0x0000
    assert scp.received[0].data == raw
    # 0 = unlimited, but we still cut at UNLIMITED_PDU_BYTES to bound memory on both ends.
    assert max(scp.pdata_lengths) == UNLIMITED_PDU_BYTES


@pytest.mark.interop
def test_pynetdicom_failure_status_and_error_comment(pynetdicom_scp: PynetdicomSCP) -> None:
    def refuse(event: Any) -> Dataset:
        rsp = Dataset()
        rsp.Status = 0xA700
        rsp.ErrorComment = "disk full"
        return rsp

    pynetdicom_scp.answer = refuse
    path = sample("CT_small.dcm")
    with SCU(
        "127.0.0.1", pynetdicom_scp.port, contexts=contexts_for_files([path]), timeout_s=10
    ) as scu:
        assert scu.store_file(path) == StoreResult(0xA700, "disk full")
        assert scu.echo() == 0x0000  # a refused store leaves the association usable


@pytest.mark.interop
def test_pynetdicom_abort_during_store(pynetdicom_scp: PynetdicomSCP) -> None:
    def abort(event: Any) -> int:
        event.assoc.abort()
        return 0x0000

    pynetdicom_scp.answer = abort
    path = sample("CT_small.dcm")
    scu = SCU("127.0.0.1", pynetdicom_scp.port, contexts=contexts_for_files([path]), timeout_s=10)
    with pytest.raises(AssociationAborted) as info, scu:
        scu.store_file(path)
    assert info.value.by_peer
    # pynetdicom's user abort is source 0 (PS3.8 §9.3.8); None if its close overtook it.
    assert info.value.source in (0, None)
    assert scu.accepted == {}


@pytest.mark.interop
@pytest.mark.parametrize("pynetdicom_scp", [(4096, True)], indirect=True)
def test_pynetdicom_rejects_wrong_called_ae(pynetdicom_scp: PynetdicomSCP) -> None:
    contexts = [ProposedContext(VERIFICATION, (ImplicitVRLittleEndian,))]
    scu = SCU("127.0.0.1", pynetdicom_scp.port, called_ae="NOT_PACS", contexts=contexts)
    with pytest.raises(AssociationRejected) as info:
        scu.associate()
    # PS3.8 §9.3.4: rejected-permanent, service-user, called AE title not recognized.
    assert (info.value.rj.result, info.value.rj.source, info.value.rj.reason) == (1, 1, 7)
    assert scu.accepted == {}
    # The right called AE on the same SCU object works afterwards.
    scu.called_ae = "PACS"
    with scu:
        assert scu.echo() == 0x0000
