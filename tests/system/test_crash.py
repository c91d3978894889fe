"""Crashes and signals under load, against the real multiprocess appliance.

Two pynetdicom associations send a stream of small CT objects while a worker is killed, the
arbiter gets SIGTERM, or every process is killed. The invariant checked each time: every
instance acknowledged with Success is on disk and in the index. Every operation must end with a
status or, where the appliance is going away, a clean failure of the association; no operation
may hang (pynetdicom's DIMSE timeout bounds each one).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from tests.conftest import (
    PYTHON,
    REPO,
    Appliance,
    group_members,
    index_get_many,
    stored_problems,
    temp_files,
    wait_until,
)
from tests.fixtures.make_datasets import Hierarchy, make_ct, new_uid

pytestmark = pytest.mark.system

CALLING_AE = "CRASHTEST"
DIMSE_TIMEOUT_S = 10  # pynetdicom notices an abort only when this expires
REPLACE_TIMEOUT_S = 10.0
GRACEFUL_S = 5.0


def _is_failure(status: int) -> bool:
    """PS3.4 B.2.3 / PS3.7 C: failure statuses (not success, not warning)."""
    if status in (0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF:
        return False  # warnings
    return status != 0x0000


@dataclass
class Outcome:
    ds: Dataset  # only the UIDs and transfer syntax the checks need
    status: int | None  # None: no C-STORE-RSP (timeout, abort, connection lost)
    error: str | None = None


def _sent(uid: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = uid
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


@dataclass
class StoreStream:
    """One association sending C-STOREs until told to stop or it breaks.

    Each association runs pynetdicom in its own process (``python -m tests.system.test_crash
    stream ...``): two pynetdicom associations driven from threads of one process were seen to
    stall each other for a whole DIMSE timeout now and then, against DCMTK's storescp and
    pynetdicom's own SCP alike, which would make these tests fail for reasons of their own.
    The child prints one JSON line per operation; closing its stdin asks it to release.
    """

    app: Appliance
    name: str
    seed: int
    outcomes: list[Outcome] = field(default_factory=list)
    end: str = ""  # how the stream ended: "released", or what broke it
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _proc: subprocess.Popen[str] | None = None
    _reader: threading.Thread | None = None

    def start(self) -> StoreStream:
        self._proc = subprocess.Popen(
            [PYTHON, "-m", "tests.system.test_crash", "stream", str(self.app.port),
             self.app.ae_title, self.name, str(self.seed)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, name=self.name, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            msg = json.loads(line)
            with self._cond:
                if "end" in msg:
                    self.end = msg["end"]
                else:
                    self.outcomes.append(Outcome(_sent(msg["uid"]), msg["status"], msg["error"]))
                self._cond.notify_all()
        rc = self._proc.wait()
        stderr = self._proc.stderr.read() if self._proc.stderr else ""
        with self._cond:
            if not self.end:
                self.end = f"stream process exited {rc} without a verdict: {stderr[-2000:]}"
            self._cond.notify_all()

    def stop(self) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            self._proc.stdin.close()

    def join(self, timeout_s: float) -> None:
        assert self._proc is not None and self._reader is not None
        self._reader.join(timeout_s)
        if self._reader.is_alive():
            self._proc.kill()
            pytest.fail(f"{self.name} hung (pynetdicom timeouts exceeded)")

    def wait_for(
        self, predicate: Callable[[StoreStream], bool], timeout_s: float, what: str
    ) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self) or bool(self.end), timeout_s):
                pytest.fail(f"{self.name}: timed out after {timeout_s} s waiting for {what}")
            if not predicate(self):
                pytest.fail(f"{self.name} ended ({self.end}) before {what}")

    def successes(self) -> list[Dataset]:
        with self._cond:
            return [o.ds for o in self.outcomes if o.status == 0x0000]

    def count(self) -> int:
        with self._cond:
            return len(self.outcomes)


def _stream_main(port: int, called_ae: str, name: str, seed: int) -> int:
    """Child side of StoreStream: C-STORE until stdin closes, one JSON line per operation."""
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()

    def emit(**msg: Any) -> None:
        print(json.dumps(msg), flush=True)

    rng = random.Random(seed)
    ae = AE(ae_title=CALLING_AE)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = DIMSE_TIMEOUT_S
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    if not assoc.is_established:
        emit(end="association not established")
        return 0
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    series = Hierarchy(name, new_uid(rng), new_uid(rng))
    n = 0
    while not stop.is_set():
        n += 1
        ds = make_ct(rng, series, instance_number=n)
        uid = str(ds.SOPInstanceUID)
        try:
            rsp = assoc.send_c_store(ds, msg_id=n % 65536)
        except Exception as exc:
            emit(uid=uid, status=None, error=repr(exc))
            emit(end=f"exception: {exc!r}")
            return 0
        emit(uid=uid, status=int(rsp.Status) if "Status" in rsp else None, error=None)
        if not assoc.is_established:
            emit(end="association ended by the peer")
            return 0
    assoc.release()
    emit(end="released")
    return 0


def start_streams(app: Appliance, n: int = 2, min_successes: int = 10) -> list[StoreStream]:
    streams = [StoreStream(app, f"S{i}", seed=1000 + i).start() for i in range(n)]
    for s in streams:
        s.wait_for(lambda st: len(st.successes()) >= min_successes, 30, "first successes")
    return streams


def stop_streams(streams: list[StoreStream], timeout_s: float = 2 * DIMSE_TIMEOUT_S + 10) -> None:
    for s in streams:
        s.stop()
    for s in streams:
        s.join(timeout_s)


def assert_acknowledged_stored(app: Appliance, streams: list[StoreStream]) -> int:
    acked = [ds for s in streams for ds in s.successes()]
    records = index_get_many(app.data, [str(ds.SOPInstanceUID) for ds in acked])
    problems: list[str] = []
    for ds in acked:
        problems += stored_problems(
            app.data, ds, calling_ae=CALLING_AE, record=records[str(ds.SOPInstanceUID)],
            compare=False,
        )  # fmt: skip
    assert not problems, f"{len(problems)} acknowledged instance(s) lost:\n" + "\n".join(
        problems[:40]
    )
    return len(acked)


def assert_new_association_works(app: Appliance) -> None:
    ae = AE(ae_title=CALLING_AE)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = DIMSE_TIMEOUT_S
    assoc = ae.associate("127.0.0.1", app.port, ae_title=app.ae_title)
    assert assoc.is_established, "new association refused"
    try:
        assert assoc.send_c_echo().Status == 0x0000
        rng = random.Random(99)
        ds = make_ct(rng, Hierarchy("AFTER", new_uid(rng), new_uid(rng)))
        rsp = assoc.send_c_store(ds)
        assert rsp.get("Status") == 0x0000, rsp
    finally:
        assoc.release()
    assert not stored_problems(app.data, ds, calling_ae=CALLING_AE)


def describe(streams: list[StoreStream]) -> str:
    lines = []
    for s in streams:
        statuses: dict[str, int] = {}
        for o in s.outcomes:
            key = "none" if o.status is None else f"0x{o.status:04X}"
            statuses[key] = statuses.get(key, 0) + 1
        lines.append(f"{s.name}: end={s.end!r} statuses={statuses}")
        lines += [f"  error: {o.error}" for o in s.outcomes if o.error]
    return "\n".join(lines)


# --------------------------------------------------------------------------- 1: kill a worker


def _worker(app: Appliance, slot: int) -> dict[str, Any]:
    return next(p for p in app.processes("worker") if p["slot"] == slot)


@pytest.mark.parametrize("workers", [2, 1])  # 1: the worker commits the index itself
def test_kill_worker_under_load(appliance_factory: Callable[..., Appliance],
                                workers: int) -> None:
    appliance = appliance_factory(workers=workers).start()
    streams = start_streams(appliance)
    try:
        victim = _worker(appliance, 0)
        assert victim["state"] == "ready"
        before = [s.count() for s in streams]
        os.kill(victim["pid"], signal.SIGKILL)

        def replaced() -> bool:
            w = _worker(appliance, 0)
            return (
                w["pid"] != victim["pid"]
                and w["generation"] == victim["generation"] + 1
                and w["state"] == "ready"
            )

        wait_until(replaced, REPLACE_TIMEOUT_S, "worker slot 0 to be replaced and ready")
        # Both associations go on after the crash: ten more answered operations each.
        for s, n in zip(streams, before, strict=True):
            s.wait_for(lambda st, n=n: st.count() >= n + 10, 30, "operations after the crash")
    finally:
        stop_streams(streams)
    info = describe(streams)
    assert all(s.end == "released" for s in streams), info
    assert all(o.status is not None for s in streams for o in s.outcomes), info
    failures = [o.status for s in streams for o in s.outcomes if o.status]
    assert all(_is_failure(st) for st in failures), info
    # Only the operation in flight on each association may fail (pynetdicom has one at a time).
    for s in streams:
        assert sum(1 for o in s.outcomes if o.status) <= 1, info
    assert_acknowledged_stored(appliance, streams)
    assert_new_association_works(appliance)
    assert not [w for w in appliance.processes("worker") if w["state"] != "ready"]


# --------------------------------------------------------------------------- 2: SIGTERM


def test_sigterm_during_ingest_drains(appliance_factory: Callable[..., Appliance]) -> None:
    app = appliance_factory(config=f"[processes]\ngraceful_timeout_s = {GRACEFUL_S}\n").start()
    streams = start_streams(app)
    try:
        start = time.monotonic()
        app.signal(signal.SIGTERM)
        rc = app.wait_exit(GRACEFUL_S + 15)
        elapsed = time.monotonic() - start
    finally:
        stop_streams(streams)
    assert rc == 0, f"exit code {rc}\n{app.logs()}"
    assert elapsed <= GRACEFUL_S + 5, f"took {elapsed:.1f} s to stop (grace {GRACEFUL_S} s)"
    info = describe(streams)
    print(info)
    assert all(s.end for s in streams), info
    assert_acknowledged_stored(app, streams)
    assert not temp_files(app.data), temp_files(app.data)


# --------------------------------------------------------------------------- 3: kill -9 all


def _alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (a zombie holds no resources but a pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize(("durability", "workers"), [("batch", 2), ("os", 2), ("batch", 1)])
def test_kill_everything_then_restart(
    appliance_factory: Callable[..., Appliance], durability: str, workers: int
) -> None:
    app = appliance_factory(durability=durability, workers=workers).start()
    streams = start_streams(app, min_successes=20)
    try:
        status = app.status()
        pids = [int(status["arbiter_pid"])] + [int(p["pid"]) for p in status["processes"]]
        assert app.proc is not None and pids[0] == app.proc.pid
        for pid in pids:  # the arbiter first, so that it cannot respawn what follows
            os.kill(pid, signal.SIGKILL)
        assert app.wait_exit(10) == -signal.SIGKILL
        wait_until(lambda: not any(_alive(p) for p in pids), 10, "all killed processes to go")
        wait_until(
            lambda: not group_members(pids[0]), 10, "no appliance process left in its group"
        )
    finally:
        stop_streams(streams)
    acked_before = sum(len(s.successes()) for s in streams)
    print(describe(streams))
    assert acked_before >= 40

    app.start()  # same data dir, new ports
    assert_acknowledged_stored(app, streams)
    stats = app.stats()  # the LMDB environment opens and reads fine
    assert stats["instances"] >= acked_before
    assert_new_association_works(app)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "stream":
        sys.exit(_stream_main(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])))
    sys.exit("usage: python -m tests.system.test_crash stream PORT CALLED_AE NAME SEED")
