"""LMDB map full, on a running appliance (DESIGN "Index (LMDB)").

1. A 64 KiB ``index_map_size_bytes``: a few hundred C-STOREs fill it many times over. The index
   writer grows the map (MapFullError -> set_mapsize, batch retried) and every object is
   acknowledged and indexed; the map on disk is far beyond 64 KiB afterwards.
2. A map that cannot grow because the volume under it is full (the data directory on a small
   tmpfs, filled with ballast): LMDB's commit fails (it reports EIO for the short write), the
   batch is refused cleanly with 0xA700, its files are removed, /readyz fails, and after
   space returns the index opens, ``pacs db verify`` is clean and stores succeed again.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from pathlib import Path

import lmdb
import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from appliance.scu import SCU
from tests.conftest import Appliance, index_get_many, temp_files, wait_until
from tests.fixtures.make_datasets import Hierarchy, make_ct, new_uid
from tests.system.test_disk_full import (
    CONTEXTS,
    OUT_OF_RESOURCES,
    db_verify,
    fill,
    objects,
    readyz,
    stopped_at_exit,
    tmpfs_volume,
    write_ct,
)

pytestmark = pytest.mark.system

TINY_MAP = 64 * 1024


def _map_size(data: Path) -> int:
    env = lmdb.open(str(data / "index"), readonly=True, lock=False, subdir=True, max_dbs=32)
    try:
        return int(env.info()["map_size"])
    finally:
        env.close()


def _store_stream(app: Appliance, name: str, count: int, acked: list[str],
                  errors: list[str]) -> None:
    rng = random.Random(name)
    series = Hierarchy(name, new_uid(rng), new_uid(rng))
    try:
        with SCU("127.0.0.1", app.port, calling_ae="MAPFULL", called_ae="PACS",
                 contexts=CONTEXTS) as scu:
            for n in range(count):
                ds = make_ct(rng, series, rows=8, cols=8, instance_number=n + 1)
                buf = DicomBytesIO()
                buf.is_little_endian, buf.is_implicit_VR = True, False
                write_dataset(buf, ds)
                result = scu.store(buf.getvalue(), str(ds.SOPClassUID), str(ds.SOPInstanceUID),
                                   str(ds.file_meta.TransferSyntaxUID))
                if result.status == 0x0000:
                    acked.append(str(ds.SOPInstanceUID))
                else:
                    errors.append(f"{name}#{n}: 0x{result.status:04X} {result.error_comment}")
    except Exception as exc:  # noqa: BLE001 - reported by the test
        errors.append(f"{name}: {exc!r}")


def test_tiny_map_grows_and_every_store_is_indexed(
    appliance_factory: Callable[..., Appliance],
) -> None:
    app = appliance_factory(workers=2, durability="os",
                            config=f"[storage]\nindex_map_size_bytes = {TINY_MAP}\n").start()
    acked: list[str] = []
    errors: list[str] = []
    streams = [threading.Thread(target=_store_stream, args=(app, f"MAP{i}", 150, acked, errors))
               for i in range(2)]
    for t in streams:
        t.start()
    for t in streams:
        t.join(120)
    assert not any(t.is_alive() for t in streams), "stores hung"
    assert not errors, errors[:10]
    assert len(acked) == 300
    records = index_get_many(app.data, acked)
    missing = [uid for uid, rec in records.items() if rec is None]
    assert not missing, f"{len(missing)} acknowledged but not indexed"
    for rec in records.values():
        assert rec is not None and (app.data / rec.relpath).is_file()
    assert app.stats()["instances"] == 300
    log = app.stdout_path.read_text()
    assert '"index.map_grown"' in log
    app.stop()
    assert _map_size(app.data) >= 4 * TINY_MAP  # grew (doubling) at least twice
    cp = db_verify(app.data)
    assert cp.returncode == 0, cp.stdout + cp.stderr


def test_map_cannot_grow_on_a_full_volume_refuses_cleanly(
    appliance_factory: Callable[..., Appliance], tmp_path: Path,
) -> None:
    first = write_ct(tmp_path / "first.dcm", 11, 8, 8)
    later = write_ct(tmp_path / "later.dcm", 12, 8, 8)
    # objects/ and tmp/ live on the roomy disk (symlinks: one filesystem, so the rename stays
    # atomic); the rest of the data directory, the index included, on a tmpfs we fill. So
    # every object file can be written and only the index cannot grow.
    roomy = tmp_path / "roomy"
    with tmpfs_volume(tmp_path / "vol", 8 * 1024 * 1024) as vol:
        data = vol / "data"
        data.mkdir()
        for sub in ("objects", "tmp"):
            (roomy / sub).mkdir(parents=True)
            (data / sub).symlink_to(roomy / sub)
        app = appliance_factory(
            workers=1, data=data,
            config=f"[storage]\nmin_free_bytes = 0\nindex_map_size_bytes = {TINY_MAP}\n")
        with stopped_at_exit(app.start()):
            _full_index_scenario(app, vol, first, later)
        cp = db_verify(app.data)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        assert temp_files(app.data) == []


def _full_index_scenario(app: Appliance, vol: Path, first: Path, later: Path) -> None:
    """Fill the index's volume, store until refused, free it, check, restart, store."""
    with SCU("127.0.0.1", app.port, calling_ae="MAPFULL", called_ae="PACS",
             contexts=CONTEXTS) as scu:
        assert scu.store_file(first).status == 0x0000
    stored_before = objects(app.data)
    ballast = fill(vol, leave_bytes=0)
    acked: list[str] = []
    errors: list[str] = []
    _store_stream(app, "FULL", 80, acked, errors)
    refusals = [e for e in errors if f"0x{OUT_OF_RESOURCES:04X}" in e]
    assert refusals, f"the full index volume refused nothing ({len(acked)} acknowledged)"
    assert len(refusals) == len(errors), errors[:10]
    assert '"index_writer.commit_failed"' in app.stdout_path.read_text()
    wait_until(lambda: readyz(app)[0] == 503, 10, "/readyz to fail on a full volume")
    assert readyz(app)[1]["failed"] == ["disk_space"]
    assert temp_files(app.data) == []
    # What was acknowledged is indexed with its file; the refused objects' files are gone.
    records = index_get_many(app.data, acked)
    assert all(r is not None and (app.data / r.relpath).is_file() for r in records.values())
    assert len(objects(app.data)) == len(stored_before) + len(acked)

    ballast.unlink()  # space returns
    wait_until(lambda: readyz(app)[0] == 200, 10, "/readyz to recover")
    cp = db_verify(app.data)  # the index reads and matches the files
    assert cp.returncode == 0, cp.stdout + cp.stderr
    app.stop()
    app.start()  # and opens again in the writer
    with SCU("127.0.0.1", app.port, calling_ae="MAPFULL", called_ae="PACS",
             contexts=CONTEXTS) as scu:
        assert scu.store_file(later).status == 0x0000
    assert app.stats()["instances"] == 2 + len(acked)
    app.stop()
