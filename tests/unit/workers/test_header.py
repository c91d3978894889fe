"""workers.header: the element walker against pydicom, on every bundled pydicom test file."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.filereader import _read_file_meta_info, read_preamble

from appliance.errors import IngestError
from workers import header
from workers.header import (
    IndexAttributes,
    NeedMoreData,
    read_index_attributes,
    validate_against_command,
)

PYDICOM_DATA = Path(pydicom.__file__).parent / "data"
CORPUS = sorted(
    [*PYDICOM_DATA.glob("test_files/**/*.dcm"), *PYDICOM_DATA.glob("charset_files/*.dcm")]
)
EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"


def _part10(path: Path) -> tuple[bytes, str, pydicom.Dataset] | None:
    """(data set bytes, transfer syntax, pydicom's reading) or None if not a usable Part 10."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # not a valid Part 10 file: not part of this comparison
            return None
        ts = ds.file_meta.get("TransferSyntaxUID")
        raw = path.read_bytes()
        fp = io.BytesIO(raw)
        read_preamble(fp, False)
        _read_file_meta_info(fp)
    if not ts:
        return None
    return raw[fp.tell() :], str(ts), ds


def _expected(ds: pydicom.Dataset) -> dict[str, str]:
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for tag, name, _vr in header._WANTED_TABLE:
            elem = ds.get(tag)
            out[name] = header._stringify(elem.value) if elem is not None else ""
    return out


def _actual(attrs: IndexAttributes) -> dict[str, str]:
    return {name: getattr(attrs, name) for _, name, _ in header._WANTED_TABLE}


USABLE = [(p, got) for p in CORPUS if (got := _part10(p)) is not None]


def test_corpus_is_substantial() -> None:
    assert len(USABLE) >= 80
    syntaxes = {ts for _, (_, ts, _) in USABLE}
    assert {IMPLICIT, EXPLICIT, "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"} <= syntaxes


WALKERS = ["numba", "python"]


@pytest.mark.parametrize("walker", WALKERS)
@pytest.mark.parametrize(("path", "case"), USABLE, ids=[p.name for p, _ in USABLE])
def test_matches_pydicom(
    path: Path, case: tuple[bytes, str, pydicom.Dataset], walker: header.Walker
) -> None:
    data, ts, ds = case
    assert _actual(read_index_attributes(data, ts, walker=walker)) == _expected(ds)


@pytest.mark.parametrize(("path", "case"), USABLE[::7], ids=[p.name for p, _ in USABLE[::7]])
def test_buffer_types_and_head_retry(path: Path, case: tuple[bytes, str, pydicom.Dataset]) -> None:
    data, ts, ds = case
    expected = _expected(ds)
    assert _actual(read_index_attributes(memoryview(data), ts)) == expected
    assert _actual(read_index_attributes(bytearray(data), ts)) == expected
    # A caller holding only a prefix either gets the same answer or is asked for more.
    for cut in (7, 100, 1000):
        try:
            got = read_index_attributes(data[:cut], ts, complete=False)
        except NeedMoreData:
            continue
        assert _actual(got) == expected


def test_charset_needing_pydicom_is_decoded() -> None:
    path = PYDICOM_DATA / "charset_files" / "chrH31.dcm"  # ISO 2022 IR 87 (Japanese)
    data, ts, ds = _part10(path)  # type: ignore[misc]
    attrs = read_index_attributes(data, ts)
    assert "ISO 2022" in attrs.specific_character_set
    assert attrs.patient_name == str(ds.PatientName)
    assert any(ord(c) > 0x3000 for c in attrs.patient_name)  # kanji, not escape sequences


# ---------------------------------------------------------------- hand-built data sets


def _el(group: int, element: int, vr: str, value: bytes, implicit: bool = False) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr == "UI" else b" "
    if implicit:
        return struct.pack("<HHI", group, element, len(value)) + value
    if vr in ("OB", "OW", "SQ", "UN", "UT"):
        return struct.pack("<HH2sxxI", group, element, vr.encode(), len(value)) + value
    return struct.pack("<HH2sH", group, element, vr.encode(), len(value)) + value


def _undefined_sq(group: int, element: int, items: list[bytes], implicit: bool = False) -> bytes:
    head = (
        struct.pack("<HHI", group, element, 0xFFFFFFFF)
        if implicit
        else struct.pack("<HH2sxxI", group, element, b"SQ", 0xFFFFFFFF)
    )
    body = b"".join(
        struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
        + item
        + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
        for item in items
    )
    return head + body + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def _dataset(implicit: bool = False, nested: bool = True) -> bytes:
    inner = _el(0x0008, 0x1150, "UI", b"1.2.3", implicit) + _el(
        0x0008, 0x1155, "UI", b"9.9", implicit
    )
    deeper = _undefined_sq(0x0040, 0xA730, [inner], implicit)
    parts = [
        _el(0x0008, 0x0016, "UI", CT_CLASS.encode(), implicit),
        _el(0x0008, 0x0018, "UI", b"1.2.3.4.5", implicit),
        _el(0x0008, 0x0060, "CS", b"CT", implicit),
        _el(0x0008, 0x1030, "LO", b" Head  \\Neck ", implicit),
    ]
    if nested:  # (0008,1140) Referenced Image Sequence, undefined length, nested sequence
        parts.append(_undefined_sq(0x0008, 0x1140, [inner + deeper, inner], implicit))
    parts += [
        _el(0x0010, 0x0010, "PN", "Müller^Hans=".encode("latin-1"), implicit),
        _el(0x0010, 0x0020, "LO", b"PID-1", implicit),
        _el(0x0020, 0x000D, "UI", b"1.2.3", implicit),
        _el(0x0020, 0x000E, "UI", b"1.2.3.1", implicit),
        _el(0x0020, 0x0013, "IS", b"7", implicit),
        _el(0x0028, 0x0010, "US", struct.pack("<H", 512), implicit),
        _el(0x0028, 0x0011, "US", struct.pack("<H", 256), implicit),
        _el(0x7FE0, 0x0010, "OW", b"\x00" * 64, implicit),
    ]
    return b"".join(parts)


@pytest.mark.parametrize("walker", WALKERS)
@pytest.mark.parametrize(("implicit", "ts"), [(False, EXPLICIT), (True, IMPLICIT)])
def test_walks_nested_undefined_sequences(implicit: bool, ts: str, walker: header.Walker) -> None:
    attrs = read_index_attributes(_dataset(implicit), ts, walker=walker)
    assert attrs.sop_class_uid == CT_CLASS
    assert attrs.sop_instance_uid == "1.2.3.4.5"
    assert attrs.study_description == "Head\\Neck"
    assert attrs.patient_name == "Müller^Hans"
    assert (attrs.rows, attrs.columns, attrs.instance_number) == ("512", "256", "7")
    assert attrs.study_instance_uid == "1.2.3" and attrs.series_instance_uid == "1.2.3.1"
    assert attrs.accession_number == ""  # absent


def test_deflated_is_inflated() -> None:
    data = _dataset()
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = comp.compress(data) + comp.flush()
    attrs = read_index_attributes(deflated, "1.2.840.10008.1.2.1.99")
    assert attrs == read_index_attributes(data, EXPLICIT)
    with pytest.raises(IngestError) as info:
        read_index_attributes(b"\xff" * 40, "1.2.840.10008.1.2.1.99")
    assert info.value.status == 0xC000


@pytest.mark.parametrize("walker", WALKERS)
def test_truncation_contract(walker: header.Walker) -> None:
    data = _dataset(nested=False)
    cut_clean = data.index(struct.pack("<HH", 0x0020, 0x000D))  # at an element boundary
    with pytest.raises(NeedMoreData):
        read_index_attributes(data[:cut_clean], EXPLICIT, complete=False, walker=walker)
    # the caller said it is everything: a data set may end there
    attrs = read_index_attributes(data[:cut_clean], EXPLICIT, walker=walker)
    assert attrs.study_instance_uid == "" and attrs.sop_instance_uid == "1.2.3.4.5"
    with pytest.raises(NeedMoreData) as info:  # cut inside an element: never complete
        read_index_attributes(data[: cut_clean + 9], EXPLICIT, walker=walker)
    assert info.value.status == 0xC000 and isinstance(info.value, IngestError)
    # stopping at a tag past the last wanted one needs nothing more
    stop = data.index(struct.pack("<HH", 0x7FE0, 0x0010))
    attrs = read_index_attributes(data[: stop + 8], EXPLICIT, complete=False, walker=walker)
    assert attrs.rows == "512"


def test_odd_encoding_falls_back_to_pydicom() -> None:
    # Rows encoded with VR "SS": the walker refuses the VR, pydicom reads it as sent.
    data = _el(0x0008, 0x0018, "UI", b"1.2") + _el(0x0028, 0x0010, "SS", struct.pack("<h", 64))
    assert read_index_attributes(data, EXPLICIT).rows == "64"
    # Explicit-VR transfer syntax but implicit bytes: pydicom notices and switches.
    implicit = _dataset(implicit=True, nested=False)
    assert read_index_attributes(implicit, EXPLICIT).sop_instance_uid == "1.2.3.4.5"


@pytest.mark.parametrize("walker", WALKERS)
def test_hostile_nesting_is_refused(walker: header.Walker) -> None:
    item_start = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    sq = struct.pack("<HHI", 0x0008, 0x1140, 0xFFFFFFFF)
    data = (sq + item_start) * 200
    with pytest.raises(IngestError) as info:
        read_index_attributes(data, IMPLICIT, walker=walker)
    assert not isinstance(info.value, NeedMoreData) and info.value.status == 0xC000


def test_unknown_walker_is_refused() -> None:
    with pytest.raises(KeyError):
        read_index_attributes(_dataset(), EXPLICIT, walker="fortran")  # type: ignore[arg-type]


# ---------------------------------------------------------------- robustness (hypothesis)

SEEDS = [_dataset(False), _dataset(True)] + [c[0][:3000] for _, c in USABLE[::10]]
SYNTAXES = st.sampled_from(
    [
        IMPLICIT,
        EXPLICIT,
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.4.50",
        "garbage",
    ]
)


def _outcome(data: bytes, ts: str, complete: bool) -> None:
    for walker in WALKERS:
        try:
            read_index_attributes(data, ts, complete=complete, walker=walker)  # type: ignore[arg-type]
        except IngestError:
            pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512), SYNTAXES, st.booleans())
