"""`pacs modify`: dcmodify(1)-compatible edits of DICOM files, plus `-o`, `--script`, `-r`.

Semantics follow dcmodify 3.6 (checked against it in tests/interop/test_file_tools_dcmtk.py):

- operations run in command-line order; each one that fails is reported, the rest still run,
  and a file with any failure is not saved (unless `-ie`); without `-ie` processing stops at
  the first such file. `-imt` makes "tag not found" a success for `-m/-ma/-e/-ea`.
- `-i path=value` inserts or overwrites, creating missing sequences and items on the way
  (`Seq[3]` creates items 0..3; `Seq[*]` needs existing items). `-m` changes only what exists.
  `-ma`/`-ea` act on every occurrence, inside sequences too. `-e Seq[1]` erases an item.
- values: backslash separates multiple values (PS3.5 §6.4); OB/UN take hex bytes and OW hex
  words ("01\\02"), like dcmodify; an existing element keeps its VR, a new one takes the
  dictionary's (US/SS and OB/OW resolved from Pixel Representation / Bits Allocated).
- changing SOP Class/Instance UID by `-i/-m/-ma` also updates Media Storage SOP Class/Instance
  UID in the File Meta group unless `-nmu`; `-gin` always does (dcmodify "CHANGING UIDS").
- in place, the original is kept as FILE.bak unless `-nb`; `-o` writes elsewhere instead. The
  result is written to a temporary name and renamed, so a failed run changes nothing.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import struct
import sys
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_VR, private_dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import generate_uid

from appliance.tools.dcmfile import (
    ExitCode,
    NotDicomError,
    ToolError,
    iter_files,
    read_dicom,
    write_dicom,
)
from appliance.tools.dicom_json import swap_bytes
from appliance.tools.tagpath import (
    ALL_ITEMS,
    TagPath,
    TagPathError,
    containers,
    items_at,
    parse_path,
    parse_tag,
    tag_name,
)

SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
_META_FOR = {
    SOP_CLASS_UID: "MediaStorageSOPClassUID",
    SOP_INSTANCE_UID: "MediaStorageSOPInstanceUID",
}
_UID_FOR_FLAG = {"gst": 0x0020000D, "gse": 0x0020000E, "gin": SOP_INSTANCE_UID}
_VALUE_OPS = frozenset({"i", "m", "ma", "if", "mf"})
_FLAG_OPS = frozenset({"ep", "gst", "gse", "gin"})
_INT_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "UV": "Q", "SV": "q"}
_FLOAT_FORMATS = {"FL": "f", "FD": "d", "OF": "f", "OD": "d"}


class ModifyError(Exception):
    """One operation failed; `missing` marks "tag not found" (what -imt forgives)."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True, slots=True)
class Operation:
    """One edit: `kind` is the dcmodify flag without its dash (i, m, ma, e, ea, ep, gst...)."""

    kind: str
    path: TagPath | None = None
    value: str | None = None
    text: str = ""
    data: bytes | None = None  # -if/-mf: the file's bytes (binary VRs take them as they are)


@dataclass(frozen=True, slots=True)
class ModifyOptions:
    update_meta_uids: bool = True  # -nmu turns this off
    ignore_missing: bool = False  # -imt
    ignore_un: bool = False  # -iun


def parse_operation(kind: str, text: str | None = None) -> Operation:
    """Build an Operation from a flag (without dash) and its argument; raises TagPathError."""
    if kind in _FLAG_OPS:
        return Operation(kind, text=f"-{kind}")
    if text is None:
        raise TagPathError(f"-{kind} needs an argument")
    path_text, sep, value = text.partition("=")
    if kind in _VALUE_OPS - {"i"} and not sep:
        raise TagPathError(f"-{kind} expects PATH=VALUE, got {text!r}")
    if kind in ("e", "ea") and sep:
        raise TagPathError(f"-{kind} expects a tag path without a value, got {text!r}")
    path = parse_path(path_text)
    if kind in ("ma", "ea") and (path.is_nested or path.leaf.item is not None):
        raise TagPathError(f"-{kind} takes a single tag, not a path: {text!r}")
    if kind in ("if", "mf"):
        try:
            value_bytes = Path(value).read_bytes()
        except OSError as exc:
            raise TagPathError(f"-{kind}: cannot read {value!r}: {exc.strerror}") from exc
        return Operation(kind, path, value_bytes.decode("utf-8", "replace"), text, value_bytes)
    return Operation(kind, path, value if sep else "", text)


