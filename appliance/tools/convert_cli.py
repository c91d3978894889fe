"""`pacs convert`: rewrite a DICOM file in another transfer syntax (dcmconv / dcmdrle / dcmcrle).

The conversion itself is the retrieve path's transcoder (``workers.transcode``), so a file
converted here and an object converted for a C-GET peer come out the same. The input's File
Meta group (PS3.10 §7.1) is kept element for element except Transfer Syntax UID (0002,0010)
and the recomputed Group Length (0002,0000); a bare data set gets a new meta group. The data
set offset and source syntax come from ``workers.part10.read_part10_header``. Output is written
atomically (``dcmfile.atomic_write``).

``workers`` is imported inside the handler: `pacs` builds every verb's parser at start, and
the transcoder pulls in numba, which `pacs serve` should not pay for in the arbiter.
"""

from __future__ import annotations

import argparse
import struct
import sys
import warnings
from pathlib import Path
from typing import BinaryIO

import pydicom.uid
from pydicom.uid import UID

from appliance.dimse.transfer_syntax import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    RLE_LOSSLESS,
)
from appliance.tools.dcmfile import ExitCode, ToolError, atomic_write

# Short names for --ts; every one is writable (tests check them against can_encode). Explicit
# VR Big Endian is readable only (retired, PS3.5 A.3), so it has no short name.
SHORT_NAMES = {
    "implicit": IMPLICIT_VR_LE,
    "explicit": EXPLICIT_VR_LE,
    "deflate": DEFLATED_EXPLICIT_VR_LE,
    "rle": RLE_LOSSLESS,
}

_MAGIC = b"DICM"
_PREAMBLE = bytes(128)
_LONG_VRS = (b"OB", b"OW", b"OF", b"SQ", b"UN", b"UT", b"UC", b"UR", b"OD", b"OL", b"OV")


def target_syntax(text: str) -> str:
    """--ts value: a short name, a UID or a pydicom keyword (JPEG2000Lossless...)."""
    if text.lower() in SHORT_NAMES:
        return SHORT_NAMES[text.lower()]
    candidate = getattr(pydicom.uid, text, text) if text.isidentifier() else text
    uid = UID(str(candidate))
    if not uid.is_transfer_syntax:
        raise argparse.ArgumentTypeError(f"{text!r} is not a known transfer syntax")
    return str(uid)


def _uid_bytes(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw  # PS3.5 §9.1: NUL pads a UI value


def meta_start(data: bytes) -> int:
    """Where group 0002 begins: after preamble + "DICM", after a bare "DICM", or at 0."""
    if data[128:132] == _MAGIC:
        return 132
    if data[:4] == _MAGIC:
        return 4
    return 0


def rewrite_file_meta(meta: bytes, transfer_syntax_uid: str) -> bytes:
    """Preamble, "DICM" and the meta group ``meta`` (raw Explicit VR LE elements) with
    (0002,0010) set to ``transfer_syntax_uid`` and (0002,0000) recomputed (PS3.10 §7.1)."""
    elements: dict[int, bytes] = {}
    pos = 0
    try:
        while pos + 8 <= len(meta):
            group, element, vr = struct.unpack_from("<HH2s", meta, pos)
            if group != 0x0002:
                break
            if vr in _LONG_VRS:
                size = 12 + struct.unpack_from("<I", meta, pos + 8)[0]
            else:
                size = 8 + struct.unpack_from("<H", meta, pos + 6)[0]
            elements[element] = meta[pos:pos + size]
            pos += size
    except struct.error as exc:
        raise ToolError(ExitCode.NOT_DICOM, f"malformed File Meta Information: {exc}") from exc
    value = _uid_bytes(transfer_syntax_uid)
    elements[0x0010] = struct.pack("<HH2sH", 0x0002, 0x0010, b"UI", len(value)) + value
    elements.pop(0x0000, None)
    group_bytes = b"".join(elements[e] for e in sorted(elements))
    length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(group_bytes))
    return _PREAMBLE + _MAGIC + length + group_bytes


