"""`pacs`: argv -> Config -> the chosen subcommand.

  pacs serve   run the appliance (arbiter + acceptor + workers + index writer + exporter)
  pacs ingest  headless bulk ingest of files/folders through the same workers and index writer
  pacs db stats  counts read from the index (usable while `pacs serve` runs)
  pacs echo|store|find|move|get ...   network clients (appliance/tools/net_cli.py)
  pacs dump|info|modify|to-json|from-json|to-xml|from-xml ...   file tools (file_cli.py)
  pacs anonymize|dir|extract|img2dcm ...   (anon_cli.py)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from appliance.config import Config, DuplicatePolicy, Durability, load
from appliance.errors import ConfigError


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host or "127.0.0.1", int(port)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("--data", type=Path, help="data directory (objects + index)")
    p.add_argument("--durability", choices=[d.value for d in Durability])
    p.add_argument("--duplicates", choices=[d.value for d in DuplicatePolicy],
                   help="duplicate SOP Instance UID policy")
    p.add_argument("--workers", type=int, help="ingest worker processes (0 = CPUs)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pacs", description="DICOM ingest appliance")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the appliance")
    _common(serve)
    serve.add_argument("--port", type=int, help="DICOM port (default 11112)")
    serve.add_argument("--host", help="DICOM listen address (default 0.0.0.0)")
    serve.add_argument("--ae-title", help="our AE title (default PACS)")
    serve.add_argument("--http", type=_host_port, metavar="HOST:PORT",
                       help="management HTTP address (default 127.0.0.1:9112)")

    ingest = sub.add_parser("ingest", help="bulk ingest files and folders without the network")
    _common(ingest)
    ingest.add_argument("paths", nargs="+", type=Path)
    ingest.add_argument("--json", action="store_true", help="print the summary as JSON")
    ingest.add_argument("--no-progress", action="store_true")

    db = sub.add_parser("db", help="index tools")
    dbsub = db.add_subparsers(dest="db_command", required=True)
    stats = dbsub.add_parser("stats", help="counts read from the index")
    stats.add_argument("--config", type=Path)
    stats.add_argument("--data", type=Path)
    stats.add_argument("--json", action="store_true")

    # DCMTK-like tools (appliance/tools): each verb sets ``func``, run without a Config.
    from appliance.tools import anon_cli, file_cli, net_cli

    net_cli.register(sub)
    file_cli.register(sub)
    anon_cli.register(sub)
    return parser


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """CLI flags in the shape of the TOML file (flags win over the file)."""
    out: dict[str, dict[str, Any]] = {"network": {}, "storage": {}, "processes": {}, "http": {}}

    def get(name: str) -> Any:
        return getattr(args, name, None)

    if get("port") is not None:
        out["network"]["port"] = args.port
    if get("host"):
        out["network"]["host"] = args.host
    if get("ae_title"):
        out["network"]["ae_title"] = args.ae_title
    if get("data"):
        out["storage"]["data_dir"] = str(args.data)
    if get("durability"):
        out["storage"]["durability"] = args.durability
    if get("duplicates"):
        out["storage"]["duplicate_policy"] = args.duplicates
    if get("workers") is not None:
        out["processes"]["workers"] = args.workers
    if get("http"):
        out["http"]["host"], out["http"]["port"] = args.http
    result: dict[str, Any] = {k: v for k, v in out.items() if v}
    if get("log_level"):
        result["log_level"] = args.log_level
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func = getattr(args, "func", None)
    if func is not None:
        code: int = func(args)
        return code
    try:
        cfg = load(args.config, overrides(args))
    except ConfigError as exc:
        print(f"pacs: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        from appliance.arbiter import serve

        return serve(cfg)
    if args.command == "ingest":
        from appliance.ingest_driver import run_ingest

        return run_ingest(cfg, args.paths, as_json=args.json, progress=not args.no_progress,
                          log_level=args.log_level or "warning")
    if args.command == "db":
        return _db_stats(cfg, args.json)
    return 2


def _db_stats(cfg: Config, as_json: bool) -> int:
    from workers.index.reader import IndexReader

    path = Path(cfg.storage.data_dir) / "index"
    if not path.exists():
        print(f"pacs: no index at {path}", file=sys.stderr)
        return 1
    st = IndexReader(path).stats()
    data = {
        "patients": st.patients,
        "studies": st.studies,
        "series": st.series,
        "instances": st.instances,
        "stored_bytes": st.stored_bytes,
    }
    if as_json:
        print(json.dumps(data))
    else:
        for k, v in data.items():
            print(f"{k:>14}: {v}")
    return 0