def parse_script(path: Path) -> list[Operation]:
    """One operation per line in command-line syntax (`-i "PatientName=DOE^JOHN"`); # comments."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ToolError(ExitCode.NOT_FOUND, f"{path}: cannot read script: {exc.strerror}") from exc
    ops: list[Operation] = []
    for number, line in enumerate(lines, start=1):
        try:
            words = shlex.split(line, comments=True)
            if not words:
                continue
            kind = _SCRIPT_FLAGS.get(words[0])
            if kind is None or len(words) > 2:
                raise TagPathError(f"expected '-i|-m|-ma|-e|-ea PATH[=VALUE]' or a flag: {line!r}")
            ops.append(parse_operation(kind, words[1] if len(words) > 1 else None))
        except (TagPathError, ValueError) as exc:
            raise ToolError(ExitCode.USAGE, f"{path}:{number}: {exc}") from exc
    return ops


_SCRIPT_FLAGS = {
    "-i": "i", "--insert": "i", "-m": "m", "--modify": "m", "-ma": "ma", "--modify-all": "ma",
    "-e": "e", "--erase": "e", "-ea": "ea", "--erase-all": "ea", "-ep": "ep",
    "--erase-private": "ep", "-gst": "gst", "--gen-stud-uid": "gst", "-gse": "gse",
    "--gen-ser-uid": "gse", "-gin": "gin", "--gen-inst-uid": "gin",
    "-if": "if", "--insert-from-file": "if", "-mf": "mf", "--modify-from-file": "mf",
}


# --------------------------------------------------------------------------- values


def _vr_for_new(container: Dataset, root: Dataset, tag: BaseTag) -> str:
    if tag.is_private:
        if 0x0010 <= tag.element <= 0x00FF:
            return "LO"  # a Private Creator (PS3.5 §7.8.1)
        creator_tag = BaseTag((tag.group << 16) | (tag.element >> 8))
        creator = container.get(creator_tag)
        if creator is not None:
            try:
                return str(private_dictionary_VR(tag, str(creator.value)))
            except KeyError:
                pass
        return "UN"
    try:
        vr = str(dictionary_VR(tag))
    except KeyError:
        return "UN"
    if vr in ("US or SS", "US or SS or OW"):
        return "SS" if root.get("PixelRepresentation") == 1 else "US"
    if vr in ("OB or OW", "US or OW"):
        bits = root.get("BitsAllocated")
        return "OW" if bits is None or int(bits) > 8 else "OB"
    return vr.split(" ", maxsplit=1)[0]


def _hex_items(text: str) -> list[int]:
    try:
        return [int(part, 16) for part in text.split("\\") if part]
    except ValueError as exc:
        raise ModifyError(f"expected hexadecimal values for a binary VR, got {text!r}") from exc


def make_value_element(tag: BaseTag, vr: str, text: str, little_endian: bool) -> DataElement:
    """The element `tag` with VR `vr` holding `text` as dcmodify would parse it."""
    if vr == "SQ":
        if text:
            raise ModifyError(f"cannot put a value into sequence {tag_name(tag)}")
        return DataElement(tag, vr, [])
    parts = text.split("\\") if text else []
    try:
        if vr in _BINARY_VRS:
            return DataElement(tag, vr, _binary_value(vr, text, parts, little_endian))
        if vr in _INT_FORMATS:
            ints = [int(p) for p in parts]
            return DataElement(tag, vr, ints[0] if len(ints) == 1 else ints or None)
        if vr in ("FL", "FD"):
            floats = [float(p) for p in parts]
            return DataElement(tag, vr, floats[0] if len(floats) == 1 else floats or None)
        if vr == "AT":
            tags = [parse_tag(p) for p in parts]
            return DataElement(tag, vr, tags[0] if len(tags) == 1 else tags or None)
        if vr in ("IS", "DS"):
            # As read from a file: dcmodify does not validate, and neither does this.
            raw = text.encode("ascii")
            return convert_raw_data_element(RawDataElement(tag, vr, len(raw), raw, 0, False, True))
        return DataElement(tag, vr, text)
    except (ValueError, struct.error, TagPathError, UnicodeEncodeError) as exc:
        raise ModifyError(f"invalid value {text!r} for {tag_name(tag)} ({vr}): {exc}") from exc


_BINARY_VRS = frozenset({"OB", "UN", "OW", "OL", "OV", "OF", "OD"})


def _binary_value(vr: str, text: str, parts: list[str], little_endian: bool) -> bytes:
    end = "<" if little_endian else ">"
    if vr in ("OB", "UN"):
        return bytes(b & 0xFF for b in _hex_items(text))
    if vr == "OW":
        words = _hex_items(text)
        return struct.pack(f"{end}{len(words)}H", *words)
    if vr in ("OL", "OV"):
        return struct.pack(f"{end}{len(parts)}{'I' if vr == 'OL' else 'Q'}", *map(int, parts))
    return struct.pack(f"{end}{len(parts)}{_FLOAT_FORMATS[vr]}", *map(float, parts))


# --------------------------------------------------------------------------- operations


class Modifier:
    """Applies operations to one data set; collects the failures."""

    def __init__(self, ds: Dataset, options: ModifyOptions) -> None:
        self.ds = ds
        self.options = options
        encoding = getattr(ds, "original_encoding", (None, True))
        self.little_endian = encoding[1] is not False
        self._data: bytes | None = None  # the -if/-mf bytes of the operation being applied

    def apply(self, ops: Seq[Operation]) -> list[str]:
        errors: list[str] = []
        for op in ops:
            try:
                self._apply(op)
            except ModifyError as exc:
                if exc.missing and self.options.ignore_missing and op.kind != "i":
                    continue
                errors.append(f"{op.text}: {exc}")
            except TagPathError as exc:
                errors.append(f"{op.text}: {exc}")
        return errors

    def _apply(self, op: Operation) -> None:
        if op.kind == "ep":
            self.ds.remove_private_tags()
            return
        if op.kind in _UID_FOR_FLAG:
            tag = BaseTag(_UID_FOR_FLAG[op.kind])
            self.ds[tag] = DataElement(tag, "UI", str(generate_uid()))
            if op.kind == "gin":
                self._sync_meta(tag, force=True)
            return
        assert op.path is not None
        handler: Callable[[TagPath, str], None] = {
            "i": self._insert, "if": self._insert, "m": self._modify, "mf": self._modify,
            "ma": self._modify_all, "e": self._erase, "ea": self._erase_all,
        }[op.kind]
        self._data = op.data
        try:
            handler(op.path, op.value or "")
        finally:
            self._data = None

    def _set(self, container: Dataset, tag: BaseTag, text: str) -> None:
        existing = container.get(tag)
        if existing is not None:
            vr = str(existing.VR)
            if vr == "UN" and self.options.ignore_un:
                return
            if vr == "SQ" and text:
                raise ModifyError(f"cannot put a value into sequence {tag_name(tag)}")
            if vr == "SQ":
                return
        else:
            vr = _vr_for_new(container, self.ds, tag)
        if self._data is not None and vr in _BINARY_VRS:
            # File content as is; OW is given little endian (dcmodify -if) and swapped if needed.
            data = self._data if self.little_endian else swap_bytes(self._data, vr)
            container[tag] = DataElement(tag, vr, data)
        else:
            container[tag] = make_value_element(tag, vr, text, self.little_endian)
        if container is self.ds:
            self._sync_meta(tag)

    def _sync_meta(self, tag: BaseTag, *, force: bool = False) -> None:
        keyword = _META_FOR.get(int(tag))
        meta = getattr(self.ds, "file_meta", None)
        if keyword is None or meta is None or not (force or self.options.update_meta_uids):
            return
        if tag in self.ds and (force or keyword in meta):
            setattr(meta, keyword, self.ds[tag].value)

    def _insert(self, path: TagPath, text: str) -> None:
        holders = containers(self.ds, path, create=True)
        if not holders:
            raise ModifyError("cannot insert into an unspecified number (*) of missing items")
        leaf = path.leaf
        for holder in holders:
            if leaf.item is not None:
                if text:
                    raise ModifyError("cannot put a value into an item")
                if leaf.item == ALL_ITEMS:
                    raise ModifyError("cannot insert an unspecified number (*) of items")
                items_at(holder, leaf, create=True)
            else:
                self._set(holder, leaf.tag, text)

    def _modify(self, path: TagPath, text: str) -> None:
        if path.leaf.item is not None:
            raise ModifyError("cannot put a value into an item")
        holders = [c for c in containers(self.ds, path) if path.leaf.tag in c]
        if not holders:
            raise ModifyError(f"tag not found: {path}", missing=True)
        for holder in holders:
            self._set(holder, path.leaf.tag, text)

    def _modify_all(self, path: TagPath, text: str) -> None:
        holders = _all_holders(self.ds, path.leaf.tag)
        if not holders:
            raise ModifyError(f"tag not found: {path}", missing=True)
        for holder in holders:
            self._set(holder, path.leaf.tag, text)

    def _erase(self, path: TagPath, _text: str) -> None:
        leaf = path.leaf
        found = False
        for holder in containers(self.ds, path):
            if leaf.tag not in holder:
                continue
            if leaf.item is None:
                del holder[leaf.tag]
                found = True
                continue
            seq = holder[leaf.tag].value
            if leaf.item == ALL_ITEMS:
                found = found or len(seq) > 0
                seq.clear()
            elif leaf.item < len(seq):
                del seq[leaf.item]
                found = True
        if not found:
            raise ModifyError(f"tag not found: {path}", missing=True)

    def _erase_all(self, path: TagPath, _text: str) -> None:
        holders = _all_holders(self.ds, path.leaf.tag)
        if not holders:
            raise ModifyError(f"tag not found: {path}", missing=True)
        for holder in holders:
            del holder[path.leaf.tag]


def _all_holders(ds: Dataset, tag: BaseTag) -> list[Dataset]:
    """Every data set, the top level and every item at any depth, that holds `tag`."""
    out = [ds] if tag in ds else []
    for elem in ds:
        if elem.VR == "SQ" and elem.tag != tag:
            for item in elem.value or []:
                out.extend(_all_holders(item, tag))
    return out


# --------------------------------------------------------------------------- files


def modify_file(
    path: Path,
    ops: Seq[Operation],
    options: ModifyOptions,
    *,
    output: Path | None = None,
    backup: bool = True,
    ignore_errors: bool = False,
) -> list[str]:
    """Edit one file; returns the (ignored) errors, raises ToolError FAILED otherwise."""
    ds = read_dicom(path)
    errors = Modifier(ds, options).apply(ops)
    if errors and not ignore_errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ToolError(ExitCode.FAILED, f"{path}: {errors[0]}{more}; file not changed")
    target = output or path
    if output is None and backup:
        backup_path = path.with_name(path.name + ".bak")
        try:
            shutil.copy2(path, backup_path)
        except OSError as exc:
            raise ToolError(ExitCode.WRITE_ERROR, f"{backup_path}: cannot back up: {exc}") from exc
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
    write_dicom(ds, target)
    return errors


def _output_for(path: Path, base: Path | None, output: Path | None, many: bool) -> Path | None:
    if output is None:
        return None
    if not many:
        return output / path.name if output.is_dir() else output
    relative = path.relative_to(base) if base is not None else Path(path.name)
    return output / relative


class _OperationAction(argparse.Action):
    """Collects -i/-m/-e/... into one ordered list (dcmodify applies them in order)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        ops: list[tuple[str, str | None]] = list(getattr(namespace, "operations", None) or [])
        ops.append((str(self.const), values if isinstance(values, str) else None))
        namespace.operations = ops


