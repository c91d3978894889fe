"""`pacs echo | store | find | move | get`: DCMTK-like network clients on our own SCU core
(``appliance.scu``, ``appliance.qr_scu``), not on pynetdicom.

Flags follow echoscu/storescu/findscu/movescu/getscu where they make sense (``-aet``, ``-aec``,
``-aem``, ``-to``, ``-k``, ``-f``, ``-P``/``-S``, ``-L``, ``-od``). Every failure is one line
on stderr, ``pacs <verb>: what: why``, and a distinct exit code (``EXIT_*`` below). Output
files (``get``, ``--report-file``) are written to a temporary name and renamed, so an
interrupted run never leaves a partial file. pydicom and the Q/R SCU are imported inside the
handlers: registering these verbs must not slow down ``pacs serve``.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from appliance.dimse.status import StatusCategory, category
from appliance.scu import AssociationAborted, AssociationRejected, NoAcceptedContext

if TYPE_CHECKING:
    from pydicom import Dataset

    from appliance.dimse.messages import CStoreRQ
    from appliance.qr_scu import QRSCU, RetrieveStatus

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1  # the operation ran but failed (a file not stored, a failure status)
EXIT_USAGE: Final = 2  # bad arguments or input (argparse uses 2 as well)
EXIT_UNREACHABLE: Final = 3  # cannot connect, name not resolved, or timed out
EXIT_REJECTED: Final = 4  # A-ASSOCIATE-RJ
EXIT_ABORTED: Final = 5  # A-ABORT, connection lost, or the peer broke the protocol
EXIT_NO_CONTEXT: Final = 6  # the peer accepted no presentation context for the request
EXIT_WRITE: Final = 7  # an output file could not be written
EXIT_TLS: Final = 8  # the TLS handshake failed (certificate not trusted or refused)

_EXIT_CODES_HELP: Final = (
    "exit codes: 0 success, 1 operation failed, 2 bad arguments or input, 3 host unreachable "
    "or timeout, 4 association rejected, 5 association aborted, 6 no accepted presentation "
    "context, 7 cannot write output, 8 TLS handshake failed"
)
_LEVELS: Final = ("PATIENT", "STUDY", "SERIES", "IMAGE")
# Shown when `find` is given no keys at all: the level's unique key plus a few display keys.
_DEFAULT_KEYS: Final = {
    "PATIENT": ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"),
    "STUDY": ("PatientName", "PatientID", "StudyDate", "StudyDescription", "AccessionNumber",
              "ModalitiesInStudy", "StudyInstanceUID"),
    "SERIES": ("Modality", "SeriesNumber", "SeriesDescription", "SeriesInstanceUID"),
    "IMAGE": ("InstanceNumber", "SOPClassUID", "SOPInstanceUID"),
}  # fmt: skip
# PS3.8 Table 9-21: A-ASSOCIATE-RJ (source, reason) -> text.
_RJ_REASONS: Final = {
    (1, 1): "no reason given", (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognized", (1, 7): "called AE title not recognized",
    (2, 1): "no reason given", (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion", (3, 2): "local limit exceeded",
}  # fmt: skip


class CLIError(Exception):
    """One line for stderr and the exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# ---- shared plumbing -----------------------------------------------------------------------


