"""``[storage] compress_on_ingest = "rle"`` end to end: pynetdicom C-STOREs pydicom's test
files (their data set bytes as in the file) to the running appliance, which stores them as RLE
Lossless; C-GET through a context that accepts only the received syntax brings back the same
bytes, one that accepts RLE gets the stored form, and `pacs db stats` shows the saving.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

from tests.conftest import PYTHON, REPO, Appliance, require_tool, run_tool

pynetdicom = pytest.importorskip("pynetdicom")
from pynetdicom import AE, build_role, evt  # noqa: E402
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # noqa: E402
    StudyRootQueryRetrieveInformationModelGet,
)

pytestmark = [pytest.mark.system, pytest.mark.interop]

# (name in pydicom's test data, decompress first): CT, MR (Explicit and Implicit VR LE), RGB,
# multiframe (32-bit dose, 15 frames, Implicit; RGB 2 frames), 8-bit monochrome.
SOURCES = [("CT_small.dcm", False), ("MR_small.dcm", False), ("MR_small_implicit.dcm", False),
           ("examples_rgb_color.dcm", False), ("rtdose.dcm", False),
           ("SC_rgb_rle_2frame.dcm", True), ("image_dfl.dcm", True)]
AS_RECEIVED = "SC_rgb_small_odd.dcm"  # 8-bit Pixel Data as OW: not restorable, kept as is
MODEL = StudyRootQueryRetrieveInformationModelGet



def bundled(name: str) -> str:
    """A file of pydicom's bundled test data (all used here are in the wheel)."""
    path = get_testdata_file(name)
    assert isinstance(path, str), name
    return path

def _write(name: str, decompress: bool, folder: Path) -> Path:
    """A copy with its own UIDs (the bundled files share some) in a native syntax."""
    ds = pydicom.dcmread(bundled(name))
    if decompress:
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    path = folder / name
    ds.save_as(path, enforce_file_format=True)
    return path


def _dataset_bytes(path: Path) -> bytes:
    """The data set as in the file (after the File Meta group)."""
    raw = path.read_bytes()
    with io.BytesIO(raw) as fh:
        pydicom.filereader.read_preamble(fh, False)
        pydicom.filereader._read_file_meta_info(fh)
        return raw[fh.tell():]


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Appliance, list[Path]]]:
    folder = tmp_path_factory.mktemp("compress_src")
    files = [_write(n, d, folder) for n, d in SOURCES] + [_write(AS_RECEIVED, False, folder)]
    app = Appliance(tmp_path_factory.mktemp("compress_app"), workers=2,
                    config='[storage]\ncompress_on_ingest = "rle"\n').start()
    try:
        pynetdicom._config.STORE_SEND_CHUNKED_DATASET = True  # the file's bytes, not re-encoded
        ae = AE(ae_title="STORER")
        for path in files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", app.port, ae_title=app.ae_title)
        assert assoc.is_established
        try:
            for path in files:
                status = assoc.send_c_store(path)
                assert status and status.Status == 0x0000, path.name
        finally:
            assoc.release()
            pynetdicom._config.STORE_SEND_CHUNKED_DATASET = False
        yield app, files
    finally:
        app.stop()


