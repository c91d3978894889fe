"""``python -m bench retrieve``: C-GET, C-MOVE and C-FIND against this appliance and Orthanc,
on the same machine, in the same session, alternated (issue 3, "Speed").

    python -m bench retrieve [--quick] [--reps N] [--receivers appliance-batch,orthanc]
                             [--instances N] [--studies N] [--queries N] [--workers N]
                             [--no-install] [--appliance-src DIR] [--workdir DIR] [--results DIR]
                             [--keep-stores]

THEORY OF OPERATION
-------------------
The archive (``bench/qr_corpus.py``: a study of ``--instances`` 0.5 MB CT objects, and
``--studies`` one-instance studies around it) is generated once and cached. A DCMTK
``storescp`` is started as the C-MOVE destination ``STORESCP``; every receiver is started
once, knowing it (the appliance through ``[ae_table.STORESCP]``, Orthanc through
``DicomModalities``, where our calling AE is registered too: Orthanc refuses C-FIND, C-GET
and C-MOVE from unknown AEs by default), and loaded with DCMTK ``storescu`` over one
association; it must then hold every instance, counted by itself. Then, ``--reps`` times:
C-GET of the study by each receiver in turn (A B A B ...), then C-MOVE by each, then the
C-FIND series by each (``bench/qr_client.py``). Receiver CPU = its process tree during that
measurement only (``procstat.Sampler``); the destination's CPU is recorded beside it.

A retrieve run is ``ok`` only when the client exited 0 without errors and the SOP Instance
UIDs read from the retrieved files are exactly the study's; a C-FIND run only when every
query had a Success final status and its warm-up query returned exactly the expected
studies (or series). Runs that are not ok keep their figures in the JSON and stay out of the
medians. Receivers stay up between repetitions: the workload is read-only. Before the first
repetition each receiver serves one C-GET of the study that is not measured: the appliance
writes large objects with O_DIRECT (README "Direct I/O") and Orthanc through the page cache,
so without it the first run would compare a disk read with a cache read; after it both serve
from the page cache.

Writes ``<results>/retrieve-<timestamp>.json`` (every run, the machine, the command) and
``retrieve-<timestamp>.md`` / ``retrieve-latest.md`` (``bench/qr_report.py``), and prints the
markdown. Exit code 1 if a run failed; never gated on wall time (STYLE 2.10).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import client, machine, packages, qr_client, qr_corpus, qr_report
from bench.procstat import Sampler
from bench.qr_client import DESTINATION_AE, Destination, FindQuery, FindRun
from bench.qr_corpus import Archive
from bench.receivers import ORTHANC, Receiver, ReceiverError, build
from bench.receivers.appliance import ApplianceReceiver
from bench.receivers.base import CALLING_AE
from bench.receivers.orthanc import OrthancReceiver

RESULTS = Path(__file__).resolve().parent / "results"
RECEIVERS = ("appliance-os", "appliance-batch", "appliance-fsync", ORTHANC)
DEFAULT_RECEIVERS = ("appliance-batch", ORTHANC)
Log = Callable[[str], None]


def add_parser(sub: Any) -> None:
    """The ``retrieve`` subcommand, on ``python -m bench``'s subparsers."""
    p = sub.add_parser("retrieve", help="side-by-side C-GET / C-MOVE / C-FIND benchmark")
    p.add_argument("--quick", action="store_true",
                   help="a 20-instance study, 1 repetition, 20 queries (smoke test)")
    p.add_argument("--reps", type=int, help="repetitions (default 5, --quick 1)")
    p.add_argument("--receivers", type=lambda v: [x.strip() for x in v.split(",") if x.strip()],
                   default=list(DEFAULT_RECEIVERS), help=f"subset of {','.join(RECEIVERS)}")
    p.add_argument("--instances", type=int, help="instances in the study (default 500)")
    p.add_argument("--studies", type=int, help="small studies around it (default 200)")
    p.add_argument("--queries", type=int, help="timed C-FIND queries per kind (default 200)")
    p.add_argument("--workers", type=int, default=2, help="appliance workers (default 2)")
    p.add_argument("--no-install", action="store_true",
                   help="never apt-get install a missing receiver (Orthanc)")
    p.add_argument("--appliance-src", type=Path,
                   help="run the appliance from this checkout (A/B of two commits)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "pacs-bench",
                   help="corpora cache and run folders")
    p.add_argument("--results", type=Path, default=RESULTS, help="where results go")
    p.add_argument("--keep-stores", action="store_true",
                   help="keep the session folder (stores, client logs) under WORKDIR/runs")