def run(args: argparse.Namespace) -> int:
    try:
        ops = [parse_operation(kind, text) for kind, text in (args.operations or [])]
    except TagPathError as exc:
        raise ToolError(ExitCode.USAGE, str(exc)) from exc
    if args.script is not None:
        ops.extend(parse_script(args.script))
    if not ops:
        raise ToolError(ExitCode.USAGE, "no operation given (-i, -m, -e, -ea, -ep, -gin, ...)")
    options = ModifyOptions(
        update_meta_uids=not args.no_meta_uid,
        ignore_missing=args.ignore_missing_tags,
        ignore_un=args.ignore_un_values,
    )
    many = len(args.paths) > 1 or any(p.is_dir() for p in args.paths)
    status = ExitCode.OK
    for root in args.paths:
        base = root if root.is_dir() else None
        for path, named in iter_files([root], recursive=args.recursive):
            if not named and path.suffix == ".bak":
                continue  # our own backups from an earlier run
            out = _output_for(path, base, args.output, many)
            status = _process(path, named, out, ops, options, args) or status
    return int(status)


def _process(
    path: Path,
    named: bool,
    out: Path | None,
    ops: Seq[Operation],
    options: ModifyOptions,
    args: argparse.Namespace,
) -> ExitCode:
    try:
        errors = modify_file(path, ops, options, output=out, backup=not args.no_backup,
                             ignore_errors=args.ignore_errors)
    except NotDicomError:
        if named:
            raise
        print(f"pacs modify: skipped {path}: not DICOM", file=sys.stderr)
        return ExitCode.OK
    except ToolError as exc:
        if not args.ignore_errors:
            raise
        print(f"pacs modify: {exc.message}", file=sys.stderr)
        return exc.code
    for error in errors:
        print(f"pacs modify: {path}: ignored: {error}", file=sys.stderr)
    if args.verbose:
        print(f"pacs modify: {path} -> {out or path}", file=sys.stderr)
    return ExitCode.OK


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, metavar="FILE|DIR")
    ops = parser.add_argument_group("operations (applied in command-line order)")
    for flags, kind, metavar, help_text in (
        (("-i", "--insert"), "i", "PATH=VALUE", "insert or overwrite (creates sequences/items)"),
        (("-if", "--insert-from-file"), "if", "PATH=FILE", "insert the content of FILE"),
        (("-m", "--modify"), "m", "PATH=VALUE", "modify only if the element exists"),
        (("-mf", "--modify-from-file"), "mf", "PATH=FILE", "modify to the content of FILE"),
        (("-ma", "--modify-all"), "ma", "TAG=VALUE", "modify every occurrence, at any depth"),
        (("-e", "--erase"), "e", "PATH", "erase an element, or an item (Seq[1])"),
        (("-ea", "--erase-all"), "ea", "TAG", "erase every occurrence, at any depth"),
    ):
        ops.add_argument(*flags, action=_OperationAction, const=kind, metavar=metavar,
                         help=help_text)
    for flags, kind, help_text in (
        (("-ep", "--erase-private"), "ep", "erase all private elements"),
        (("-gst", "--gen-stud-uid"), "gst", "generate a new Study Instance UID"),
        (("-gse", "--gen-ser-uid"), "gse", "generate a new Series Instance UID"),
        (("-gin", "--gen-inst-uid"), "gin",
         "generate a new SOP Instance UID (File Meta follows)"),
    ):
        ops.add_argument(*flags, action=_OperationAction, const=kind, nargs=0, help=help_text)
    ops.add_argument("--script", type=Path, metavar="FILE",
                     help="more operations, one per line, same syntax (-i \"PatientID=1\"), "
                          "applied after those on the command line")
    parser.add_argument("-nmu", "--no-meta-uid", action="store_true",
                        help="do not update the File Meta UIDs when SOP Class/Instance UID change")
    parser.add_argument("-imt", "--ignore-missing-tags", action="store_true",
                        help="treat 'tag not found' as success for -m/-ma/-e/-ea")
    parser.add_argument("-ie", "--ignore-errors", action="store_true",
                        help="save files despite failed operations, and go on with the next file")
    parser.add_argument("-iun", "--ignore-un-values", action="store_true",
                        help="leave elements with VR UN untouched")
    parser.add_argument("-nb", "--no-backup", action="store_true",
                        help="do not keep FILE.bak when modifying in place")
    parser.add_argument("-o", "--output", type=Path, metavar="OUT",
                        help="write here instead of in place (a directory for several inputs)")
    parser.add_argument("-r", "--recursive", action="store_true",
                        help="descend into sub-directories")
    parser.add_argument("-v", "--verbose", action="store_true", help="report each file written")
    parser.set_defaults(operations=[])
