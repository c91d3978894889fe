"""DICOMDIR (PS3.10 File-set, PS3.3 Annex F Basic Directory IOD): create, list, verify, update.

Built on pydicom's ``FileSet``, which writes PATIENT/STUDY/SERIES/IMAGE (and the other
four-level leaf records) and, when it copies an instance into the File-set, gives it a
PS3.10 8.2 conformant File ID (``PTnnnnnn/STnnnnnn/SEnnnnnn/IMnnnnnn``: at most 8 components
of at most 8 characters from A-Z, 0-9 and ``_``). That is the choice here: rather than
referencing files where they are (their names are seldom conformant), ``create`` copies every
instance to a conformant File ID inside ROOT.

``create`` writes the whole File-set into a temporary directory inside ROOT first, then moves
the new tree and the DICOMDIR into place: a failure leaves ROOT as it was. The source files
that were inside ROOT are then removed (ROOT is reorganised in place), unless
``keep_originals``. ``update`` adds through ``FileSet.add`` + ``write()``, which may rename
existing instances to pydicom's File ID scheme as well.

``verify`` reads the DICOMDIR and every file it references and reports: files missing or
unreadable, non-conformant File IDs, SOP Instance UIDs referenced twice, and leaf/parent
records whose SOP Class/Instance UID, Transfer Syntax, Series/Study Instance UID or Patient ID
disagree with the file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.fileset import FileInstance, FileSet, RecordNode, is_conformant_file_id

DICOMDIR_NAME = "DICOMDIR"


class DicomdirError(Exception):
    """The DICOMDIR cannot be read or written."""


@dataclass
class CreateResult:
    """What ``create`` did."""

    added: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    removed_originals: int = 0


def dicom_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Regular files under ``paths`` (recursively, sorted), DICOMDIR files excluded."""
    for path in paths:
        if path.is_dir():
            for sub in sorted(p for p in path.rglob("*") if p.is_file()):
                if sub.name.upper() != DICOMDIR_NAME and not sub.name.startswith("."):
                    yield sub
        else:
            yield path


def create(root: Path, sources: list[Path] | None = None, *, keep_originals: bool = False
           ) -> CreateResult:
    """Write ``root/DICOMDIR`` with every DICOM file of ``sources`` (default: ``root``)."""
    root = root.resolve()
    if (root / DICOMDIR_NAME).exists():
        raise DicomdirError(f"{root / DICOMDIR_NAME} exists; use `pacs dir update`")
    result = CreateResult()
    fs = FileSet()
    added: list[Path] = []
    for path in dicom_files(sources or [root]):
        reason = _add(fs, path)
        if reason:
            result.skipped.append((path, reason))
        else:
            added.append(path.resolve())
    if not added:
        raise DicomdirError(f"no DICOM instance to put in a File-set under {root}")
    staging = Path(tempfile.mkdtemp(prefix=".pacs-dir-", dir=root))
    try:
        fs.write(staging)
        for entry in staging.iterdir():
            if (root / entry.name).exists():
                raise DicomdirError(f"{root / entry.name} exists and would be overwritten")
        for entry in sorted(staging.iterdir(), key=lambda p: p.name == DICOMDIR_NAME):
            os.replace(entry, root / entry.name)  # DICOMDIR last
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result.added = len(added)
    if not keep_originals:
        for path in added:
            if path.is_relative_to(root):
                path.unlink(missing_ok=True)
                result.removed_originals += 1
        _prune_empty_dirs(root)
    return result


def update(dicomdir: Path, files: list[Path]) -> CreateResult:
    """Add ``files`` to the File-set of ``dicomdir`` (copied to conformant File IDs)."""
    fs = load(dicomdir)
    result = CreateResult()
    for path in dicom_files(files):
        reason = _add(fs, path)
        if reason:
            result.skipped.append((path, reason))
        else:
            result.added += 1
    if result.added:
        try:
            fs.write()
        except (OSError, ValueError) as exc:
            raise DicomdirError(f"{dicomdir}: {exc}") from exc
    return result


def load(dicomdir: Path) -> FileSet:
    """The File-set of a DICOMDIR file (or of the directory holding one)."""
    if dicomdir.is_dir():
        dicomdir = dicomdir / DICOMDIR_NAME
    try:
        return FileSet(dicomdir)
    except (InvalidDicomError, ValueError, KeyError, AttributeError, EOFError) as exc:
        raise DicomdirError(f"{dicomdir}: not a readable DICOMDIR: {exc}") from exc


def tree(fs: FileSet) -> list[str]:
    """The File-set as indented lines: PATIENT > STUDY > SERIES > leaf record with its file."""
    lines: list[str] = []
    seen: set[int] = set()
    for instance in fs:
        chain = [n for n in reversed(instance.node.ancestors) if not n.is_root] + [instance.node]
        for depth, node in enumerate(chain):
            if id(node) in seen:
                continue
            seen.add(id(node))
            text = _describe(node)
            if node is instance.node:
                text += f"  {instance.FileID}"
            lines.append("  " * depth + text)
    return lines