def convert_file(src: Path, out: Path, to_ts: str) -> str:
    """Convert ``src`` to ``to_ts`` and write ``out`` atomically; returns the source syntax.

    Raises ToolError: NOT_FOUND, NOT_DICOM, FAILED (a syntax we cannot read or write, or
    pixel data that does not decode), WRITE_ERROR.
    """
    from appliance.negotiation.policy import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
    from workers.part10 import NotDicomError, build_file_meta, read_part10_header
    from workers.transcode import TranscodeError, can_decode, can_encode, transcode_dataset

    if not can_encode(to_ts):
        raise ToolError(ExitCode.USAGE, f"cannot write transfer syntax {_label(to_ts)} "
                        "(see --list-syntaxes)")
    if src.is_dir():
        raise ToolError(ExitCode.USAGE, f"{src}: is a directory")
    try:
        data = src.read_bytes()
    except FileNotFoundError as exc:
        raise ToolError(ExitCode.NOT_FOUND, f"{src}: no such file") from exc
    except OSError as exc:
        raise ToolError(ExitCode.NOT_FOUND, f"{src}: cannot read: {exc.strerror}") from exc
    try:
        info = read_part10_header(data)
    except NotDicomError as exc:
        raise ToolError(ExitCode.NOT_DICOM, f"{src}: not DICOM: {exc}") from exc
    from_ts = info.transfer_syntax_uid
    if not can_decode(from_ts):
        raise ToolError(ExitCode.FAILED, f"{src}: cannot read transfer syntax {_label(from_ts)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            body = transcode_dataset(memoryview(data)[info.dataset_offset:], from_ts, to_ts)
    except TranscodeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ToolError(ExitCode.FAILED, f"{src}: cannot convert: {first}") from exc
    if info.has_file_meta:
        head = rewrite_file_meta(data[meta_start(data):info.dataset_offset], to_ts)
    else:
        head = build_file_meta(
            media_storage_sop_class_uid=info.sop_class_uid,
            media_storage_sop_instance_uid=info.sop_instance_uid,
            transfer_syntax_uid=to_ts, source_ae_title="",
            implementation_class_uid=IMPLEMENTATION_CLASS_UID,
            implementation_version_name=IMPLEMENTATION_VERSION_NAME,
        )

    def _write(fp: BinaryIO) -> None:
        fp.write(head)
        fp.write(body)

    atomic_write(out, _write)
    return from_ts


def _label(uid: str) -> str:
    name = UID(uid).name
    return f"{uid} ({name})" if name and name != uid else uid


def syntax_table() -> list[tuple[str, str, str, bool, bool]]:
    """(UID, short name, name, readable, writable) for every syntax pydicom knows."""
    from workers.transcode import can_decode, can_encode

    short = {uid: name for name, uid in SHORT_NAMES.items()}
    return [(str(ts), short.get(str(ts), ""), ts.name, can_decode(ts), can_encode(ts))
            for ts in pydicom.uid.AllTransferSyntaxes]


def _run(args: argparse.Namespace) -> int:
    if args.list_syntaxes:
        rows = syntax_table()
        width = max(len(r[0]) for r in rows)
        print(f"{'UID'.ljust(width)}  read  write  {'--ts'.ljust(8)}  name")
        for uid, short, name, readable, writable in rows:
            print(f"{uid.ljust(width)}  {'yes' if readable else 'no':4}  "
                  f"{'yes' if writable else 'no':5}  {short:8}  {name}")
        return int(ExitCode.OK)
    if args.input is None or args.output is None or args.ts is None:
        print("pacs convert: IN, OUT and --ts are required (or --list-syntaxes)",
              file=sys.stderr)
        return int(ExitCode.USAGE)
    try:
        from_ts = convert_file(args.input, args.output, args.ts)
    except ToolError as exc:
        print(f"pacs convert: {exc.message}", file=sys.stderr)
        return int(exc.code)
    if args.verbose:
        print(f"{args.input}: {_label(from_ts)} -> {_label(args.ts)}: {args.output}")
    return int(ExitCode.OK)


_EPILOG = """examples:
  pacs convert ct_rle.dcm ct.dcm --ts explicit        # decompress RLE
  pacs convert ct.dcm ct_rle.dcm --ts rle             # RLE Lossless (our numba encoder)
  pacs convert us_jpeg.dcm us.dcm --ts 1.2.840.10008.1.2   # JPEG -> Implicit VR LE
  pacs convert --list-syntaxes                        # what can be read and written

--ts takes implicit, explicit, deflate, rle, a UID or a keyword (ExplicitVRLittleEndian).
Encapsulated syntaxes (JPEG, JPEG-LS, JPEG 2000, RLE) are decoded; lossy-compressed input
converted to a native syntax stays marked lossy (Lossy Image Compression 01).

exit codes: 0 ok, 1 conversion failed (unreadable syntax, pixel data that does not decode),
2 usage, 3 file not found, 4 not DICOM / truncated / unparsable, 5 cannot write output"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `pacs convert` to the `pacs` sub-parsers."""
    help_text = "convert a DICOM file to another transfer syntax"
    p: argparse.ArgumentParser = sub.add_parser(
        "convert", help=help_text, description=help_text, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", type=Path, nargs="?", metavar="IN")
    p.add_argument("output", type=Path, nargs="?", metavar="OUT")
    p.add_argument("--ts", type=target_syntax, metavar="SYNTAX",
                   help="target: implicit, explicit, deflate, rle, or a transfer syntax UID")
    p.add_argument("--list-syntaxes", action="store_true",
                   help="list every transfer syntax with whether it can be read and written")
    p.add_argument("-v", "--verbose", action="store_true", help="print what was converted")
    p.set_defaults(func=_run)


__all__ = ["SHORT_NAMES", "convert_file", "register", "rewrite_file_meta", "syntax_table",
           "target_syntax"]
