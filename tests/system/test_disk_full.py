"""A real ENOSPC while storing, on a small tmpfs volume holding the whole data directory.

The free-space floor is off (``min_free_bytes = 0``) so that the write itself fails: the peer
gets 0xA700 (Out of Resources, PS3.4 B.2.3), no partial file stays in ``tmp/`` or
``objects/``, /readyz fails naming ``disk_space``, C-ECHO keeps working, and once space
returns readiness recovers and stores succeed again.

The volume is a tmpfs mounted for the test (we run as root in CI). Where mounting is not
permitted the tests skip, or fail with ``PACS_REQUIRE_FAULTS=1`` or ``PACS_REQUIRE_INTEROP=1``
(CI), as ``require_tool`` does for DCMTK.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.filewriter import dcmwrite

from appliance.errors import IngestError
from appliance.negotiation.sop_classes import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION
from appliance.scu import SCU, ProposedContext
from tests.conftest import PYTHON, REPO, Appliance, run_tool, temp_files, wait_until
from tests.fixtures.make_datasets import Hierarchy, make_ct, new_uid

pytestmark = pytest.mark.system

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
OUT_OF_RESOURCES = 0xA700
CONTEXTS = [ProposedContext(VERIFICATION, (IMPLICIT_VR_LITTLE_ENDIAN,)),
            ProposedContext(CT_IMAGE_STORAGE, (EXPLICIT_VR_LE,))]


# --------------------------------------------------------------------------- small volumes


@contextlib.contextmanager
def tmpfs_volume(path: Path, size_bytes: int) -> Iterator[Path]:
    """Mount a tmpfs of ``size_bytes`` at ``path`` for the block; skip where not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    cp = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0755",
                         "tmpfs", str(path)], capture_output=True, text=True, check=False)
    if cp.returncode != 0:
        msg = f"cannot mount a tmpfs here ({cp.stderr.strip() or cp.returncode})"
        if "1" in (os.environ.get("PACS_REQUIRE_FAULTS"), os.environ.get("PACS_REQUIRE_INTEROP")):
            pytest.fail(f"{msg} (PACS_REQUIRE_FAULTS=1 or PACS_REQUIRE_INTEROP=1)")
        pytest.skip(msg)
    try:
        yield path
    finally:
        for _ in range(50):  # a straggler may still hold a file open for a moment
            if subprocess.run(["umount", str(path)], capture_output=True,
                              check=False).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@contextlib.contextmanager
def stopped_at_exit(app: Appliance) -> Iterator[Appliance]:
    """Stop ``app`` when the block ends, however it ends: before its volume is unmounted."""
    try:
        yield app
    finally:
        if app.running():
            try:
                app.stop(expect=None)
            finally:
                if app.running():
                    app.kill_group()


def fill(volume: Path, leave_bytes: int) -> Path:
    """Write a ballast file until about ``leave_bytes`` are free on ``volume``."""
    ballast = volume / "ballast"
    chunk = b"\0" * (1 << 20)
    with open(ballast, "ab") as fh:
        while True:
            st = os.statvfs(volume)
            free = st.f_bavail * st.f_frsize
            want = free - leave_bytes
            if want <= 0:
                break
            try:
                fh.write(chunk[: min(len(chunk), want)])
                fh.flush()
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    return ballast


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def readyz(app: Appliance) -> tuple[int, dict[str, Any]]:
    code, body = app.get("/readyz")
    return code, json.loads(body) if body else {}


def write_ct(path: Path, seed: int, rows: int, cols: int) -> Path:
    rng = random.Random(seed)
    ds = make_ct(rng, Hierarchy(f"FULL{seed}", new_uid(rng), new_uid(rng)), rows=rows, cols=cols)
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def objects(data: Path) -> list[Path]:
    return sorted(p for p in (data / "objects").rglob("*") if p.is_file())


def db_verify(data: Path) -> subprocess.CompletedProcess[str]:
    return run_tool([PYTHON, "-m", "appliance", "db", "verify", "--data", str(data), "--json"],
                    timeout_s=60, cwd=REPO)


# --------------------------------------------------------------------------- the test


