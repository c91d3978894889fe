"""workers/spool.py: exact bytes whatever the fragmenting, O_DIRECT used where it should be and
a clean fallback where the filesystem has none."""

from __future__ import annotations

import errno
import io
import os
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.config import load as load_config
from tests.fixtures.make_datasets import Hierarchy, make_ct, new_uid
from workers.part10 import read_part10_header
from workers.process import store_settings
from workers.spool import BLOCK, DIRECT_MIN_BYTES, STAGING_BYTES, BufferedSpool, DirectSpool
from workers.store import StoreJob, StoreSettings


def _supports_direct(folder: Path) -> bool:
    fd, name = tempfile.mkstemp(dir=folder)
    try:
        os.close(fd)
        fd = os.open(name, os.O_WRONLY | os.O_DIRECT)
        os.close(fd)
        return True
    except OSError:
        return False
    finally:
        os.unlink(name)


def _spool_to(path: Path, fragments: list[bytes], direct: bool) -> tuple[bytes, int]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    spool = DirectSpool(fd) if direct else BufferedSpool(fd)
    try:
        for f in fragments:
            spool.write(memoryview(f))
        spool.finish()
    finally:
        spool.release()
        os.close(fd)
    return path.read_bytes(), getattr(spool, "direct_bytes", 0)


def _fragments(total: int, sizes: list[int], seed: int) -> list[bytes]:
    data = bytes((seed + i * 7) % 251 for i in range(total))
    out, pos, k = [], 0, 0
    while pos < total:
        n = sizes[k % len(sizes)]
        out.append(data[pos:pos + n])
        pos, k = pos + n, k + 1
    return out


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    if not _supports_direct(tmp_path):
        pytest.fail(f"{tmp_path} has no O_DIRECT: these tests need a disk-backed tmp dir")
    return tmp_path


@settings(max_examples=60, deadline=None)
@given(total=st.integers(0, 3 * STAGING_BYTES + 5000),
       sizes=st.lists(st.integers(1, 700_000), min_size=1, max_size=6),
       seed=st.integers(0, 250))
def test_direct_spool_writes_exact_bytes(total: int, sizes: list[int], seed: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        frags = _fragments(total, sizes, seed)
        got, direct = _spool_to(Path(d) / "f", frags, direct=True)
        assert got == b"".join(frags)
        if total >= DIRECT_MIN_BYTES:
            # everything but the unaligned tail went past the page cache
            assert direct == total - total % BLOCK
        else:
            assert direct == 0


def test_large_object_goes_direct(disk: Path) -> None:
    frags = _fragments(512 * 1024 + 333, [128 * 1024 + 17], 3)
    got, direct = _spool_to(disk / "ct", frags, direct=True)
    assert got == b"".join(frags)
    assert direct == (512 * 1024 + 333) // BLOCK * BLOCK


def test_small_object_is_one_buffered_write(disk: Path) -> None:
    frags = _fragments(8 * 1024 + 1, [300, 5000], 9)
    got, direct = _spool_to(disk / "small", frags, direct=True)
    assert got == b"".join(frags) and direct == 0


@pytest.mark.parametrize("refused_by", ["fcntl", "write"])
def test_no_direct_io_falls_back_to_buffered(
    disk: Path, monkeypatch: pytest.MonkeyPatch, refused_by: str
) -> None:
    """Filesystems without O_DIRECT refuse it in fcntl (older tmpfs) or in write (others)."""
    import fcntl as fcntl_mod

    import workers.spool as spool_mod

    real_fcntl, real_write = fcntl_mod.fcntl, os.write

    def fcntl(fd: int, cmd: int, arg: int = 0) -> int:
        if refused_by == "fcntl" and cmd == fcntl_mod.F_SETFL and arg & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_fcntl(fd, cmd, arg)

    def write(fd: int, data: bytes | memoryview) -> int:
        if refused_by == "write" and real_fcntl(fd, fcntl_mod.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(spool_mod.fcntl, "fcntl", fcntl)
    monkeypatch.setattr(spool_mod.os, "write", write)
    frags = _fragments(2 * STAGING_BYTES + 99, [200_000], 5)
    fd = os.open(disk / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    spool = DirectSpool(fd)
    for f in frags:
        spool.write(f)
    spool.finish()
    spool.release()
    os.close(fd)
    assert (disk / "f").read_bytes() == b"".join(frags)
    assert spool.direct is False and spool.direct_bytes == 0


def _ct_part10(seed: int) -> bytes:
    """A 512x512 16-bit CT (0.5 MB), the size direct I/O is for."""
    rng = random.Random(seed)
    h = Hierarchy("SPOOL", new_uid(rng), new_uid(rng))
    buf = io.BytesIO()
    make_ct(rng, h, rows=512, cols=512).save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_store_job_direct_and_buffered_files_are_identical(disk: Path) -> None:
    raw = _ct_part10(4)
    info = read_part10_header(raw)
    files = []
    for direct in (True, False):
        data = disk / ("d" if direct else "b")
        (data / "tmp").mkdir(parents=True)
        st_ = StoreSettings(data_dir=data, fsync_each=False, max_dataset_bytes=0,
                            implementation_class_uid="1.2.3", implementation_version_name="T",
                            direct_io=direct)
        job = StoreJob(st_, sop_class_uid=info.sop_class_uid,
                       sop_instance_uid=info.sop_instance_uid,
                       transfer_syntax_uid=info.transfer_syntax_uid, calling_ae="SCU")
        view = memoryview(raw)[info.dataset_offset:]
        for off in range(0, len(view), 65536):
            job.feed(view[off:off + 65536], last=off + 65536 >= len(view))
        attrs, rel = job.prepare()
        job.commit(attrs, rel)
        files.append((data / rel).read_bytes())
        assert os.listdir(data / "tmp") == []
    assert files[0] == files[1]
    assert files[0].endswith(raw[info.dataset_offset:])
    assert len(files[0]) > DIRECT_MIN_BYTES


def test_direct_io_setting_reaches_the_workers(tmp_path: Path) -> None:
    assert store_settings(load_config(None)).direct_io is True  # the default
    cfg_file = tmp_path / "a.toml"
    cfg_file.write_text("[storage]\ndirect_io = false\n")
    assert store_settings(load_config(cfg_file)).direct_io is False
