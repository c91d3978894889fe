"""Headless ingest beside a running appliance, ingest worker faults, durability modes, Ctrl-C.

Real processes throughout: `python -m appliance serve` and `python -m appliance ingest`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from appliance.scu import SCU, ProposedContext
from tests.conftest import Appliance, index_get_many, index_stats, temp_files
from tests.fixtures.make_datasets import write_ct_corpus

pytestmark = pytest.mark.system
PYTHON = sys.executable
CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _ingest(data: Path, *paths: Path, workers: int = 2) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, "-m", "appliance", "ingest", "--data", str(data), "--workers", str(workers),
         "--json", "--no-progress", *map(str, paths)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _summary(proc: subprocess.Popen[str], timeout_s: float = 120) -> tuple[int, dict[str, object]]:
    out, err = proc.communicate(timeout=timeout_s)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert lines, f"no JSON summary; stderr:\n{err[-2000:]}"
    return proc.returncode, json.loads(lines[-1])


def _store_all(app: Appliance, files: list[Path]) -> list[str]:
    """C-STORE every file over one association with our SCU; return the acknowledged UIDs."""
    acked = []
    with SCU("127.0.0.1", app.port, calling_ae="SYSTEST", called_ae=app.ae_title,
             contexts=[ProposedContext(CT, (EXPLICIT_LE,))]) as scu:
        for f in files:
            result = scu.store_file(f)
            if result.status == 0:
                acked.append(str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID))
    return acked


def test_ingest_while_serving_same_data_dir(appliance: Appliance, tmp_path: Path) -> None:
    # Two overlapping halves: the network gets A+B, ingest gets B+C, at the same time.
    files = write_ct_corpus(tmp_path / "corpus", seed=11, patients=2, studies_per_patient=2,
                            series_per_study=3, instances_per_series=10)
    a, b, c = files[:40], files[40:80], files[80:]
    (tmp_path / "bc").mkdir()
    for f in b + c:
        os.link(f, tmp_path / "bc" / f.name)
    acked: list[str] = []
    sender = threading.Thread(target=lambda: acked.extend(_store_all(appliance, a + b)))
    sender.start()
    proc = _ingest(appliance.data, tmp_path / "bc")
    sender.join(timeout=120)
    rc, summary = _summary(proc)
    assert rc == 0, summary
    assert len(acked) == len(a) + len(b)
    assert summary["stored"] + summary["duplicates"] == len(b) + len(c)  # type: ignore[operator]
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    records = index_get_many(appliance.data, uids)
    missing = [u for u, r in records.items() if r is None]
    assert not missing
    # exactly one record and one file per instance, and each record names a file of its size
    on_disk = sorted((appliance.data / "objects").rglob("*.dcm"))
    assert len(on_disk) == len(files) == index_stats(appliance.data)["instances"]
    for rec in records.values():
        assert (appliance.data / rec.relpath).stat().st_size == rec.size_bytes
    assert temp_files(appliance.data) == []


def test_ingest_survives_a_killed_worker(tmp_path: Path) -> None:
    files = write_ct_corpus(tmp_path / "corpus", seed=12, patients=3, studies_per_patient=2,
                            series_per_study=5, instances_per_series=20, rows=128, cols=128)
    proc = _ingest(tmp_path / "data", tmp_path / "corpus", workers=2)
    # find one of the ingest process's worker children and kill it mid-run
    victim = None
    deadline = time.monotonic() + 30
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        pids = [int(p) for p in kids.read_text().split()] if kids.exists() else []
        if len(pids) >= 3:  # index writer + 2 workers
            victim = pids[-1]
        else:
            time.sleep(0.02)
    assert victim is not None, "ingest finished before a worker could be killed"
    os.kill(victim, signal.SIGKILL)
    rc, summary = _summary(proc, timeout_s=120)  # must end: no hang on the dead worker
    total = sum(int(summary[k]) for k in ("stored", "duplicates", "not_dicom", "skipped",
                                            "failed"))  # type: ignore[call-overload]
    assert total == len(files)
    assert (rc == 1) == bool(summary["failed"]), (rc, summary)
    # a re-run completes the set: idempotent, nothing lost
    rc2, again = _summary(_ingest(tmp_path / "data", tmp_path / "corpus"))
    assert rc2 == 0, again
    assert index_stats(tmp_path / "data")["instances"] == len(files)


@pytest.mark.parametrize("workers", [2, 1])
@pytest.mark.parametrize("mode", ["fsync", "batch", "os"])
def test_each_durability_mode_stores_and_indexes(
    appliance_factory: Callable[..., Appliance], tmp_path: Path, mode: str, workers: int
) -> None:
    """With one worker, or in `os` mode, the workers commit their own index records
    (workers/inline_index.py); with two in `batch` or `fsync` mode the index writer does."""
    app = appliance_factory(durability=mode, workers=workers).start()
    files = write_ct_corpus(tmp_path / "corpus", seed=13, patients=1, studies_per_patient=1,
                            series_per_study=2, instances_per_series=10)
    acked = _store_all(app, files)
    assert len(acked) == len(files)
    records = index_get_many(app.data, acked)
    assert all(r is not None for r in records.values())
    app.stop()  # the children's log lines are all out once they have exited
    logged = app.stdout_path.read_text() + app.stderr_path.read_text()
    started = [line for line in logged.splitlines() if "worker.started" in line]
    assert len(started) == workers
    inline = workers == 1 or mode == "os"
    assert all(f'"inline_index": {"true" if inline else "false"}' in line
               for line in started), started


def test_sigint_to_the_process_group_stops_cleanly(
    appliance_factory: Callable[..., Appliance], tmp_path: Path
) -> None:
    # What Ctrl-C in `make run` does: SIGINT to every process of the foreground group.
    app = appliance_factory().start()
    assert app.proc is not None
    os.killpg(os.getpgid(app.proc.pid), signal.SIGINT)
    assert app.wait_exit(30) == 0
