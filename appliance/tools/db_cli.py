"""`pacs db patients|studies|series|verify|compact`: browse and maintain the LMDB index.

``add_db_verbs(db_subparsers)`` adds these next to `pacs db stats` (appliance/cli.py).

- patients / studies / series read through ``IndexReader`` (read-only LMDB transactions never
  block the writer), so they are safe while `pacs serve` or `pacs ingest` runs.
- verify checks that every indexed file exists with its recorded size and that every file
  under ``<data>/objects`` is indexed. Read-only, it is safe while the appliance runs, but an
  object stored in the instant between its rename and its index commit then shows as
  unindexed: verify a quiet appliance, or run it twice.
- verify --repair and compact write to the index or swap it, which must not happen beside the
  index writer. There is no pid file; instead we ask LMDB's own lock: every process with the
  environment open holds a shared fcntl lock on byte 0 of ``lock.mdb`` (LMDB's
  ``mdb_env_excl_lock``), so failing to take it exclusively means someone has the index open
  (`pacs serve`, `pacs ingest`, even a `pacs db stats`). The check is made before this process
  opens the environment (POSIX locks are per process); a server started between the check
  and the end of the operation is not detected.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.tools.dcmfile import ExitCode, ToolError

if TYPE_CHECKING:
    from workers.index.reader import IndexReader
    from workers.index.schema import PatientRecord, SeriesRecord, StudyRecord

ORPHANS = "orphans"
_PAGE = 1000  # instance records per read transaction in verify (short snapshots)

# Columns per level: (heading, record attribute). The JSON form carries every field.
_PATIENT_COLUMNS = (
    ("PatientID", "patient_id"), ("PatientName", "patient_name"),
    ("BirthDate", "patient_birth_date"), ("Sex", "patient_sex"),
    ("Studies", "number_of_patient_related_studies"),
    ("Series", "number_of_patient_related_series"),
    ("Instances", "number_of_patient_related_instances"),
)
_STUDY_COLUMNS = (
    ("StudyInstanceUID", "study_instance_uid"), ("PatientID", "patient_id"),
    ("PatientName", "patient_name"), ("StudyDate", "study_date"),
    ("Accession", "accession_number"), ("Modalities", "modalities_in_study"),
    ("Description", "study_description"), ("Series", "number_of_study_related_series"),
    ("Instances", "number_of_study_related_instances"), ("Bytes", "stored_bytes"),
)
_SERIES_COLUMNS = (
    ("SeriesInstanceUID", "series_instance_uid"), ("StudyInstanceUID", "study_instance_uid"),
    ("Modality", "modality"), ("Number", "series_number"),
    ("Description", "series_description"),
    ("Instances", "number_of_series_related_instances"), ("Bytes", "stored_bytes"),
)


# ------------------------------------------------------------------------------ data dir


def data_dir(args: argparse.Namespace) -> Path:
    """--data, else the configuration's [storage] data_dir (file, PACS_DATA_DIR), as `db stats`."""
    if args.data is not None:
        return Path(args.data)
    from appliance.config import ConfigSource
    from appliance.errors import ConfigError

    try:
        cfg = ConfigSource(args.config, {}, dict(os.environ)).load()
    except ConfigError as exc:
        raise ToolError(ExitCode.USAGE, f"configuration error: {exc}") from exc
    return Path(cfg.storage.data_dir)


def index_users(index: Path) -> bool:
    """True when another process has the LMDB environment at ``index`` open (module doc)."""
    lock = index / "lock.mdb"
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        except OSError:
            return True
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, 0)
        return False
    finally:
        os.close(fd)


def _require_idle(index: Path, verb: str) -> None:
    if index_users(index):
        raise ToolError(ExitCode.FAILED, f"{index}: the index is open in another process "
                        f"(pacs serve or pacs ingest running?); stop it before {verb}")


