"""workers/completeness.py and its kernel: whole data sets pass, cut ones are refused, the
compiled walk equals the Python reference on anything, and StoreJob refuses a short one."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import Dataset, Sequence
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from appliance.dimse.status import Status
from appliance.errors import IngestError
from workers.completeness import incomplete, reference_incomplete
from workers.part10 import read_part10_header
from workers.store import StoreJob, StoreSettings

# pydicom's deliberately broken files: the checker must call them incomplete
TRUNCATED_SAMPLES = {"rtplan_truncated.dcm", "MR_truncated.dcm"}
DEFLATED = "1.2.840.10008.1.2.1.99"


def _samples() -> list[tuple[str, str, bytes]]:
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        files = get_testdata_files("*.dcm")
    for path in sorted(files):
        raw = Path(path).read_bytes()
        try:
            info = read_part10_header(raw)
        except Exception:  # noqa: BLE001 - not a Part 10 file (raw data sets, broken meta)
            continue
        out.append((Path(path).name, info.transfer_syntax_uid, raw[info.dataset_offset:]))
    return out


SAMPLES = _samples()


def _check(syntax: str, data: bytes, head_bytes: int | None = None) -> str | None:
    head = data if head_bytes is None else data[:head_bytes]
    return incomplete(syntax, len(data), head, lambda pos, n: data[pos:pos + n])


def test_there_are_samples() -> None:
    assert len(SAMPLES) > 40


@pytest.mark.parametrize(("name", "syntax", "data"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_bundled_files(name: str, syntax: str, data: bytes) -> None:
    """Whole files pass; pydicom's truncated samples and every cut of the others do not
    (deflated data sets are not walked)."""
    for head in (None, 256, 4096):
        verdict = _check(syntax, data, head)
        if name in TRUNCATED_SAMPLES:
            assert verdict is not None, name
        else:
            assert verdict is None, (name, verdict)
    if syntax == DEFLATED or name in TRUNCATED_SAMPLES:
        return
    for cut in (1, 2, 7, 9):
        if len(data) > cut:
            assert _check(syntax, data[:-cut]) is not None, (name, cut)


def _nested(depth: int, text: str) -> Dataset:
    ds = Dataset()
    ds.PatientName = text
    if depth:
        ds.ReferencedStudySequence = Sequence([_nested(depth - 1, text), Dataset()])
    return ds


@pytest.mark.parametrize("implicit", [True, False])
def test_undefined_length_sequences(implicit: bool) -> None:
    ds = _nested(4, "A^B")
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    write_dataset(fp, ds)
    data = fp.getvalue()
    # pydicom writes sequences and items with undefined length (PS3.5 §7.5.1)
    syntax = "1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1"
    assert _check(syntax, data) is None
    for cut in range(1, len(data)):
        piece = data[:-cut]
        assert (_check(syntax, piece) is None) == (
            reference_incomplete(syntax, len(piece), piece, lambda p, n: piece[p:p + n])
            is None)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=0, max_size=400), head=st.integers(0, 400),
       syntax=st.sampled_from(["1.2.840.10008.1.2", "1.2.840.10008.1.2.1",
                               "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.4.50"]))
def test_kernel_equals_reference_on_any_bytes(data: bytes, head: int, syntax: str) -> None:
    def read_at(pos: int, n: int) -> bytes:
        return data[pos:pos + n]

    got = incomplete(syntax, len(data), data[:head], read_at)
    want = reference_incomplete(syntax, len(data), data[:head], read_at)
    assert (got is None) == (want is None), (got, want)


def test_store_job_refuses_a_data_set_cut_short(tmp_path: Path) -> None:
    raw = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    info = read_part10_header(raw)
    data = raw[info.dataset_offset:]
    (tmp_path / "tmp").mkdir()
    settings_ = StoreSettings(tmp_path, fsync_each=False, max_dataset_bytes=0,
                              implementation_class_uid="1.2.3", implementation_version_name="T")
    job = StoreJob(settings_, sop_class_uid=info.sop_class_uid,
                   sop_instance_uid=info.sop_instance_uid,
                   transfer_syntax_uid=info.transfer_syntax_uid, calling_ae="SCU")
    job.feed(memoryview(data[:-1000]), last=True)
    with pytest.raises(IngestError) as exc:
        job.prepare()
    assert exc.value.status == Status.CANNOT_UNDERSTAND
    assert "declares" in str(exc.value)
    assert os.listdir(tmp_path / "tmp") == []  # nothing half-written stays


@pytest.mark.parametrize(("tail", "whole"), [(b"\x00", True), (b"\x00" * 7, True),
                                             (b"\x00\x01", False), (b"\x00" * 8, True),
                                             (b"\x08\x00\x16", False)])
def test_trailing_bytes(tail: bytes, whole: bool) -> None:
    """Under 8 zero bytes after the last element are padding (pydicom ignores them too);
    8 zero bytes are an empty element (0000,0000); anything else is a cut header."""
    raw = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    info = read_part10_header(raw)
    data = raw[info.dataset_offset:] + tail
    syntax = info.transfer_syntax_uid
    for head in (None, 64):
        assert (_check(syntax, data, head) is None) is whole
        h = data if head is None else data[:head]
        assert (reference_incomplete(syntax, len(data), h, lambda p, n: data[p:p + n])
                is None) is whole


def test_deflated_syntaxes_are_the_header_walkers() -> None:
    """Only data sets that are a zlib stream go unwalked: Deflated Explicit VR LE and JPIP
    Referenced Deflate (PS3.5 §A.5, §A.6), as workers/header.py reads them; Deflated Image
    Frame Compression deflates frames, not the data set, so a cut one is still refused."""
    import zlib

    raw = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    data = raw[read_part10_header(raw).dataset_offset:]
    stream = zlib.compress(data)[2:-4]
    for syntax in ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95"):
        assert _check(syntax, stream) is None
    assert _check("1.2.840.10008.1.2.8.1", data[:-100]) is not None
