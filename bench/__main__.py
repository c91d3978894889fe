"""``python -m bench ingest``: this appliance beside DCMTK storescp, Orthanc and pynetdicom.

    python -m bench ingest [--quick] [--reps N] [--receivers a,b] [--corpus ct,small,large]
                           [--assocs 1,4] [--workers N] [--no-scaling] [--no-echo] [--no-dd]
                           [--no-install] [--appliance-src DIR] [--workdir DIR] [--results DIR]
    python -m bench report RESULTS.json   # the table and chart again, from a results file
    python -m bench retrieve [--quick] [--reps N] ...  # C-GET/C-MOVE/C-FIND (bench/retrieve.py)

Writes ``<results>/<timestamp>.json`` (every run), ``<timestamp>.md`` and ``latest.md`` (the
table), ``latest.png`` (the chart), and prints the table. Exit code 1 if a run lost
instances or a client failed; receivers that cannot run here are listed, not fatal.
Never gated on wall time (STYLE 2.10); the machine's noise is in the min–max.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from appliance.config import Config
from bench import corpora, machine, packages, report, retrieve
from bench.ingest import Plan, Runner, validate_assocs
from bench.receivers import build, main_names, scaling_names

RESULTS = Path(__file__).resolve().parent / "results"


def _names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ingest", help="side-by-side C-STORE ingest benchmark")
    p.add_argument("--quick", action="store_true",
                   help="small corpora, 1 repetition, short echo runs (smoke test)")
    p.add_argument("--reps", type=int, help="repetitions (default 5, --quick 1)")
    p.add_argument("--receivers", type=_names, help=f"subset of {','.join(main_names())} "
                   f"(and {','.join(scaling_names())})")
    p.add_argument("--corpus", type=_names, default=["ct", "small", "large"],
                   help="subset of ct,small,large,huge (huge: one 2.1 GB object, for "
                   "the memory table; not in the default)")
    p.add_argument("--assocs", type=lambda v: [int(x) for x in _names(v)], default=[1, 4],
                   help="parallel associations per run (1..4), default 1,4")
    p.add_argument("--workers", type=int, default=Config().worker_count,
                   help="appliance workers (default: the appliance's own default here, "
                   "CPUs less one)")
    p.add_argument("--scaling", action=argparse.BooleanOptionalAction, default=None,
                   help="appliance os with 1, 2, 4 workers (default: on unless --quick)")
    p.add_argument("--no-echo", action="store_true", help="skip the C-ECHO measurements")
    p.add_argument("--no-dd", action="store_true", help="skip the disk bandwidth (dd)")
    p.add_argument("--no-install", action="store_true",
                   help="never apt-get install a missing tool (DCMTK) or receiver (Orthanc)")
    p.add_argument("--appliance-src", type=Path,
                   help="run the appliance from this checkout (A/B of two commits)")
    p.add_argument("--ct", type=int, help="objects in the ct corpus (default 1000)")
    p.add_argument("--small", type=int, help="objects in the small corpus (default 5000)")
    p.add_argument("--large", type=int, help="objects in the large corpus (default 4)")
    p.add_argument("--large-frames", type=int, help="frames per large object (default 200)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "pacs-bench",
                   help="corpora cache and run folders")
    p.add_argument("--results", type=Path, default=RESULTS, help="where results go")
    p.add_argument("--keep-stores", action="store_true", help="keep each run's store")
    p.add_argument("--settle", type=float,
                   help="seconds between a receiver's stop and the next start (default 12, "
                        "--quick 0): freed memory must cool so no run inherits warm pages")
    r = sub.add_parser("report", help="render the table and chart again from a results JSON")
    r.add_argument("json", type=Path)
    r.add_argument("--results", type=Path, help="where to write (default: beside the JSON)")
    retrieve.add_parser(sub)
    return ap


def _specs(args: argparse.Namespace) -> list[corpora.CorpusSpec]:
    specs = corpora.default_specs(quick=args.quick)
    unknown = set(args.corpus) - set(specs)
    if unknown:
        raise SystemExit(f"unknown corpus {', '.join(sorted(unknown))}; known: {', '.join(specs)}")
    for name, count in (("ct", args.ct), ("small", args.small), ("large", args.large)):
        if count is not None:
            specs[name] = corpora.CorpusSpec(name, count, specs[name].rows, specs[name].frames)
    if args.large_frames is not None:
        large = specs["large"]
        specs["large"] = corpora.CorpusSpec("large", large.count, large.rows, args.large_frames)
    return [spec for name, spec in specs.items() if name in args.corpus]


def _receiver_names(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    known_main, known_scaling = main_names(), scaling_names()
    scaling_on = args.scaling if args.scaling is not None else not args.quick
    if args.receivers is None:
        return known_main, known_scaling if scaling_on else []
    unknown = set(args.receivers) - set(known_main) - set(known_scaling)
    if unknown:
        raise SystemExit(f"unknown receiver {', '.join(sorted(unknown))}; known: "
                         f"{', '.join(known_main + known_scaling)}")
    main = [n for n in known_main if n in args.receivers]
    scaling = [n for n in known_scaling if n in args.receivers or (scaling_on and args.scaling)]
    return main, scaling


def ingest(args: argparse.Namespace) -> int:
    validate_assocs(args.assocs)
    args.workdir.mkdir(parents=True, exist_ok=True)
    main, scaling = _receiver_names(args)
    # storescu is every receiver's client and echoscu the C-ECHO probes': DCMTK is not optional.
    packages.require_dcmtk(("storescu", "echoscu"), install=not args.no_install)
    # Scaling w<N> equal to --workers would repeat appliance-os: drop it, the table reuses it.
    scaling = [n for n in scaling
               if not ("appliance-os" in main and n == f"appliance-os-w{args.workers}")]
    install = not args.no_install
    built = {n: build(n, workers=args.workers, src=args.appliance_src, install=install)
             for n in main + scaling}  # fmt: skip
    skipped = {n: why for n, r in built.items() if (why := r.available()) is not None}
    for name, why in skipped.items():
        print(f"bench: NOT RUNNING {name}: {why}", flush=True)
    t0 = time.monotonic()
    cs = []
    for spec in _specs(args):
        print(f"bench: corpus {spec.name}: {spec.count} objects ({spec.folder}) ...", flush=True)
        cs.append(corpora.ensure(spec, args.workdir))
    print(f"bench: corpora ready in {time.monotonic() - t0:.0f} s", flush=True)
    reps = args.reps or (1 if args.quick else 5)
    plan = Plan(
        corpora=cs, assocs=sorted(set(args.assocs)),
        receivers=[built[n] for n in main], scaling=[built[n] for n in scaling],
        reps=reps, workdir=args.workdir,
        echo_s=0.0 if args.no_echo else (0.5 if args.quick else 2.0),
        dd_mb=0 if args.no_dd else (128 if args.quick else 1024),
        keep_stores=args.keep_stores, skipped=dict(skipped),
        settle_s=args.settle if args.settle is not None else (0.0 if args.quick else 12.0),
    )  # fmt: skip
    described = machine.describe(args.workdir)
    if described["file_create_us"] > machine.SLOW_CREATE_US:
        print(f"bench: WARNING: creating a file in {args.workdir} costs "
              f"{described['file_create_us']:.0f} µs of CPU (normally tens): every receiver "
              "will pay it per object. Thousands of files deleted there in the last minutes "
              "(ext4 without a journal skips recently deleted inodes)? Wait a few minutes or "
              "use --workdir elsewhere.", flush=True)
    results: dict[str, Any] = {
        "meta": {
            "timestamp": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
            "command": shlex.join(["python", "-m", "bench", *sys.argv[1:]]),
            "reps": reps, "assocs": plan.assocs, "workers": args.workers, "quick": args.quick,
        },
        "machine": described,
        "corpora": {c.name: {"files": c.files, "bytes": c.bytes, "mean_bytes": c.mean_bytes,
                             "folder": c.spec.folder} for c in cs},
        "receiver_order": main + scaling,
        "scaling_names": [n for n in scaling if n not in main],
        "receivers": {n: built[n].describe() for n in main + scaling if n not in skipped},
    }  # fmt: skip
    runner = Runner(plan)
    try:
        runner.run()
    finally:
        results.update(runs=runner.runs, disk=runner.disk, skipped=plan.skipped,
                       elapsed_s=time.monotonic() - t0)
        json_path, md_path, png = report.write(results, args.results)
    print()
    print(md_path.read_text())
    print(f"bench: wrote {json_path}, {md_path}" + (f", {png}" if png else ""))
    return 0 if all(r["ok"] for r in runner.runs) else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "ingest":
        return ingest(args)
    if args.command == "report":
        _, md_path, _ = report.rewrite(args.json, args.results or args.json.parent)
        print(md_path.read_text())
        return 0
    if args.command == "retrieve":
        return retrieve.run(args)
    return 2


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SystemExit unwinds like Ctrl-C: the runner's finally blocks stop the receiver it
    # started (its own process group), instead of leaving it running after the harness.
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    sys.exit(main())