def _c_get(app: Appliance, files: list[Path], syntaxes: list[str]) -> dict[str, tuple[str, bytes]]:
    """C-GET each file's study through contexts offering only ``syntaxes``; SOP Instance UID
    -> (transfer syntax, data set bytes as received over the wire)."""
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    classes = {str(ds.SOPClassUID) for ds in headers}
    ae = AE(ae_title="GETTER")
    ae.add_requested_context(MODEL)
    for uid in classes:
        ae.add_requested_context(uid, syntaxes)
    received: dict[str, tuple[str, bytes]] = {}
    lock = threading.Lock()

    def on_store(event: Any) -> int:
        raw = event.request.DataSet.getvalue()
        ds = pydicom.dcmread(io.BytesIO(raw), force=True, stop_before_pixels=True)
        with lock:
            received[str(ds.SOPInstanceUID)] = (str(event.context.transfer_syntax), raw)
        return 0x0000

    assoc = ae.associate("127.0.0.1", app.port, ae_title=app.ae_title,
                         ext_neg=[build_role(uid, scp_role=True) for uid in classes],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    try:
        for ds in headers:
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = ds.StudyInstanceUID
            statuses = [int(st.Status) for st, _ in assoc.send_c_get(query, MODEL) if st]
            assert statuses[-1] == 0x0000, statuses
    finally:
        assoc.release()
    return received


def test_stored_as_rle_with_the_received_syntax_indexed(
        stored: tuple[Appliance, list[Path]]) -> None:
    app, files = stored
    saved = 0
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        record = app.get_instance(str(ds.SOPInstanceUID))
        assert record is not None, path.name
        on_disk = app.data / record.relpath
        assert record.size_bytes == on_disk.stat().st_size
        if path.name == AS_RECEIVED:
            assert record.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID
            assert record.received_transfer_syntax_uid == ""
            assert _dataset_bytes(on_disk) == _dataset_bytes(path)
            continue
        assert record.transfer_syntax_uid == RLELossless, path.name
        assert record.received_transfer_syntax_uid == ds.file_meta.TransferSyntaxUID
        assert pydicom.dcmread(on_disk).file_meta.TransferSyntaxUID == RLELossless
        assert record.size_bytes < record.received_size_bytes
        saved += record.received_size_bytes - record.size_bytes
    stats = app.stats()
    assert stats["saved_bytes"] == saved > 0


def test_c_get_in_the_received_syntax_gives_the_received_bytes(
        stored: tuple[Appliance, list[Path]]) -> None:
    app, files = stored
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        chosen = [p for p in files
                  if pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID
                  == syntax]
        assert chosen
        received = _c_get(app, chosen, [syntax])
        for path in chosen:
            uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            ts, raw = received[uid]
            assert ts == syntax
            assert raw == _dataset_bytes(path), path.name  # bit-exact, every element


def test_c_get_other_syntaxes(stored: tuple[Appliance, list[Path]]) -> None:
    """A peer accepting RLE gets the stored form; Implicit-only peers get Explicit originals
    converted; the pixels are the originals' either way."""
    app, files = stored
    files = [p for p in files if p.name != AS_RECEIVED]
    as_rle = _c_get(app, files, [RLELossless])
    implicit = _c_get(app, files, [ImplicitVRLittleEndian])
    for path in files:
        original = pydicom.dcmread(path)
        uid = str(original.SOPInstanceUID)
        ts, raw = as_rle[uid]
        assert ts == RLELossless
        record = app.get_instance(uid)
        assert record is not None
        assert raw == _dataset_bytes(app.data / record.relpath)  # as stored: no work done
        for ts, raw in (as_rle[uid], implicit[uid]):
            ds = pydicom.dcmread(io.BytesIO(raw), force=True)
            ds.file_meta = pydicom.dataset.FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = UID(ts)
            ds.set_original_encoding(ts == ImplicitVRLittleEndian, True)
            assert np.array_equal(ds.pixel_array, original.pixel_array), (path.name, ts)


@pytest.mark.slow
def test_bench_rle_variant_reports_disk_bytes(tmp_path: Path) -> None:
    """``python -m bench ingest --quick`` with the ``appliance-rle`` receiver: every object
    arrives and the report has the disk table. The bench corpora's pixels are uniform noise,
    which RLE does not shrink: stored as received, so nothing is saved (and none lost)."""
    require_tool("storescu")
    results = tmp_path / "results"
    cp = run_tool(
        [PYTHON, "-m", "bench", "ingest", "--quick", "--corpus", "small", "--small", "8",
         "--assocs", "1", "--receivers", "appliance-batch,appliance-rle", "--no-install",
         "--no-echo", "--no-dd", "--workdir", str(tmp_path / "work"), "--results", str(results)],
        timeout_s=240, cwd=REPO,
    )  # fmt: skip
    assert cp.returncode == 0, f"bench exited {cp.returncode}\n{cp.stdout[-3000:]}{cp.stderr}"
    (json_path,) = results.glob("*.json")
    runs = {r["receiver"]: r for r in json.loads(json_path.read_text())["runs"]}
    assert runs["appliance-rle"]["ok"] and runs["appliance-rle"]["arrived"] == 8
    assert runs["appliance-rle"]["saved_bytes"] == 0
    assert runs["appliance-rle"]["stored_bytes"] == runs["appliance-batch"]["stored_bytes"] > 0
    md = (results / "latest.md").read_text()
    assert "| corpus, assocs | receiver | corpus MB | stored MB | saved MB | disk saved |" in md
    assert "| small, 1 | appliance-rle |" in md