def _open_reader(data: Path) -> IndexReader:
    from appliance.errors import IndexSchemaError
    from workers.index.reader import IndexReader

    index = data / "index"
    if not (index / "data.mdb").exists():
        raise ToolError(ExitCode.NOT_FOUND, f"no index at {index}")
    try:
        return IndexReader(index)
    except IndexSchemaError as exc:
        raise ToolError(ExitCode.FAILED, str(exc)) from exc


# ------------------------------------------------------------------------------- browsing


def _patients(reader: IndexReader, patient_id: str | None) -> list[PatientRecord]:
    if patient_id is not None:
        found = reader.get_patient(patient_id)
        return [found] if found is not None else []
    from workers.index.schema import PatientRecord, unpack

    with reader.snapshot() as snap:
        return [unpack(PatientRecord, raw) for _, raw in snap.keys("patients")]


def _studies(reader: IndexReader, patient_id: str | None, study: str | None
             ) -> list[StudyRecord]:
    if study is not None:
        found = reader.get_study(study)
        rows = [found] if found is not None else []
    elif patient_id is not None:
        uids = reader.study_uids_matching("patient_id", patient_id)
        rows = [s for s in map(reader.get_study, uids) if s is not None]
    else:
        rows = list(reader.studies())
    if patient_id is not None:  # the secondary index strips; match the record exactly
        rows = [s for s in rows if s.patient_id == patient_id]
    return rows


def _series(reader: IndexReader, patient_id: str | None, study: str | None
            ) -> list[SeriesRecord]:
    out: list[SeriesRecord] = []
    for st in _studies(reader, patient_id, study):
        out.extend(reader.series_of(st.study_instance_uid))
    return out


def _cell(record: object, attribute: str) -> str:
    value = getattr(record, attribute)
    return "\\".join(value) if isinstance(value, list) else str(value)


def _as_json(record: StudyRecord | SeriesRecord | PatientRecord) -> dict[str, Any]:
    out = asdict(record)
    if "modalities" in out:  # StudyRecord: the DICOM attributes, not the internal counts
        out["modalities_in_study"] = sorted(out.pop("modalities"))
        out["sop_classes_in_study"] = sorted(out.pop("sop_classes"))
    return out


def print_records(records: Sequence[StudyRecord | SeriesRecord | PatientRecord],
                  columns: Sequence[tuple[str, str]], fmt: str) -> None:
    """Write ``records`` on stdout as an aligned table, a JSON array or CSV."""
    if fmt == "json":
        print(json.dumps([_as_json(r) for r in records], indent=2))
        return
    header = [h for h, _ in columns]
    rows = [[_cell(r, a) for _, a in columns] for r in records]
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return
    if not rows:
        print("(none)")
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for row in (header, *rows):
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _run_browse(args: argparse.Namespace) -> int:
    reader = _open_reader(data_dir(args))
    try:
        pid, study = args.patient_id, getattr(args, "study", None)
        if args.level == "patients":
            print_records(_patients(reader, pid), _PATIENT_COLUMNS, args.format)
        elif args.level == "studies":
            print_records(_studies(reader, pid, study), _STUDY_COLUMNS, args.format)
        else:
            print_records(_series(reader, pid, study), _SERIES_COLUMNS, args.format)
    finally:
        reader.close()
    return int(ExitCode.OK)


# --------------------------------------------------------------------------------- verify


@dataclass(slots=True)
class VerifyReport:
    """What verify found (paths relative to the data directory) and what --repair did."""

    instances: int = 0
    files: int = 0
    missing: list[tuple[str, str]] = field(default_factory=list)  # (SOP UID, relpath)
    wrong_size: list[tuple[str, str, int, int]] = field(default_factory=list)  # +recorded, found
    unindexed: list[str] = field(default_factory=list)
    removed_records: list[str] = field(default_factory=list)  # SOP UIDs
    moved_orphans: list[str] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return len(self.missing) + len(self.wrong_size) + len(self.unindexed)

    @property
    def unrepaired(self) -> int:
        return self.problems - len(self.removed_records) - len(self.moved_orphans)