def test_arbitrary_bytes_give_attributes_or_ingest_error(
    data: bytes, ts: str, complete: bool
) -> None:
    _outcome(data, ts, complete)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
    st.integers(0, 10**6),
    SYNTAXES,
    st.booleans(),
)
def test_mutated_data_sets_give_attributes_or_ingest_error(
    seed: bytes, flips: list[tuple[int, int]], cut: int, ts: str, complete: bool
) -> None:
    b = bytearray(seed)
    for where, value in flips:
        b[where % len(b)] = value
    _outcome(bytes(b[: cut % (len(b) + 1)]), ts, complete)


# ---------------------------------------------------------------- validation


def _attrs(**kw: str) -> IndexAttributes:
    base = dict(
        sop_class_uid=CT_CLASS,
        sop_instance_uid="1.2.3.4",
        study_instance_uid="1.2",
        series_instance_uid="1.2.1",
    )
    base.update(kw)
    return IndexAttributes(**base)


def test_validate_accepts_match_with_padding() -> None:
    validate_against_command(_attrs(), CT_CLASS + "\x00", "1.2.3.4")


@pytest.mark.parametrize(
    "missing", ["sop_class_uid", "sop_instance_uid", "study_instance_uid", "series_instance_uid"]
)
def test_validate_missing_uid_is_cannot_understand(missing: str) -> None:
    with pytest.raises(IngestError) as info:
        validate_against_command(_attrs(**{missing: ""}), CT_CLASS, "1.2.3.4")
    assert info.value.status == 0xC000


@pytest.mark.parametrize(
    ("cls", "inst"), [("1.2.840.10008.5.1.4.1.1.4", "1.2.3.4"), (CT_CLASS, "1.2.3.5")]
)
def test_validate_mismatch_is_a900(cls: str, inst: str) -> None:
    with pytest.raises(IngestError) as info:
        validate_against_command(_attrs(), cls, inst)
    assert info.value.status == 0xA900


def test_importing_the_module_does_not_import_numba() -> None:
    # The index writer and `pacs db stats` import workers.header for IndexAttributes only;
    # numba (~0.3 s, ~70 MB) is loaded on the first numba walk.
    code = "import sys, workers.header; sys.exit('numba' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[3],
                          check=False).returncode == 0
