"""workers.qr.move.MoveTask._send: an error from the SCU while the data set is a slice of an
mmap reaches the caller as itself, so an A-ABORT from the destination is handled as "the
association is gone" and not hidden behind the map's BufferError on close."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from appliance.scu import AssociationAborted
from workers.qr.move import MoveTask
from workers.qr.suboperations import Prepared


class _AbortingSCU:
    """Raises the way a destination's A-ABORT mid data set does, holding the slice."""

    def __init__(self) -> None:
        self.seen = b""

    def send_store(self, data: memoryview, *args: Any, **kwargs: Any) -> int:
        self.seen = bytes(data[:4])
        raise AssociationAborted("aborted by the destination", 2, 0, by_peer=True)


class _SCU(_AbortingSCU):
    def send_store(self, data: memoryview, *args: Any, **kwargs: Any) -> int:
        self.seen = bytes(data)
        return 7


def _call(scu: object, path: Path) -> int:
    task = SimpleNamespace(state=SimpleNamespace(calling_ae="MOVER"), msg_id=3)
    item = SimpleNamespace(sop_class_uid="1.2.3", sop_instance_uid="1.2.3.4")
    prepared = Prepared("1.2.840.10008.1.2.1", path, offset=2, length=6)
    return MoveTask._send(task, scu, item, prepared)  # type: ignore[arg-type]


def test_abort_during_send_is_raised_as_itself(tmp_path: Path) -> None:
    path = tmp_path / "obj"
    path.write_bytes(b"..DATA!!tail")
    scu = _AbortingSCU()
    with pytest.raises(AssociationAborted, match="aborted by the destination"):
        _call(scu, path)
    assert scu.seen == b"DATA"


def test_send_gives_the_region_and_its_message_id(tmp_path: Path) -> None:
    path = tmp_path / "obj"
    path.write_bytes(b"..DATA!!tail")
    scu = _SCU()
    assert _call(scu, path) == 7
    assert scu.seen == b"DATA!!"