def verify(dicomdir: Path) -> list[str]:
    """Problems found in the File-set; [] when it is consistent (see module docstring)."""
    if dicomdir.is_dir():
        dicomdir = dicomdir / DICOMDIR_NAME
    problems = _missing_files(dicomdir)  # FileSet drops such records (with a warning)
    fs = load(dicomdir)
    counts = Counter(str(i.SOPInstanceUID) for i in fs)
    for uid, n in sorted(counts.items()):
        if n > 1:
            problems.append(f"SOP Instance UID {uid} referenced by {n} records")
    for instance in fs:
        problems.extend(_verify_instance(fs, instance))
    return problems


# ---------------------------------------------------------------------- helpers


def _missing_files(dicomdir: Path) -> list[str]:
    try:
        ds = dcmread(dicomdir)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise DicomdirError(f"{dicomdir}: not a readable DICOMDIR: {exc}") from exc
    out = []
    for record in ds.get("DirectoryRecordSequence", []):
        file_id = record.get("ReferencedFileID")
        if not file_id:
            continue
        parts = [file_id] if isinstance(file_id, str) else list(file_id)
        if not (dicomdir.parent / Path(*parts)).is_file():
            out.append(f"{'/'.join(parts)}: referenced file is missing")
    return out


def _add(fs: FileSet, path: Path) -> str:
    """Stage ``path``; the reason it was skipped, or '' when added."""
    try:
        fs.add(path)
    except (InvalidDicomError, EOFError) as exc:
        return f"not DICOM ({exc})"
    except (ValueError, KeyError, AttributeError, TypeError) as exc:
        return str(exc)
    except OSError as exc:
        return exc.strerror or str(exc)
    return ""


def _record(node: RecordNode) -> Dataset:
    # pydicom keeps the directory record private; it has no public accessor (3.0).
    return node._record


def _describe(node: RecordNode) -> str:
    rec = _record(node)
    kind = node.record_type
    if kind == "PATIENT":
        return f"PATIENT {rec.get('PatientID', '')} {rec.get('PatientName', '')}".rstrip()
    if kind == "STUDY":
        desc = rec.get("StudyDescription", "")
        return f"STUDY {rec.get('StudyDate', '')} {desc} {rec.get('StudyInstanceUID', '')}"
    if kind == "SERIES":
        return f"SERIES {rec.get('Modality', '')} #{rec.get('SeriesNumber', '')} " \
               f"{rec.get('SeriesInstanceUID', '')}"
    number = rec.get("InstanceNumber", "")
    return f"{kind} #{number}" if number != "" else kind


def _parent_record(node: RecordNode, kind: str) -> Dataset | None:
    for ancestor in node.ancestors:
        if not ancestor.is_root and ancestor.record_type == kind:
            return _record(ancestor)
    return None


def _verify_instance(fs: FileSet, instance: FileInstance) -> list[str]:
    file_id = instance.FileID
    where = f"{file_id}"
    out: list[str] = []
    rel = Path(*file_id.split("\\")) if "\\" in file_id else Path(file_id)
    if not is_conformant_file_id(rel):
        out.append(f"{where}: File ID does not conform to PS3.10 8.2 (8 upper-case characters)")
    path = Path(instance.path)
    try:
        ds = dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        return out + [f"{where}: referenced file is not readable DICOM ({exc})"]
    rec = _record(instance.node)
    checks = [
        ("ReferencedSOPInstanceUIDInFile", rec, "SOPInstanceUID"),
        ("ReferencedSOPClassUIDInFile", rec, "SOPClassUID"),
        ("SeriesInstanceUID", _parent_record(instance.node, "SERIES"), "SeriesInstanceUID"),
        ("StudyInstanceUID", _parent_record(instance.node, "STUDY"), "StudyInstanceUID"),
        ("PatientID", _parent_record(instance.node, "PATIENT"), "PatientID"),
    ]
    for rec_kw, record, file_kw in checks:
        if record is None or rec_kw not in record:
            continue
        want, got = str(record[rec_kw].value or ""), str(ds.get(file_kw, "") or "")
        if want != got:
            out.append(f"{where}: record {rec_kw} {want!r} but the file has {got!r}")
    ts_rec = rec.get("ReferencedTransferSyntaxUIDInFile")
    meta = getattr(ds, "file_meta", None)
    ts_file = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts_rec and ts_file and str(ts_rec) != str(ts_file):
        out.append(f"{where}: record Transfer Syntax {ts_rec} but the file has {ts_file}")
    return out


def _prune_empty_dirs(root: Path) -> None:
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        try:
            d.rmdir()
        except OSError:
            pass
