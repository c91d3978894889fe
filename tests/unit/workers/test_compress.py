"""workers.compress: RLE on ingest when smaller and restorable, the exact way back, the index
record's "received as" fields, and the StoreJob / retrieve paths that use them."""

from __future__ import annotations

import io
import os
from pathlib import Path

import msgpack
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import UID, ExplicitVRLittleEndian

from appliance.config import CompressOnIngest
from metrics import fast
from metrics import registry as m
from workers.compress import Decision, compress_dataset, restore_dataset
from workers.index.reader import IndexReader
from workers.index.schema import DuplicatePolicy, InstanceRecord, pack_record, unpack_record
from workers.index.writer import IndexWriter
from workers.part10 import build_file_meta, read_part10_header
from workers.qr.suboperations import RetrieveItem, prepare
from workers.store import StoreJob, StoreSettings
from workers.transcode import transcode_dataset
from workers.transcode.syntaxes import EXPLICIT_VR_LE, IMPLICIT_VR_LE, RLE_LOSSLESS

# (file, what it covers); all present in pydicom's bundled test data
BUNDLED = [
    ("CT_small.dcm", "16-bit CT, Explicit VR LE"),
    ("MR_small.dcm", "16-bit MR, Explicit VR LE"),
    ("MR_small_implicit.dcm", "16-bit MR, Implicit VR LE"),
    ("examples_rgb_color.dcm", "8-bit RGB, Explicit VR LE"),
    ("SC_rgb_jpeg_dcmd.dcm", "8-bit RGB, Implicit VR LE"),
    ("rtdose.dcm", "32-bit, 15 frames, Implicit VR LE"),
]
# Native copies of bundled compressed files (the bundle has no native ones of these kinds).
MADE = [
    ("image_dfl.dcm", "8-bit monochrome, Explicit VR LE"),
    ("SC_rgb_rle_2frame.dcm", "8-bit RGB, 2 frames, Explicit VR LE"),
    ("SC_rgb_rle_16bit_2frame.dcm", "16-bit RGB, 2 frames, Explicit VR LE"),
]



def bundled(name: str) -> str:
    """A file of pydicom's bundled test data (all used here are in the wheel)."""
    path = get_testdata_file(name)
    assert isinstance(path, str), name
    return path