def _instance_pages(reader: IndexReader) -> Iterator[tuple[str, str, int]]:
    """(SOP UID, relpath, size) of every instance, in short read transactions."""
    from workers.index.schema import unpack_record

    start: bytes | None = None
    while True:
        with reader.snapshot() as snap:
            page = []
            for k, raw in snap.keys("instances", start):
                page.append((k, unpack_record(raw)))
                if len(page) == _PAGE:
                    break
        for _, rec in page:
            yield rec.sop_instance_uid, rec.relpath, rec.size_bytes
        if len(page) < _PAGE:
            return
        start = page[-1][0] + b"\x00"  # the next key after the last one consumed


def verify(data: Path, reader: IndexReader) -> VerifyReport:
    """Compare the index with ``<data>/objects`` (read-only)."""
    report = VerifyReport()
    indexed: set[str] = set()
    for sop, relpath, size in _instance_pages(reader):
        report.instances += 1
        indexed.add(relpath)
        try:
            found = (data / relpath).stat().st_size
        except FileNotFoundError:
            report.missing.append((sop, relpath))
            continue
        if found != size:
            report.wrong_size.append((sop, relpath, size, found))
    objects = data / "objects"
    for root, dirs, files in os.walk(objects):
        dirs.sort()
        for name in sorted(files):
            report.files += 1
            rel = (Path(root) / name).relative_to(data).as_posix()
            if rel not in indexed:
                report.unindexed.append(rel)
    return report


def repair(data: Path, report: VerifyReport) -> None:
    """Remove the records of missing files; move unindexed files to ``<data>/orphans``."""
    from workers.index.writer import IndexWriter

    writer = IndexWriter(data / "index")
    try:
        for sop, _ in report.missing:
            if writer.delete_instance(sop) is not None:
                report.removed_records.append(sop)
    finally:
        writer.close()
    for rel in report.unindexed:
        target = data / ORPHANS / Path(rel).relative_to("objects")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(data / rel, target)  # same filesystem: a rename
        report.moved_orphans.append(rel)


def _print_report(report: VerifyReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(asdict(report) | {"problems": report.problems,
                                           "unrepaired": report.unrepaired}, indent=2))
        return
    for sop, rel in report.missing:
        print(f"missing file: {rel} (SOP Instance UID {sop})")
    for sop, rel, recorded, found in report.wrong_size:
        print(f"size mismatch: {rel}: indexed {recorded} bytes, file has {found} "
              f"(SOP Instance UID {sop})")
    for rel in report.unindexed:
        print(f"not indexed: {rel}")
    for sop in report.removed_records:
        print(f"repaired: removed index record {sop}")
    for rel in report.moved_orphans:
        print(f"repaired: moved {rel} to {ORPHANS}/")
    print(f"{report.instances} instances indexed, {report.files} files stored, "
          f"{report.problems} problems, {report.unrepaired} unrepaired")


def _run_verify(args: argparse.Namespace) -> int:
    data = data_dir(args)
    if args.repair:
        _require_idle(data / "index", "repairing")
    reader = _open_reader(data)
    try:
        report = verify(data, reader)
    finally:
        reader.close()
    if args.repair and report.problems:
        try:
            repair(data, report)
        except OSError as exc:
            _print_report(report, args.json)
            raise ToolError(ExitCode.WRITE_ERROR, f"repair stopped: {exc}") from exc
    _print_report(report, args.json)
    remaining = report.unrepaired if args.repair else report.problems
    return int(ExitCode.FAILED if remaining else ExitCode.OK)


# -------------------------------------------------------------------------------- compact


