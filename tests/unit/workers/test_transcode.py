"""Transcoding on retrieve (workers.transcode) on every pydicom bundled file of each transfer
syntax family: the result, parsed by pydicom as a data set in the target syntax, must have
the same pixels as pydicom's decoding of the original and the same other elements."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID

from workers.transcode import (
    TranscodeError,
    can_decode,
    can_encode,
    choose_transfer_syntax,
    transcode_dataset,
)

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
BIG = "1.2.840.10008.1.2.2"
RLE = "1.2.840.10008.1.2.5"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"

FAMILIES = {
    "implicit": {IMPLICIT}, "explicit": {EXPLICIT}, "big_endian": {BIG}, "deflate": {DEFLATED},
    "jpeg_baseline": {JPEG_BASELINE, "1.2.840.10008.1.2.4.51"},
    "jpeg_lossless": {"1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"},
    "jpeg_ls": {JPEG_LS_LOSSLESS, "1.2.840.10008.1.2.4.81"},
    "j2k": {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"},
    "rle": {RLE},
}
LOSSY_TS = {JPEG_BASELINE, "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81"}
# Attributes transcoding may change on purpose (PS3.3 C.7.6.3, C.7.6.1.1.5, PS3.5 A.4).
CHANGED = {0x7FE00010, 0x00280004, 0x00280006, 0x00282110, 0x00282112, 0x00282114,
           0x7FE00001, 0x7FE00002}


def split_part10(raw: bytes) -> tuple[str, int]:
    """(Transfer Syntax UID, data set offset) of a Part 10 file with preamble."""
    assert raw[128:132] == b"DICM"
    pos, ts = 132, ""
    while raw[pos:pos + 2] == b"\x02\x00":
        elem, vr, length = struct.unpack_from("<H2sH", raw, pos + 2)
        head = 8
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT", b"UC", b"UR"):
            length, head = struct.unpack_from("<I", raw, pos + 8)[0], 12
        if elem == 0x0010:
            ts = raw[pos + head:pos + head + length].decode("ascii").strip("\x00 ")
        pos += head + length
    return ts, pos


def _bundled() -> Iterator[Any]:
    for path in sorted(TEST_FILES.glob("*.dcm")):
        raw = path.read_bytes()
        if raw[128:132] != b"DICM":
            continue
        ts, _ = split_part10(raw)
        family = next((name for name, uids in FAMILIES.items() if ts in uids), None)
        if family is not None:
            yield pytest.param(path, id=f"{family}-{path.name}")


BUNDLED = list(_bundled())


def test_every_family_has_bundled_files() -> None:
    ids = {str(p.id).split("-")[0] for p in BUNDLED}
    assert ids == set(FAMILIES), f"families without test files: {set(FAMILIES) - ids}"


def read_output(data: bytes, ts: str) -> Dataset:
    uid = UID(ts)
    if uid.is_deflated:
        data = zlib.decompress(data, -zlib.MAX_WBITS)
    ds = read_dataset(io.BytesIO(data), uid.is_implicit_VR, uid.is_little_endian)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(ts)
    return ds


def pixels_or_error(ds: Dataset) -> np.ndarray | Exception:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return ds.pixel_array
        except Exception as exc:  # noqa: BLE001 - recorded: pydicom's verdict on the file
            return exc


def raw_value(ds: Dataset, tag: int) -> bytes | None:
    """The undecoded value bytes, None once pydicom has converted the element."""
    item = ds.get_item(tag)
    if not isinstance(item, RawDataElement):
        return None
    return bytes(item.value) if item.value is not None else b""


def assert_same_elements(orig: Dataset, out: Dataset, path: str, same_order: bool) -> None:
    """Every element of ``orig`` is in ``out`` with an equal value (Group Lengths and the
    pixel attributes transcoding changes aside); sequences keep undefined lengths."""
    for tag in orig.keys():
        if tag.element == 0 or tag in CHANGED:
            continue
        where = f"{path}{tag}"
        assert tag in out, f"{where} lost"
        raw_a, raw_b = raw_value(orig, tag), raw_value(out, tag)
        a, b = orig[tag], out[tag]
        if a.VR == "SQ":
            assert b.VR == "SQ", where
            assert a.is_undefined_length == b.is_undefined_length, where
            assert len(a.value) == len(b.value), where
            for i, (ia, ib) in enumerate(zip(a.value, b.value, strict=True)):
                assert ia.get("is_undefined_length_sequence_item", None) == \
                    ib.get("is_undefined_length_sequence_item", None)
                assert_same_elements(ia, ib, f"{where}[{i}].", same_order)
        elif a.is_empty and b.is_empty:
            continue
        elif a.VR == b.VR and a.VR != "UN":
            assert a.value == b.value, where
        elif same_order and raw_a is not None and raw_b is not None:
            # Implicit VR loses the VR (private tags, 'US or SS'): the bytes are what counts.
            assert raw_a == raw_b, where
        else:
            assert a.value == b.value, where


# Bundled files that are broken on purpose, and why we refuse them.
REFUSED = {
    "MR_truncated.dcm": "Pixel Data runs past the end of the file",
    "rtplan_truncated.dcm": "a sequence runs past the end of the file",
    "JPEG-lossy.dcm": "codestream libjpeg rejects (pydicom cannot decode it either)",
    "JPEG2000-embedded-sequence-delimiter.dcm": "codestream openjpeg rejects (pydicom too)",
}


def _transcode_file(path: Path, to_ts: str) -> tuple[Dataset, Dataset, bytes, bytes]:
    raw = path.read_bytes()
    ts, offset = split_part10(raw)
    out = transcode_dataset(memoryview(raw)[offset:], ts, to_ts)
    return dcmread(path), read_output(out, to_ts), out, raw[offset:]


@pytest.mark.parametrize("to_ts", [EXPLICIT, IMPLICIT])
@pytest.mark.parametrize("path", BUNDLED)
def test_bundled_file_transcodes_to_native(path: Path, to_ts: str) -> None:
    if path.name in REFUSED:
        raw = path.read_bytes()
        ts, offset = split_part10(raw)
        if ts != to_ts:
            with pytest.raises(TranscodeError):
                transcode_dataset(raw[offset:], ts, to_ts)
        return
    orig, out, data, source = _transcode_file(path, to_ts)
    if not UID(split_part10(path.read_bytes())[0]).is_deflated:
        assert len(data) % 2 == len(source) % 2  # odd only when a source value is odd-length
    assert_same_elements(orig, out, "", same_order=orig.file_meta.TransferSyntaxUID != BIG)
    if "PixelData" not in orig:
        return
    expected = pixels_or_error(orig)
    got = pixels_or_error(out)
    if isinstance(expected, Exception):  # badVR.dcm: Number of Frames "1A"
        assert isinstance(got, Exception)
        return
    assert isinstance(got, np.ndarray), got
    assert got.shape == expected.shape and got.dtype.str[1:] == expected.dtype.str[1:]
    assert np.array_equal(got, expected)  # lossy: the same decoder, so exact too
    _check_native_pixel_module(orig, out)


def _check_native_pixel_module(orig: Dataset, out: Dataset) -> None:
    elem = out["PixelData"]
    assert not elem.is_undefined_length
    bits, spp = out.BitsAllocated, out.get("SamplesPerPixel", 1)
    src_ts = orig.file_meta.TransferSyntaxUID
    if UID(src_ts).is_encapsulated:
        assert "ExtendedOffsetTable" not in out
        frames = int(out.get("NumberOfFrames", 1) or 1)
        pixels = out.Rows * out.Columns * spp * frames
        expected = (pixels + 7) // 8 if bits == 1 else pixels * bits // 8
        assert len(elem.value) == expected + expected % 2
        if out.file_meta.TransferSyntaxUID == EXPLICIT:
            assert elem.VR == ("OB" if bits <= 8 else "OW")
        if spp > 1:
            assert out.PlanarConfiguration == 0
        if orig.PhotometricInterpretation in ("YBR_FULL", "YBR_FULL_422") and \
                src_ts in LOSSY_TS:
            assert out.PhotometricInterpretation == "RGB"  # pydicom converted it
        if src_ts in LOSSY_TS:
            assert out.LossyImageCompression == "01"
            if "LossyImageCompression" not in orig:
                assert out.LossyImageCompressionMethod in ("ISO_10918_1", "ISO_14495_1")
        elif orig.get("LossyImageCompression") is not None:
            assert out.LossyImageCompression == orig.LossyImageCompression


@pytest.mark.parametrize("to_ts", [DEFLATED, RLE])
@pytest.mark.parametrize("name", [
    "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "SC_rgb_small_odd_big_endian.dcm",
    "image_dfl.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm", "SC_ybr_full_422_uncompressed.dcm",
    "examples_ybr_color.dcm", "MR_small_jp2klossless.dcm", "SC_rgb_rle_32bit_2frame.dcm",
    "rtdose_expb.dcm", "CT_small.dcm", "rtplan.dcm",
])
def test_other_targets_keep_pixels_and_elements(name: str, to_ts: str) -> None:
    path = TEST_FILES / name
    if not path.exists():
        pytest.fail(f"bundled file {name} missing")
    orig, out, _, _ = _transcode_file(path, to_ts)
    assert_same_elements(orig, out, "", same_order=True)
    if "PixelData" in orig:
        got, expected = pixels_or_error(out), pixels_or_error(orig)
        assert isinstance(got, np.ndarray) and isinstance(expected, np.ndarray)
        assert np.array_equal(got, expected)
    if to_ts == RLE and "PixelData" in orig:
        assert out["PixelData"].is_undefined_length


def test_implicit_to_explicit_and_back_is_byte_identical() -> None:
    for path in sorted(TEST_FILES.glob("*.dcm")):
        raw = path.read_bytes()
        if raw[128:132] != b"DICM" or split_part10(raw)[0] != IMPLICIT:
            continue
        ts, offset = split_part10(raw)
        try:
            explicit = transcode_dataset(raw[offset:], IMPLICIT, EXPLICIT)
        except TranscodeError:
            continue  # truncated files: covered above
        assert transcode_dataset(explicit, EXPLICIT, IMPLICIT) == raw[offset:], path.name


def test_deflate_round_trip_and_padding() -> None:
    raw = (TEST_FILES / "CT_small.dcm").read_bytes()
    _, offset = split_part10(raw)
    deflated = transcode_dataset(raw[offset:], EXPLICIT, DEFLATED)
    assert len(deflated) % 2 == 0  # PS3.5 A.5
    assert transcode_dataset(deflated, DEFLATED, EXPLICIT) == raw[offset:]
    assert transcode_dataset(raw[offset:], EXPLICIT, EXPLICIT) == raw[offset:]


def _implicit(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def test_group_lengths_are_recomputed_and_lengths_of_items_too() -> None:
    item = _implicit(0x00081150, b"1.2\x00") + _implicit(0x00081155, b"1.2.3\x00")
    seq = struct.pack("<HHI", 0xFFFE, 0xE000, len(item)) + item
    body = _implicit(0x00080016, b"1.2\x00") + _implicit(0x00081140, seq)
    data = _implicit(0x00080000, struct.pack("<I", len(body))) + body
    out = transcode_dataset(data, IMPLICIT, EXPLICIT)
    ds = read_output(out, EXPLICIT)
    assert ds[0x00080000].value == len(out) - 12  # everything after it is group 0008
    assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.3"
    assert transcode_dataset(out, EXPLICIT, IMPLICIT) == data


def test_private_and_undefined_length_sequences_survive() -> None:
    for name in ("nested_priv_SQ.dcm", "priv_SQ.dcm", "UN_sequence.dcm"):
        raw = (TEST_FILES / name).read_bytes()
        ts, offset = split_part10(raw)
        orig = read_output(raw[offset:], ts)
        out = read_output(transcode_dataset(raw[offset:], ts, EXPLICIT if ts != EXPLICIT
                                            else IMPLICIT), EXPLICIT if ts != EXPLICIT
                          else IMPLICIT)
        assert_same_elements(orig, out, "", same_order=True)


def test_encapsulated_icon_in_a_sequence_is_decoded_too() -> None:
    # PS3.5 A.4: an Icon Image Sequence item's Pixel Data is encapsulated as well.
    path = TEST_FILES / "MR_small_jpeg_ls_lossless.dcm"
    ds = dcmread(path)
    icon = Dataset()
    for keyword in ("SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns",
                    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation"):
        setattr(icon, keyword, getattr(ds, keyword))
    icon.PixelData = ds.PixelData
    icon["PixelData"].VR = "OB"
    icon["PixelData"].is_undefined_length = True
    ds.IconImageSequence = [icon]
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    raw = buf.getvalue()
    ts, offset = split_part10(raw)
    out = read_output(transcode_dataset(raw[offset:], ts, EXPLICIT), EXPLICIT)
    nested = out.IconImageSequence[0]
    assert not nested["PixelData"].is_undefined_length
    nested.file_meta = out.file_meta
    assert np.array_equal(nested.pixel_array, ds.pixel_array)
    assert np.array_equal(out.pixel_array, ds.pixel_array)


def test_choose_transfer_syntax() -> None:
    assert choose_transfer_syntax(JPEG_BASELINE, [JPEG_BASELINE, EXPLICIT]) == JPEG_BASELINE
    assert choose_transfer_syntax(JPEG_BASELINE, [IMPLICIT, EXPLICIT]) == EXPLICIT
    assert choose_transfer_syntax(JPEG_BASELINE, {IMPLICIT}) == IMPLICIT
    assert choose_transfer_syntax(BIG, [RLE, DEFLATED]) == DEFLATED
    assert choose_transfer_syntax(EXPLICIT, [RLE]) == RLE
    assert choose_transfer_syntax(EXPLICIT, [JPEG_BASELINE]) is None  # we write no JPEG
    assert choose_transfer_syntax(EXPLICIT, []) is None
    mpeg2 = "1.2.840.10008.1.2.4.100"
    assert choose_transfer_syntax(mpeg2, [EXPLICIT, IMPLICIT]) is None
    assert choose_transfer_syntax(mpeg2, [mpeg2]) == mpeg2
    assert choose_transfer_syntax("1.2.3.4.5", [EXPLICIT]) is None


def test_can_decode_and_encode() -> None:
    for ts in (IMPLICIT, EXPLICIT, BIG, DEFLATED, RLE, JPEG_BASELINE, JPEG_LS_LOSSLESS,
               "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
               "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"):
        assert can_decode(ts), ts
    for ts in ("1.2.840.10008.1.2.4.100", "1.2.3.4", "not a uid"):
        assert not can_decode(ts), ts
    assert can_encode(EXPLICIT) and can_encode(RLE) and not can_encode(BIG)
    assert not can_encode(JPEG_BASELINE)


@pytest.mark.parametrize(("data", "from_ts", "to_ts", "message"), [
    (b"\x08\x00\x16\x00UI\x04\x001.2\x00", "1.2.3.4", EXPLICIT, "cannot read"),
    (b"\x08\x00\x16\x00UI\x04\x001.2\x00", EXPLICIT, JPEG_BASELINE, "cannot write"),
    (b"\x08\x00\x16\x00UI\x40\x001.2\x00", EXPLICIT, IMPLICIT, "runs past"),
    (b"\x08\x00\x16\x00", IMPLICIT, EXPLICIT, "runs past"),
    (b"not deflate at all", DEFLATED, EXPLICIT, "inflate"),
    (b"\x08\x00\x16\x00\x01\x02\x04\x001.2\x00", BIG, EXPLICIT, "VR"),
])
def test_malformed_input_raises_transcode_error(data: bytes, from_ts: str, to_ts: str,
                                                message: str) -> None:
    with pytest.raises(TranscodeError, match=message):
        transcode_dataset(data, from_ts, to_ts)


def _corrupt_fragment(name: str) -> tuple[bytes, str]:
    raw = (TEST_FILES / name).read_bytes()
    ts, offset = split_part10(raw)
    data = bytearray(raw[offset:])
    start = data.rfind(b"\xe0\x7f\x10\x00")  # encapsulated Pixel Data: OB or OW, undefined
    assert start > 0 and data[start + 8:start + 12] == b"\xff\xff\xff\xff"
    first = start + 12 + 8 + struct.unpack_from("<I", data, start + 16)[0]  # after the BOT
    length = struct.unpack_from("<I", data, first + 4)[0]
    data[first + 8:first + 8 + length] = bytes(length)  # no SOI / SOC / RLE header left
    return bytes(data), ts


@pytest.mark.parametrize("name", ["MR_small_jpeg_ls_lossless.dcm", "SC_rgb_jpeg_dcmtk.dcm",
                                  "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm",
                                  "SC_rgb_rle.dcm"])
def test_undecodable_pixel_data_raises_transcode_error(name: str) -> None:
    data, ts = _corrupt_fragment(name)
    with pytest.raises(TranscodeError):
        transcode_dataset(data, ts, EXPLICIT)


def test_missing_decoder_raises_transcode_error() -> None:
    raw = (TEST_FILES / "SC_rgb_jpeg_dcmtk.dcm").read_bytes()
    _, offset = split_part10(raw)
    # The same encapsulated data set labelled JPEG 2000 Part 2, which nothing here decodes.
    with pytest.raises(TranscodeError, match="decode"):
        transcode_dataset(raw[offset:], "1.2.840.10008.1.2.4.92", EXPLICIT)


@settings(max_examples=60)
@given(st.data())
def test_mutated_data_sets_raise_only_transcode_error(data: st.DataObject) -> None:
    name, ts = data.draw(st.sampled_from([
        ("MR_small_implicit.dcm", IMPLICIT), ("MR_small_bigendian.dcm", BIG),
        ("priv_SQ.dcm", IMPLICIT), ("SC_rgb_rle.dcm", RLE), ("test-SR.dcm", EXPLICIT),
    ]))
    raw = (TEST_FILES / name).read_bytes()
    body = bytearray(raw[split_part10(raw)[1]:])
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(body) - 1))
        body[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(len(body) // 2, len(body)))
    to_ts = IMPLICIT if ts == EXPLICIT else EXPLICIT
    try:
        transcode_dataset(bytes(body[:cut]), ts, to_ts)
    except TranscodeError:
        pass


def _without(name: str, keyword: str) -> tuple[bytes, str]:
    ds = dcmread(TEST_FILES / name)
    if keyword in ds:
        del ds[keyword]
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    ts, offset = split_part10(buf.getvalue())
    return buf.getvalue()[offset:], ts


def test_jpeg_2000_irreversible_wavelet_marks_lossy() -> None:
    # JPEG 2000 (4.91) may be lossless or lossy: the 9-7 wavelet in the COD marker says lossy.
    data, ts = _without("JPEG2000.dcm", "LossyImageCompression")
    out = read_output(transcode_dataset(data, ts, EXPLICIT), EXPLICIT)
    assert out.LossyImageCompression == "01"
    assert out.LossyImageCompressionMethod == "ISO_15444_1"
    assert float(out.LossyImageCompressionRatio) > 1
    # A reversible (5-3) codestream under the same syntax is not marked.
    data, _ = _without("MR_small_jp2klossless.dcm", "LossyImageCompression")
    out = read_output(transcode_dataset(data, "1.2.840.10008.1.2.4.91", EXPLICIT), EXPLICIT)
    assert "LossyImageCompression" not in out


def test_existing_lossy_attributes_are_kept() -> None:
    # PS3.3 C.7.6.1.1.5: once "01", always "01"; the sender's ratio and method stay as sent.
    raw = (TEST_FILES / "SC_rgb_jpeg_dcmtk.dcm").read_bytes()
    ts, offset = split_part10(raw)
    orig = dcmread(TEST_FILES / "SC_rgb_jpeg_dcmtk.dcm")
    out = read_output(transcode_dataset(raw[offset:], ts, EXPLICIT), EXPLICIT)
    assert out.LossyImageCompression == "01"
    assert out.LossyImageCompressionRatio == orig.LossyImageCompressionRatio
    assert out.LossyImageCompressionMethod == orig.LossyImageCompressionMethod


def _part10(dataset: bytes, ts: str, like: Path) -> bytes:
    from workers.part10 import build_file_meta

    orig = dcmread(like, stop_before_pixels=True)
    return build_file_meta(
        media_storage_sop_class_uid=orig.SOPClassUID,
        media_storage_sop_instance_uid=orig.SOPInstanceUID, transfer_syntax_uid=ts,
        source_ae_title="", implementation_class_uid="1.2.3.4",
        implementation_version_name="") + dataset


@pytest.mark.interop
@pytest.mark.parametrize("name", ["MR_small_implicit.dcm", "SC_rgb_small_odd.dcm",
                                  "rtdose_1frame.dcm", "SC_rgb_rle_16bit_2frame.dcm",
                                  "SC_rgb_dcmtk_+eb+cy+np.dcm"])
def test_dcmtk_decodes_our_rle(name: str, tmp_path: Path) -> None:
    import subprocess

    from tests.conftest import require_tool

    dcmdrle = require_tool("dcmdrle")
    raw = (TEST_FILES / name).read_bytes()
    ts, offset = split_part10(raw)
    rle = transcode_dataset(raw[offset:], ts, RLE)
    src, dst = tmp_path / "rle.dcm", tmp_path / "native.dcm"
    src.write_bytes(_part10(rle, RLE, TEST_FILES / name))
    done = subprocess.run([dcmdrle, str(src), str(dst)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    theirs = dcmread(dst)
    assert theirs.file_meta.TransferSyntaxUID != RLE
    expected = pixels_or_error(dcmread(TEST_FILES / name))
    got = pixels_or_error(theirs)
    assert isinstance(expected, np.ndarray) and isinstance(got, np.ndarray)
    assert np.array_equal(got, expected)


@pytest.mark.interop
@pytest.mark.parametrize("to_ts", [EXPLICIT, IMPLICIT, DEFLATED])
@pytest.mark.parametrize("name", ["test-SR.dcm", "MR_small_bigendian.dcm", "waveform_ecg.dcm",
                                  "examples_jpeg2k.dcm", "image_dfl.dcm"])
def test_dcmdump_reads_our_output(name: str, to_ts: str, tmp_path: Path) -> None:
    import subprocess

    from tests.conftest import require_tool

    dcmdump = require_tool("dcmdump")
    raw = (TEST_FILES / name).read_bytes()
    ts, offset = split_part10(raw)
    path = tmp_path / "out.dcm"
    path.write_bytes(_part10(transcode_dataset(raw[offset:], ts, to_ts), to_ts,
                             TEST_FILES / name))
    done = subprocess.run([dcmdump, "+E", str(path)], capture_output=True, timeout=60,
                          check=False)
    stderr = done.stderr.decode("latin-1")
    assert done.returncode == 0, stderr
    assert "E:" not in stderr, stderr
    if "PixelData" in dcmread(TEST_FILES / name):
        assert b"(7fe0,0010)" in done.stdout