def part10(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def native_copy(name: str, syntax: str = ExplicitVRLittleEndian) -> bytes:
    """A bundled file decompressed/inflated and written in a native syntax, as a Part 10."""
    ds = pydicom.dcmread(bundled(name))
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def dataset_of(raw: bytes) -> tuple[bytes, str]:
    info = read_part10_header(raw)
    return raw[info.dataset_offset:], info.transfer_syntax_uid


def sample(name: str) -> bytes:
    if name in dict(MADE):
        return native_copy(name)
    path = bundled(name)
    assert path is not None, name
    return part10(path)


def rle_part10(raw: bytes, rle_dataset: bytes) -> pydicom.Dataset:
    """pydicom's reading of the RLE data set under a File Meta group that says RLE."""
    info = read_part10_header(raw)
    meta = build_file_meta(media_storage_sop_class_uid=info.sop_class_uid,
                           media_storage_sop_instance_uid=info.sop_instance_uid,
                           transfer_syntax_uid=RLE_LOSSLESS, source_ae_title="",
                           implementation_class_uid="1.2.3", implementation_version_name="")
    return pydicom.dcmread(io.BytesIO(meta + rle_dataset))


@pytest.mark.parametrize("name", [n for n, _ in BUNDLED + MADE])
def test_compressed_when_smaller_and_restored_bit_exact(name: str) -> None:
    raw = sample(name)
    dataset, syntax = dataset_of(raw)
    result = compress_dataset(dataset, syntax)
    assert result.decision is Decision.COMPRESSED, result.reason
    assert result.dataset is not None and len(result.dataset) < len(dataset)
    assert restore_dataset(result.dataset, syntax) == dataset
    # An independent decoder (pydicom's) sees the same pixels in the RLE form.
    original = pydicom.dcmread(io.BytesIO(raw))
    stored = rle_part10(raw, result.dataset)
    assert np.array_equal(stored.pixel_array, original.pixel_array)
    assert stored["PixelData"].is_undefined_length
    for element in original:
        if element.tag not in (0x7FE00010, 0x00280006):
            assert stored[element.tag].value == element.value, element.tag


@pytest.mark.parametrize(("name", "reason"), [
    ("MR_small_bigendian.dcm", "transfer syntax"),  # Big Endian: left alone
    ("image_dfl.dcm", "transfer syntax"),  # Deflated: left alone
    ("liver_1frame.dcm", "Bits Allocated 1"),
    ("SC_ybr_full_422_uncompressed.dcm", "YBR_FULL_422"),
    ("SC_rgb_small_odd.dcm", "VR OW"),  # 8-bit OW would come back as OB (PS3.5 A.2)
    ("MR_small_padded.dcm", "bytes for"),  # bytes after the last frame
])
def test_unsupported_objects_are_stored_as_received(name: str, reason: str) -> None:
    path = bundled(name)
    assert path is not None
    result = compress_dataset(*dataset_of(part10(path)))
    assert result.decision is Decision.UNSUPPORTED and result.dataset is None
    assert reason in result.reason


def _ct(pixels: np.ndarray, *, planar: bool = True) -> bytes:
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    ds.Rows, ds.Columns = pixels.shape[:2]
    if pixels.ndim == 3:
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 3, "RGB"
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        if planar:
            ds.PlanarConfiguration = 0
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OB" if pixels.dtype == np.uint8 else "OW"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return dataset_of(out.getvalue())[0]


def test_noise_is_not_smaller() -> None:
    noise = np.random.default_rng(3).integers(0, 65536, (64, 64), dtype=np.uint16)
    result = compress_dataset(_ct(noise), EXPLICIT_VR_LE)
    assert result.decision is Decision.NOT_SMALLER and result.dataset is None
    flat = np.full((64, 64), 1000, dtype=np.uint16)
    assert compress_dataset(_ct(flat), EXPLICIT_VR_LE).decision is Decision.COMPRESSED


def test_what_would_not_come_back_identical_is_not_compressed() -> None:
    # RGB without Planar Configuration (type 1C, missing): restoration would add it.
    rgb = np.zeros((32, 32, 3), dtype=np.uint8)
    result = compress_dataset(_ct(rgb, planar=False), EXPLICIT_VR_LE)
    assert result.decision is Decision.NOT_RESTORABLE and result.dataset is None
    assert compress_dataset(_ct(rgb), EXPLICIT_VR_LE).decision is Decision.COMPRESSED


def test_no_pixel_data_and_garbage() -> None:
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    del ds.PixelData
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    result = compress_dataset(dataset_of(out.getvalue())[0], EXPLICIT_VR_LE)
    assert result.decision is Decision.UNSUPPORTED and result.reason == "no Pixel Data"
    assert compress_dataset(b"\x08\x00\x16\x00UI\xff\xff", EXPLICIT_VR_LE).decision \
        is Decision.UNSUPPORTED


# ---- the index record ---------------------------------------------------------------------


def _record(**kw: object) -> InstanceRecord:
    ds = pydicom.dcmread(bundled("CT_small.dcm"), stop_before_pixels=True)
    from workers.header import read_index_attributes

    raw = part10(bundled("CT_small.dcm"))
    attrs = read_index_attributes(dataset_of(raw)[0], EXPLICIT_VR_LE)
    assert attrs.sop_instance_uid == ds.SOPInstanceUID
    args: dict[str, object] = {"relpath": "objects/x.dcm", "size_bytes": 700,
                               "transfer_syntax_uid": RLE_LOSSLESS, "received_at": 1.5,
                               "calling_ae": "SCU"}
    args.update(kw)
    return InstanceRecord.from_attributes(attrs, **args)  # type: ignore[arg-type]


def test_record_round_trip_and_older_records() -> None:
    new = _record(received_transfer_syntax_uid=IMPLICIT_VR_LE, received_size_bytes=1000)
    assert unpack_record(pack_record(new)) == new
    assert new.saved_bytes == 300 and new.original_transfer_syntax_uid == IMPLICIT_VR_LE
    # A record written before the two fields existed: still read, "stored as received".
    old_values = msgpack.unpackb(pack_record(new))[:-2]
    old = unpack_record(msgpack.packb(old_values, use_bin_type=True))
    assert old.received_transfer_syntax_uid == "" and old.received_size_bytes == 0
    assert old.saved_bytes == 0 and old.original_transfer_syntax_uid == RLE_LOSSLESS
    with pytest.raises(ValueError):
        unpack_record(msgpack.packb(old_values[:-1], use_bin_type=True))


def test_index_keeps_the_saved_total(tmp_path: Path) -> None:
    w = IndexWriter(tmp_path / "index", map_size=16 * 1024 * 1024, sync=False)
    try:
        r = IndexReader.sharing(w.index)
        first = _record(received_transfer_syntax_uid=EXPLICIT_VR_LE, received_size_bytes=1000)
        w.apply_batch([first], DuplicatePolicy.KEEP)
        assert (r.stats().stored_bytes, r.stats().saved_bytes) == (700, 300)
        plain = _record(transfer_syntax_uid=EXPLICIT_VR_LE, size_bytes=1000)
        w.apply_batch([plain], DuplicatePolicy.OVERWRITE)  # replaced by an uncompressed copy
        assert (r.stats().stored_bytes, r.stats().saved_bytes) == (1000, 0)
    finally:
        w.close()


# ---- StoreJob and retrieve ------------------------------------------------------------------


def _store(tmp_path: Path, raw: bytes, mode: CompressOnIngest) -> InstanceRecord:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    settings = StoreSettings(tmp_path, fsync_each=True, max_dataset_bytes=0,
                             implementation_class_uid="1.2.3", implementation_version_name="T",
                             compress_on_ingest=mode)
    info = read_part10_header(raw)
    job = StoreJob(settings, sop_class_uid=info.sop_class_uid,
                   sop_instance_uid=info.sop_instance_uid,
                   transfer_syntax_uid=info.transfer_syntax_uid, calling_ae="SCU")
    job.feed(memoryview(raw)[info.dataset_offset:], last=True)
    attrs, relpath = job.prepare()
    record = job.commit(attrs, relpath)
    assert os.listdir(tmp_path / "tmp") == []  # no spool left behind
    return record


def _counter(metric: object) -> float:
    fast.flush()  # per-object byte counters are batched (metrics/fast.py)
    return float(metric._value.get())  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_implicit.dcm"])
def test_store_job_compresses_and_retrieve_restores(tmp_path: Path, name: str) -> None:
    raw = sample(name)
    dataset, syntax = dataset_of(raw)
    received0, written0 = _counter(m.STORE_RECEIVED_BYTES), _counter(m.STORE_WRITTEN_BYTES)
    record = _store(tmp_path, raw, CompressOnIngest.RLE)
    path = tmp_path / record.relpath
    assert record.transfer_syntax_uid == RLE_LOSSLESS
    assert record.received_transfer_syntax_uid == syntax
    assert record.size_bytes == path.stat().st_size < record.received_size_bytes
    assert _counter(m.STORE_RECEIVED_BYTES) - received0 == record.received_size_bytes
    assert _counter(m.STORE_WRITTEN_BYTES) - written0 == record.size_bytes
    on_disk = pydicom.dcmread(path)
    assert on_disk.file_meta.TransferSyntaxUID == RLE_LOSSLESS  # the meta group tells the truth
    assert np.array_equal(on_disk.pixel_array, pydicom.dcmread(io.BytesIO(raw)).pixel_array)

    item = RetrieveItem.of(record)
    as_stored = prepare(tmp_path, item, {RLE_LOSSLESS, syntax})
    assert as_stored.transfer_syntax_uid == RLE_LOSSLESS and as_stored.converted is None
    restored = prepare(tmp_path, item, {syntax})
    assert restored.transfer_syntax_uid == syntax and restored.converted == dataset
    other = IMPLICIT_VR_LE if syntax == EXPLICIT_VR_LE else EXPLICIT_VR_LE
    converted = prepare(tmp_path, item, {other})
    assert converted.converted == transcode_dataset(dataset, syntax, other)


def test_store_job_without_compression_or_when_not_smaller(tmp_path: Path) -> None:
    raw = sample("CT_small.dcm")
    plain = _store(tmp_path, raw, CompressOnIngest.NONE)
    assert plain.transfer_syntax_uid == EXPLICIT_VR_LE and plain.received_size_bytes == 0
    assert (tmp_path / plain.relpath).read_bytes()[-1000:] == raw[-1000:]
    noisy = pydicom.dcmread(io.BytesIO(raw))
    noisy.PixelData = np.random.default_rng(5).integers(
        0, 65536, (128, 128), dtype=np.uint16).tobytes()
    out = io.BytesIO()
    noisy.save_as(out, enforce_file_format=True)
    kept = _store(tmp_path, out.getvalue(), CompressOnIngest.RLE)
    assert kept.transfer_syntax_uid == EXPLICIT_VR_LE and kept.saved_bytes == 0


def test_config_setting(tmp_path: Path) -> None:
    from appliance.config import load
    from appliance.errors import ConfigError

    path = tmp_path / "c.toml"
    path.write_text('[storage]\ncompress_on_ingest = "rle"\n')
    assert load(path, None, {}).storage.compress_on_ingest is CompressOnIngest.RLE
    path.write_text('[storage]\ncompress_on_ingest = "jpeg"\n')
    with pytest.raises(ConfigError, match="compress_on_ingest"):
        load(path, None, {})
