"""workers.part10: File Meta packing read back by pydicom and dcmdump; file identification."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pydicom
import pytest

from workers.header import read_index_attributes
from workers.part10 import NotDicomError, build_file_meta, read_part10_header

CT = "1.2.840.10008.5.1.4.1.1.2"
SOP = "1.2.826.0.1.3680043.8.498.1"  # odd length: exercises NUL padding
EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"


def _el(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


DATASET = b"".join(
    [
        _el(0x0008, 0x0016, b"UI", CT.encode() + b"\x00"),
        _el(0x0008, 0x0018, b"UI", SOP.encode() + b"\x00"),
        _el(0x0010, 0x0010, b"PN", b"Doe^Jane"),
        _el(0x0020, 0x000D, b"UI", b"1.2.3.45"),
        _el(0x0020, 0x000E, b"UI", b"1.2.3.4.1\x00"),
    ]
)


def _meta(ae: str = "STORESCU", ts: str = EXPLICIT) -> bytes:
    return build_file_meta(
        media_storage_sop_class_uid=CT,
        media_storage_sop_instance_uid=SOP,
        transfer_syntax_uid=ts,
        source_ae_title=ae,
        implementation_class_uid="1.2.826.0.1.3680043.9.7433.1",
        implementation_version_name="PACS_0_1",
    )


def test_meta_layout() -> None:
    meta = _meta()
    assert meta[:128] == bytes(128) and meta[128:132] == b"DICM"
    group_length = struct.unpack_from("<I", meta, 140)[0]
    assert 144 + group_length == len(meta)  # PS3.10 §7.1 group length covers the rest
    assert len(meta) % 2 == 0
    assert meta[144:158] == struct.pack("<HH2sxxI", 2, 1, b"OB", 2) + b"\x00\x01"


def test_pydicom_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    path.write_bytes(_meta() + DATASET)
    ds = pydicom.dcmread(path)
    fm = ds.file_meta
    assert fm.MediaStorageSOPClassUID == CT
    assert fm.MediaStorageSOPInstanceUID == SOP
    assert fm.TransferSyntaxUID == EXPLICIT
    assert fm.SourceApplicationEntityTitle == "STORESCU"
    assert fm.ImplementationVersionName == "PACS_0_1"
    assert fm.FileMetaInformationVersion == b"\x00\x01"
    assert ds.SOPInstanceUID == SOP and str(ds.PatientName) == "Doe^Jane"


def test_optional_elements_omitted() -> None:
    meta = build_file_meta(
        media_storage_sop_class_uid=CT,
        media_storage_sop_instance_uid=SOP,
        transfer_syntax_uid=EXPLICIT,
        source_ae_title="",
        implementation_class_uid="1.2.3",
        implementation_version_name="",
    )
    assert b"AE" not in meta[132:] and b"SH" not in meta[132:]


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("dcmdump") is None, reason="DCMTK dcmdump not installed")
def test_dcmdump_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    path.write_bytes(_meta(ae="ODD") + DATASET)
    out = subprocess.run(
        ["dcmdump", "-M", str(path)], capture_output=True, text=True, check=True, timeout=30
    )
    assert "E:" not in out.stderr and "W:" not in out.stderr, out.stderr
    assert f"[{SOP}]" in out.stdout
    assert "(0002,0016) AE [ODD ]" in out.stdout or "(0002,0016) AE [ODD]" in out.stdout
    assert "LittleEndianExplicit" in out.stdout
    assert "Doe^Jane" in out.stdout


def test_read_part10_header_roundtrip(tmp_path: Path) -> None:
    meta = _meta()
    path = tmp_path / "x.dcm"
    path.write_bytes(meta + DATASET)
    for source in (path, str(path), meta + DATASET):
        info = read_part10_header(source)
        assert (info.transfer_syntax_uid, info.sop_class_uid, info.sop_instance_uid) == (
            EXPLICIT,
            CT,
            SOP,
        )
        assert info.dataset_offset == len(meta) and info.source_ae == "STORESCU"
        assert info.has_file_meta


def test_meta_without_preamble() -> None:
    data = _meta()[128 + 4 :] + DATASET
    info = read_part10_header(data)
    assert info.dataset_offset == len(_meta()) - 132 and info.sop_instance_uid == SOP


def test_bare_dataset_syntax_is_guessed() -> None:
    info = read_part10_header(DATASET)
    assert (info.transfer_syntax_uid, info.dataset_offset, info.has_file_meta) == (
        EXPLICIT,
        0,
        False,
    )
    assert info.sop_instance_uid == SOP
    implicit = b"".join(
        struct.pack("<HHI", g, e, len(v)) + v
        for g, e, v in [
            (0x0008, 0x0016, CT.encode() + b"\x00"),
            (0x0008, 0x0018, SOP.encode() + b"\x00"),
        ]
    )
    info = read_part10_header(implicit)
    assert info.transfer_syntax_uid == IMPLICIT and info.sop_class_uid == CT


def test_large_file_header_beyond_first_chunk(tmp_path: Path) -> None:
    # A 100 KB private element before the SOP UIDs: the first 64 KiB are not enough.
    big = struct.pack("<HH2sxxI", 0x0007, 0x0010, b"OB", 100_000) + bytes(100_000)
    path = tmp_path / "big.dcm"
    path.write_bytes(big + DATASET)
    info = read_part10_header(path)
    assert info.sop_instance_uid == SOP and not info.has_file_meta


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello world, not DICOM at all" * 10,
        bytes(300),
        bytes(128) + b"DICM" + b"\x02\x00\x10\x00\x00\x00garbage",
    ],
)
def test_not_dicom(data: bytes) -> None:
    with pytest.raises(NotDicomError):
        read_part10_header(data)


def test_pydicom_corpus_files_identified() -> None:
    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    for name in (
        "CT_small.dcm",
        "MR_small_implicit.dcm",
        "image_dfl.dcm",
        "MR_small_bigendian.dcm",
    ):
        raw = (folder / name).read_bytes()
        info = read_part10_header(folder / name)
        ds = pydicom.dcmread(folder / name, stop_before_pixels=True)
        assert info.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID
        assert info.sop_instance_uid == ds.file_meta.MediaStorageSOPInstanceUID
        attrs = read_index_attributes(raw[info.dataset_offset :], info.transfer_syntax_uid)
        assert attrs.sop_instance_uid == ds.SOPInstanceUID


def test_cached_parts_give_each_object_its_own_instance_uid(tmp_path: Path) -> None:
    """The elements around (0002,0003) are packed once per class/syntax/AE: every object
    still gets its own SOP Instance UID (odd and even lengths) and a correct group length,
    and a cache entry never leaks into another combination."""
    metas = {}
    for sop in ("1.2.3.4", "1.2.3.45", "1.2.3.4"):
        for ae, ts in (("STORESCU", EXPLICIT), ("OTHER_AE", "1.2.840.10008.1.2")):
            _meta(ts=ts, ae=ae)  # fills the cache entry with another instance UID first
            meta = build_file_meta(
                media_storage_sop_class_uid=CT, media_storage_sop_instance_uid=sop,
                transfer_syntax_uid=ts, source_ae_title=ae,
                implementation_class_uid="1.2.826.0.1.3680043.9.7433.1",
                implementation_version_name="PACS_0_1")
            group_length = struct.unpack_from("<I", meta, 140)[0]
            assert 144 + group_length == len(meta) and len(meta) % 2 == 0
            path = tmp_path / "x.dcm"
            path.write_bytes(meta + DATASET)
            fm = pydicom.dcmread(path, stop_before_pixels=True).file_meta
            assert fm.MediaStorageSOPInstanceUID == sop
            assert fm.TransferSyntaxUID == ts and fm.SourceApplicationEntityTitle == ae
            assert metas.setdefault((sop, ae), meta) == meta  # same inputs, same bytes
    with pytest.raises(ValueError):
        build_file_meta(media_storage_sop_class_uid=CT, media_storage_sop_instance_uid="1.2.é",
                        transfer_syntax_uid=EXPLICIT, source_ae_title="A",
                        implementation_class_uid="1.2.3", implementation_version_name="")