def queries(archive: Archive) -> list[FindQuery]:
    """The issue's four queries, with the matches the manifest says they must return."""
    study = archive.study
    month = ("20240101", "20240131")
    return [
        FindQuery(f"STUDY PatientID={study.patient_id}",
                  qr_client.study_identifier(PatientID=study.patient_id),
                  frozenset(archive.matching_studies(patient_id=study.patient_id)),
                  "StudyInstanceUID"),
        FindQuery("STUDY PatientName=SMI*", qr_client.study_identifier(PatientName="SMI*"),
                  frozenset(archive.matching_studies(name_prefix="SMI")), "StudyInstanceUID"),
        FindQuery(f"STUDY StudyDate={month[0]}-{month[1]}",
                  qr_client.study_identifier(StudyDate=f"{month[0]}-{month[1]}"),
                  frozenset(archive.matching_studies(date_range=month)), "StudyInstanceUID"),
        FindQuery("SERIES StudyInstanceUID=<study>",
                  qr_client.series_identifier(StudyInstanceUID=study.study_uid),
                  frozenset(study.series_uids), "SeriesInstanceUID"),
    ]  # fmt: skip


def p99(values: list[float]) -> float:
    """Nearest-rank 99th percentile (of 20 values: the largest)."""
    ordered = sorted(values)
    return ordered[max(0, -(-99 * len(ordered) // 100) - 1)]


class RetrieveRunner:
    """One session: destination and receivers up, archive loaded, then the alternated runs."""

    def __init__(self, archive: Archive, receivers: list[Receiver], *, reps: int,
                 queries: int, workdir: Path, keep: bool = False,
                 log: Log = print) -> None:  # fmt: skip
        self.archive = archive
        self.receivers = receivers
        self.reps = reps
        self.queries = queries
        self.session = workdir / "runs" / f"retrieve-{time.strftime('%Y%m%dT%H%M%S')}"
        self.keep = keep
        self.log = log
        self.runs: list[dict[str, Any]] = []
        self.skipped: dict[str, str] = {}
        self.destination = Destination(self.session / "destination" / "received")

    def run(self) -> None:
        shutil.rmtree(self.session, ignore_errors=True)
        self.session.mkdir(parents=True)
        try:
            self.destination.start()
            live = [r for r in self.receivers if self._start_and_load(r)]
            for rcv in live:  # warm-up, not measured: see the module docstring
                self.log(f"   warm-up C-GET {rcv.name}")
                self.get_run(rcv, -1)
            for rep in range(self.reps):
                self.log(f"== repetition {rep + 1}/{self.reps}")
                for rcv in live:
                    self.runs.append(self.get_run(rcv, rep))
                for rcv in live:
                    self.runs.append(self.move_run(rcv, rep))
                for rcv in live:
                    self.runs += self.find_runs(rcv, rep)
        finally:
            for rcv in self.receivers:
                rcv.stop()
            self.destination.stop()
            if not self.keep:
                shutil.rmtree(self.session, ignore_errors=True)

    # -- set-up

    def _start_and_load(self, rcv: Receiver) -> bool:
        """Start ``rcv`` knowing the destination, send it the archive, check it holds it."""
        if isinstance(rcv, ApplianceReceiver):
            rcv.ae_table = {DESTINATION_AE: ("127.0.0.1", self.destination.port)}
        elif isinstance(rcv, OrthancReceiver):
            rcv.modalities = {DESTINATION_AE: (DESTINATION_AE, "127.0.0.1",
                                               self.destination.port),
                              CALLING_AE: (CALLING_AE, "127.0.0.1", 104)}  # fmt: skip
        rec: dict[str, Any] = {"kind": "load", "receiver": rcv.name, "rep": -1, "ok": False,
                               "errors": [], "expected": self.archive.files}
        self.runs.append(rec)
        run_dir = self.session / rcv.name
        try:
            rcv.start(run_dir)
        except (ReceiverError, OSError) as exc:
            self.skipped[rcv.name] = f"could not start: {exc}"
            rec["errors"].append(self.skipped[rcv.name])
            self.log(f"   {rcv.name}: {self.skipped[rcv.name]}")
            return False
        folders = [self.archive.study_dir, self.archive.catalogue_dir]
        sent = client.send(rcv.port, [folders], rcv.called_ae, run_dir)
        rec.update(wall_s=sent.wall_s, inst_per_s=self.archive.files / sent.wall_s,
                   arrived=rcv.count(), errors=sent.errors)  # fmt: skip
        rec["ok"] = rec["arrived"] == self.archive.files and not sent.errors
        if not rec["ok"]:
            rec["errors"].append(f"{rec['arrived']} of {self.archive.files} instances arrived")
            self.skipped[rcv.name] = f"loading failed: {'; '.join(rec['errors'])[:300]}"
            self.log(f"   {rcv.name}: {self.skipped[rcv.name]}")
            rcv.stop()
            return False
        self.log(f"   load {rcv.name:<16} {self.archive.files} instances in "
                 f"{sent.wall_s:.1f} s ({rec['inst_per_s']:.0f} inst/s)")
        return True

    # -- the runs

    def _retrieve_rec(self, kind: str, rcv: Receiver, rep: int) -> dict[str, Any]:
        return {"kind": kind, "receiver": rcv.name, "rep": rep, "ok": False, "errors": [],
                "expected": len(self.archive.sop_uids), "bytes": self.archive.study_bytes}

    def _finish_retrieve(self, rec: dict[str, Any], tool: qr_client.ToolRun, cpu_s: float,
                         folder: Path) -> None:  # fmt: skip
        got = qr_client.received_uids(folder)
        errors = tool.errors + qr_client.check_uids(got, self.archive.sop_uids)
        n, wall = len(self.archive.sop_uids), max(tool.wall_s, 1e-9)
        rec.update(
            ok=not errors, errors=errors, received=len(got), wall_s=tool.wall_s,
            inst_per_s=n / wall, mb_per_s=self.archive.study_bytes / wall / 1e6,
            receiver_cpu_s=cpu_s, cpu_us_per_inst=cpu_s / n * 1e6,
            client_cpu_s=tool.client_cpu_s,
        )  # fmt: skip
        if errors:
            rec["receiver_log_tail"] = _log_tail(self.session / rec["receiver"])
        extra = f"  storescp cpu {rec['destination_cpu_s']:.2f} s" \
            if "destination_cpu_s" in rec else ""  # fmt: skip
        self.log(f"   {rec['kind']:<4} {rec['receiver']:<16} {rec['mb_per_s']:7.1f} MB/s "
                 f"{rec['inst_per_s']:7.0f} inst/s  cpu {cpu_s:6.2f} s  client cpu "
                 f"{tool.client_cpu_s:5.2f} s{extra}  {len(got)}/{n} "
                 f"{'ok' if rec['ok'] else 'FAILED ' + '; '.join(errors)[:300]}")

    def get_run(self, rcv: Receiver, rep: int) -> dict[str, Any]:
        rec = self._retrieve_rec("get", rcv, rep)
        out = self.session / f"get-{rcv.name}-{rep}"
        out.mkdir()
        try:
            sampler = Sampler(rcv.pid)
            sampler.start()
            tool = qr_client.getscu(rcv.port, rcv.called_ae, self.archive.study.study_uid, out,
                                    self.session / f"getscu-{rcv.name}-{rep}.log")
            sampler.settle()
            self._finish_retrieve(rec, tool, sampler.stop().cpu_s, out)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        return rec

    def move_run(self, rcv: Receiver, rep: int) -> dict[str, Any]:
        rec = self._retrieve_rec("move", rcv, rep)
        dest = self.destination
        dest.clear()
        sampler, dest_sampler = Sampler(rcv.pid), Sampler(dest.pid)
        sampler.start()
        dest_sampler.start()
        tool = qr_client.movescu(rcv.port, rcv.called_ae, self.archive.study.study_uid,
                                 self.session / f"movescu-{rcv.name}-{rep}.log")
        sampler.settle()
        dest_sampler.settle()
        rec["destination_cpu_s"] = dest_sampler.stop().cpu_s
        self._finish_retrieve(rec, tool, sampler.stop().cpu_s, dest.folder)
        dest.clear()
        return rec

    def find_runs(self, rcv: Receiver, rep: int) -> list[dict[str, Any]]:
        cpu: dict[str, float] = {}

        def sampled(name: str, body: Callable[[], FindRun]) -> FindRun:
            sampler = Sampler(rcv.pid)
            sampler.start()
            try:
                return body()
            finally:
                cpu[name] = sampler.stop().cpu_s

        qs = queries(self.archive)
        try:
            found = qr_client.find_session(rcv.port, rcv.called_ae, qs, self.queries, sampled)
        except Exception as exc:  # noqa: BLE001 - recorded, the session goes on
            found = {q.name: FindRun(errors=[f"{type(exc).__name__}: {exc}"]) for q in qs}
        return [self._find_rec(rcv, rep, q, found[q.name], cpu.get(q.name, 0.0)) for q in qs]

    def _find_rec(self, rcv: Receiver, rep: int, q: FindQuery, run: FindRun,
                  cpu_s: float) -> dict[str, Any]:  # fmt: skip
        lat = run.latencies_s
        ok = not run.errors and len(lat) == self.queries
        rec: dict[str, Any] = {
            "kind": "find", "receiver": rcv.name, "rep": rep, "query": q.name,
            "ok": ok, "errors": run.errors, "queries": len(lat), "matches": run.matches,
            "expected_matches": len(q.expected), "receiver_cpu_s": cpu_s,
        }  # fmt: skip
        if not ok:
            rec["receiver_log_tail"] = _log_tail(rcv.run_dir)
        if lat:
            rec.update(median_ms=statistics.median(lat) * 1e3, p99_ms=p99(lat) * 1e3,
                       mean_ms=statistics.fmean(lat) * 1e3, max_ms=max(lat) * 1e3,
                       cpu_us_per_query=cpu_s / len(lat) * 1e6,
                       latencies_ms=[round(x * 1e3, 4) for x in lat])  # fmt: skip
            self.log(f"   find {rcv.name:<16} {q.name[:40]:<40} median {rec['median_ms']:7.2f} "
                     f"ms  p99 {rec['p99_ms']:7.2f} ms  {run.matches} matches  "
                     f"{'ok' if ok else 'FAILED ' + '; '.join(run.errors)[:200]}")
        else:
            self.log(f"   find {rcv.name} {q.name}: FAILED {'; '.join(run.errors)[:300]}")
        return rec


def _log_tail(run_dir: Path, chars: int = 2000) -> str:
    """The end of a receiver's log (``receiver.log``): why a run failed, kept in the JSON."""
    try:
        return (run_dir / "receiver.log").read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _spec(args: argparse.Namespace) -> qr_corpus.QRCorpusSpec:
    base = qr_corpus.default_spec(quick=args.quick)
    return qr_corpus.QRCorpusSpec(args.instances or base.count, args.studies or base.studies,
                                  base.rows)  # fmt: skip


def run(args: argparse.Namespace, log: Log = print) -> int:
    """The ``retrieve`` subcommand (see the module docstring); the exit code."""
    unknown = set(args.receivers) - set(RECEIVERS)
    if unknown:
        raise SystemExit(f"unknown receiver {', '.join(sorted(unknown))}; known: "
                         f"{', '.join(RECEIVERS)}")
    packages.require_dcmtk(("storescu", "storescp", "getscu", "movescu"),
                           install=not args.no_install)
    args.workdir.mkdir(parents=True, exist_ok=True)
    names = [n for n in RECEIVERS if n in args.receivers]
    built = {n: build(n, workers=args.workers, src=args.appliance_src,
                      install=not args.no_install) for n in names}  # fmt: skip
    skipped = {n: why for n, r in built.items() if (why := r.available()) is not None}
    for name, why in skipped.items():
        log(f"bench: NOT RUNNING {name}: {why}")
    t0 = time.monotonic()
    spec = _spec(args)
    log(f"bench: archive {spec.folder} ...")
    archive = qr_corpus.ensure(spec, args.workdir)
    log(f"bench: archive ready in {time.monotonic() - t0:.0f} s: study of "
        f"{len(archive.sop_uids)} instances, {archive.study_bytes / 1e6:.0f} MB; "
        f"{archive.files} instances in all")
    reps = args.reps or (1 if args.quick else 5)
    n_queries = args.queries or (20 if args.quick else 200)
    runner = RetrieveRunner(archive, [built[n] for n in names if n not in skipped], reps=reps,
                            queries=n_queries, workdir=args.workdir,
                            keep=args.keep_stores, log=log)  # fmt: skip
    results: dict[str, Any] = {
        "meta": {
            "timestamp": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
            "command": shlex.join(["python", "-m", "bench", *sys.argv[1:]]),
            "reps": reps, "queries": n_queries, "workers": args.workers, "quick": args.quick,
        },
        "machine": machine.describe(args.workdir),
        "archive": {"folder": spec.folder, "study_instances": len(archive.sop_uids),
                    "study_bytes": archive.study_bytes, "studies": len(archive.entries),
                    "instances": archive.files},
        "queries": {q.name: len(q.expected) for q in queries(archive)},
        "receiver_order": names,
        "receivers": {n: built[n].describe() for n in names if n not in skipped},
    }  # fmt: skip
    try:
        runner.run()
    finally:
        results.update(runs=runner.runs, skipped={**skipped, **runner.skipped},
                       elapsed_s=time.monotonic() - t0)
        json_path, md_path = qr_report.write(results, args.results)
    log("")
    log(md_path.read_text())
    log(f"bench: wrote {json_path}, {md_path}")
    return 0 if runner.runs and all(r["ok"] for r in runner.runs) and not runner.skipped else 1