def test_enospc_mid_store_refuses_cleanly_and_recovers(
    appliance_factory: Callable[..., Appliance], tmp_path: Path,
) -> None:
    small = write_ct(tmp_path / "small.dcm", 1, 64, 64)  # ~8 KiB
    big = write_ct(tmp_path / "big.dcm", 2, 1024, 1024)  # 2 MiB: cannot fit once full
    after = write_ct(tmp_path / "after.dcm", 3, 1024, 1024)
    with tmpfs_volume(tmp_path / "vol", 24 * 1024 * 1024) as vol:
        app = appliance_factory(workers=1, data=vol / "data",
                                config="[storage]\nmin_free_bytes = 0\n")
        with stopped_at_exit(app.start()):
            _enospc_scenario(app, vol, small, big, after)


def _enospc_scenario(app: Appliance, vol: Path, small: Path, big: Path, after: Path) -> None:
    """Store, fill the volume, fail with ENOSPC, free space, store again."""
    with SCU("127.0.0.1", app.port, calling_ae="DISKFULL", called_ae="PACS",
             contexts=CONTEXTS) as scu:
        assert scu.store_file(small).status == 0x0000
    stored_before = objects(app.data)
    assert len(stored_before) == 1

    ballast = fill(vol, leave_bytes=512 * 1024)  # the big object's write hits ENOSPC
    with SCU("127.0.0.1", app.port, calling_ae="DISKFULL", called_ae="PACS",
             contexts=CONTEXTS) as scu:
        refused = scu.store_file(big)
        assert refused.status == OUT_OF_RESOURCES, refused
        assert scu.echo() == 0x0000  # the association and the appliance carry on
        again = scu.store_file(big)
        assert again.status == OUT_OF_RESOURCES, again
    assert objects(app.data) == stored_before  # nothing half-written, nothing new
    assert temp_files(app.data) == []
    wait_until(lambda: readyz(app)[0] == 503, 10, "/readyz to fail after ENOSPC")
    assert readyz(app)[1]["failed"] == ["disk_space"]

    ballast.unlink()  # space returns
    wait_until(lambda: readyz(app)[0] == 200, 10, "/readyz to recover")
    with SCU("127.0.0.1", app.port, calling_ae="DISKFULL", called_ae="PACS",
             contexts=CONTEXTS) as scu:
        assert scu.store_file(big).status == 0x0000
        assert scu.store_file(after).status == 0x0000
    assert app.stats()["instances"] == 3
    cp = db_verify(app.data)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    app.stop()
    assert temp_files(app.data) == []


# --------------------------------------------------------------------------- the latch alone


def test_full_latch_holds_until_more_than_the_reported_space_is_free() -> None:
    from metrics.disk import FullLatch

    latch = FullLatch()
    assert not latch.full(0, 0, 10)  # nothing reported
    assert latch.full(5, 3_000_000, 1_000_000)  # a write failed: needs > 3 MB free
    assert latch.full(5, 3_000_000, 3_000_000)
    assert not latch.full(5, 3_000_000, 3_000_001)  # space returned
    assert not latch.full(5, 3_000_000, 10)  # the same report does not latch again
    assert latch.full(9, 2_000_000, 10)  # a new failure does


def test_store_job_reports_enospc_after_removing_its_temp_file(tmp_path: Path) -> None:
    from workers import durability
    from workers.store import StoreJob, StoreSettings

    (tmp_path / "tmp").mkdir()
    reports: list[int] = []
    durability.set_disk_full_reporter(reports.append)
    try:
        settings = StoreSettings(tmp_path, False, 0, "1.2.3", "TEST")
        job = StoreJob(settings, sop_class_uid=CT_IMAGE_STORAGE, sop_instance_uid="1.2.3.4",
                       transfer_syntax_uid=EXPLICIT_VR_LE, calling_ae="X")
        fd = os.open("/dev/full", os.O_WRONLY)  # every write fails with ENOSPC
        assert job._fd is not None
        os.dup2(fd, job._fd)
        os.close(fd)
        job.feed(memoryview(b"\0" * 300_000), last=True)
        assert job.failed is not None and job.failed.status == OUT_OF_RESOURCES
        assert reports == []  # not before the partial file is gone
        with pytest.raises(IngestError) as raised:
            job.prepare()
        assert raised.value.status == OUT_OF_RESOURCES
        assert not job.tmp_path.exists()
        assert len(reports) == 1 and reports[0] > durability.MIN_RECOVERY_BYTES
        job.discard()
        assert len(reports) == 1  # reported once
    finally:
        durability.set_disk_full_reporter(None)
