"""The file-side workflow verbs of `pacs`: `worklist add|import|list|remove`, `mpps list|show`.

They open the workflow store of a data directory (``<data>/workflow``) directly, which is safe
while `pacs serve` runs on it: LMDB serialises writers across processes. The network verbs
(a worklist C-FIND client, MPPS N-CREATE/N-SET) belong beside them as further subcommands of
the same groups: ``subcommands(sub.choices["worklist"]).add_parser("query", ...)``.

`register(sub)` adds the groups; each verb sets `func=handler`, `handler(args) -> int`.
Exit codes: 0 ok, 1 failed, 2 usage, 3 not found, 4 bad input file.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from collections.abc import Callable, Sequence
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.workflow.mpps import MppsRecord
    from workers.workflow.store import WorkflowStore

Handler = Callable[[argparse.Namespace], int]


class Exit(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    NOT_FOUND = 3
    BAD_INPUT = 4


_EXIT_CODES = "\n\nexit codes: 0 ok, 1 failed, 2 usage, 3 not found, 4 bad input file"
_WORKLIST_EXAMPLES = """
  pacs worklist add orders.json --data /var/lib/pacs
  pacs worklist add incoming/            # every *.json below it, all or nothing
  pacs worklist list --format json
  pacs worklist remove 1.2.3.4.5.6.7.8.9/SPS001    # or a Study Instance UID: all its steps

item format (one object or a list per file; DICOM JSON items, PS3.18 F, also accepted):
  {"patientId": "12345", "patientName": "DOE^JOHN", "patientBirthDate": "19800101",
   "patientSex": "M", "studyInstanceUid": "1.2.3.4.5.6.7.8.9", "accessionNumber": "ACC001",
   "scheduledStationAeTitle": "CT_01", "scheduledProcedureStepStartDate": "20241220",
   "scheduledProcedureStepStartTime": "100000", "modality": "CT",
   "scheduledProcedureStepId": "SPS001", "scheduledProcedureStepDescription": "CT Abdomen"}"""
_MPPS_EXAMPLES = """
  pacs mpps list --data /var/lib/pacs
  pacs mpps show 1.2.826.0.1.3680043.2.1143.7 --format json"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `worklist` and `mpps` with their file-side subcommands to the `pacs` parser."""
    worklist = _group(sub, "worklist", "Modality Worklist items (PS3.4 K)", _WORKLIST_EXAMPLES)
    verbs = subcommands(worklist)
    for name in ("add", "import"):
        add = _verb(verbs, name, "import worklist items from JSON files or folders "
                    "(all or nothing; an item with an existing key replaces it)")
        add.add_argument("paths", nargs="+", type=Path, metavar="FILE.json|DIR")
        add.set_defaults(func=_guard("worklist " + name, _worklist_add))
    listing = _verb(verbs, "list", "list the worklist items with their step status")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    listing.set_defaults(func=_guard("worklist list", _worklist_list))
    remove = _verb(verbs, "remove", "remove items by key (<Study UID>/<SPS ID>) or Study UID")
    remove.add_argument("keys", nargs="+", metavar="KEY")
    remove.set_defaults(func=_guard("worklist remove", _worklist_remove))

    mpps = _group(sub, "mpps", "Modality Performed Procedure Steps received (PS3.4 F)",
                  _MPPS_EXAMPLES)
    verbs = subcommands(mpps)
    listing = _verb(verbs, "list", "list the MPPS instances, oldest first")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    listing.set_defaults(func=_guard("mpps list", _mpps_list))
    show = _verb(verbs, "show", "one MPPS instance: status, links and its data set")
    show.add_argument("uid", metavar="UID", help="the MPPS SOP Instance UID")
    show.add_argument("--format", choices=("text", "json"), default="text")
    show.set_defaults(func=_guard("mpps show", _mpps_show))


def subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    """The sub-parsers action of a group (`worklist`, `mpps`), to add verbs to it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="verb", metavar="VERB", required=True)


def _group(sub: argparse._SubParsersAction, name: str, help_text: str,  # type: ignore[type-arg]
           examples: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help_text, description=help_text,
        epilog="examples:" + examples + _EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_subparsers(dest=f"{name}_verb", metavar="VERB", required=True)
    return parser


def _verb(verbs: argparse._SubParsersAction, name: str,  # type: ignore[type-arg]
          help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = verbs.add_parser(name, help=help_text,
                                                       description=help_text)
    parser.add_argument("--data", type=Path, default=Path("data"),
                        help="data directory (default: data)")
    return parser


def _guard(verb: str, run: Handler) -> Handler:
    """One line on stderr for the failures a store can have; never a traceback."""
    def handle(args: argparse.Namespace) -> int:
        import lmdb

        from workers.workflow.store import WorkflowSchemaError

        try:
            return run(args)
        except BrokenPipeError:
            return int(Exit.OK)  # `pacs worklist list | head`
        except (lmdb.Error, WorkflowSchemaError, OSError) as exc:
            print(f"pacs {verb}: {exc}", file=sys.stderr)
            return int(Exit.FAILED)

    return handle


def _open(args: argparse.Namespace, *, create: bool) -> WorkflowStore | None:
    from workers.workflow.store import WorkflowStore

    data: Path = args.data
    if not create and not (data / "workflow" / "data.mdb").exists():
        return None  # never create a store just to list it
    return WorkflowStore(data)


# ---- worklist -----------------------------------------------------------------------------


def _worklist_add(args: argparse.Namespace) -> int:
    from workers.workflow.worklist import WorklistImportError, load_paths

    verb = f"pacs worklist {args.worklist_verb}"
    try:
        items = load_paths(args.paths)
    except FileNotFoundError as exc:
        print(f"{verb}: {exc}: no such file or directory", file=sys.stderr)
        return int(Exit.NOT_FOUND)
    except WorklistImportError as exc:
        for line in exc.problems:
            print(f"{verb}: {line}", file=sys.stderr)
        print(f"{verb}: nothing imported ({len(exc.problems)} problem(s))", file=sys.stderr)
        return int(Exit.BAD_INPUT)
    if not items:
        print(f"{verb}: no items found in {' '.join(map(str, args.paths))}", file=sys.stderr)
        return int(Exit.BAD_INPUT)
    store = _open(args, create=True)
    assert store is not None
    with store:
        store.put_items(items)
    print(f"imported {len(items)} item(s)")
    return int(Exit.OK)


def _worklist_list(args: argparse.Namespace) -> int:
    store = _open(args, create=False)
    flat = []
    if store is not None:
        with store:
            flat = [item.flat() for item in store.items()]
    if args.format == "json":
        print(json.dumps(flat, indent=2, ensure_ascii=False))
        return int(Exit.OK)
    columns = (("STATUS", "scheduledProcedureStepStatus"),
               ("DATE", "scheduledProcedureStepStartDate"),
               ("TIME", "scheduledProcedureStepStartTime"),
               ("STATION", "scheduledStationAeTitle"), ("MOD", "modality"),
               ("PATIENT ID", "patientId"), ("PATIENT NAME", "patientName"),
               ("ACCESSION", "accessionNumber"), ("SPS ID", "scheduledProcedureStepId"),
               ("DESCRIPTION", "scheduledProcedureStepDescription"), ("KEY", "key"))
    _table([c[0] for c in columns], [[row.get(c[1], "") for c in columns] for row in flat])
    return int(Exit.OK)


def _worklist_remove(args: argparse.Namespace) -> int:
    store = _open(args, create=False)
    if store is None:
        print(f"pacs worklist remove: no workflow store under {args.data}", file=sys.stderr)
        return int(Exit.NOT_FOUND)
    with store:
        present = [item.key for item in store.items()]
        missing = [k for k in args.keys
                   if not any(p == k or p.startswith(k + "/") for p in present)]
        removed = store.remove_items(k for k in args.keys if k not in missing)
    for key in missing:
        print(f"pacs worklist remove: {key}: no such item", file=sys.stderr)
    print(f"removed {removed} item(s)")
    return int(Exit.NOT_FOUND if missing else Exit.OK)


# ---- mpps ---------------------------------------------------------------------------------


def _mpps_list(args: argparse.Namespace) -> int:
    store = _open(args, create=False)
    records: list[MppsRecord] = []
    if store is not None:
        with store:
            records = list(store.list_mpps())
    if args.format == "json":
        print(json.dumps([_summary(r) for r in records], indent=2, ensure_ascii=False))
        return int(Exit.OK)
    rows = [[r.sop_instance_uid, r.status, r.calling_ae, _iso(r.created_at), _iso(r.updated_at),
             _text(r, "PerformedProcedureStepID"), _text(r, "Modality"),
             " ".join(f"{s}/{p}" for s, p in r.steps), str(len(r.series_uids))]
            for r in records]
    _table(["SOP INSTANCE UID", "STATUS", "CALLING AE", "CREATED", "UPDATED", "PPS ID", "MOD",
            "WORKLIST STEPS", "SERIES"], rows)
    return int(Exit.OK)


def _mpps_show(args: argparse.Namespace) -> int:
    store = _open(args, create=False)
    record = None
    if store is not None:
        with store:
            record = store.get_mpps(args.uid)
    if record is None:
        print(f"pacs mpps show: {args.uid}: no such MPPS instance", file=sys.stderr)
        return int(Exit.NOT_FOUND)
    if args.format == "json":
        out = _summary(record)
        out["dataset"] = record.dataset.to_json_dict()
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return int(Exit.OK)
    summary = _summary(record)
    for label, key in (("SOP Instance UID", "sopInstanceUid"), ("Status", "status"),
                       ("Calling AE", "callingAe"), ("Created", "created"),
                       ("Updated", "updated")):
        print(f"{label + ':':18}{summary[key]}")
    steps = ", ".join(summary["worklistSteps"]) or "(unscheduled)"
    print(f"{'Worklist steps:':18}{steps}")
    print(f"{'Series:':18}{', '.join(record.series_uids) or '(none)'}")
    print()
    print(record.dataset)
    return int(Exit.OK)


def _summary(r: MppsRecord) -> dict[str, Any]:
    return {
        "sopInstanceUid": r.sop_instance_uid, "status": r.status, "callingAe": r.calling_ae,
        "created": _iso(r.created_at), "updated": _iso(r.updated_at),
        "performedProcedureStepId": _text(r, "PerformedProcedureStepID"),
        "modality": _text(r, "Modality"),
        "worklistSteps": [f"{s}/{p}" for s, p in r.steps],
        "seriesInstanceUids": list(r.series_uids),
    }


def _text(r: MppsRecord, keyword: str) -> str:
    value = r.dataset.get(keyword)
    return str(value) if value is not None else ""


def _iso(epoch_s: float) -> str:
    return _dt.datetime.fromtimestamp(epoch_s, _dt.UTC).isoformat(timespec="seconds")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    if not rows:
        print("(none)")
        return
    widths = [max(len(h), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    for row in (header, *rows):
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


__all__ = ["Exit", "register", "subcommands"]
