"""Reading and writing DICOM files for the command-line file tools, with one error contract.

Every file tool turns a bad input into a `ToolError` carrying an `ExitCode` and a one-line
message naming the file and the reason; `file_cli` prints it on stderr and exits with the code.
The codes are distinct per cause so that scripts can tell "no such file" from "not DICOM" from
"could not write":

    0 OK          1 FAILED (an operation failed, e.g. `modify -m` on a missing tag)
    2 USAGE       (argparse's own code for a bad command line, kept for every usage error)
    3 NOT_FOUND   4 NOT_DICOM (not DICOM, truncated, unparsable)   5 WRITE_ERROR

Outputs are written to a temporary name in the destination directory, fsync'd and renamed, so
a failure never leaves a partial output file behind (the same rule as workers/store.py).
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from enum import IntEnum
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian

UNDEFINED_LENGTH = 0xFFFFFFFF

# What pydicom raises on bytes that are not a data set (it has no single parse error type).
_PARSE_ERRORS = (
    InvalidDicomError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    NotImplementedError,
    struct.error,
    OverflowError,
)


class ExitCode(IntEnum):
    """Process exit codes of the file tools (documented in the README)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    NOT_FOUND = 3
    NOT_DICOM = 4
    WRITE_ERROR = 5


class ToolError(Exception):
    """A failure to report as one line on stderr, with the exit code to use."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NotDicomError(ToolError):
    """The bytes are not DICOM at all (as opposed to a damaged DICOM file)."""

    def __init__(self, message: str) -> None:
        super().__init__(ExitCode.NOT_DICOM, message)


def read_dicom(
    path: Path,
    *,
    stop_before_pixels: bool = False,
    defer_size: int | None = None,
) -> FileDataset:
    """Read a Part 10 file, or a bare data set without preamble/File Meta (PS3.10 §7.1).

    Raises `ToolError` NOT_FOUND / NOT_DICOM; a value that runs past the end of the file is
    reported as truncated (pydicom itself silently returns the short value).
    """
    if not path.exists():
        raise ToolError(ExitCode.NOT_FOUND, f"{path}: no such file")
    if path.is_dir():
        raise ToolError(ExitCode.USAGE, f"{path}: is a directory (use --recursive or a file)")
    try:
        size = path.stat().st_size
        try:
            ds = dcmread(path, stop_before_pixels=stop_before_pixels, defer_size=defer_size)
        except InvalidDicomError:
            # No preamble + "DICM": a bare data set is legal input to dcmtk as well.
            try:
                ds = dcmread(
                    path, force=True, stop_before_pixels=stop_before_pixels, defer_size=defer_size
                )
            except _PARSE_ERRORS as exc:
                raise NotDicomError(f"{path}: not DICOM (no 'DICM' prefix): {exc}") from exc
            _check_plausible(path, ds)
            try:
                check_not_truncated(path, ds, size)
            except ToolError as exc:  # without a DICM prefix, nonsense lengths mean not DICOM
                raise NotDicomError(f"{path}: not DICOM (no 'DICM' prefix): {exc}") from exc
    except ToolError:
        raise
    except PermissionError as exc:
        raise ToolError(ExitCode.NOT_FOUND, f"{path}: cannot open: {exc.strerror}") from exc
    except OSError as exc:
        raise ToolError(ExitCode.NOT_FOUND, f"{path}: cannot read: {exc}") from exc
    except _PARSE_ERRORS as exc:
        raise ToolError(ExitCode.NOT_DICOM, f"{path}: not a readable DICOM file: {exc}") from exc
    if not _is_deflated(ds):  # deflated offsets are into the inflated stream
        check_not_truncated(path, ds, size)
    return ds


def _is_deflated(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    return bool(ts) and UID(str(ts)).is_deflated


def _check_plausible(path: Path, ds: Dataset) -> None:
    """A forced read of arbitrary bytes "succeeds"; demand something that looks like a data set.

    Bare data sets start with a low even group (0002..0030 in practice: 0008 Identifying,
    0010 Patient, 0020 Relationship); text or image files decode to nonsense tags.
    """
    meta = getattr(ds, "file_meta", None)
    tags = list(ds.keys())
    if not tags and not (meta and len(meta)):
        raise NotDicomError(f"{path}: not DICOM (empty or no data elements)")
    if tags:
        first = tags[0]
        if not 0x0002 <= first.group <= 0x0030 or first.group % 2:
            raise NotDicomError(
                f"{path}: not DICOM (no 'DICM' prefix and first element {first} is implausible)"
            )


def check_not_truncated(path: Path, ds: Dataset, size: int) -> None:
    """Raise NOT_DICOM if any top-level value is declared longer than the bytes left."""
    for tag in list(ds.keys()):
        raw = ds.get_item(tag, keep_deferred=True)
        if not isinstance(raw, RawDataElement) or raw.length == UNDEFINED_LENGTH:
            continue
        short_value = raw.value is not None and len(raw.value) < raw.length
        if raw.value_tell + raw.length > size or short_value:
            raise ToolError(
                ExitCode.NOT_DICOM,
                f"{path}: truncated: element {tag} declares {raw.length} bytes at offset "
                f"{raw.value_tell} but the file has {size} bytes",
            )


def iter_files(paths: Iterable[Path], *, recursive: bool) -> Iterator[tuple[Path, bool]]:
    """Input files in order: `(path, named)`; `named` is False for files found in a directory.

    A directory contributes its files (sorted), and with `recursive` those of its subtree.
    """
    for path in paths:
        if not path.is_dir():
            yield path, True
            continue
        if recursive:
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield Path(root) / name, False
        else:
            for child in sorted(path.iterdir()):
                if child.is_file():
                    yield child, False


def atomic_write(out: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through `write` to a temporary file next to `out`, fsync, then rename over it."""
    directory = out.parent if str(out.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise ToolError(ExitCode.WRITE_ERROR, f"{out}: cannot write: {exc.strerror}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fp:
            write(fp)
            fp.flush()
            os.fsync(fp.fileno())
        # mkstemp creates 0600; give the output the usual umask-derived mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ToolError(ExitCode.WRITE_ERROR, f"{out}: cannot write: {exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_text(out: Path, text: str) -> None:
    """`atomic_write` for UTF-8 text."""
    atomic_write(out, lambda fp: fp.write(text.encode("utf-8")))


def write_dicom(ds: Dataset, out: Path) -> None:
    """Save `ds` atomically, keeping its preamble, File Meta and encoding as they are."""

    def _write(fp: BinaryIO) -> None:
        try:
            ds.save_as(fp, enforce_file_format=False)
        except _PARSE_ERRORS as exc:
            raise ToolError(ExitCode.WRITE_ERROR, f"{out}: cannot encode data set: {exc}") from exc

    atomic_write(out, _write)


def write_part10(ds: Dataset, out: Path, transfer_syntax: str | None = None) -> None:
    """Save a data set built in memory (from JSON/XML) as a Part 10 file (PS3.10 §7.1).

    The File Meta group comes from the input when it had one, is completed from the data set
    (Media Storage SOP Class/Instance UID), and defaults to Explicit VR Little Endian.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = FileMetaDataset()
    ts = UID(transfer_syntax or meta.get("TransferSyntaxUID") or ExplicitVRLittleEndian)
    meta.TransferSyntaxUID = ts
    for meta_kw, ds_kw in (
        ("MediaStorageSOPClassUID", "SOPClassUID"),
        ("MediaStorageSOPInstanceUID", "SOPInstanceUID"),
    ):
        if meta_kw not in meta and ds_kw in ds:
            setattr(meta, meta_kw, ds[ds_kw].value)
    ds.file_meta = meta
    complete = bool(meta.get("MediaStorageSOPClassUID")) and bool(
        meta.get("MediaStorageSOPInstanceUID")
    )

    def _write(fp: BinaryIO) -> None:
        try:
            if complete:
                ds.save_as(fp, enforce_file_format=True)
            else:  # not a storable object (no SOP Class/Instance): keep what we have
                ds.preamble = b"\0" * 128
                ds.save_as(fp, enforce_file_format=False)
        except _PARSE_ERRORS as exc:
            raise ToolError(ExitCode.WRITE_ERROR, f"{out}: cannot encode data set: {exc}") from exc

    atomic_write(out, _write)
