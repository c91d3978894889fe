"""`pacs ingest`: headless bulk ingest through the same workers and index writer as C-STORE.

THEORY OF OPERATION
-------------------
The driver is a small arbiter without a network: it forks N workers (and an index writer,
unless they commit their own records: Config.inline_index_for) wired with the same
WorkerChannels as `pacs serve`, then feeds each worker INGEST records
(one file path each, at most ``_WINDOW`` outstanding per worker) and tallies the INGESTED
outcomes. Workers run the exact store pipeline of C-STORE (spool, parse, validate, place,
index, durable commit), so an ingested object is indistinguishable from a received one.

It is safe to run while `pacs serve` uses the same data directory: LMDB serialises the two
LMDB writers' transactions, and the duplicate check happens inside the write transaction,
so a SOP Instance UID is never indexed twice. Re-running is idempotent (duplicates are kept).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from appliance.config import Config
from appliance.datadir import ensure_index, prepare_data_dir
from appliance.ipc.channels import WorkerChannels
from appliance.ipc.kinds import Flag, Kind
from appliance.ipc.ring import Ring
from metrics.logging import configure as configure_logging

_WINDOW = 16
_LOG = {"level": "warning"}  # set once by run_ingest, read by the forked children


@dataclass
class Summary:
    stored: int = 0
    duplicates: int = 0
    not_dicom: int = 0
    skipped: int = 0  # DICOM but not a storable instance (DICOMDIR)
    failed: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.stored + self.duplicates + self.not_dicom + self.skipped + self.failed

    def add(self, path: str, outcome: dict[str, object]) -> None:
        kind = str(outcome.get("outcome", "failed"))
        if kind in ("stored", "overwritten"):
            self.stored += 1
        elif kind in ("duplicate", "duplicate_kept", "rejected"):
            self.duplicates += 1
        elif kind == "not_dicom":
            self.not_dicom += 1
        elif kind == "skipped":
            self.skipped += 1
        else:
            self.failed += 1
            self.failures.append({"path": path, "reason": str(outcome.get("reason", kind))})


def iter_files(paths: list[Path]) -> Iterator[Path]:
    for p in paths:
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs.sort()
                for name in sorted(files):
                    yield Path(root) / name
        elif p.exists():
            yield p


def _fork(target: object, *args: object) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        configure_logging(_LOG["level"], role="ingest", stream=sys.stderr)
        code = target(*args)  # type: ignore[operator]
    finally:
        os._exit(code)


def _writer_child(cfg: Config, slots: list[tuple[int, int, tuple[int, int, int],
                                                 tuple[int, int, int]]]) -> int:
    from workers.indexer import run_index_writer

    return run_index_writer(cfg, slots, None, lambda _n: None, lambda: None)


def _worker_child(cfg: Config, ch: WorkerChannels, inline_index: bool) -> int:
    from workers.process import WorkerHooks, run_worker

    return run_worker(cfg, ch, WorkerHooks(ready=lambda: None, heartbeat=lambda _n: None),
                      inline_index)


class _Progress:
    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.total = total
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, s: Summary, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < 0.2):
            return
        self.last = now
        rate = s.done / max(now - self.start, 1e-6)
        width = 30
        filled = int(width * s.done / self.total) if self.total else width
        bar = "#" * filled + "." * (width - filled)
        sys.stderr.write(f"\r[{bar}] {s.done}/{self.total} {rate:,.0f} files/s "
                         f"stored={s.stored} dup={s.duplicates} failed={s.failed}")
        if force:
            sys.stderr.write("\n")
        sys.stderr.flush()


def run_ingest(cfg: Config, paths: list[Path], *, as_json: bool, progress: bool,
               log_level: str = "warning") -> int:
    """Logs go to stderr (stdout carries the summary); quiet unless --log-level says so."""
    _LOG["level"] = log_level
    configure_logging(log_level, role="ingest", stream=sys.stderr)
    data = Path(cfg.storage.data_dir)
    prepare_data_dir(data)
    ensure_index(cfg)
    files = [str(p) for p in iter_files(paths)]
    # No acceptor here, and the index writer is light: one worker per CPU by default.
    wanted = cfg.processes.workers or len(os.sched_getaffinity(0))
    n = max(1, min(wanted, len(files) or 1))
    chans: list[WorkerChannels] = []
    rings: list[Ring] = []
    for i in range(n):
        ch, rs = WorkerChannels.create(i, 1, 4 * 1024 * 1024, 4 * 1024 * 1024)
        chans.append(ch)
        rings += rs
    # With inline indexing the workers commit their own records: no index writer.
    inline = cfg.inline_index_for(len(chans))
    writer = None if inline else _fork(
        _writer_child, cfg, [(c.slot, 1, c.index, c.acks) for c in chans])
    workers = [_fork(_worker_child, cfg, c, inline) for c in chans]
    jobs = [Ring.attach(c.jobs) for c in chans]
    replies = [Ring.attach(c.replies) for c in chans]
    for r in rings:
        r.close()
    summary = Summary()
    bar = _Progress(progress and not as_json, len(files))
    alive = [True] * len(jobs)  # a reaped worker's pid may already belong to someone else
    try:
        _drive(files, jobs, replies, workers, alive, summary, bar)
    finally:
        live = [pid for pid, ok in zip(workers, alive, strict=True) if ok]
        for pid in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in live:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        if writer is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(writer, signal.SIGTERM)
            os.waitpid(writer, 0)
    bar.update(summary, force=True)
    out = {"stored": summary.stored, "duplicates": summary.duplicates,
           "not_dicom": summary.not_dicom, "skipped": summary.skipped, "failed": summary.failed,
           "failures": summary.failures}
    if as_json:
        print(json.dumps(out))
    else:
        print(f"stored {summary.stored}, duplicates {summary.duplicates}, "
              f"not DICOM {summary.not_dicom}, skipped {summary.skipped}, "
              f"failed {summary.failed}")
        for f in summary.failures[:50]:
            print(f"  failed: {f['path']}: {f['reason']}")
    return 1 if summary.failed else 0


class _Feeder:
    """Hands files to workers, at most ``_WINDOW`` outstanding each, and tallies outcomes."""

    def __init__(self, files: list[str], jobs: list[Ring], replies: list[Ring],
                 summary: Summary, alive: list[bool]) -> None:
        self.files = files
        self.jobs = jobs
        self.replies = replies
        self.summary = summary
        self.outstanding: list[dict[int, str]] = [{} for _ in jobs]
        self.alive = alive
        self.next_file = 0
        self.job_id = 0

    def busy(self) -> bool:
        return self.next_file < len(self.files) or any(self.outstanding)

    def feed(self) -> None:
        for w, ring in enumerate(self.jobs):
            if not self.alive[w]:
                continue
            put = False
            while self.next_file < len(self.files) and len(self.outstanding[w]) < _WINDOW:
                path = self.files[self.next_file]
                if not ring.try_put(Kind.INGEST, 0, self.job_id + 1, Flag.NONE, 0,
                                    path.encode(), notify=False):
                    break
                self.job_id += 1
                self.outstanding[w][self.job_id] = path
                self.next_file += 1
                put = True
            if put:
                ring.notify()

    def collect(self) -> None:
        for w, ring in enumerate(self.replies):
            ring.drain_doorbell()
            while (got := ring.get_copy()) is not None:
                hdr, payload = got
                if hdr.kind == Kind.INGESTED:
                    path = self.outstanding[w].pop(hdr.msg_id, "?")
                    self.summary.add(path, msgpack.unpackb(payload))

    def fail_rest(self, reason: str) -> None:
        for path in self.files[self.next_file:]:
            self.summary.add(path, {"outcome": "failed", "reason": reason})
        self.next_file = len(self.files)


def _drive(files: list[str], jobs: list[Ring], replies: list[Ring], workers: list[int],
           alive: list[bool], summary: Summary, bar: _Progress) -> None:
    feeder = _Feeder(files, jobs, replies, summary, alive)
    poller = select.poll()
    for r in replies:
        poller.register(r.data_fd, select.POLLIN)
    while feeder.busy():
        feeder.feed()
        poller.poll(1000)
        feeder.collect()
        _reap_dead(workers, feeder.alive, feeder.outstanding, summary)
        if not any(feeder.alive):
            feeder.fail_rest("no ingest worker left")
            return
        bar.update(summary)


def _reap_dead(workers: list[int], alive: list[bool], outstanding: list[dict[int, str]],
               summary: Summary) -> None:
    """A worker that died fails the files it held (never a silent hang); the rest go on."""
    for w, pid in enumerate(workers):
        if not alive[w]:
            continue
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 0
        if done == 0:
            continue
        alive[w] = False
        for path in outstanding[w].values():
            summary.add(path, {"outcome": "failed",
                               "reason": f"ingest worker died (wait status {status})"})
        outstanding[w].clear()