class Progress:
    """A one-line progress display on stderr, redrawn at most 10 times a second."""

    def __init__(self, enabled: bool | None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._last = 0.0
        self._shown = False

    def show(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.1):
            return
        self._last = now
        sys.stderr.write(f"\r{text[:150]}\x1b[K")
        sys.stderr.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _network_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("host", help="peer host name or address")
    p.add_argument("port", type=int, help="peer TCP port")
    p.add_argument("-aet", "--aetitle", dest="calling_ae", default="PACS_SCU",
                   help="our (calling) AE title (default PACS_SCU)")
    p.add_argument("-aec", "--call", dest="called_ae", default="ANY-SCP",
                   help="the peer's (called) AE title (default ANY-SCP)")
    p.add_argument("-to", "--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="connect and per-message network timeout (default 30)")
    p.add_argument("-pdu", "--max-pdu", type=int, default=1_048_576, metavar="BYTES",
                   help="largest PDU we accept (default 1048576)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("-v", "--verbose", action="store_true", help="print more details")
    _tls_args(p)


def _tls_args(p: argparse.ArgumentParser) -> None:
    """DICOM over TLS (PS3.15 B.9), DCMTK's +tls / +tla / +cf under argparse-able names."""
    g = p.add_argument_group("DICOM over TLS (BCP 195 non-downgrading: TLS 1.2/1.3)")
    who = g.add_mutually_exclusive_group()
    who.add_argument("--tls", nargs=2, metavar=("KEY", "CERT"), dest="tls_identity",
                     help="use TLS, presenting this PEM private key and certificate "
                          "(DCMTK +tls)")
    who.add_argument("--tls-anonymous", action="store_true",
                     help="use TLS without a client certificate (DCMTK +tla)")
    g.add_argument("--tls-ca", action="append", default=[], metavar="FILE",
                   help="PEM CA certificate(s) the peer's certificate must chain to; "
                        "repeatable (DCMTK +cf; default: the system trust store)")
    g.add_argument("--tls-check-hostname", action="store_true",
                   help="also require the peer's certificate to name HOST")


def tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The client context the TLS flags ask for, or None for plain TCP."""
    from appliance import tls
    from appliance.errors import ConfigError

    identity = args.tls_identity
    if identity is None and not args.tls_anonymous:
        if args.tls_ca or args.tls_check_hostname:
            raise CLIError(EXIT_USAGE, "--tls-ca/--tls-check-hostname need --tls KEY CERT "
                                       "or --tls-anonymous")
        return None
    key, cert = identity or ("", "")
    cas = list(args.tls_ca)
    try:
        ctx = tls.client_context(ca_file=cas[0] if cas else "", certificate=cert,
                                 private_key=key, check_hostname=args.tls_check_hostname)
    except ConfigError as exc:
        raise CLIError(EXIT_USAGE, str(exc)) from None
    for extra in cas[1:]:
        try:
            ctx.load_verify_locations(cafile=extra)
        except (OSError, ssl.SSLError) as exc:
            raise CLIError(EXIT_USAGE, f"CA file {extra!r}: {exc}") from None
    return ctx


def _progress_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="show a progress line on stderr even when it is not a terminal")
    g.add_argument("--no-progress", dest="progress", action="store_false")


def _parser(sub: argparse._SubParsersAction[Any], name: str, help_text: str,
            example: str, **kw: Any) -> argparse.ArgumentParser:  # fmt: skip
    return sub.add_parser(  # type: ignore[no-any-return]
        name, help=help_text, description=help_text, allow_abbrev=False,
        epilog=f"example:\n  {example}\n\n{_EXIT_CODES_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter, **kw,
    )  # fmt: skip


def _guard(verb: str, handler: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """Run ``handler``, turning every expected failure into one stderr line + exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except CLIError as exc:
            code, message = exc.code, str(exc)
        except AssociationRejected as exc:
            rj = exc.rj
            kind = "permanent" if rj.result == 1 else "transient"
            why = _RJ_REASONS.get((rj.source, rj.reason), f"source {rj.source} reason {rj.reason}")
            code, message = EXIT_REJECTED, f"association rejected ({kind}): {why}"
        except AssociationAborted as exc:
            code, message = EXIT_ABORTED, f"association aborted: {exc}"
        except NoAcceptedContext as exc:
            code, message = EXIT_NO_CONTEXT, str(exc)
        except ssl.SSLError as exc:  # before OSError, its base class
            from appliance.tls import describe

            code = EXIT_TLS
            message = f"TLS with {args.host}:{args.port} failed: {describe(exc)}"
        except TimeoutError:
            code, message = EXIT_UNREACHABLE, f"{args.host}:{args.port}: timed out"
        except OSError as exc:  # refused, unreachable, name not resolved
            code = EXIT_UNREACHABLE
            message = f"cannot connect to {args.host}:{args.port}: {exc.strerror or exc}"
        except KeyboardInterrupt:
            code, message = 130, "interrupted"
        print(f"pacs {verb}: {message}", file=sys.stderr)
        return code

    return run


def _status_text(status: int) -> str:
    return f"0x{status:04X} ({category(status).value})"


def _write_atomically(path: Path, write: Callable[[Any], None], binary: bool = False) -> None:
    """``write(fp)`` into a temporary file next to ``path``, then rename it over ``path``."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise CLIError(EXIT_WRITE, f"{path}: cannot write: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb" if binary else "w") as fp:
            write(fp)
        os.replace(tmp, path)
    except BaseException as exc:
        with _suppress_os():
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise CLIError(EXIT_WRITE, f"{path}: cannot write: {exc.strerror or exc}") from None
        raise


class _suppress_os:  # noqa: N801 - used like contextlib.suppress(OSError)
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> bool:
        return exc_type is not None and issubclass(exc_type, OSError)


# ---- echo ----------------------------------------------------------------------------------


def _echo(args: argparse.Namespace) -> int:
    from appliance.negotiation.sop_classes import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION
    from appliance.scu import SCU, ProposedContext

    if args.repeat < 1:
        raise CLIError(EXIT_USAGE, "-r must be at least 1")
    contexts = [ProposedContext(VERIFICATION, (IMPLICIT_VR_LITTLE_ENDIAN,))]
    failed = 0
    with SCU(args.host, args.port, calling_ae=args.calling_ae, called_ae=args.called_ae,
             contexts=contexts, max_pdu_bytes=args.max_pdu, timeout_s=args.timeout,
             ssl_context=tls_context(args)) as scu:
        if args.verbose and scu.tls_session is not None:
            print("TLS: {} {}".format(*scu.tls_session))
        for _ in range(args.repeat):  # echoscu -r: all on one association
            start = time.monotonic()
            status = scu.echo()
            ms = (time.monotonic() - start) * 1000
            failed += status != 0
            if not args.quiet:
                print(f"C-ECHO {args.called_ae}@{args.host}:{args.port}: "
                      f"{_status_text(status)}" + (f" in {ms:.2f} ms" if args.verbose else ""))
    return EXIT_FAILED if failed else EXIT_OK


# ---- store ---------------------------------------------------------------------------------


# ---- query keys ----------------------------------------------------------------------------


def parse_key(spec: str) -> tuple[list[tuple[int, int | None]], str | None]:
    """``"0010,0010=DOE*"``, ``"(0010,0010)=DOE*"``, ``"PatientName=DOE*"``, ``"PatientName"``
    (a return key) or a sequence path ``"ReferencedSeriesSequence[0].SeriesInstanceUID=1.2"``
    -> ([(tag, item index or None), ...], value or None). Raises ``CLIError``."""
    import re

    from pydicom.datadict import tag_for_keyword

    path_text, sep, value = spec.partition("=")
    path: list[tuple[int, int | None]] = []
    for part in path_text.strip().split("."):
        m = re.fullmatch(r"\s*(?:\(?([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)?|(\w+))(?:\[(\d+)\])?\s*",
                         part)  # fmt: skip
        if m is None:
            raise CLIError(EXIT_USAGE, f"bad key {spec!r}: expected gggg,eeee or a keyword")
        if m.group(3):
            tag = tag_for_keyword(m.group(3))
            if tag is None:
                raise CLIError(EXIT_USAGE, f"bad key {spec!r}: unknown keyword {m.group(3)!r}")
        else:
            tag = int(m.group(1) + m.group(2), 16)
        path.append((int(tag), int(m.group(4)) if m.group(4) is not None else None))
    return path, (value if sep else None)


def apply_key(ds: Dataset, spec: str) -> None:
    """Set one ``-k`` key on ``ds`` (creating sequence items on the way); raises ``CLIError``."""
    from pydicom import Dataset as PyDataset
    from pydicom.datadict import dictionary_VR
    from pydicom.sequence import Sequence as PySequence

    path, value = parse_key(spec)
    target = ds
    for tag, index in path[:-1]:
        if tag not in target or target[tag].VR != "SQ":
            target.add_new(tag, "SQ", PySequence())
        items = target[tag].value
        while len(items) <= (index or 0):
            items.append(PyDataset())
        target = items[index or 0]
    tag = path[-1][0]
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        raise CLIError(EXIT_USAGE, f"bad key {spec!r}: ({tag >> 16:04X},{tag & 0xFFFF:04X}) "
                                   "is not in the data dictionary") from None  # fmt: skip
    vr = vr.split(" or ")[0]
    if vr == "SQ":
        target.add_new(tag, "SQ", PySequence([PyDataset()] if value is None else []))
        return
    converted: Any = value or None
    if converted is not None and vr in ("US", "UL", "SS", "SL", "UV", "SV"):
        converted = [int(v) for v in converted.split("\\")]
    elif converted is not None and vr in ("FL", "FD"):
        converted = [float(v) for v in converted.split("\\")]
    target.add_new(tag, vr, converted)


def build_identifier(args: argparse.Namespace, unique_return_key: bool = True,
                     worklist: bool = False) -> Dataset:
    """The Identifier from ``-f`` (a DICOM file, or lines of ``-k`` syntax), ``-k`` keys and
    ``-L``; raises ``CLIError`` when it names no Query/Retrieve Level (a Modality Worklist
    query has none: PS3.4 K.6.1.2)."""
    from pydicom import Dataset as PyDataset

    ds = _keys_file(args.keys_file) if args.keys_file is not None else PyDataset()
    for spec in args.key:
        apply_key(ds, spec)
    if worklist:
        if not len(ds):
            raise CLIError(EXIT_USAGE, "give worklist keys with -k (e.g. PatientName, "
                                       '"ScheduledProcedureStepSequence[0].Modality=CT")')
        return _with_charset(ds)
    if args.level:
        ds.QueryRetrieveLevel = args.level
    level = str(ds.get("QueryRetrieveLevel", "")).strip().upper()
    if level not in _LEVELS:
        raise CLIError(EXIT_USAGE, "give the query level: -L PATIENT|STUDY|SERIES|IMAGE "
                                   "(or -k QueryRetrieveLevel=...)")  # fmt: skip
    if unique_return_key and not args.key and args.keys_file is None:
        for keyword in _DEFAULT_KEYS[level]:
            setattr(ds, keyword, None)
    return _with_charset(ds)


def _keys_file(name: str) -> Dataset:
    """``-f``: a DICOM file, or a text file with one ``-k`` key a line (``#`` comments)."""
    from pydicom import Dataset as PyDataset
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    path = Path(name)
    if not path.is_file():
        raise CLIError(EXIT_USAGE, f"{path}: no such file")
    try:
        ds = dcmread(path)
        ds.file_meta = None  # type: ignore[assignment]
        return ds
    except (InvalidDicomError, ValueError, EOFError):
        keys = PyDataset()
        for line in path.read_text(errors="replace").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                apply_key(keys, line.strip())
        return keys


def _with_charset(ds: Dataset) -> Dataset:
    if "SpecificCharacterSet" not in ds and any(
        isinstance(e.value, str) and not e.value.isascii() for e in ds
    ):
        ds.SpecificCharacterSet = "ISO_IR 192"  # PS3.5 6.1.2.5: UTF-8 for non-ASCII keys
    return ds


def _model_args(p: argparse.ArgumentParser, worklist: bool) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("-P", "--patient", dest="model", action="store_const", const="patient",
                   help="Patient Root information model")
    g.add_argument("-S", "--study", dest="model", action="store_const", const="study",
                   help="Study Root information model (default)")
    if worklist:
        g.add_argument("-W", "--worklist", dest="model", action="store_const",
                       const="worklist",
                       help="Modality Worklist (PS3.4 K): no -L; keys such as "
                            '"ScheduledProcedureStepSequence[0].Modality=CT"')
    p.set_defaults(model="study")
    p.add_argument("-L", "--level", type=str.upper, choices=_LEVELS,
                   help="Query/Retrieve Level (0008,0052)")
    p.add_argument("-k", "--key", action="append", default=[], metavar="KEY[=VALUE]",
                   help='matching or return key: "0010,0010=DOE*", PatientName=DOE*, '
                        "StudyDate=20240101-20240131, StudyInstanceUID (repeatable)")
    p.add_argument("-f", "--keys-file", metavar="FILE",
                   help="base identifier: a DICOM file, or a text file with one -k key a line")


def _model_uid(model: str, service: str) -> str:
    from appliance.negotiation import qr_classes

    if model == "worklist":
        if service != "FIND":
            raise CLIError(EXIT_USAGE, "-W (Modality Worklist) is a FIND model only")
        return qr_classes.MODALITY_WORKLIST_FIND
    uid: str = getattr(qr_classes, f"{model.upper()}_ROOT_{service}")
    return uid


def _qr_scu(args: argparse.Namespace, sop_classes: Sequence[str], **kw: Any) -> QRSCU:
    from appliance.qr_scu import QRSCU, qr_contexts

    contexts = kw.pop("contexts", None) or qr_contexts(sop_classes)
    return QRSCU(args.host, args.port, calling_ae=args.calling_ae, called_ae=args.called_ae,
                 contexts=contexts, max_pdu_bytes=args.max_pdu, timeout_s=args.timeout,
                 ssl_context=tls_context(args), **kw)  # fmt: skip


def _final_check(verb: str, status: int, quiet: bool, detail: str = "") -> int:
    ok = status == 0
    if not quiet or not ok:
        print(f"pacs {verb}: final status {_status_text(status)}{detail}",
              file=sys.stdout if ok else sys.stderr)  # fmt: skip
    return EXIT_OK if ok else EXIT_FAILED


# ---- find ----------------------------------------------------------------------------------


def _find(args: argparse.Namespace) -> int:
    model = _model_uid(args.model, "FIND")
    identifier = build_identifier(args, worklist=args.model == "worklist")
    results: list[Dataset] = []
    with _qr_scu(args, [model], relational=args.relational) as scu:
        responses = scu.find(model, identifier)
        final = 0
        for status, ds in responses:
            if ds is not None and (args.cancel is None or len(results) < args.cancel):
                results.append(ds)
                if args.cancel is not None and len(results) >= args.cancel:
                    responses.cancel()  # matches already on their way are not shown
            if category(status) is not StatusCategory.PENDING:
                final = status
    if final not in (0x0000, 0xFE00):  # Cancel after --cancel N is what was asked for
        return _final_check("find", final, args.quiet)
    _print_results(results, identifier, args.format)
    if args.verbose:
        print(f"pacs find: {len(results)} match(es), status {_status_text(final)}",
              file=sys.stderr)  # fmt: skip
    return EXIT_OK


def _cell(ds: Dataset, keyword: str) -> str:
    elem = ds[keyword] if keyword in ds else None
    if elem is None or elem.value is None:
        return ""
    if elem.VR == "SQ":
        return f"<{len(elem.value)} item(s)>"
    value = elem.value
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _print_results(results: list[Dataset], identifier: Dataset, fmt: str) -> None:
    import csv

    if fmt == "json":
        json.dump([ds.to_json_dict() for ds in results], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    skip = {"SpecificCharacterSet", "QueryRetrieveLevel", "RetrieveAETitle"}
    columns = [e.keyword for e in identifier if e.keyword and e.keyword not in skip]
    for ds in results:
        columns += [e.keyword for e in ds if e.keyword and e.keyword not in skip
                    and e.keyword not in columns]  # fmt: skip
    rows = [[_cell(ds, c) for c in columns] for ds in results]
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        return
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


# ---- move / get ----------------------------------------------------------------------------


def _retrieve_progress(verb: str, rsp: RetrieveStatus, extra: str = "") -> str:
    done = (rsp.completed or 0) + (rsp.failed or 0) + (rsp.warning or 0)
    total = done + (rsp.remaining or 0)
    return (f"{verb}: {done}/{total} done: completed {rsp.completed or 0}, failed "
            f"{rsp.failed or 0}, warning {rsp.warning or 0}{extra}")  # fmt: skip


def _report_retrieve(verb: str, final: RetrieveStatus, args: argparse.Namespace) -> int:
    detail = (f": completed {final.completed or 0}, failed {final.failed or 0}, warning "
              f"{final.warning or 0}") + (f" ({final.error_comment})" if final.error_comment
                                          else "")  # fmt: skip
    for uid in final.failed_sop_instance_uids:
        print(f"pacs {verb}: failed: {uid}", file=sys.stderr)
    return _final_check(verb, final.status, args.quiet, detail)


def _move(args: argparse.Namespace) -> int:
    model = _model_uid(args.model, "MOVE")
    identifier = build_identifier(args, unique_return_key=False)
    bar = Progress(args.progress)
    final = None
    try:
        with _qr_scu(args, [model]) as scu:
            for rsp in scu.move(model, args.move_destination, identifier):
                bar.show(_retrieve_progress(f"move to {args.move_destination}", rsp))
                final = rsp
    finally:
        bar.close()
    assert final is not None
    return _report_retrieve("move", final, args)


def _get(args: argparse.Namespace) -> int:
    from appliance.qr_scu import DEFAULT_GET_STORAGE_CLASSES, get_contexts

    model = _model_uid(args.model, "GET")
    identifier = build_identifier(args, unique_return_key=False)
    out = Path(args.output_directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(EXIT_WRITE, f"{out}: cannot create: {exc.strerror or exc}") from None
    storage_ts = _accepted_syntaxes(args.accept_all)
    contexts = get_contexts([model], DEFAULT_GET_STORAGE_CLASSES,
                            storage_transfer_syntaxes=storage_ts)  # fmt: skip
    bar = Progress(args.progress)
    received = {"files": 0, "bytes": 0}
    final = None

    def on_store(rq: CStoreRQ, data: bytes | Path, ts: str) -> int:
        status = _write_part10(out, rq, data, ts)
        if status == 0:
            received["files"] += 1
            received["bytes"] += len(data) if isinstance(data, bytes) else data.stat().st_size
        if args.verbose:
            print(f"pacs get: {rq.affected_sop_instance_uid}: {_status_text(status)}",
                  file=sys.stderr)  # fmt: skip
        return status

    try:
        with _qr_scu(args, [], contexts=contexts, scp_role_for=DEFAULT_GET_STORAGE_CLASSES,
                     spool_dir=out) as scu:  # fmt: skip
            for rsp in scu.get(model, identifier, on_store):
                mb = received["bytes"] / 1e6
                bar.show(_retrieve_progress("get", rsp, f", {received['files']} file(s), "
                                                        f"{mb:.1f} MB"))  # fmt: skip
                final = rsp
    finally:
        bar.close()
    assert final is not None
    return _report_retrieve("get", final, args)


def _accepted_syntaxes(accept_all: bool) -> tuple[str, ...]:
    from appliance.qr_scu import NATIVE_TRANSFER_SYNTAXES

    if not accept_all:
        return NATIVE_TRANSFER_SYNTAXES
    import pydicom.uid as u

    return (*NATIVE_TRANSFER_SYNTAXES, u.ExplicitVRBigEndian, u.DeflatedExplicitVRLittleEndian,
            u.JPEGBaseline8Bit, u.JPEGExtended12Bit, u.JPEGLossless, u.JPEGLosslessSV1,
            u.JPEGLSLossless, u.JPEGLSNearLossless, u.JPEG2000Lossless, u.JPEG2000,
            u.RLELossless)  # fmt: skip


def _write_part10(out: Path, rq: CStoreRQ, data: bytes | Path, ts: str) -> int:
    """PS3.10 file: preamble, "DICM", File Meta (ours), then the data set bytes as received.
    Returns the C-STORE status: 0 stored, 0xA700 when it cannot be written."""
    import re
    import shutil

    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import UID

    from appliance.negotiation.policy import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

    uid = rq.affected_sop_instance_uid
    if not re.fullmatch(r"[0-9.]{1,64}", uid):
        return 0xC000  # not a UID: it must not become a path
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(rq.affected_sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(uid)
    meta.TransferSyntaxUID = UID(ts)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    head = DicomBytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, meta)

    def write(fp: Any) -> None:
        fp.write(head.getvalue())
        if isinstance(data, bytes):
            fp.write(data)
        else:
            with open(data, "rb") as src:
                shutil.copyfileobj(src, fp, 1 << 20)

    try:
        _write_atomically(out / f"{uid}.dcm", write, binary=True)
    except CLIError as exc:
        print(f"pacs get: {exc}", file=sys.stderr)
        return 0xA700  # PS3.4 B.2.3 Refused: Out of Resources
    return 0


# ---- registration --------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``echo``, ``store``, ``find``, ``move`` and ``get`` to the ``pacs`` parser."""
    p = _parser(sub, "echo", "C-ECHO: check that a DICOM peer answers (like echoscu)",
                "pacs echo -aec PACS -r 3 localhost 11112")
    _network_args(p)
    p.add_argument("-r", "--repeat", type=int, default=1, metavar="N",
                   help="send N C-ECHOs on one association (default 1)")
    p.set_defaults(func=_guard("echo", _echo))

    p = _parser(sub, "store", "C-STORE files and folders (recursive) to a peer (like storescu)",
                "pacs store -aec PACS -j 4 --report-file report.json localhost 11112 /data/dicom")
    _network_args(p)
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (recursive)")
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                   help="N associations in parallel (threads; default 1)")
    p.add_argument("-x", "--propose", choices=("as-is", "uncompressed"), default="as-is",
                   help="as-is: each file's own transfer syntax only (default); uncompressed: "
                        "also Explicit/Implicit VR Little Endian, converting native files to "
                        "what the peer accepts")
    p.add_argument("--report-file", metavar="FILE", help="write a JSON report per file")
    _progress_args(p)
    from appliance.tools import net_store  # the verb's code; imported late (it imports us)

    p.set_defaults(func=_guard("store", net_store.store))

    for name, service, what, example in (
        ("find", "FIND", "C-FIND: query a peer (like findscu)",
         'pacs find -aec PACS -S -L STUDY -k PatientName="DOE*" -k StudyDate '
         "--format csv localhost 11112"),
        ("move", "MOVE", "C-MOVE: have a peer send matching objects to a third AE (movescu)",
         "pacs move -aec PACS -aem STORESCP -L STUDY -k StudyInstanceUID=1.2.3 localhost 11112"),
        ("get", "GET", "C-GET: retrieve matching objects into a folder (like getscu)",
         "pacs get -aec PACS -L SERIES -k StudyInstanceUID=1.2.3 -k SeriesInstanceUID=1.2.3.4 "
         "-od ./retrieved localhost 11112"),
    ):  # fmt: skip
        p = _parser(sub, name, what, example)
        _network_args(p)
        _model_args(p, worklist=service == "FIND")
        p.set_defaults(func=_guard(name, {"FIND": _find, "MOVE": _move, "GET": _get}[service]))
        if service == "FIND":
            p.add_argument("--format", choices=("table", "json", "csv"), default="table",
                           help="table (default), json (PS3.18 DICOM JSON array) or csv")
            p.add_argument("--relational", action="store_true",
                           help="ask for relational queries (PS3.4 C.5.1.1.1)")
            p.add_argument("--cancel", type=int, metavar="N",
                           help="send C-CANCEL after N matches")
        elif service == "MOVE":
            p.add_argument("-aem", "--move", dest="move_destination", required=True,
                           metavar="AE", help="move destination AE title (known to the peer)")
            _progress_args(p)
        else:
            p.add_argument("-od", "--output-directory", required=True, metavar="DIR",
                           help="where the received objects are written as Part 10 files")
            p.add_argument("--accept-all", action="store_true",
                           help="accept compressed transfer syntaxes too (default: "
                                "Explicit/Implicit VR Little Endian only)")
            _progress_args(p)


__all__ = [
    "EXIT_ABORTED", "EXIT_FAILED", "EXIT_NO_CONTEXT", "EXIT_OK", "EXIT_REJECTED", "EXIT_TLS",
    "EXIT_UNREACHABLE", "EXIT_USAGE", "EXIT_WRITE", "CLIError", "Progress", "apply_key",
    "build_identifier", "parse_key", "register", "tls_context",
]  # fmt: skip
