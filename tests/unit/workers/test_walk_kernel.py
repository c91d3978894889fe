"""workers.kernels.walk: the numba element walk, alone and against the Python walker.

The property test (tests/property/test_walk_kernel.py) covers generated data sets; here are
the kernel's own contract, pydicom's bundled files cut at every few bytes, and every one-byte
corruption of a hand-built data set with nested undefined-length sequences.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np
import pytest

from appliance.errors import IngestError
from tests.unit.workers.test_header import IMPLICIT, USABLE, _dataset, _el
from workers import header, kernels
from workers.kernels import walk

WANTED = np.array(sorted(header.WANTED_TAGS), dtype=np.uint32)


def kernel(data: bytes, implicit: bool, complete: bool = True) -> tuple[int, int, list[Any]]:
    status, offset, rows = walk.walk_le(np.frombuffer(data, np.uint8), implicit, complete,
                                        WANTED, walk.VR_KINDS)
    return int(status), int(offset), rows.tolist()


def outcome(walker: Any, data: Any, implicit: bool, complete: bool) -> tuple[Any, ...]:
    try:
        return ("ok", [tuple(r) for r in walker(data, implicit, complete)])
    except header.NeedMoreData as exc:
        return ("need more", exc.status)
    except IngestError as exc:
        return ("refused", exc.status)
    except header._Odd:
        return ("odd",)


def assert_same(data: Any, implicit: bool, complete: bool) -> tuple[Any, ...]:
    expected = outcome(header._walk_python, data, implicit, complete)
    assert outcome(header._walk_numba, data, implicit, complete) == expected
    return expected


def test_registered_and_warm_up_runs() -> None:
    assert "workers.kernels.walk" in kernels.KERNEL_MODULES
    walk.warm_up()


@pytest.mark.parametrize("implicit", [False, True])
def test_rows_are_tag_vr_offset_length(implicit: bool) -> None:
    data = _dataset(implicit)
    status, offset, rows = kernel(data, implicit)
    assert status == walk.OK
    assert offset == data.index(struct.pack("<HH", 0x7FE0, 0x0010))  # stopped at Pixel Data
    tags = [r[0] for r in rows]
    assert tags == sorted(tags) and 0x00081140 not in tags  # the sequence was skipped
    assert tags == [0x00080016, 0x00080018, 0x00080060, 0x00081030, 0x00100010, 0x00100020,
                    0x0020000D, 0x0020000E, 0x00200013, 0x00280010, 0x00280011]
    for tag, vr16, start, length in rows:
        head = data[start - 8:start]  # every wanted element here has a short VR
        assert struct.unpack_from("<HH", head) == (tag >> 16, tag & 0xFFFF)
        assert vr16 == (0 if implicit else int.from_bytes(head[4:6], "little"))
    sop = rows[1]
    assert data[sop[2]:sop[2] + sop[3]] == b"1.2.3.4.5\x00"


def test_status_codes() -> None:
    data = _dataset(False, nested=False)
    assert kernel(data[:20], False)[0] == walk.NEED_MORE  # cut inside an element
    assert kernel(data[:0], False, complete=False)[0] == walk.NEED_MORE
    assert kernel(data[:0], False, complete=True) == (walk.OK, 0, [])
    unknown_vr = _el(0x0008, 0x0016, "UI", b"1.2") + b"\x08\x00\x18\x00XX\x02\x001\x00"
    assert kernel(unknown_vr, False)[:2] == (walk.ODD, 12)
    unordered = _el(0x0008, 0x0018, "UI", b"1.2") + _el(0x0008, 0x0016, "UI", b"1.2")
    assert kernel(unordered, False)[:2] == (walk.ODD, 12)
    sq, item = struct.pack("<HHI", 0x0008, 0x1140, 0xFFFFFFFF), \
        struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    assert kernel((sq + item) * 17, True)[0] == walk.TOO_DEEP
    assert kernel((sq + item) * 16, True)[0] == walk.NEED_MORE  # 16 levels are allowed


def _walkable(ts: str, data: bytes) -> tuple[bytes, bool] | None:
    if ts == "1.2.840.10008.1.2.2":
        return None  # big endian: pydicom's
    if ts == "1.2.840.10008.1.2.1.99":
        return zlib.decompress(data, -zlib.MAX_WBITS), False
    return data, ts == IMPLICIT


CASES = [(p, w) for p, (data, ts, _) in USABLE if (w := _walkable(ts, data)) is not None]


@pytest.mark.parametrize(("path", "case"), CASES, ids=[p.name for p, _ in CASES])
def test_same_as_python_walker_on_every_cut_of_pydicom_files(path: Any,
                                                             case: tuple[bytes, bool]) -> None:
    data, implicit = case
    for complete in (True, False):
        assert_same(data, implicit, complete)
        assert_same(data, not implicit, complete)  # wrong syntax: whatever it is, the same
    for cut in range(0, min(len(data), 3000), 5):
        assert_same(data[:cut], implicit, cut % 2 == 0)


@pytest.mark.parametrize("implicit", [False, True])
def test_same_as_python_walker_on_every_corrupted_byte(implicit: bool) -> None:
    seen = set()
    data = _dataset(implicit)
    for where in range(len(data)):
        for value in (0x00, 0xFF, data[where] ^ 0x01, data[where] ^ 0x80):
            mutated = bytearray(data)
            mutated[where] = value
            seen.add(assert_same(bytes(mutated), implicit, True)[0])
    assert seen == {"ok", "need more", "odd"}


def test_buffer_types() -> None:
    data = _dataset(False)
    expected = assert_same(data, False, True)
    assert outcome(header._walk_numba, bytearray(data), False, True) == expected
    assert outcome(header._walk_numba, memoryview(data), False, True) == expected


@pytest.mark.parametrize(("path", "case"), USABLE, ids=[p.name for p, _ in USABLE])
def test_read_index_attributes_same_with_either_walker(path: Any, case: Any) -> None:
    data, ts, _ = case
    for chunk, complete in ((data, True), (data[:2000], True), (data[:2000], False)):
        results: list[Any] = []
        for walker in ("numba", "python"):
            try:
                results.append(header.read_index_attributes(chunk, ts, complete=complete,
                                                            walker=walker))
            except IngestError as exc:
                results.append((type(exc), exc.status))
        assert results[0] == results[1]