def compact(data: Path) -> tuple[int, int]:
    """Copy the index with compaction (``mdb_env_copy2`` MDB_CP_COMPACT), then swap it in.

    The copy goes to ``index.compact`` beside the index, is fsync'd, and replaces the index by
    two renames; the old one is removed last. Returns (bytes before, bytes after).
    """
    from workers.index.schema import open_index

    index = data / "index"
    fresh = data / "index.compact"
    old = data / f"index.old-{int(time.time())}"
    shutil.rmtree(fresh, ignore_errors=True)  # a previous, interrupted compaction
    fresh.mkdir()
    before = (index / "data.mdb").stat().st_size
    env = open_index(index, readonly=True, map_size=0).env
    try:
        env.copy(str(fresh), compact=True)
    finally:
        env.close()
    _fsync(fresh / "data.mdb")
    _fsync(fresh)
    os.rename(index, old)
    os.rename(fresh, index)
    _fsync(data)
    shutil.rmtree(old)
    return before, (index / "data.mdb").stat().st_size


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _run_compact(args: argparse.Namespace) -> int:
    from appliance.errors import IndexSchemaError

    data = data_dir(args)
    index = data / "index"
    if not (index / "data.mdb").exists():
        raise ToolError(ExitCode.NOT_FOUND, f"no index at {index}")
    _require_idle(index, "compacting")
    try:
        before, after = compact(data)
    except IndexSchemaError as exc:
        raise ToolError(ExitCode.FAILED, str(exc)) from exc
    except OSError as exc:
        raise ToolError(ExitCode.WRITE_ERROR, f"{index}: cannot compact: {exc}") from exc
    print(f"{index}: {before} -> {after} bytes")
    return int(ExitCode.OK)


# ------------------------------------------------------------------------------- parsers


def _handler(verb: str, run: Any) -> Any:
    def handle(args: argparse.Namespace) -> int:
        try:
            code: int = run(args)
        except ToolError as exc:
            print(f"pacs db {verb}: {exc.message}", file=sys.stderr)
            return int(exc.code)
        except BrokenPipeError:  # `pacs db studies | head`
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return int(ExitCode.OK)
        return code

    return handle


_EXIT_CODES = ("exit codes: 0 ok, 1 problems found / index busy, 2 usage, 3 no index, "
               "5 cannot write")


def _verb(db_sub: argparse._SubParsersAction, name: str, help_text: str,  # type: ignore[type-arg]
          examples: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = db_sub.add_parser(
        name, help=help_text, description=help_text,
        epilog="examples:\n" + examples + "\n\n" + _EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="TOML configuration (for [storage] data_dir)")
    p.add_argument("--data", type=Path, help="data directory (default: the configuration's)")
    return p


def add_db_verbs(db_sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add patients, studies, series, verify and compact under `pacs db`."""
    for name, what, examples in (
        ("patients", "patients in the index",
         "  pacs db patients --data /var/lib/pacs\n  pacs db patients --patient-id PID001 "
         "--format json"),
        ("studies", "studies in the index",
         "  pacs db studies --patient-id PID001\n  pacs db studies --format csv > studies.csv"),
        ("series", "series in the index",
         "  pacs db series --study 1.2.3\n  pacs db series --patient-id PID001 --format json"),
    ):
        p = _verb(db_sub, name, f"list the {what}", examples)
        p.add_argument("--patient-id", metavar="ID", help="only this PatientID (exact)")
        if name != "patients":
            p.add_argument("--study", metavar="UID", help="only this Study Instance UID")
        p.add_argument("--format", choices=("table", "json", "csv"), default="table")
        p.set_defaults(func=_handler(name, _run_browse), level=name)
    v = _verb(db_sub, "verify", "check the index against the stored files",
              "  pacs db verify --data /var/lib/pacs\n"
              "  pacs db verify --repair     # with the appliance stopped")
    v.add_argument("--repair", action="store_true",
                   help="remove records of missing files, move unindexed files to "
                        "<data>/orphans/ (refused while the index is open elsewhere)")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(func=_handler("verify", _run_verify))
    c = _verb(db_sub, "compact", "rewrite the index without free pages (appliance stopped)",
              "  pacs db compact --data /var/lib/pacs")
    c.set_defaults(func=_handler("compact", _run_compact))


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """A `db` parser holding only these verbs (tests, or a program without `db stats`)."""
    db = sub.add_parser("db", help="index tools")
    add_db_verbs(db.add_subparsers(dest="db_command", required=True))


__all__ = ["VerifyReport", "add_db_verbs", "compact", "data_dir", "index_users",
           "print_records", "register", "repair", "verify"]
