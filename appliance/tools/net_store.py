"""`pacs store`: C-STORE of files and folders to a peer, like DCMTK's storescu, on our own SCU
core (appliance/scu.py): one or several associations in parallel (threads), a progress line, a
final report and an optional JSON report file. Shares flags, exit codes and error handling
with the other network verbs (net_cli.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from appliance.dimse.status import StatusCategory, category
from appliance.dimse.transfer_syntax import EXPLICIT_VR_LE, IMPLICIT_VR_LE
from appliance.scu import AssociationAborted, AssociationRejected, NoAcceptedContext
from appliance.tools.net_cli import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CLIError,
    Progress,
    _write_atomically,
    tls_context,
)

_MEDIA_STORAGE_DIRECTORY: Final = "1.2.840.10008.1.3.10"  # DICOMDIR: not for C-STORE
# Native encodings a file can be converted between without touching pixel data.
_LE_NATIVE: Final = (EXPLICIT_VR_LE, IMPLICIT_VR_LE)


class _StoreRun:
    """Shared state of one ``pacs store``: results (per file) and the progress line."""

    def __init__(self, args: argparse.Namespace, total: int) -> None:
        import threading

        self.args = args
        self.total = total
        self.results: list[dict[str, Any]] = []
        self.bytes = 0
        self.start = time.monotonic()
        self.bar = Progress(args.progress)
        self.lock = threading.Lock()
        self.connect_errors: list[BaseException] = []
        self.ssl_context = tls_context(args)  # one for every -j association (thread-safe)

    def add(self, path: Path, uid: str | None, result: str, status: int | None = None,
            error: str | None = None, size: int = 0) -> None:  # fmt: skip
        with self.lock:
            self.results.append({"path": str(path), "sop_instance_uid": uid, "result": result,
                                 "status": status, "error": error})  # fmt: skip
            self.bytes += size
            done = sum(r["result"] != "skipped" for r in self.results)
            failed = sum(r["result"] == "failed" for r in self.results)
            rate = self.bytes / 1e6 / max(time.monotonic() - self.start, 1e-6)
            self.bar.show(f"store: {done}/{self.total} files, {self.bytes / 1e6:.1f} MB, "
                          f"{rate:.1f} MB/s, {failed} failed", force=done == self.total)


def _store_contexts(metas: Sequence[tuple[str, str]], propose: str) -> list[Any]:
    from appliance.negotiation.sop_classes import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION
    from appliance.scu import ProposedContext

    seen: dict[tuple[str, tuple[str, ...]], None] = {}
    for sop_class, ts in metas:
        if propose == "uncompressed" and ts in _LE_NATIVE:
            seen[(sop_class, _LE_NATIVE)] = None
        else:
            seen[(sop_class, (ts,))] = None
    out = [ProposedContext(c, t) for c, t in seen]
    out.append(ProposedContext(VERIFICATION, (IMPLICIT_VR_LITTLE_ENDIAN,)))
    if len(out) > 128:
        raise CLIError(EXIT_USAGE, f"{len(out)} presentation contexts needed (SOP classes x "
                                   "transfer syntaxes); PS3.8 allows 128: send in batches")
    return out


def _store_one(scu: Any, path: Path, meta: Any) -> Any:
    """C-STORE one file as-is, or converted between Explicit and Implicit VR LE when the peer
    accepted only the other one for its SOP Class."""
    accepted = [ts for sop, ts in scu.accepted.values() if sop == meta.sop_class_uid]
    if meta.transfer_syntax_uid in accepted or meta.transfer_syntax_uid not in _LE_NATIVE:
        return scu.store_file(path)
    target = next((ts for ts in accepted if ts in _LE_NATIVE), None)
    if target is None:
        return scu.store_file(path)  # raises NoAcceptedContext
    from pydicom import dcmread
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    ds = dcmread(path)
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, target == _LE_NATIVE[1]
    write_dataset(fp, ds)
    return scu.store(fp.getvalue(), meta.sop_class_uid, meta.sop_instance_uid, target)


def _store_worker(run: _StoreRun, contexts: list[Any], group: list[tuple[Path, Any]]) -> None:
    from appliance.scu import SCU

    args = run.args
    scu = SCU(args.host, args.port, calling_ae=args.calling_ae, called_ae=args.called_ae,
              contexts=contexts, max_pdu_bytes=args.max_pdu, timeout_s=args.timeout,
              ssl_context=run.ssl_context)
    try:
        scu.associate()
    except (OSError, AssociationRejected, AssociationAborted) as exc:
        run.connect_errors.append(exc)
        for path, meta in group:
            run.add(path, meta.sop_instance_uid, "failed", error=f"not sent: {exc}")
        return
    with scu:
        for i, (path, meta) in enumerate(group):
            size = path.stat().st_size if path.exists() else 0
            try:
                result = _store_one(scu, path, meta)
            except NoAcceptedContext as exc:
                run.add(path, meta.sop_instance_uid, "failed", error=str(exc))
                continue
            except (OSError, ValueError, AssociationAborted) as exc:
                run.add(path, meta.sop_instance_uid, "failed", error=str(exc))
                if not scu.accepted:  # the association is over: the rest cannot go
                    for rest, rest_meta in group[i + 1:]:
                        run.add(rest, rest_meta.sop_instance_uid, "failed",
                                error=f"not sent: association ended ({exc})")  # fmt: skip
                    return
                continue
            kind = category(result.status)
            outcome = {StatusCategory.SUCCESS: "stored", StatusCategory.WARNING: "warning"}
            run.add(path, meta.sop_instance_uid, outcome.get(kind, "failed"), result.status,
                    result.error_comment, size if kind is not StatusCategory.FAILURE else 0)


def _scan(run_paths: Sequence[str]) -> tuple[list[tuple[Path, Any]], list[tuple[Path, str, bool]]]:
    from appliance.scu_files import read_file_meta

    items: list[tuple[Path, Any]] = []
    rejected: list[tuple[Path, str, bool]] = []  # (path, why, named explicitly)
    for path, explicit in iter_files(run_paths):
        try:
            with open(path, "rb") as fp:
                meta = read_file_meta(fp)
        except (OSError, ValueError) as exc:
            rejected.append((path, f"not a DICOM Part 10 file: {exc}", explicit))
            continue
        if meta.sop_class_uid == _MEDIA_STORAGE_DIRECTORY:
            rejected.append((path, "DICOMDIR (a media directory, not an instance)", explicit))
            continue
        items.append((path, meta))
    return items, rejected


def store(args: argparse.Namespace) -> int:
    import threading

    if args.jobs < 1:
        raise CLIError(EXIT_USAGE, "-j must be at least 1")
    items, rejected = _scan(args.paths)
    if not items and not rejected:
        raise CLIError(EXIT_USAGE, "no files to send")
    contexts = _store_contexts(
        [(m.sop_class_uid, m.transfer_syntax_uid) for _, m in items], args.propose
    )
    run = _StoreRun(args, len(items) + sum(explicit for *_, explicit in rejected))
    for path, why, explicit in rejected:
        run.add(path, None, "failed" if explicit else "skipped", error=why)
    groups = [g for g in (items[i :: args.jobs] for i in range(args.jobs)) if g]
    threads = [threading.Thread(target=_store_worker, args=(run, contexts, g), daemon=True)
               for g in groups]  # fmt: skip
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)  # a timed join keeps Ctrl-C working
    finally:
        run.bar.close()
    if groups and len(run.connect_errors) == len(groups):
        raise run.connect_errors[0]  # nothing could connect: say why, with its exit code
    return _store_report(run)


def _store_report(run: _StoreRun) -> int:
    args, results = run.args, run.results
    counts = {k: sum(r["result"] == k for r in results)
              for k in ("stored", "warning", "failed", "skipped")}  # fmt: skip
    elapsed = time.monotonic() - run.start
    summary = {**counts, "files": len(results), "bytes": run.bytes,
               "seconds": round(elapsed, 3), "mb_per_s": round(run.bytes / 1e6 / elapsed, 3)}
    if args.report_file:
        report = {"summary": summary, "files": sorted(results, key=lambda r: r["path"])}
        _write_atomically(Path(args.report_file), lambda fp: json.dump(report, fp, indent=2))
    for r in sorted(results, key=lambda r: r["path"]):
        if r["result"] == "failed" or (args.verbose and r["result"] != "stored"):
            print(f"pacs store: {r['result']}: {r['path']}: {r['error'] or ''}"
                  + (f" (status 0x{r['status']:04X})" if r["status"] is not None else ""),
                  file=sys.stderr)  # fmt: skip
    if not args.quiet:
        print(f"pacs store: {counts['stored']} stored, {counts['warning']} with warnings, "
              f"{counts['failed']} failed, {counts['skipped']} skipped; "
              f"{run.bytes / 1e6:.1f} MB in {elapsed:.2f} s ({summary['mb_per_s']} MB/s)")
    return EXIT_FAILED if counts["failed"] else EXIT_OK



def iter_files(paths: Sequence[str]) -> Iterator[tuple[Path, bool]]:
    """(file, named explicitly) for every file under ``paths``, folders recursively, sorted."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames.sort()
                for name in sorted(filenames):
                    yield Path(dirpath) / name, False
        elif path.exists():
            yield path, True
        else:
            raise CLIError(EXIT_USAGE, f"{path}: no such file or directory")


__all__ = ["iter_files", "store"]
