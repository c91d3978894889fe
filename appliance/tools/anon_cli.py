"""`pacs anonymize`, `pacs dir create|list|verify|update`, `pacs extract`, `pacs img2dcm`.

The command-line layer over ``anonymize``, ``dicomdir`` and ``images``: argument parsing,
reading files (with the checks pydicom does not make: a value shorter than its declared
length means a truncated file) and writing them atomically (temp name in the target directory,
then rename: an interrupted run leaves no partial output). Every failure is one line on stderr
naming the file and the reason, with a distinct exit code:

  1 usage   2 not found   3 not DICOM / parse error   4 write error   5 verify found problems
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.fileset import FileSet
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from appliance.tools import dicomdir, images
from appliance.tools.anonymize import Anonymizer, MapFileError, Settings, UidMap, verify
from appliance.tools.deid_profile import Option

# Exit codes shared by every file tool (the same as dcmfile.py): 1 problems found (a failed
# verify), 2 usage, 3 not found, 4 not DICOM / unparsable, 5 write error.
EXIT_OK, EXIT_VERIFY, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_NOT_DICOM, EXIT_WRITE = range(6)


class ToolError(Exception):
    """A failure to report as one stderr line with ``code`` as the exit status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------- file I/O


def read_dataset(path: Path, *, pixels: bool = True) -> FileDataset:
    """A Part 10 file, or ToolError 2 (missing) / 3 (not DICOM, truncated)."""
    if not path.exists():
        raise ToolError(EXIT_NOT_FOUND, f"{path}: no such file")
    if path.is_dir():
        raise ToolError(EXIT_USAGE, f"{path}: is a directory")
    try:
        ds = dcmread(path, stop_before_pixels=not pixels)
    except InvalidDicomError:
        raise ToolError(EXIT_NOT_DICOM, f"{path}: not a DICOM file") from None
    except (OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise ToolError(EXIT_NOT_DICOM, f"{path}: cannot parse: {exc}") from None
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        value, length = getattr(raw, "value", None), getattr(raw, "length", None)
        if isinstance(value, bytes) and length not in (None, 0xFFFFFFFF) and len(value) < length:
            raise ToolError(EXIT_NOT_DICOM, f"{path}: truncated in element {tag} "
                                            f"({len(value)} of {length} bytes)")
    return ds


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temp file next to ``path``, then rename it into place."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise ToolError(EXIT_WRITE, f"{path}: cannot write: {exc.strerror or exc}") from None
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise ToolError(EXIT_WRITE, f"{path}: cannot write: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def save_dataset(ds: Dataset, path: Path) -> None:
    """Write ``ds`` as a Part 10 file (File Meta completed from the data set), atomically."""
    if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
        raise ToolError(EXIT_NOT_DICOM, f"{path}: no SOP Class/Instance UID, not a composite "
                                        "instance; cannot write a Part 10 file")
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    if not meta.get("MediaStorageSOPClassUID"):
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if not meta.get("MediaStorageSOPInstanceUID"):
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if not meta.get("TransferSyntaxUID"):
        implicit, little = getattr(ds, "original_encoding", (False, True))
        meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                  ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    write_atomic(path, lambda tmp: ds.save_as(tmp, enforce_file_format=True))


def parse_tag(text: str) -> int:
    """``PatientName``, ``(0010,0010)``, ``0010,0010`` or ``00100010`` -> tag."""
    cleaned = text.strip().strip("()").replace(",", "")
    if len(cleaned) == 8:
        try:
            return int(cleaned, 16)
        except ValueError:
            pass
    tag = tag_for_keyword(text.strip())
    if tag is None:
        raise argparse.ArgumentTypeError(f"unknown tag or keyword {text!r}")
    return int(tag)


def _replace_arg(text: str) -> tuple[int, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected TAG=VALUE, got {text!r}")
    return parse_tag(key), value


def _inputs(paths: list[Path]) -> Iterator[tuple[Path, Path]]:
    """(file, path relative to its input argument) for files and folders (recursive)."""
    for p in paths:
        if p.is_dir():
            for f in dicomdir.dicom_files([p]):
                yield f, f.relative_to(p)
        else:
            yield p, Path(p.name)


def _run(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ToolError as exc:
            print(f"pacs {args.tool_name}: {exc}", file=sys.stderr)
            return exc.code

    return wrapped


# ---------------------------------------------------------------------- anonymize


def _settings(args: argparse.Namespace) -> Settings:
    opts: set[Option] = set()
    flags = {
        "modified_dates": Option.RETAIN_MODIFIED_DATES,
        "full_dates": Option.RETAIN_FULL_DATES,
        "retain_patient_characteristics": Option.RETAIN_PATIENT_CHARACTERISTICS,
        "clean_descriptors": Option.CLEAN_DESCRIPTORS,
        "retain_uids": Option.RETAIN_UIDS,
        "retain_device_identity": Option.RETAIN_DEVICE_IDENTITY,
        "retain_institution_identity": Option.RETAIN_INSTITUTION_IDENTITY,
    }
    for name, option in flags.items():
        if getattr(args, name):
            opts.add(option)
    if args.date_offset is not None:
        opts.add(Option.RETAIN_MODIFIED_DATES)
    return Settings(
        options=frozenset(opts),
        date_offset_days=args.date_offset,
        keep=frozenset(args.keep),
        replace=dict(args.replace),
    )


def _anonymize_one(
    args: argparse.Namespace, anonymizer: Anonymizer, src: Path, rel: Path
) -> tuple[int, int]:
    """Anonymize and/or verify one file: (files written, problems found)."""
    ds = read_dataset(src)
    wrote = 0
    where = src
    if args.out is not None or args.in_place or args.dry_run:
        changes = anonymizer.apply(ds)
        if args.dry_run:
            print(f"{src}: {len(changes)} change(s)")
            for change in changes:
                print(f"  {change}")
            return 0, 0
        where = src if args.in_place else args.out / rel
        save_dataset(ds, where)
        wrote = 1
    if not args.verify:
        return wrote, 0
    found = verify(ds, anonymizer.settings, anonymizer.uids)
    for line in found:
        print(f"{where}: {line}")
    return wrote, len(found)


def _anonymize(args: argparse.Namespace) -> int:
    writing = args.out is not None or args.in_place
    if args.out is not None and args.in_place:
        raise ToolError(EXIT_USAGE, "-o and --in-place exclude each other")
    if not writing and not args.dry_run and not args.verify:
        raise ToolError(EXIT_USAGE, "give -o OUTDIR, --in-place, --dry-run or --verify")
    settings = _settings(args)
    try:
        uids = UidMap(args.map)
    except MapFileError as exc:
        raise ToolError(EXIT_NOT_DICOM, str(exc)) from None
    anonymizer = Anonymizer(settings, uids)
    status, done, problems = EXIT_OK, 0, 0
    for src, rel in _inputs(args.inputs):
        try:
            wrote, found = _anonymize_one(args, anonymizer, src, rel)
        except ToolError as exc:
            print(f"pacs anonymize: {exc}", file=sys.stderr)
            status = status or exc.code
            continue
        done += wrote
        problems += found
    if writing and not args.dry_run:
        try:
            uids.save()
        except OSError as exc:
            raise ToolError(EXIT_WRITE, f"{args.map}: cannot write: {exc}") from None
        print(f"anonymized {done} file(s); {len(uids.uids)} UID(s) in the map")
    if args.verify:
        print(f"verify: {problems} problem(s)")
        if problems and not status:
            status = EXIT_VERIFY
    return status


# ---------------------------------------------------------------------- dir


def _dir_create(args: argparse.Namespace) -> int:
    root: Path = args.root
    if not root.is_dir():
        raise ToolError(EXIT_NOT_FOUND, f"{root}: no such directory")
    try:
        result = dicomdir.create(root, args.sources or None, keep_originals=args.keep_originals)
    except dicomdir.DicomdirError as exc:
        raise ToolError(EXIT_USAGE if "exists" in str(exc) else EXIT_NOT_DICOM, str(exc)) \
            from None
    except OSError as exc:
        raise ToolError(EXIT_WRITE, f"{root}: cannot write: {exc}") from None
    for path, reason in result.skipped:
        print(f"pacs dir create: skipped {path}: {reason}", file=sys.stderr)
    print(f"{root / dicomdir.DICOMDIR_NAME}: {result.added} instance(s), "
          f"{len(result.skipped)} skipped, {result.removed_originals} original(s) moved")
    return EXIT_OK


def _load(path: Path) -> FileSet:
    if not path.exists():
        raise ToolError(EXIT_NOT_FOUND, f"{path}: no such file")
    try:
        return dicomdir.load(path)
    except dicomdir.DicomdirError as exc:
        raise ToolError(EXIT_NOT_DICOM, str(exc)) from None


def _dir_list(args: argparse.Namespace) -> int:
    for line in dicomdir.tree(_load(args.dicomdir)):
        print(line)
    return EXIT_OK


def _dir_verify(args: argparse.Namespace) -> int:
    _load(args.dicomdir)
    try:
        problems = dicomdir.verify(args.dicomdir)
    except dicomdir.DicomdirError as exc:
        raise ToolError(EXIT_NOT_DICOM, str(exc)) from None
    for line in problems:
        print(line)
    print(f"verify: {len(problems)} problem(s)")
    return EXIT_VERIFY if problems else EXIT_OK


def _dir_update(args: argparse.Namespace) -> int:
    fs = _load(args.dicomdir)
    del fs
    for f in args.files:
        if not f.exists():
            raise ToolError(EXIT_NOT_FOUND, f"{f}: no such file")
    try:
        result = dicomdir.update(args.dicomdir, args.files)
    except dicomdir.DicomdirError as exc:
        raise ToolError(EXIT_WRITE, str(exc)) from None
    for path, reason in result.skipped:
        print(f"pacs dir update: skipped {path}: {reason}", file=sys.stderr)
    print(f"{args.dicomdir}: {result.added} instance(s) added, {len(result.skipped)} skipped")
    return EXIT_NOT_DICOM if result.skipped and not result.added else EXIT_OK


# ---------------------------------------------------------------------- images


def _extract(args: argparse.Namespace) -> int:
    suffix = args.output.suffix.lower()
    if suffix not in images.OUTPUT_FORMATS:
        raise ToolError(EXIT_USAGE, f"{args.output}: output must end in "
                                    f"{', '.join(images.OUTPUT_FORMATS)}")
    ds = read_dataset(args.input)
    window = (args.window[0], args.window[1]) if args.window else None
    try:
        frame = images.render_frame(ds, args.frame, window)
        data = images.encode_frame(frame, suffix)
    except images.ImageError as exc:
        raise ToolError(EXIT_NOT_DICOM if "decode" in str(exc) else EXIT_USAGE,
                        f"{args.input}: {exc}") from None
    write_atomic(args.output, lambda tmp: _write_bytes(tmp, data))
    return EXIT_OK


def _write_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _img2dcm(args: argparse.Namespace) -> int:
    if not args.image.is_file():
        raise ToolError(EXIT_NOT_FOUND, f"{args.image}: no such file")
    identity = images.Identity(args.patient_id or "", args.patient_name or "",
                               args.study_uid, args.series_uid)
    try:
        ds = images.image_to_dataset(args.image, identity)
    except images.ImageError as exc:
        raise ToolError(EXIT_NOT_DICOM, f"{args.image}: {exc}") from None
    save_dataset(ds, args.output)
    return EXIT_OK


# ---------------------------------------------------------------------- parsers


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _add_anonymize(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "anonymize", help="de-identify files (PS3.15 Annex E Basic Profile)",
        formatter_class=_formatter,
        description="De-identify DICOM files per the PS3.15 Annex E Basic Application Level "
                    "Confidentiality Profile.",
        epilog="examples:\n"
               "  pacs anonymize study/ -o anon/ --map uids.json --date-offset -30\n"
               "  pacs anonymize a.dcm --in-place -r PatientID=SUBJ01 -k StudyDescription\n"
               "  pacs anonymize study/ --dry-run\n"
               "  pacs anonymize anon/ --verify\n"
               "exit codes: 1 usage, 2 not found, 3 not DICOM, 4 write error, "
               "5 verify found identifying attributes")
    p.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="files or folders")
    p.add_argument("-o", "--out", type=Path, metavar="OUTDIR", help="write results here")
    p.add_argument("--in-place", action="store_true", help="overwrite the inputs")
    p.add_argument("--map", type=Path, metavar="FILE",
                   help="UID map (JSON), read and extended: same new UIDs across runs")
    p.add_argument("--date-offset", type=int, metavar="DAYS",
                   help="shift dates by DAYS (implies --modified-dates)")
    p.add_argument("--modified-dates", action="store_true",
                   help="Retain Longitudinal Temporal Information with Modified Dates; "
                        "per-patient offset unless --date-offset")
    p.add_argument("--full-dates", action="store_true",
                   help="Retain Longitudinal Temporal Information with Full Dates")
    p.add_argument("--retain-patient-characteristics", action="store_true")
    p.add_argument("--clean-descriptors", action="store_true",
                   help="keep descriptions, scrubbed of the patient's identifying words")
    p.add_argument("--retain-uids", action="store_true", help="keep UIDs (off by default)")
    p.add_argument("--retain-device-identity", action="store_true")
    p.add_argument("--retain-institution-identity", action="store_true")
    p.add_argument("-k", "--keep", action="append", default=[], type=parse_tag, metavar="TAG",
                   help="keep this attribute unchanged (keyword or gggg,eeee)")
    p.add_argument("-r", "--replace", action="append", default=[], type=_replace_arg,
                   metavar="TAG=VALUE", help="set this attribute")
    p.add_argument("--dry-run", action="store_true", help="report changes, write nothing")
    p.add_argument("--verify", action="store_true",
                   help="report identifying attributes left (after anonymizing, or on IN)")
    p.set_defaults(func=_run(_anonymize), tool_name="anonymize")


def _add_dir(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("dir", help="DICOMDIR tools (PS3.10 File-set)",
                       formatter_class=_formatter,
                       epilog="examples:\n  pacs dir create /media/cd\n"
                              "  pacs dir list /media/cd/DICOMDIR\n"
                              "  pacs dir verify /media/cd/DICOMDIR\n"
                              "  pacs dir update /media/cd/DICOMDIR new.dcm")
    dsub = p.add_subparsers(dest="dir_command", required=True)
    c = dsub.add_parser("create", help="write ROOT/DICOMDIR", formatter_class=_formatter,
                        description="Copy every DICOM file of ROOT (or of SOURCES) to PS3.10 "
                                    "File IDs (PTnnnnnn/STnnnnnn/SEnnnnnn/IMnnnnnn) in ROOT "
                                    "and write ROOT/DICOMDIR. Originals inside ROOT are "
                                    "removed unless --keep-originals.",
                        epilog="example:\n  pacs dir create /media/cd  "
                               "# /media/cd/DICOMDIR + PT000000/...")
    c.add_argument("root", type=Path, metavar="ROOT")
    c.add_argument("sources", nargs="*", type=Path, metavar="SOURCE",
                   help="files or folders to copy in (default: ROOT itself)")
    c.add_argument("--keep-originals", action="store_true")
    c.set_defaults(func=_run(_dir_create), tool_name="dir create")
    for name, func, text in (("list", _dir_list, "print the PATIENT/STUDY/SERIES tree"),
                             ("verify", _dir_verify, "check records against the files "
                                                     "(exit 5 on problems)")):
        s = dsub.add_parser(name, help=text, formatter_class=_formatter,
                            epilog=f"example:\n  pacs dir {name} /media/cd/DICOMDIR")
        s.add_argument("dicomdir", type=Path, metavar="DICOMDIR")
        s.set_defaults(func=_run(func), tool_name=f"dir {name}")
    u = dsub.add_parser("update", help="add files to a DICOMDIR", formatter_class=_formatter,
                        epilog="example:\n  pacs dir update /media/cd/DICOMDIR a.dcm more/")
    u.add_argument("dicomdir", type=Path, metavar="DICOMDIR")
    u.add_argument("files", nargs="+", type=Path, metavar="FILE")
    u.set_defaults(func=_run(_dir_update), tool_name="dir update")


def _add_images(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    e = sub.add_parser("extract", help="write a frame as PNG/JPEG/PGM/RAW",
                       formatter_class=_formatter,
                       epilog="examples:\n  pacs extract ct.dcm ct.png --window 40 400\n"
                              "  pacs extract us.dcm f3.jpg --frame 3\n"
                              "  pacs extract mr.dcm mr.raw   # stored values, little endian")
    e.add_argument("input", type=Path, metavar="FILE")
    e.add_argument("output", type=Path, metavar="OUT")
    e.add_argument("--frame", type=int, default=1, metavar="N", help="1-based (default 1)")
    e.add_argument("--window", type=float, nargs=2, metavar=("C", "W"),
                   help="VOI window centre and width (default: the file's, else min/max)")
    e.set_defaults(func=_run(_extract), tool_name="extract")
    i = sub.add_parser("img2dcm", help="wrap a JPEG or PNG as Secondary Capture",
                       formatter_class=_formatter,
                       epilog="example:\n  pacs img2dcm photo.jpg photo.dcm --patient-id 123 "
                              "--patient-name 'DOE^JANE'")
    i.add_argument("image", type=Path, metavar="IMAGE")
    i.add_argument("output", type=Path, metavar="OUT.dcm")
    i.add_argument("--patient-id")
    i.add_argument("--patient-name")
    i.add_argument("--study-uid")
    i.add_argument("--series-uid")
    i.set_defaults(func=_run(_img2dcm), tool_name="img2dcm")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``anonymize``, ``dir``, ``extract`` and ``img2dcm`` to the ``pacs`` parser."""
    _add_anonymize(sub)
    _add_dir(sub)
    _add_images(sub)
