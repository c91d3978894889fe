"""The DICOM file verbs of `pacs`: dump, info, modify, to-json, from-json, to-xml, from-xml.

`register(sub)` adds them to the `pacs` sub-parser; each sets `func=handler`, where
`handler(args) -> int` is the exit code (`dcmfile.ExitCode`). The handler is the one place
that turns a `ToolError` into one line on stderr, so the tools themselves only raise.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom.uid
from pydicom.uid import UID

from appliance.tools import dicom_json, dicom_xml, dump, info, modify
from appliance.tools.dcmfile import ExitCode, ToolError

Handler = Callable[[argparse.Namespace], int]


def _handler(verb: str, run: Handler) -> Handler:
    def handle(args: argparse.Namespace) -> int:
        try:
            with warnings.catch_warnings():
                # pydicom warns about every oddity it tolerates; the tools report real failures.
                warnings.simplefilter("ignore", UserWarning)
                return run(args)
        except ToolError as exc:
            print(f"pacs {verb}: {exc.message}", file=sys.stderr)
            return int(exc.code)
        except BrokenPipeError:
            # `pacs dump big.dcm | head`: stop quietly, and keep Python from complaining
            # again when it flushes stdout at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return int(ExitCode.OK)

    return handle


def transfer_syntax(text: str) -> str:
    """A transfer syntax UID given as a UID or a pydicom keyword (ExplicitVRLittleEndian)."""
    candidate = getattr(pydicom.uid, text, text) if text.isidentifier() else text
    uid = UID(str(candidate))
    if not uid.is_transfer_syntax:
        raise argparse.ArgumentTypeError(f"{text!r} is not a known transfer syntax")
    return str(uid)


def _parser(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str,
    help_text: str,
    examples: str,
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog="examples:\n" + examples + _EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


_EXIT_CODES = (
    "\n\nexit codes: 0 ok, 1 operation failed, 2 usage, 3 file not found, "
    "4 not DICOM / truncated / unparsable, 5 cannot write output"
)


def _conversion_args(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("path", type=Path, metavar="FILE")
    parser.add_argument("-o", "--output", type=Path, metavar="OUT",
                        help=f"write the {what} here (atomically) instead of stdout")
    parser.add_argument("--meta", action="store_true",
                        help="include the File Meta group 0002 (not part of the data set; "
                             "needed to restore a compressed transfer syntax)")
    parser.add_argument("--bulk-dir", type=Path, metavar="DIR",
                        help="write binary values above --bulk-threshold as files in DIR and "
                             "reference them by BulkDataURI (default: all inline Base64)")
    parser.add_argument("--bulk-threshold", type=int, default=1024, metavar="BYTES",
                        help="size above which a value goes to --bulk-dir (default 1024)")


def _from_args(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("path", type=Path, metavar=what)
    parser.add_argument("-o", "--output", type=Path, metavar="OUT.dcm", required=True,
                        help="the DICOM file to write (atomically)")
    parser.add_argument("--ts", type=transfer_syntax, metavar="UID",
                        help="transfer syntax to write (UID or keyword such as "
                             "ImplicitVRLittleEndian); default: the input's File Meta, "
                             "else Explicit VR Little Endian")


def _run_to_json(args: argparse.Namespace) -> int:
    text = dicom_json.dicom_to_json(
        args.path, args.output, include_meta=args.meta, bulk_dir=args.bulk_dir,
        bulk_threshold=args.bulk_threshold, compact=args.compact,
    )
    if args.output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return int(ExitCode.OK)


def _run_from_json(args: argparse.Namespace) -> int:
    dicom_json.json_to_dicom(args.path, args.output, transfer_syntax=args.ts)
    return int(ExitCode.OK)


def _run_to_xml(args: argparse.Namespace) -> int:
    text = dicom_xml.dicom_to_xml(
        args.path, args.output, include_meta=args.meta, bulk_dir=args.bulk_dir,
        bulk_threshold=args.bulk_threshold,
    )
    if args.output is None:
        sys.stdout.write(text)
    return int(ExitCode.OK)


def _run_from_xml(args: argparse.Namespace) -> int:
    dicom_xml.xml_to_dicom(
        args.path, args.output, transfer_syntax=args.ts, binary_big_endian=args.dcmtk_binary
    )
    return int(ExitCode.OK)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the file verbs to `pacs`'s sub-parsers."""
    p = _parser(sub, "dump", "dcmdump-like listing of DICOM files (tags, VRs, lengths, names)",
                "  pacs dump image.dcm\n"
                "  pacs dump --tags PatientName --tags (0020,000d) image.dcm\n"
                "  pacs dump --format json image.dcm\n"
                "  pacs dump --recursive --summary /data/incoming")
    dump.configure(p)
    p.set_defaults(func=_handler("dump", dump.run))

    p = _parser(sub, "info", "one-screen summary: patient, study, series, image and pixels",
                "  pacs info image.dcm\n  pacs info --format json image.dcm")
    info.configure(p)
    p.set_defaults(func=_handler("info", info.run))

    p = _parser(sub, "modify", "dcmodify-compatible editing of DICOM files",
                '  pacs modify -i "(0010,0010)=DOE^JOHN" image.dcm\n'
                '  pacs modify -m PatientID=123 -e "(0010,1000)" -nb image.dcm\n'
                '  pacs modify -i "RequestAttributesSequence[0].ScheduledProcedureStepID=SPS1" '
                "image.dcm\n"
                "  pacs modify -ea PatientName -ep -gst -gse -gin -o out.dcm image.dcm\n"
                "  pacs modify --script edits.txt --recursive /data/export")
    modify.configure(p)
    p.set_defaults(func=_handler("modify", modify.run))

    p = _parser(sub, "to-json", "DICOM -> PS3.18 Annex F DICOM JSON",
                "  pacs to-json image.dcm -o image.json\n"
                "  pacs to-json --meta --bulk-dir bulk --bulk-threshold 4096 image.dcm "
                "-o image.json")
    _conversion_args(p, "JSON")
    p.add_argument("--compact", action="store_true", help="no indentation")
    p.set_defaults(func=_handler("to-json", _run_to_json))

    p = _parser(sub, "from-json", "PS3.18 DICOM JSON -> DICOM file",
                "  pacs from-json image.json -o image.dcm\n"
                "  pacs from-json --ts ImplicitVRLittleEndian image.json -o image.dcm")
    _from_args(p, "JSON")
    p.set_defaults(func=_handler("from-json", _run_from_json))

    p = _parser(sub, "to-xml", "DICOM -> PS3.19 Native DICOM Model XML",
                "  pacs to-xml image.dcm -o image.xml\n"
                "  pacs to-xml --meta --bulk-dir bulk image.dcm -o image.xml")
    _conversion_args(p, "XML")
    p.set_defaults(func=_handler("to-xml", _run_to_xml))

    p = _parser(sub, "from-xml", "PS3.19 Native DICOM Model XML -> DICOM file",
                "  pacs from-xml image.xml -o image.dcm\n"
                "  dcm2xml --native-format +Eb in.dcm in.xml && "
                "pacs from-xml --dcmtk-binary in.xml -o out.dcm")
    _from_args(p, "XML")
    p.add_argument("--dcmtk-binary", action="store_true",
                   help="OW/OF/OL/OD/OV InlineBinary is big endian, as DCMTK's dcm2xml +Eb "
                        "writes it (the default is little endian, as in PS3.18 JSON)")
    p.set_defaults(func=_handler("from-xml", _run_from_xml))


def main(argv: list[str] | None = None) -> int:
    """Run one file verb standalone (`python -m appliance.tools VERB ...`)."""
    parser = argparse.ArgumentParser(prog="pacs", description="DICOM file tools")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))
