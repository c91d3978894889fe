"""What C-MOVE and C-GET share: the objects to send, their encoding, and the counts and
statuses of the sub-operations (PS3.4 C.4.2.1.3, C.4.3.1.3; PS3.7 Tables 9.3-7, 9.3-10).

An object goes out in its stored transfer syntax when the peer accepted it; otherwise it is
converted (``workers.transcode``) to a syntax the peer accepted. An object compressed on
ingest (``workers.compress``) is first restored to the bytes it was received as, so a peer
that accepts that syntax gets them exactly, and any other conversion starts from them. An
object that cannot be sent or converted is a failed sub-operation (its SOP Instance UID goes
to the Failed SOP Instance UID List), never an aborted association.
"""

from __future__ import annotations

import struct
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from appliance.dimse.status import Status
from appliance.dimse.transfer_syntax import IMPLICIT_VR_LE
from workers.compress import restore_dataset
from workers.index.schema import InstanceRecord
from workers.part10 import read_part10_header
from workers.transcode import TranscodeError, choose_transfer_syntax, transcode_dataset

FAILED_SOP_INSTANCE_UID_LIST = (0x0008, 0x0058)
# Sub-operation statuses that count as warnings (PS3.4 B.2.3: coercion, elements discarded,
# data set does not match SOP class), not failures.
_STORE_WARNINGS = frozenset({0x0001, 0xB000, 0xB006, 0xB007})


@dataclass(frozen=True, slots=True)
class RetrieveItem:
    """One object to send: what the index says about it."""

    sop_class_uid: str
    sop_instance_uid: str
    relpath: str
    transfer_syntax_uid: str
    received_transfer_syntax_uid: str = ""  # set when compressed on ingest

    @classmethod
    def of(cls, record: InstanceRecord) -> RetrieveItem:
        return cls(record.sop_class_uid, record.sop_instance_uid, record.relpath,
                   record.transfer_syntax_uid, record.received_transfer_syntax_uid)


@dataclass(slots=True)
class Counts:
    """Sub-operation tallies and the Failed SOP Instance UID List."""

    total: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return self.total - self.completed - self.failed - self.warning

    def record(self, sop_instance_uid: str, status: int) -> None:
        if status == Status.SUCCESS:
            self.completed += 1
        elif status in _STORE_WARNINGS:
            self.warning += 1
        else:
            self.failed += 1
            self.failed_uids.append(sop_instance_uid)

    def fail_remaining(self, uids: Collection[str]) -> None:
        for uid in uids:
            self.failed += 1
            self.failed_uids.append(uid)

    def final_status(self, cancelled: bool) -> int:
        """PS3.4 C.4.2.1.3.1: Cancel FE00; Warning B000 when any sub-operation failed or
        warned; Success otherwise (also when nothing matched)."""
        if cancelled:
            return Status.CANCEL
        if self.failed or self.warning:
            return 0xB000
        return Status.SUCCESS


@dataclass(frozen=True, slots=True)
class Prepared:
    """An object ready to send: either a file region as stored, or converted bytes."""

    transfer_syntax_uid: str
    path: Path
    offset: int  # where the data set starts in ``path``
    length: int
    converted: bytes | None = None  # the data set re-encoded, when a conversion was needed


class CannotSend(Exception):
    """This object cannot go to this peer (no acceptable syntax, unreadable, not convertible)."""


def prepare(data_dir: Path, item: RetrieveItem, accepted: Collection[str]) -> Prepared:
    """Locate ``item``'s data set and convert it if the peer accepted none of its encoding.
    Raises CannotSend."""
    path = data_dir / item.relpath
    try:
        info = read_part10_header(path)
        size = path.stat().st_size
    except (OSError, ValueError) as exc:
        raise CannotSend(f"cannot read {item.relpath}: {exc}") from exc
    stored = info.transfer_syntax_uid or item.transfer_syntax_uid
    original = item.received_transfer_syntax_uid
    if original == stored:
        original = ""
    if stored in accepted or not original:
        target = choose_transfer_syntax(stored, accepted)
    else:
        target = choose_transfer_syntax(original, accepted)
    if target is None:
        raise CannotSend(f"peer accepts none of {sorted(accepted)} for {stored}, and no "
                         "conversion reaches them")
    length = size - info.dataset_offset
    if target == stored:
        return Prepared(stored, path, info.dataset_offset, length)
    try:
        with open(path, "rb") as fh:
            fh.seek(info.dataset_offset)
            data = fh.read()
        if original:
            data = restore_dataset(data, original)
        converted = transcode_dataset(data, original or stored, target)
    except (OSError, TranscodeError) as exc:
        raise CannotSend(f"cannot convert {stored} -> {target}: {exc}") from exc
    return Prepared(target, path, info.dataset_offset, len(converted), converted)


def failed_uid_list(uids: list[str], transfer_syntax_uid: str) -> bytes:
    """The C-MOVE/C-GET-RSP Identifier: (0008,0058) Failed SOP Instance UID List alone
    (PS3.4 C.4.2.1.3.1), little endian. Explicit VR UI has a 16-bit length, so a list that
    would not fit is cut at the last whole UID that does."""
    value = "\\".join(uids).encode("ascii", "replace")
    explicit = transfer_syntax_uid != IMPLICIT_VR_LE
    if explicit and len(value) > 0xFFFE:
        value = value[:0xFFFE]
        value = value[: value.rfind(b"\\")] if b"\\" in value else b""
    if len(value) % 2:
        value += b"\0"  # UI pads with NUL (PS3.5 §6.2)
    group, element = FAILED_SOP_INSTANCE_UID_LIST
    if explicit:
        return struct.pack("<HH2sH", group, element, b"UI", len(value)) + value
    return struct.pack("<HHI", group, element, len(value)) + value
