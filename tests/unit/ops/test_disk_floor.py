"""The free-space floor: the larger of bytes and percent, a cached statvfs, and a StoreJob
refused (ENOSPC, which the service answers 0xA700) before anything is written."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from metrics.disk import DiskFloor
from workers.store import StoreJob, StoreSettings, check_disk_floor, configure_disk_floor


@pytest.fixture
def no_floor_after() -> Iterator[None]:
    yield
    configure_disk_floor(Path("."), 0, 0.0)


def _free_and_total(path: Path) -> tuple[int, int]:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def test_floor_is_the_larger_of_bytes_and_percent(tmp_path: Path) -> None:
    free, total = _free_and_total(tmp_path)
    assert DiskFloor(tmp_path, 1).sample().ok
    state = DiskFloor(tmp_path, free * 4).sample()
    assert not state.ok and state.floor_bytes == free * 4
    assert abs(state.free_bytes - free) < 1024**3
    pct = DiskFloor(tmp_path, 1, 99.99).sample()
    assert pct.floor_bytes == int(total * 99.99 / 100) and not pct.ok
    assert not DiskFloor(tmp_path / "missing").sample().ok  # unreadable counts as full


def test_check_is_cached_then_resampled(tmp_path: Path) -> None:
    floor = DiskFloor(tmp_path, 1, max_age_s=0.5)
    first = floor.check(now=100.0)
    floor.min_free_bytes = 10**18  # changed behind its back: the cache still answers
    assert floor.check(now=100.4) is first
    assert not floor.check(now=100.5).ok  # old enough: sampled again
    floor.update(1, 0.0)  # an update samples at once
    assert floor.check(now=100.6).ok


def _settings(data: Path) -> StoreSettings:
    (data / "tmp").mkdir(parents=True, exist_ok=True)
    return StoreSettings(data_dir=data, fsync_each=False, max_dataset_bytes=0,
                         implementation_class_uid="1.2.3", implementation_version_name="T")


def _job(settings: StoreSettings) -> StoreJob:
    return StoreJob(settings, sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                    sop_instance_uid="1.2.3.4", transfer_syntax_uid="1.2.840.10008.1.2.1",
                    calling_ae="T")


def test_store_job_refused_below_the_floor(tmp_path: Path, no_floor_after: None) -> None:
    settings = _settings(tmp_path)
    free, _ = _free_and_total(tmp_path)
    configure_disk_floor(tmp_path, free * 4, 0.0)
    with pytest.raises(OSError) as err:
        _job(settings)
    assert err.value.errno == errno.ENOSPC
    assert len("cannot create spool file: " + str(err.value.strerror)) <= 64  # Error Comment
    assert list((tmp_path / "tmp").iterdir()) == []  # nothing was created
    configure_disk_floor(tmp_path, 1, 0.0)  # space "returns" (SIGHUP with a lower floor)
    check_disk_floor()
    job = _job(settings)
    assert job.tmp_path.exists()
    job.discard()
    configure_disk_floor(tmp_path, 0, 0.0)  # no floor at all
    check_disk_floor()
