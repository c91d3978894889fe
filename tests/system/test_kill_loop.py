"""kill -9 in a loop under load, with a checker of every acknowledged SOP Instance UID.

Three clients (our SCU, appliance/scu.py, one thread each) store small CT objects without
pause, reconnecting whenever the appliance goes away, and record every SOP Instance UID
answered with Success. Meanwhile the test SIGKILLs a random process of a random role, at
least ``KILLS`` times:

  worker        the arbiter replaces it (same slot, next generation) while the others go on;
  acceptor,     the arbiter halts the appliance (exit 1): their ring positions cannot be
  index writer  recovered in place (appliance/arbiter.py), and systemd restarts the whole;
  arbiter       the orphans notice (getppid) and exit, systemd's KillMode=mixed SIGKILLs any
                straggler, and systemd restarts the whole.

The test plays systemd (Restart=on-failure): whenever the arbiter has exited it restarts the
appliance on the same data directory. At the end, after a clean stop: every acknowledged UID
is in the index, its file exists with the indexed size and parses with the same UID; ``pacs
db verify`` finds no record without its file and no size mismatch (files written but never
indexed may remain: they were never acknowledged, and ``--repair`` moves them aside); no temp
file remains.

Durability ``os``: a kill -9 is our crash, not a power loss, and the page cache survives it,
so ``os`` is the weakest mode that must pass; ``batch`` and ``fsync`` only add flushes to the
same ordering (README "Durability modes").
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID

from appliance.scu import SCU, ProposedContext, SCUError
from tests.conftest import (
    PYTHON,
    REPO,
    Appliance,
    index_get_many,
    run_tool,
    stored_problems,
    temp_files,
    wait_until,
)
from tests.fixtures.make_datasets import Hierarchy, make_ct, new_uid

pytestmark = pytest.mark.system

KILLS = 20
CLIENTS = 3
ROLES = ("arbiter", "acceptor", "worker", "index_writer")
CALLING_AE = "KILLLOOP"
CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
CONFIG = """\
[processes]
graceful_timeout_s = 1.0
[storage]
min_free_bytes = 0
"""


@dataclass
class Client:
    """One SCU storing until told to stop; reconnects to wherever the appliance listens."""

    app: Appliance
    name: str
    seed: int
    stop: threading.Event
    acked: list[str] = field(default_factory=list)
    failed: int = 0  # operations answered with a failure status
    broken: int = 0  # associations that ended in an error (the appliance went away)
    thread: threading.Thread | None = None

    def start(self) -> Client:
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self.thread.start()
        return self

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
                        uid, body = _dataset(rng, series, n)
                        result = scu.store(body, CT, uid, EXPLICIT_VR_LE)
                        if result.status == 0x0000:
                            self.acked.append(uid)
                        else:
                            self.failed += 1
            except (SCUError, OSError):
                self.broken += 1
                time.sleep(0.1)  # the appliance is going away or coming back


def _dataset(rng: random.Random, series: Hierarchy, n: int) -> tuple[str, bytes]:
    ds = make_ct(rng, series, rows=16, cols=16, instance_number=n)
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds)
    return str(ds.SOPInstanceUID), buf.getvalue()


# --------------------------------------------------------------------------- systemd's part


def _group_alive(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def _restart_if_down(app: Appliance) -> bool:
    """What systemd does with Restart=on-failure and KillMode=mixed: once the main process
    has exited, SIGKILL what is left of the unit and start it again on the same data."""
    assert app.proc is not None
    if app.proc.poll() is None:
        return False
    pgid = app.proc.pid
    with contextlib.suppress(AssertionError, pytest.fail.Exception):
        wait_until(lambda: not _group_alive(pgid), 1, "orphans to notice and exit")
    for pid in _group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not _group_alive(pgid), 10, "the old process group to be gone")
    app.start()
    return True


def _live_pid(app: Appliance, role: str, rng: random.Random) -> tuple[int, int]:
    """(pid, slot) of a running process of ``role`` (a random worker)."""
    if role == "arbiter":
        assert app.proc is not None
        return app.proc.pid, 0
    procs = [p for p in app.processes(role) if p["state"] == "ready"]
    assert procs, f"no ready {role}: {app.processes()}"
    p = rng.choice(procs)
    return int(p["pid"]), int(p["slot"])


def _kill(app: Appliance, role: str, rng: random.Random) -> str:
    """SIGKILL one process of ``role`` and wait for the consequence; returns what happened."""
    pid, slot = _live_pid(app, role, rng)
    os.kill(pid, signal.SIGKILL)
    if role == "worker":
        def replaced() -> bool:
            now = [p for p in app.processes("worker") if p["slot"] == slot]
            return bool(now) and now[0]["pid"] != pid and now[0]["state"] == "ready"

        wait_until(replaced, 15, f"worker slot {slot} to be replaced by the arbiter")
        assert app.running(), "the arbiter must survive a worker's death"
        return "worker replaced"
    rc = app.wait_exit(15)
    expected = -signal.SIGKILL if role == "arbiter" else 1
    assert rc == expected, f"killing the {role}: arbiter exit {rc}, expected {expected}"
    _restart_if_down(app)
    return f"{role} killed, appliance restarted"


# --------------------------------------------------------------------------- the checker


def _acked_problems(app: Appliance, acked: list[str]) -> list[str]:
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


def _verify(app: Appliance, *extra: str) -> tuple[int, dict[str, Any]]:
    cp = run_tool([PYTHON, "-m", "appliance", "db", "verify", "--data", str(app.data),
                   "--json", *extra], timeout_s=120, cwd=REPO)
    start = cp.stdout.find("{")
    assert start >= 0, cp.stdout + cp.stderr
    report: dict[str, Any] = json.loads(cp.stdout[start:])
    return cp.returncode, report


# --------------------------------------------------------------------------- the test


def test_random_kill9_loop_loses_nothing_acknowledged(
    appliance_factory: Callable[..., Appliance],
) -> None:
    rng = random.Random(int(os.environ.get("PACS_KILL_SEED", "20261128")))
    app = appliance_factory(workers=2, durability="os", config=CONFIG).start()
    stop = threading.Event()
    clients = [Client(app, f"K{i}", 700 + i, stop).start() for i in range(CLIENTS)]
    history: list[str] = []
    # Every role at least once, in random order, then random roles.
    plan = rng.sample(ROLES, len(ROLES)) + [rng.choice(ROLES) for _ in range(KILLS - 4)]
    started = time.monotonic()
    try:
        for k, role in enumerate(plan):
            _restart_if_down(app)
            before = sum(len(c.acked) for c in clients)
            # Let load build up: a few acknowledgements since the last kill (bounded wait).
            deadline = time.monotonic() + 3.0
            while sum(len(c.acked) for c in clients) < before + 5:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.3))
            t0 = time.monotonic()
            history.append(f"#{k} {_kill(app, role, rng)} ({time.monotonic() - t0:.1f} s)")
        _restart_if_down(app)
        # After the last kill the appliance stores again.
        before = sum(len(c.acked) for c in clients)
        wait_until(lambda: sum(len(c.acked) for c in clients) >= before + 20, 20,
                   "stores to succeed after the last kill")
    finally:
        stop.set()
        for c in clients:
            assert c.thread is not None
            c.thread.join(30)
    elapsed = time.monotonic() - started
    acked = [uid for c in clients for uid in c.acked]
    summary = (f"{len(acked)} acknowledged, {sum(c.failed for c in clients)} refused, "
               f"{sum(c.broken for c in clients)} broken associations in {elapsed:.1f} s; "
               + "; ".join(history))
    print(summary)
    assert not any(c.thread is not None and c.thread.is_alive() for c in clients), summary
    assert len(history) >= KILLS
    assert len(acked) == len(set(acked))

    app.stop()  # a clean stop: exit 0
    assert temp_files(app.data) == [], temp_files(app.data)
    problems = _acked_problems(app, acked)
    assert not problems, f"{len(problems)} acknowledged instance(s) lost:\n" + "\n".join(
        problems[:40]) + "\n" + summary
    rc, report = _verify(app)
    assert report["missing"] == [] and report["wrong_size"] == [], report  # nothing half-indexed
    assert report["instances"] >= len(acked)
    print(f"after the loop: {report['instances']} indexed, {report['files']} files, "
          f"{len(report['unindexed'])} never indexed")
    if rc != 0:  # only never-acknowledged files written before their index commit
        assert report["unindexed"], report
        rc, report = _verify(app, "--repair")
        assert rc == 0, report
    rc, report = _verify(app)
    assert rc == 0, report
