"""The side-by-side ingest benchmark: every receiver, the same corpora, the same client.

THEORY OF OPERATION
-------------------
One repetition = for each corpus, for each association count, every receiver once, in a
fixed order (A B C ... A B C ...): a slow minute on a shared machine then hurts every
receiver of that round rather than one receiver's every run. Before the ingest runs of a
repetition, each receiver's C-ECHO rates are measured; before the large corpus, the disk's
sequential write bandwidth (``dd``).

Every run starts its receiver on an empty store in a fresh folder, waits until a C-ECHO
succeeds, samples the receiver's process tree (``procstat.Sampler``: CPU over the transfer
only, peak RSS/PSS), sends the corpus with ``storescu`` (1 association = the whole corpus,
N = N processes over the corpus's folders), lets the tree settle, counts what arrived *from
the receiver* (its index or its files) and stops it. A run is ``ok`` only
if every instance arrived and every storescu exited 0 without errors; a run that is not ok
keeps its numbers in the JSON but stays out of the medians.

Stores are deleted at the end of the session, not after each run: on this kind of VM a run
right after a deletion gets the freed page-cache pages warm (new pages cost ≈1 ms of kernel
CPU per 0.5 MB, recycled ones a fraction of that) and, on ext4 without a journal, pays for
inode allocation skipping the recently deleted inodes; whichever receiver happened to follow
a big run would win. So every run writes to fresh inodes. For the same reason each run
starts ``Plan.settle_s`` after the previous receiver stopped: the memory a receiver frees on
exit (the appliance's rings: hundreds of MB) stays warm for a few seconds (≈6–10 s measured:
page-cache writes of 0.5 MB cost ≈0.13 ms of kernel CPU on those pages, ≈0.7–1.4 ms on cold
ones) and would otherwise speed up whichever receiver comes next. When free space falls
under ``Plan.reserve_bytes`` the finished stores are deleted and the session pauses
``Plan.delete_settle_s``, saying so.

A receiver that cannot run here (not installed, no permission) is listed with the reason
and skipped; one that fails to start twice is dropped for the rest of the session, saying so.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import client
from bench.corpora import PARTS, Corpus
from bench.machine import disk_write_mb_s
from bench.procstat import Sampler
from bench.receivers import Receiver, ReceiverError
from bench.receivers.appliance import ApplianceReceiver

SCALING_CORPORA = ("ct", "small")
_MAX_START_FAILURES = 2
_MIB = 1024 * 1024

Log = Callable[[str], None]


@dataclass(slots=True)
class Plan:
    corpora: list[Corpus]
    assocs: list[int]
    receivers: list[Receiver]
    scaling: list[Receiver]
    reps: int
    workdir: Path
    echo_s: float = 2.0  # per echo measurement; 0 = no echo runs
    dd_mb: int = 1024  # 0 = no dd
    keep_stores: bool = False
    reserve_bytes: int = 8 * 1024**3  # free space under which finished stores are deleted
    delete_settle_s: float = 70.0  # pause after such a deletion (ext4 "recently deleted": 60 s)
    settle_s: float = 12.0  # between a receiver's stop and the next start (freed pages cool)
    skipped: dict[str, str] = field(default_factory=dict)


def _folders(corpus: Corpus, assocs: int) -> list[list[Path]]:
    """The folders each of ``assocs`` storescu processes sends (none gets only empty ones:
    a corpus of fewer objects than folders runs fewer associations)."""
    if assocs == 1:
        return [[corpus.root]]
    groups = [list(corpus.parts[i::assocs]) for i in range(assocs)]
    return [g for g in groups if any(any(p.iterdir()) for p in g)]


class Runner:
    """Runs a ``Plan``; ``runs`` and ``disk`` fill up as it goes (see the module docstring)."""

    def __init__(self, plan: Plan, log: Log = print) -> None:
        self.plan = plan
        self.log = log
        self.runs: list[dict[str, Any]] = []
        self.disk: list[dict[str, Any]] = []
        self.start_failures: dict[str, int] = {}
        self._seq = 0
        self._finished: list[Path] = []  # stores to delete (see the module docstring)
        self._stopped_at = -1e9  # when the last receiver stopped

    def run(self) -> None:
        try:
            self._run()
        finally:
            self._delete_finished()

    def _run(self) -> None:
        plan = self.plan
        for rep in range(plan.reps):
            self.log(f"== repetition {rep + 1}/{plan.reps}")
            if plan.echo_s > 0:
                for rcv in self._live(plan.receivers):
                    self.runs.append(self.echo_run(rcv, rep))
            for corpus in plan.corpora:
                if corpus.name == "large" and plan.dd_mb > 0:
                    self.disk.append(self.dd_run(rep))
                # A corpus of fewer objects than associations would repeat a smaller run.
                for assocs in [a for a in plan.assocs
                               if a <= corpus.files or a == min(plan.assocs)]:
                    receivers = list(plan.receivers)
                    if corpus.name in SCALING_CORPORA and assocs == max(plan.assocs):
                        receivers += plan.scaling
                    for rcv in self._live(receivers):
                        self.runs.append(self.ingest_run(rcv, corpus, assocs, rep))

    def _live(self, receivers: list[Receiver]) -> list[Receiver]:
        return [r for r in receivers if r.name not in self.plan.skipped]

    # -- one run

    def _run_dir(self, label: str) -> Path:
        self._seq += 1
        path = self.plan.workdir / "runs" / f"{self._seq:04d}-{label}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def _start(self, rcv: Receiver, run_dir: Path, rec: dict[str, Any]) -> bool:
        wait = self._stopped_at + self.plan.settle_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        try:
            rcv.start(run_dir)
            return True
        except (ReceiverError, OSError) as exc:
            rec["ok"], rec["errors"] = False, [f"start: {exc}"]
            n = self.start_failures[rcv.name] = self.start_failures.get(rcv.name, 0) + 1
            if n >= _MAX_START_FAILURES:
                self.plan.skipped[rcv.name] = f"failed to start {n} times; last: {exc}"
            self.log(f"   {rcv.name}: could not start: {exc}")
            return False

    def _finish(self, rcv: Receiver, run_dir: Path, rec: dict[str, Any]) -> None:
        rec["receiver_exit"] = rcv.stop()
        self._stopped_at = time.monotonic()
        if self.plan.keep_stores:
            return
        self._finished.append(run_dir)
        if shutil.disk_usage(self.plan.workdir).free < self.plan.reserve_bytes:
            plan = self.plan
            self.log(f"   free space under {plan.reserve_bytes / 1024**3:.0f} GiB: deleting "
                     f"{len(self._finished)} finished stores, then {plan.delete_settle_s:.0f} s "
                     "pause so the next run starts on settled pages and inodes")
            self._delete_finished()
            time.sleep(self.plan.delete_settle_s)

    def _delete_finished(self) -> None:
        for path in self._finished:
            shutil.rmtree(path, ignore_errors=True)
        self._finished.clear()

    def ingest_run(self, rcv: Receiver, corpus: Corpus, assocs: int, rep: int) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "kind": "ingest", "receiver": rcv.name, "corpus": corpus.name, "assocs": assocs,
            "rep": rep, "expected": corpus.files, "bytes": corpus.bytes, "ok": False,
            "errors": [],
        }  # fmt: skip
        run_dir = self._run_dir(f"{rcv.name}-{corpus.name}-{assocs}")
        if not self._start(rcv, run_dir, rec):
            return rec
        try:
            sampler = Sampler(rcv.pid)
            sampler.start()
            sent = _send(rcv, corpus, assocs, run_dir)
            sampler.settle()
            usage = sampler.stop()
            rec["arrived"] = rcv.count()
            if isinstance(rcv, ApplianceReceiver):
                rec["object_files"] = rcv.object_files()
                rec.update(rcv.disk_usage())  # stored_bytes, saved_bytes
        finally:
            self._finish(rcv, run_dir, rec)
        rec["errors"] += sent.errors
        rec["ok"] = rec["arrived"] == corpus.files and not sent.errors
        if rec["arrived"] != corpus.files:
            rec["errors"].append(f"{rec['arrived']} of {corpus.files} instances arrived")
        rec.update(_metrics(corpus, sent, usage.cpu_s))
        rec["cpu_us_per_inst_by_role"] = {role: cpu / corpus.files * 1e6
                                          for role, cpu in usage.cpu_s_by_role.items()}
        rec.update(peak_rss_mib=usage.peak_rss_bytes / _MIB,
                   peak_pss_mib=usage.peak_pss_bytes / _MIB,
                   max_processes=usage.max_processes, rss_samples=usage.samples)
        self.log(f"   {corpus.name} x{assocs} {rcv.name:<18} {rec['inst_per_s']:8.0f} inst/s "
                 f"{rec['mb_per_s']:7.1f} MB/s  cpu {rec['cpu_us_per_inst']:8.0f} us/inst  "
                 f"rss {rec['peak_rss_mib']:6.0f} MiB  {'ok' if rec['ok'] else 'FAILED'}")
        if not rec["ok"]:
            self.log(f"     {'; '.join(rec['errors'])[:400]}")
        return rec

    def echo_run(self, rcv: Receiver, rep: int) -> dict[str, Any]:
        rec: dict[str, Any] = {"kind": "echo", "receiver": rcv.name, "rep": rep, "ok": False,
                               "errors": []}
        run_dir = self._run_dir(f"{rcv.name}-echo")
        if not self._start(rcv, run_dir, rec):
            return rec
        try:
            sampler = Sampler(rcv.pid)
            sampler.start()
            rec["echo_per_s"] = client.echoscu_rate(rcv.port, rcv.called_ae, self.plan.echo_s)
            rec["scu_echo_per_s"] = client.scu_echo_rate(rcv.port, rcv.called_ae, self.plan.echo_s)
            rec["assoc_per_s"] = client.association_rate(rcv.port, rcv.called_ae,
                                                         self.plan.echo_s)
            sampler.settle()
            rec["receiver_cpu_s"] = sampler.stop().cpu_s
            rec["ok"] = True
        except Exception as exc:  # noqa: BLE001 - recorded, the session goes on
            rec["errors"].append(f"{type(exc).__name__}: {exc}")
        finally:
            self._finish(rcv, run_dir, rec)
        if rec["ok"]:
            self.log(f"   echo {rcv.name:<18} {rec['echo_per_s']:8.0f} echo/s (echoscu)  "
                     f"{rec['scu_echo_per_s']:7.0f} echo/s (our SCU)  "
                     f"{rec['assoc_per_s']:6.0f} assoc/s")
        else:
            self.log(f"   echo {rcv.name}: FAILED {rec['errors']}")
        return rec

    def dd_run(self, rep: int) -> dict[str, Any]:
        rec: dict[str, Any] = {"rep": rep, "megabytes": self.plan.dd_mb}
        try:
            rec["mb_per_s"] = disk_write_mb_s(self.plan.workdir, self.plan.dd_mb)
            self.log(f"   dd {self.plan.dd_mb} MiB conv=fdatasync: {rec['mb_per_s']:.0f} MB/s")
        except RuntimeError as exc:
            rec["error"] = str(exc)
            self.log(f"   dd failed: {exc}")
        return rec


def _send(rcv: Receiver, corpus: Corpus, assocs: int, run_dir: Path) -> client.SendResult:
    groups = _folders(corpus, assocs)
    return client.send(rcv.port, groups, rcv.called_ae, run_dir)


def _metrics(corpus: Corpus, sent: client.SendResult, cpu_s: float) -> dict[str, float]:
    wall = max(sent.wall_s, 1e-9)
    return {
        "wall_s": sent.wall_s,
        "inst_per_s": corpus.files / wall,
        "mb_per_s": corpus.bytes / wall / 1e6,
        "receiver_cpu_s": cpu_s,
        "cpu_s_per_gb": cpu_s / (corpus.bytes / 1e9),
        "cpu_us_per_inst": cpu_s / corpus.files * 1e6,
        "client_cpu_s": sent.client_cpu_s,
        "client_cpu_us_per_inst": sent.client_cpu_s / corpus.files * 1e6,
    }


def validate_assocs(assocs: list[int]) -> None:
    bad = [n for n in assocs if not 1 <= n <= PARTS]
    if bad:
        raise ValueError(f"associations must be 1..{PARTS} (the corpus has {PARTS} folders)")

