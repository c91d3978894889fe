"""`pacs worklist query`, `pacs mpps create|set`, `pacs commit`: the workflow clients on our
own SCU core (``appliance.workflow_scu``), beside the file-side ``worklist``/``mpps`` verbs.

Same conventions as ``net_cli`` (whose plumbing this reuses): DCMTK-style network flags
(``-aet``, ``-aec``, ``-to``, ``-pdu``), one stderr line per failure and its exit codes. The
data sets sent follow PS3.4: the Modality Worklist return keys of Table K.6-1, the MPPS
N-CREATE / N-SET attributes of Table F.7.2-1 (Type 1 filled, Type 2 present, possibly empty),
the Storage Commitment Action Information of Table J.3-1. pydicom and the SCU are imported
inside the handlers so that registering these verbs costs ``pacs serve`` nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from appliance.dimse.status import StatusCategory, category
from appliance.tools.net_cli import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CLIError,
    _final_check,
    _guard,
    _network_args,
    _parser,
    _status_text,
    apply_key,
    tls_context,
)
from appliance.tools.net_store import iter_files

if TYPE_CHECKING:
    import ssl

    from pydicom import Dataset

    from appliance.workflow_scu import CommitmentResult, WorkflowSCU

# Table K.6-1 return keys asked for by `worklist query` (top level, then the SPS item).
_WL_KEYS: Final = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                   "AccessionNumber", "RequestedProcedureID", "RequestedProcedureDescription",
                   "StudyInstanceUID")  # fmt: skip
_SPS_KEYS: Final = ("ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
                    "ScheduledProcedureStepStartTime", "Modality",
                    "ScheduledPerformingPhysicianName", "ScheduledProcedureStepDescription",
                    "ScheduledProcedureStepID")  # fmt: skip
_DATE: Final = re.compile(r"\d{8}|\d{8}-|-\d{8}|\d{8}-\d{8}")  # PS3.4 C.2.2.2.5 ranges
_MPPS_STATUSES: Final = ("IN PROGRESS", "COMPLETED", "DISCONTINUED")  # PS3.3 C.4.14


# ---- worklist query ----------------------------------------------------------------------


def worklist_identifier(args: argparse.Namespace) -> Dataset:
    """The C-FIND Identifier (PS3.4 K.6.1.2): the usual return keys, the filters given as
    flags in the Scheduled Procedure Step Sequence item, then any ``-k`` keys."""
    from pydicom import Dataset as PyDataset
    from pydicom.sequence import Sequence as PySequence

    ds, sps = PyDataset(), PyDataset()
    for keyword in _WL_KEYS:
        setattr(ds, keyword, None)
    for keyword in _SPS_KEYS:
        setattr(sps, keyword, None)
    ds.ScheduledProcedureStepSequence = PySequence([sps])
    if args.patient_id:
        ds.PatientID = args.patient_id
    if args.patient_name:
        ds.PatientName = args.patient_name
    if args.accession:
        ds.AccessionNumber = args.accession
    if args.modality:
        sps.Modality = args.modality
    if args.station:
        sps.ScheduledStationAETitle = args.station
    if args.date:
        sps.ScheduledProcedureStepStartDate = _date_range(args.date)
    for spec in args.key:
        apply_key(ds, spec)
    if any(isinstance(e.value, str) and not e.value.isascii() for e in ds.iterall()):
        ds.SpecificCharacterSet = "ISO_IR 192"  # PS3.5 6.1.2.5: UTF-8
    return ds


def _date_range(text: str) -> str:
    value = text.strip().lower()
    today = time.strftime("%Y%m%d")
    value = value.replace("today", today)
    if not _DATE.fullmatch(value):
        raise CLIError(EXIT_USAGE, f"bad date {text!r}: use YYYYMMDD, today, or a range "
                                   "YYYYMMDD-YYYYMMDD (either end may be left open)")  # fmt: skip
    return value


def _worklist_query(args: argparse.Namespace) -> int:
    from appliance.workflow_scu import MODALITY_WORKLIST_FIND

    identifier = worklist_identifier(args)
    results: list[Dataset] = []
    final = 0
    with _workflow_scu(args, [MODALITY_WORKLIST_FIND]) as scu:
        for status, ds in scu.find_worklist(identifier):
            if ds is not None:
                results.append(ds)
            if category(status) is not StatusCategory.PENDING:
                final = status
    if final != 0:
        return _final_check("worklist query", final, args.quiet)
    print_worklist(results, args.format)
    if args.verbose:
        print(f"pacs worklist query: {len(results)} item(s)", file=sys.stderr)
    return EXIT_OK


def worklist_rows(results: list[Dataset]) -> tuple[list[str], list[list[str]]]:
    """Columns and rows: top-level keys, then the Scheduled Procedure Step keys (values of
    several SPS items joined with a backslash, as a multi-valued element would print); the
    usual keys first in a fixed order, then whatever else the SCP returned."""
    top: list[str] = list(_WL_KEYS)
    step: list[str] = list(_SPS_KEYS)
    for ds in results:
        for elem in ds:
            if elem.keyword == "ScheduledProcedureStepSequence":
                for item in elem.value:
                    step += [e.keyword for e in item if e.keyword and e.VR != "SQ"
                             and e.keyword not in step]  # fmt: skip
            elif elem.keyword and elem.VR != "SQ" and elem.keyword not in top and (
                elem.keyword != "SpecificCharacterSet"
            ):
                top.append(elem.keyword)
    steps = [list(ds.get("ScheduledProcedureStepSequence") or []) for ds in results]
    top = [k for k in top if any(k in ds for ds in results)]
    step = [k for k in step if any(k in i for items in steps for i in items)]
    rows = []
    for ds, items in zip(results, steps, strict=True):
        row = [_text(ds.get(k)) for k in top]
        row += ["\\".join(dict.fromkeys(_text(i.get(k)) for i in items)) for k in step]
        rows.append(row)
    return top + step, rows


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def print_worklist(results: list[Dataset], fmt: str) -> None:
    import csv

    if fmt == "json":
        json.dump([ds.to_json_dict() for ds in results], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    columns, rows = worklist_rows(results)
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        return
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


# ---- MPPS ----------------------------------------------------------------------------------

# The worklist-item JSON keys that describe the scheduled step (the rest map to the
# top level of the data set).
_STEP_KEYWORDS: Final = frozenset(_SPS_KEYS)


def _keyword(key: str) -> str:
    """``patientId`` -> ``PatientID``, ``scheduledStationAeTitle`` -> ScheduledStationAETitle."""
    word = key[:1].upper() + key[1:]
    for part, fixed in (("Uid", "UID"), ("AeTitle", "AETitle"), ("Id", "ID")):
        word = re.sub(part + r"(?=[A-Z]|$)", fixed, word)
    return word


def load_source(path: Path) -> Dataset:
    """A data set to build from: DICOM (Part 10 or bare, e.g. a .wl file), DICOM JSON
    (PS3.18 F), or the flat worklist-item JSON (``{"patientId": ...}``)."""
    from pydicom import Dataset as PyDataset
    from pydicom import dcmread
    from pydicom.datadict import tag_for_keyword
    from pydicom.sequence import Sequence as PySequence

    if not path.is_file():
        raise CLIError(EXIT_USAGE, f"{path}: no such file")
    raw = path.read_bytes()
    if raw.lstrip()[:1] != b"{":
        try:
            fds = dcmread(path, force=True)
            fds.file_meta = None  # type: ignore[assignment]
            return fds
        except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on garbage
            raise CLIError(EXIT_USAGE, f"{path}: not DICOM or JSON: {exc}") from None
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise CLIError(EXIT_USAGE, f"{path}: bad JSON: {exc}") from None
    if all(re.fullmatch(r"[0-9A-Fa-f]{8}", k) for k in obj):
        return PyDataset.from_json(obj)
    ds, step = PyDataset(), PyDataset()
    for key, value in obj.items():
        keyword = _keyword(key)
        if tag_for_keyword(keyword) is None:
            raise CLIError(EXIT_USAGE, f"{path}: unknown field {key!r}")
        setattr(step if keyword in _STEP_KEYWORDS else ds, keyword, value)
    if len(step):
        ds.ScheduledProcedureStepSequence = PySequence([step])
    return ds


def mpps_create_dataset(args: argparse.Namespace, src: Dataset | None) -> Dataset:
    """The N-CREATE Attribute List (PS3.4 Table F.7.2-1) from a worklist item, an image or a
    complete MPPS (``src``, sent as-is when it has a status), with the flags applied on top."""
    from pydicom import Dataset as PyDataset
    from pydicom.sequence import Sequence as PySequence

    from appliance.workflow_scu import new_uid

    if src is not None and "PerformedProcedureStepStatus" in src:
        return src
    src = src if src is not None else PyDataset()
    sps = (src.get("ScheduledProcedureStepSequence") or [PyDataset()])[0]
    pick = {k: (getattr(args, a) or src.get(k, sps.get(k, "")) or "")
            for k, a in (("PatientName", "patient_name"), ("PatientID", "patient_id"),
                         ("PatientBirthDate", "patient_birth_date"), ("PatientSex", "patient_sex"),
                         ("StudyInstanceUID", "study_uid"), ("AccessionNumber", "accession"),
                         ("ScheduledProcedureStepID", "sps_id"),
                         ("RequestedProcedureID", "requested_procedure_id"),
                         ("Modality", "modality"))}  # fmt: skip
    if not pick["Modality"]:
        raise CLIError(EXIT_USAGE, "give --modality (Modality is Type 1, PS3.4 Table F.7.2-1)")
    step = PyDataset()  # Scheduled Step Attributes Sequence item
    step.StudyInstanceUID = pick["StudyInstanceUID"] or new_uid()  # unscheduled: a new study
    step.ReferencedStudySequence = PySequence()
    step.AccessionNumber = pick["AccessionNumber"]
    step.RequestedProcedureID = pick["RequestedProcedureID"]
    step.RequestedProcedureDescription = src.get("RequestedProcedureDescription", "")
    step.ScheduledProcedureStepID = pick["ScheduledProcedureStepID"]
    step.ScheduledProcedureStepDescription = sps.get("ScheduledProcedureStepDescription", "")
    step.ScheduledProtocolCodeSequence = PySequence()
    ds = PyDataset()
    ds.ScheduledStepAttributesSequence = PySequence([step])
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        setattr(ds, keyword, pick[keyword])
    ds.ReferencedPatientSequence = PySequence()
    now = time.localtime()
    ds.PerformedProcedureStepID = (args.pps_id or pick["ScheduledProcedureStepID"]
                                   or time.strftime("PPS%y%m%d%H%M%S", now))[:16]  # fmt: skip
    ds.PerformedStationAETitle = args.station_ae or args.calling_ae
    ds.PerformedStationName = ""
    ds.PerformedLocation = ""
    ds.PerformedProcedureStepStartDate = time.strftime("%Y%m%d", now)
    ds.PerformedProcedureStepStartTime = time.strftime("%H%M%S", now)
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepDescription = (args.description
                                            or step.ScheduledProcedureStepDescription)
    ds.PerformedProcedureTypeDescription = ""
    ds.ProcedureCodeSequence = PySequence()
    ds.PerformedProcedureStepEndDate = ""  # Type 2 at create, filled by the final N-SET
    ds.PerformedProcedureStepEndTime = ""
    ds.Modality = pick["Modality"]
    ds.StudyID = ""
    ds.PerformedProtocolCodeSequence = PySequence()
    ds.PerformedSeriesSequence = PySequence()
    if any(isinstance(e.value, str) and not e.value.isascii() for e in ds.iterall()):
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def mpps_set_dataset(args: argparse.Namespace) -> Dataset:
    """The N-SET Modification List (PS3.4 F.7.2.2): the new status, the end date/time when it
    is final, and the Performed Series Sequence from ``--series`` and ``--from-files``."""
    from pydicom import Dataset as PyDataset
    from pydicom.sequence import Sequence as PySequence

    status = args.status.replace("_", " ").upper()
    ds = load_source(Path(args.keys_file)) if args.keys_file else PyDataset()
    ds.PerformedProcedureStepStatus = status
    if status != "IN PROGRESS":
        now = time.localtime()
        ds.PerformedProcedureStepEndDate = time.strftime("%Y%m%d", now)
        ds.PerformedProcedureStepEndTime = time.strftime("%H%M%S", now)
    series: dict[str, PyDataset] = {}
    for uid in args.series:
        series[uid] = _series_item(uid, args.protocol_name)
    for ref in _image_refs(args.from_files):
        item = series.setdefault(ref.SeriesInstanceUID,
                                 _series_item(ref.SeriesInstanceUID, args.protocol_name))
        if ref.get("ProtocolName") and not args.protocol_name:
            item.ProtocolName = ref.ProtocolName
        if ref.get("SeriesDescription"):
            item.SeriesDescription = ref.SeriesDescription
        image = PyDataset()
        image.ReferencedSOPClassUID = ref.SOPClassUID
        image.ReferencedSOPInstanceUID = ref.SOPInstanceUID
        item.ReferencedImageSequence.append(image)
    if series:
        ds.PerformedSeriesSequence = PySequence(list(series.values()))
    elif status == "COMPLETED" and "PerformedSeriesSequence" not in ds:
        raise CLIError(EXIT_USAGE, "COMPLETED needs the performed series: --series UID or "
                                   "--from-files (PS3.4 F.7.2.2.2)")  # fmt: skip
    return ds


def _series_item(uid: str, protocol_name: str | None) -> Dataset:
    from pydicom import Dataset as PyDataset
    from pydicom.sequence import Sequence as PySequence

    item = PyDataset()  # Performed Series Sequence item, Table F.7.2-1
    item.PerformingPhysicianName = ""
    item.ProtocolName = protocol_name or "UNKNOWN"  # Type 1
    item.OperatorsName = ""
    item.SeriesInstanceUID = uid
    item.SeriesDescription = ""
    item.RetrieveAETitle = ""
    item.ReferencedImageSequence = PySequence()
    item.ReferencedNonImageCompositeSOPInstanceSequence = PySequence()
    return item


def _image_refs(paths: list[str]) -> list[Dataset]:
    from pydicom import dcmread

    out: list[Dataset] = []
    for path, explicit in iter_files(paths):
        try:
            ds = dcmread(path, stop_before_pixels=True, specific_tags=[
                "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "ProtocolName",
                "SeriesDescription"])  # fmt: skip
            ok = all(k in ds for k in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID"))
        except Exception:  # noqa: BLE001 - not DICOM
            ok = False
        if ok:
            out.append(ds)
        elif explicit:
            raise CLIError(EXIT_USAGE, f"{path}: not a DICOM instance with SOP and series UIDs")
    return out


def _mpps_create(args: argparse.Namespace) -> int:
    from appliance.workflow_scu import MODALITY_PERFORMED_PROCEDURE_STEP, new_uid

    src = load_source(Path(args.keys_file)) if args.keys_file else None
    ds = mpps_create_dataset(args, src)
    uid = None if args.scp_uid else (args.uid or new_uid())
    with _workflow_scu(args, [MODALITY_PERFORMED_PROCEDURE_STEP]) as scu:
        status, created, rsp = scu.mpps_create(ds, uid)
    code = _n_status("mpps create", status, rsp.error_comment, args.quiet)
    if code == EXIT_OK:
        print(created or "")
    return code


def _mpps_set(args: argparse.Namespace) -> int:
    from appliance.workflow_scu import MODALITY_PERFORMED_PROCEDURE_STEP

    ds = mpps_set_dataset(args)
    with _workflow_scu(args, [MODALITY_PERFORMED_PROCEDURE_STEP]) as scu:
        status, rsp = scu.mpps_set(args.uid, ds)
    code = _n_status("mpps set", status, rsp.error_comment, args.quiet)
    if code == EXIT_OK and not args.quiet:
        print(f"{args.uid} {ds.PerformedProcedureStepStatus}")
    return code


def _n_status(verb: str, status: int, comment: str | None, quiet: bool) -> int:
    kind = category(status)
    why = f" ({comment})" if comment else ""
    if kind is StatusCategory.FAILURE:
        print(f"pacs {verb}: failed: {_status_text(status)}{why}", file=sys.stderr)
        return EXIT_FAILED
    if kind is StatusCategory.WARNING and not quiet:
        print(f"pacs {verb}: warning: {_status_text(status)}{why}", file=sys.stderr)
    return EXIT_OK


# ---- commit --------------------------------------------------------------------------------


def commit_refs(paths: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """(SOP Class, SOP Instance) from each Part 10 file's File Meta, and the files skipped
    in folders (not DICOM, DICOMDIR). A named file that is not an instance is an error."""
    from appliance.scu_files import read_file_meta

    refs: dict[tuple[str, str], None] = {}
    skipped: list[str] = []
    for path, explicit in iter_files(paths):
        try:
            with open(path, "rb") as fp:
                meta = read_file_meta(fp)
            why = "DICOMDIR" if meta.sop_class_uid == "1.2.840.10008.1.3.10" else ""
        except (OSError, ValueError) as exc:
            why = f"not a DICOM Part 10 file: {exc}"
        if why and explicit:
            raise CLIError(EXIT_USAGE, f"{path}: {why}")
        if why:
            skipped.append(f"{path}: {why}")
            continue
        refs[(meta.sop_class_uid, meta.sop_instance_uid)] = None
    return list(refs), skipped


def _commit(args: argparse.Namespace) -> int:
    from appliance.workflow_scu import (
        STORAGE_COMMITMENT_PUSH_MODEL,
        CommitmentListener,
        CommitmentOutcome,
    )

    refs, skipped = commit_refs(args.paths)
    for line in skipped if args.verbose else []:
        print(f"pacs commit: skipped {line}", file=sys.stderr)
    if not refs:
        raise CLIError(EXIT_USAGE, "no DICOM instances to commit")
    listener = None
    if args.listen is not None:
        server_ctx = _listener_tls_context(args)
        try:
            listener = CommitmentListener(args.listen, ae_title=args.calling_ae,
                                          timeout_s=args.timeout, ssl_context=server_ctx)
        except OSError as exc:
            raise CLIError(EXIT_USAGE, f"--listen {args.listen}: {exc.strerror or exc}") from None
    try:
        with _workflow_scu(args, [STORAGE_COMMITMENT_PUSH_MODEL]) as scu:
            result = scu.request_commitment(refs, args.transaction_uid, wait_s=args.wait,
                                            listener=listener)  # fmt: skip
    finally:
        if listener is not None:
            listener.close()
    _print_commitment(result, args)
    if result.outcome is CommitmentOutcome.REFUSED:
        why = f" ({result.action_error_comment})" if result.action_error_comment else ""
        print(f"pacs commit: N-ACTION refused: {_status_text(result.action_status)}{why}",
              file=sys.stderr)  # fmt: skip
    elif result.report is None:
        print(f"pacs commit: no N-EVENT-REPORT: {result.outcome.value}"
              + (f" after {args.wait:g} s" if result.outcome is CommitmentOutcome.TIMED_OUT
                 else " before the report came"), file=sys.stderr)  # fmt: skip
    return EXIT_OK if result.all_committed else EXIT_FAILED


def _listener_tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """``--listen`` with ``--tls KEY CERT``: the listener serves TLS only (PS3.15 B.9, same
    profile as the appliance's port) presenting that pair; with ``--tls-ca`` the reporting
    peer must present a certificate from those CAs (mutual TLS), else none is asked for."""
    from appliance import tls
    from appliance.config import TlsConfig
    from appliance.errors import ConfigError

    if args.tls_identity is None:
        if args.tls_anonymous:
            raise CLIError(EXIT_USAGE, "--listen with TLS needs --tls KEY CERT (the listener "
                                       "presents them to the reporting peer)")
        return None
    key, cert = args.tls_identity
    cas = list(args.tls_ca)
    try:
        ctx = tls.server_context(TlsConfig(enabled=True, certificate=cert, private_key=key,
                                           ca_file=cas[0] if cas else "",
                                           verify_client=bool(cas)))
        for extra in cas[1:]:
            ctx.load_verify_locations(cafile=extra)
    except (ConfigError, OSError) as exc:
        raise CLIError(EXIT_USAGE, f"--listen TLS: {exc}") from None
    return ctx


def _print_commitment(result: CommitmentResult, args: argparse.Namespace) -> None:
    from appliance.commitment import FAILURE_REASONS

    if args.format == "json":
        json.dump({
            "transaction_uid": result.transaction_uid, "outcome": result.outcome.value,
            "action_status": result.action_status,
            "same_association": result.report.same_association if result.report else None,
            "committed": [r.sop_instance_uid for r in result.committed],
            "failed": [{"sop_instance_uid": f.sop_instance_uid, "failure_reason": f.failure_reason,
                        "why": FAILURE_REASONS.get(f.failure_reason or -1)}
                       for f in result.failed],
            "unreported": [r.sop_instance_uid for r in result.unreported],
        }, sys.stdout, indent=2)  # fmt: skip
        sys.stdout.write("\n")
        return
    if not args.quiet:
        for ref in result.committed:
            print(f"committed   {ref.sop_instance_uid}")
    for f in result.failed:
        reason = (f"0x{f.failure_reason:04X} {FAILURE_REASONS.get(f.failure_reason, '')}"
                  if f.failure_reason is not None else "no reason given")  # fmt: skip
        print(f"failed      {f.sop_instance_uid}  {reason.strip()}")
    if result.report is not None:
        for ref in result.unreported:
            print(f"unreported  {ref.sop_instance_uid}")
    if not args.quiet:
        where = ("same association" if result.report is None or result.report.same_association
                 else f"new association from {result.report.calling_ae}")  # fmt: skip
        print(f"pacs commit: {len(result.committed)} committed, {len(result.failed)} failed, "
              f"{len(result.unreported)} unreported; transaction {result.transaction_uid}"
              + (f" ({where})" if result.report is not None else ""), file=sys.stderr)


# ---- shared --------------------------------------------------------------------------------


def _workflow_scu(args: argparse.Namespace, sop_classes: list[str]) -> WorkflowSCU:
    from appliance.workflow_scu import WorkflowSCU, workflow_contexts

    return WorkflowSCU(args.host, args.port, calling_ae=args.calling_ae,
                       called_ae=args.called_ae, contexts=workflow_contexts(sop_classes),
                       max_pdu_bytes=args.max_pdu, timeout_s=args.timeout,
                       ssl_context=tls_context(args))  # fmt: skip


def add_worklist_network_verbs(worklist_sub: argparse._SubParsersAction[Any]) -> None:
    """``query`` under ``pacs worklist``."""
    p = _parser(worklist_sub, "query", "Modality Worklist C-FIND: ask a worklist SCP what to "
                "do (like findscu -W)", "pacs worklist query -aec RIS -m CT -d today "
                "localhost 11112")  # fmt: skip
    _network_args(p)
    p.add_argument("-m", "--modality", help="Scheduled Procedure Step Modality, e.g. CT")
    p.add_argument("-s", "--station", metavar="AE", help="Scheduled Station AE Title")
    p.add_argument("-d", "--date", metavar="DATE",
                   help="Scheduled Procedure Step Start Date: YYYYMMDD, today, or a range "
                        "YYYYMMDD-YYYYMMDD")  # fmt: skip
    p.add_argument("--patient-id", help="Patient ID (wildcards * and ? allowed)")
    p.add_argument("--patient-name", help="Patient's Name, e.g. DOE^J*")
    p.add_argument("--accession", help="Accession Number")
    p.add_argument("-k", "--key", action="append", default=[], metavar="KEY[=VALUE]",
                   help="any other key, as in pacs find, e.g. "
                        "ScheduledProcedureStepSequence[0].ScheduledPerformingPhysicianName=SMITH")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table",
                   help="table (default), json (PS3.18 DICOM JSON array) or csv")
    p.set_defaults(func=_guard("worklist query", _worklist_query))


def add_mpps_network_verbs(mpps_sub: argparse._SubParsersAction[Any]) -> None:
    """``create`` and ``set`` under ``pacs mpps``."""
    p = _parser(mpps_sub, "create", "MPPS N-CREATE: report a procedure step IN PROGRESS; "
                "prints its SOP Instance UID", "pacs mpps create -aec PACS -f item.json "
                "localhost 11112")  # fmt: skip
    _network_args(p)
    p.add_argument("-f", "--file", dest="keys_file", metavar="FILE",
                   help="worklist item (DICOM, .wl, DICOM JSON, or the flat worklist JSON) or "
                        "a complete MPPS data set, sent as-is")  # fmt: skip
    for flag, what in (("--patient-id", "Patient ID"), ("--patient-name", "Patient's Name"),
                       ("--patient-birth-date", "Patient's Birth Date"),
                       ("--patient-sex", "Patient's Sex"),
                       ("--study-uid", "Study Instance UID (default: from -f, else a new one)"),
                       ("--accession", "Accession Number"),
                       ("--sps-id", "Scheduled Procedure Step ID"),
                       ("--requested-procedure-id", "Requested Procedure ID"),
                       ("--modality", "Modality (required unless -f has it)"),
                       ("--description", "Performed Procedure Step Description"),
                       ("--pps-id", "Performed Procedure Step ID (default: the SPS ID)"),
                       ("--station-ae", "Performed Station AE Title (default: -aet)")):  # fmt: skip
        p.add_argument(flag, help=what)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--uid", help="the MPPS SOP Instance UID to create (default: a new one)")
    g.add_argument("--scp-uid", action="store_true", help="let the SCP assign the UID")
    p.set_defaults(func=_guard("mpps create", _mpps_create))

    p = _parser(mpps_sub, "set", "MPPS N-SET: complete or discontinue a procedure step",
                "pacs mpps set -aec PACS --status COMPLETED --from-files ./series localhost "
                "11112 1.2.3.4")  # fmt: skip
    _network_args(p)
    p.add_argument("uid", help="the MPPS SOP Instance UID")
    p.add_argument("--status", required=True, type=str.upper,
                   choices=("COMPLETED", "DISCONTINUED", "IN_PROGRESS"),
                   help="the new Performed Procedure Step Status")  # fmt: skip
    p.add_argument("--series", action="append", default=[], metavar="UID",
                   help="a performed Series Instance UID (repeatable)")
    p.add_argument("--from-files", action="append", default=[], metavar="PATH",
                   help="files or folders whose series and images are listed (repeatable)")
    p.add_argument("--protocol-name", help="Protocol Name of the series (default: from the "
                   "files, else UNKNOWN)")  # fmt: skip
    p.add_argument("-f", "--file", dest="keys_file", metavar="FILE",
                   help="more Modification List attributes (DICOM or DICOM JSON)")
    p.set_defaults(func=_guard("mpps set", _mpps_set))


def register_commit(sub: argparse._SubParsersAction[Any]) -> None:
    """``pacs commit``: Storage Commitment Push Model SCU."""
    p = _parser(sub, "commit", "Storage Commitment: ask a peer to confirm it holds the files' "
                "instances (N-ACTION, then the N-EVENT-REPORT)", "pacs commit -aec PACS "
                "--listen 11113 localhost 11112 ./study")  # fmt: skip
    _network_args(p)
    p.add_argument("paths", nargs="+", metavar="FILE|DIR", help="files or folders (recursive)")
    p.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                   help="how long to wait for the report (default 60)")
    p.add_argument("--listen", type=int, metavar="PORT",
                   help="also accept the report on a new association to this port, "
                        "answering as -aet (the peer must know us at this address); "
                        "with --tls KEY CERT over TLS only, presenting that pair, and with "
                        "--tls-ca requiring the peer's certificate from those CAs")
    p.add_argument("--transaction-uid", metavar="UID", help="default: a new UID")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=_guard("commit", _commit))


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Standalone: ``worklist`` and ``mpps`` parents with only these verbs, and ``commit``.
    When the file-side verbs exist, attach with the three functions above instead."""
    wl = sub.add_parser("worklist", help="Modality Worklist")
    add_worklist_network_verbs(wl.add_subparsers(dest="worklist_command", required=True))
    mpps = sub.add_parser("mpps", help="Modality Performed Procedure Step")
    add_mpps_network_verbs(mpps.add_subparsers(dest="mpps_command", required=True))
    register_commit(sub)


__all__ = [
    "add_mpps_network_verbs", "add_worklist_network_verbs", "commit_refs", "load_source",
    "mpps_create_dataset", "mpps_set_dataset", "print_worklist", "register", "register_commit",
    "worklist_identifier", "worklist_rows",
]  # fmt: skip
