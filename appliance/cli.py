"""`pacs`: argv -> Config -> the chosen subcommand.

  pacs serve   run the appliance (arbiter + acceptor + workers + index writer + exporter)
  pacs ingest  headless bulk ingest of files/folders through the same workers and index writer
  pacs db stats  counts read from the index (usable while `pacs serve` runs)
  pacs config check FILE | config show   validate / print the effective configuration
  pacs install-systemd [--prefix DIR]    put the systemd units, sysusers/tmpfiles snippets and
                                         an example /etc/pacs-appliance/ config in place
  pacs echo|store|find|move|get ...   network clients (appliance/tools/net_cli.py)
  pacs dump|info|modify|to-json|from-json|to-xml|from-xml ...   file tools (file_cli.py)
  pacs anonymize|dir|extract|img2dcm ...   (anon_cli.py)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from appliance.config import (
    Config,
    ConfigSource,
    DuplicatePolicy,
    Durability,
    as_dict,
    load,
    to_toml,
)
from appliance.errors import ConfigError

_ENV_HELP = ("Environment: PACS_HOST, PACS_PORT, PACS_AE_TITLE, PACS_DATA_DIR, PACS_DURABILITY, "
             "PACS_MIN_FREE_BYTES, PACS_WORKERS, PACS_HTTP (HOST:PORT), PACS_LOG_LEVEL, "
             "PACS_AUDIT_PATH, PACS_TRACING_ENABLED override the file; flags override both.")


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
    p.add_argument("--workers", type=int, help="worker processes (0 = one per CPU; for "
                   "serve, less one for the acceptor and index writer)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pacs", description="DICOM ingest appliance")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the appliance", epilog=_ENV_HELP)
    _serve_flags(serve)

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

    config = sub.add_parser("config", help="validate or print the configuration")
    csub = config.add_subparsers(dest="config_command", required=True)
    check = csub.add_parser("check", help="validate a TOML file (and PACS_* variables) "
                            "without starting anything", epilog=_ENV_HELP)
    check.add_argument("file", type=Path)
    show = csub.add_parser("show", help="print the effective configuration: defaults, the "
                           "file, PACS_* variables, then flags", epilog=_ENV_HELP)
    _serve_flags(show)
    show.add_argument("--format", choices=["toml", "json"], default="toml")

    inst = sub.add_parser("install-systemd", help="install the systemd units, sysusers and "
                          "tmpfiles snippets and an example config")
    inst.add_argument("--prefix", type=Path, default=Path("/"),
                      help="root to install under (default /; a staging directory works)")
    inst.add_argument("--exec", dest="exec_path", type=Path,
                      help="the pacs executable ExecStart runs (default: this one)")
    inst.add_argument("--units", type=Path,
                      help="directory holding the unit files (default: this checkout's systemd/)")
    inst.add_argument("--socket", action="store_true",
                      help="also enable socket activation (pacs-appliance.socket)")

    # DCMTK-like tools (appliance/tools): each verb sets ``func``, run without a Config.
    from appliance.tools import (
        anon_cli,
        convert_cli,
        db_cli,
        file_cli,
        net_cli,
        workflow_cli,
        workflow_net_cli,
    )

    db_cli.add_db_verbs(dbsub)  # patients, studies, series, verify, compact
    convert_cli.register(sub)

    net_cli.register(sub)
    file_cli.register(sub)
    anon_cli.register(sub)
    # `pacs worklist add|list|remove|import` and `pacs mpps list|show` work on the data
    # directory; `worklist query`, `mpps create|set` and `commit` talk to a peer.
    workflow_cli.register(sub)
    workflow_net_cli.add_worklist_network_verbs(workflow_cli.subcommands(sub.choices["worklist"]))
    workflow_net_cli.add_mpps_network_verbs(workflow_cli.subcommands(sub.choices["mpps"]))
    workflow_net_cli.register_commit(sub)
    return parser


def _serve_flags(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--port", type=int, help="DICOM port (default 11112)")
    p.add_argument("--host", help="DICOM listen address (default 0.0.0.0)")
    p.add_argument("--ae-title", help="our AE title (default PACS)")
    p.add_argument("--http", type=_host_port, metavar="HOST:PORT",
                   help="management HTTP address (default 127.0.0.1:9112)")


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
    # numpy's OpenBLAS starts a spinning thread per CPU at import; nothing here does linear
    # algebra, and on 2 cores those threads showed up in perf (blas_thread_server) beside
    # ingest. Set before any command imports numpy (the children inherit it).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    args = build_parser().parse_args(argv)
    func = getattr(args, "func", None)
    if func is not None:
        code: int = func(args)
        return code
    if args.command == "config" and args.config_command == "check":
        return _config_check(args.file)
    if args.command == "install-systemd":
        from appliance.systemd import install_units

        return install_units(args.prefix, args.exec_path, socket_activation=args.socket,
                             units=args.units)
    source = ConfigSource(args.config, overrides(args), dict(os.environ))
    try:
        cfg = source.load()
    except ConfigError as exc:
        print(f"pacs: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "config":
        text = (json.dumps(as_dict(cfg), indent=2) + "\n" if args.format == "json"
                else to_toml(cfg))
        sys.stdout.write(text)
        return 0
    if args.command == "serve":
        from appliance.arbiter import serve

        return serve(cfg, source)
    if args.command == "ingest":
        from appliance.ingest_driver import run_ingest

        return run_ingest(cfg, args.paths, as_json=args.json, progress=not args.no_progress,
                          log_level=args.log_level or "warning")
    if args.command == "db":
        return _db_stats(cfg, args.json)
    return 2


def _config_check(path: Path) -> int:
    """Exit 0 when ``path`` (with the PACS_* variables) loads; else 1 with the reason."""
    try:
        load(path, None, os.environ)
    except ConfigError as exc:
        where = "" if str(path) in str(exc) else f"{path}: "
        print(f"pacs config check: {where}{exc}", file=sys.stderr)
        return 1
    print(f"{path}: OK")
    return 0


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
        "saved_bytes": st.saved_bytes,  # by [storage] compress_on_ingest (workers/compress.py)
    }
    if as_json:
        print(json.dumps(data))
    else:
        for k, v in data.items():
            print(f"{k:>14}: {v}")
    return 0
