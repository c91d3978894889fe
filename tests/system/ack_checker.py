"""Storers that record what was acknowledged, and the checker that compares it with disk and
index; shared by the kill -9 tests (test_kill_loop.py, test_core_restart.py).

A ``Storer`` is one thread with our SCU (appliance/scu.py) storing small CT objects without
pause, reconnecting whenever its association breaks, and recording every SOP Instance UID
answered with Success. ``acked_problems`` then checks each recorded UID: in the index, its
file on disk with the indexed size, parsing with the same UID. ``db_verify`` runs ``pacs db
verify --json``.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID

from appliance.scu import SCU, ProposedContext, SCUError
from tests.conftest import PYTHON, REPO, Appliance, index_get_many, run_tool, stored_problems
from tests.fixtures.make_datasets import Hierarchy, make_ct, new_uid

CALLING_AE = "KILLLOOP"
CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"


@dataclass
class Storer:
    """One SCU storing until told to stop; reconnects to wherever the appliance listens."""

    app: Appliance
    name: str
    seed: int
    stop: threading.Event
    acked: list[str] = field(default_factory=list)
    failed: int = 0  # operations answered with a failure status
    broken: int = 0  # associations that ended in an error (a process went away)
    thread: threading.Thread | None = None

    def start(self) -> Storer:
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self.thread.start()
        return self

    def join(self, timeout_s: float = 30.0) -> bool:
        """True once the thread has ended."""
        assert self.thread is not None
        self.thread.join(timeout_s)
        return not self.thread.is_alive()

    def _run(self) -> None:
        rng = random.Random(self.seed)
        series = Hierarchy(self.name, new_uid(rng), new_uid(rng))
        n = 0
        while not self.stop.is_set():
            try:
                with SCU("127.0.0.1", self.app.port, calling_ae=CALLING_AE,
                         called_ae=self.app.ae_title, timeout_s=5.0,
                         contexts=[ProposedContext(CT, (EXPLICIT_VR_LE,))]) as scu:
                    while not self.stop.is_set():
                        n += 1
                        uid, body = ct_dataset(rng, series, n)
                        result = scu.store(body, CT, uid, EXPLICIT_VR_LE)
                        if result.status == 0x0000:
                            self.acked.append(uid)
                        else:
                            self.failed += 1
            except (SCUError, OSError):
                self.broken += 1
                time.sleep(0.1)  # the appliance is going away or coming back


def ct_dataset(rng: random.Random, series: Hierarchy, n: int) -> tuple[str, bytes]:
    """(SOP Instance UID, Explicit VR Little Endian data set) of a 16x16 CT image."""
    ds = make_ct(rng, series, rows=16, cols=16, instance_number=n)
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds)
    return str(ds.SOPInstanceUID), buf.getvalue()


def acked_count(storers: list[Storer]) -> int:
    return sum(len(s.acked) for s in storers)


def acked_problems(app: Appliance, acked: list[str]) -> list[str]:
    """Every acknowledged UID: indexed, its file present with the indexed size, same UID."""
    records = index_get_many(app.data, acked)
    problems: list[str] = []
    for uid in acked:
        sent = Dataset()
        sent.SOPClassUID, sent.SOPInstanceUID = UID(CT), UID(uid)
        sent.file_meta = FileMetaDataset()
        sent.file_meta.TransferSyntaxUID = UID(EXPLICIT_VR_LE)
        problems += stored_problems(app.data, sent, calling_ae=CALLING_AE,
                                    record=records[uid], compare=False)
        rec = records[uid]
        if rec is not None and (app.data / rec.relpath).is_file():
            parsed = dcmread(app.data / rec.relpath, stop_before_pixels=True)
            if str(parsed.SOPInstanceUID) != uid:
                problems.append(f"{uid}: the file holds {parsed.SOPInstanceUID}")
    return problems


def db_verify(app: Appliance, *extra: str) -> tuple[int, dict[str, Any]]:
    """(exit code, JSON report) of ``pacs db verify --data <app.data> --json [extra]``."""
    cp = run_tool([PYTHON, "-m", "appliance", "db", "verify", "--data", str(app.data),
                   "--json", *extra], timeout_s=120, cwd=REPO)
    start = cp.stdout.find("{")
    assert start >= 0, cp.stdout + cp.stderr
    report: dict[str, Any] = json.loads(cp.stdout[start:])
    return cp.returncode, report


def assert_verify_clean(app: Appliance, acked: int) -> dict[str, Any]:
    """``pacs db verify`` on a stopped appliance: no record without its file, no size
    mismatch. Files renamed but never indexed may remain (never acknowledged: the kill came
    between rename and commit); verify lists them and exits 1, ``--repair`` moves them to
    orphans/, and verify is clean after that."""
    rc, report = db_verify(app)
    assert report["missing"] == [] and report["wrong_size"] == [], report
    assert report["instances"] >= acked, report
    if rc != 0:
        assert report["unindexed"], report
        rc, repaired = db_verify(app, "--repair")
        assert rc == 0, repaired
    rc, clean = db_verify(app)
    assert rc == 0, clean
    return report
