"""The workflow records in their own LMDB environment, ``<data_dir>/workflow/``.

THEORY OF OPERATION
-------------------
Worklist items, MPPS instances and pending Storage Commitment requests are rare writes made by
whichever process handles them (a worker answering N-CREATE, the CLI adding items), so unlike
the image index (one writer process, group commit) every process opens this environment
read-write and LMDB's writer lock serialises them, across processes too. Each operation is
one transaction: an N-SET's read, validation and write happen under the writer lock, so two
SCUs racing on one instance cannot both succeed, and an import is all or nothing.

Sub-databases (keys UTF-8, values JSON; data sets as DICOM JSON, PS3.18 F):

    meta         b"schema_version" -> b"1"
    worklist     "<Study Instance UID>/<SPS ID>" -> WorklistItem
    mpps         SOP Instance UID -> MppsRecord
    commitments  Transaction UID -> CommitmentRequest (deleted when its report is acknowledged)

An environment of another schema version is refused (WorkflowSchemaError) before anything is
written. ``sync=True`` commits are durable (fsync); ``sync=False`` (durability mode ``os``)
survives a crash of our processes but not a power loss.

One environment handle per process and path: LMDB forbids opening one environment twice in a
process, so stores on the same path share a handle (reference-counted). A handle inherited
through fork is never used for a transaction: the first operation in the child closes it and
opens its own. Closing it there is safe (and py-lmdb requires it before reopening the path):
mdb_env_close clears only reader slots tagged with the calling pid, fcntl locks are not
inherited, and the unmapped memory is the child's copy. MapFullError doubles the map and
retries the transaction; MapResizedError (another process grew it) adopts the new size.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import lmdb
from pydicom.dataset import Dataset

from appliance.dimse.status import Status
from workers.workflow.commitment import CommitmentRequest
from workers.workflow.mpps import (
    MppsError,
    MppsRecord,
    apply_set,
    scheduled_steps,
    step_status,
    validate_create,
)
from workers.workflow.worklist import WorklistItem

T = TypeVar("T")
SCHEMA_VERSION: Final = b"1"
SCHEMA_VERSION_KEY: Final = b"schema_version"
DEFAULT_MAP_SIZE: Final = 256 << 20  # sparse; doubled on MapFullError
_DBS: Final = ("meta", "worklist", "mpps", "commitments")


class WorkflowSchemaError(RuntimeError):
    """The environment has another schema version (or is not ours)."""


@dataclass(slots=True)
class _Handle:
    env: lmdb.Environment
    dbs: dict[str, Any]
    synced: bool  # opened with sync=True
    pid: int = field(default_factory=os.getpid)
    users: int = 0


_HANDLES: dict[tuple[int, str], _Handle] = {}  # (pid, real path) -> open environment


def _acquire(path: Path, sync: bool, map_size: int) -> _Handle:
    pid, real = os.getpid(), str(path.resolve())
    handle = _HANDLES.get((pid, real))
    if handle is None:
        for old in [k for k in _HANDLES if k[1] == real and k[0] != pid]:
            _HANDLES.pop(old).env.close()  # inherited through fork: see the module docstring
        handle = _open(path, sync, map_size)
        _HANDLES[(pid, real)] = handle
    handle.users += 1
    return handle


def _release(path: Path, handle: _Handle) -> None:
    if handle.pid != os.getpid():
        return  # inherited through fork: _acquire closes it when the child opens its own
    handle.users -= 1
    if handle.users <= 0:
        _HANDLES.pop((handle.pid, str(path.resolve())), None)
        handle.env.close()


def _open(path: Path, sync: bool, map_size: int) -> _Handle:
    path.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(path), map_size=map_size, subdir=True, max_dbs=len(_DBS) + 2,
                    sync=sync, metasync=sync, lock=True, readahead=False)
    try:
        meta = env.open_db(b"meta")
        with env.begin(write=True) as txn:
            found = txn.get(SCHEMA_VERSION_KEY, db=meta)
            if found is None:
                txn.put(SCHEMA_VERSION_KEY, SCHEMA_VERSION, db=meta)
        if found not in (None, SCHEMA_VERSION):
            shown = found.decode(errors="replace") if found is not None else "none"
            raise WorkflowSchemaError(
                f"workflow store at {path} has schema version {shown}; this build reads "
                f"version {SCHEMA_VERSION.decode()} only (migrate or move it aside)")
        dbs = {"meta": meta, **{name: env.open_db(name.encode()) for name in _DBS[1:]}}
    except BaseException:
        env.close()
        raise
    return _Handle(env, dbs, sync)


class WorkflowStore:
    """Worklist, MPPS and Storage Commitment records of one data directory."""

    def __init__(self, data_dir: Path | str, *, sync: bool = True,
                 map_size: int = DEFAULT_MAP_SIZE) -> None:
        self.path = Path(data_dir) / "workflow"
        self.sync = sync
        self._map_size = map_size
        self._handle: _Handle | None = _acquire(self.path, sync, map_size)

    def close(self) -> None:
        if self._handle is not None:
            _release(self.path, self._handle)
            self._handle = None

    def __enter__(self) -> WorkflowStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- transactions -----------------------------------------------------------------

    def _current(self) -> _Handle:
        handle = self._handle
        if handle is None:
            raise ValueError("workflow store is closed")
        if handle.pid != os.getpid():  # forked: open our own, leave the inherited one alone
            handle = self._handle = _acquire(self.path, self.sync, self._map_size)
        return handle

    def _write(self, run: Callable[[lmdb.Transaction, dict[str, Any]], T]) -> T:
        handle = self._current()
        while True:
            try:
                with handle.env.begin(write=True) as txn:
                    result = run(txn, handle.dbs)
                if self.sync and not handle.synced:
                    handle.env.sync(True)  # this store wants durability the shared env lacks
                return result
            except lmdb.MapFullError:
                handle.env.set_mapsize(handle.env.info()["map_size"] * 2)
            except lmdb.MapResizedError:
                handle.env.set_mapsize(0)  # adopt the size another process chose

    def _read(self, run: Callable[[lmdb.Transaction, dict[str, Any]], T]) -> T:
        handle = self._current()
        while True:
            try:
                with handle.env.begin(write=False) as txn:
                    return run(txn, handle.dbs)
            except lmdb.MapResizedError:
                handle.env.set_mapsize(0)

    # ---- Modality Worklist ------------------------------------------------------------

    def put_items(self, items: Sequence[WorklistItem]) -> None:
        """Add or replace items (by key) in one transaction."""
        def run(txn: lmdb.Transaction, dbs: dict[str, Any]) -> None:
            for item in items:
                txn.put(item.key.encode(), item.to_json(), db=dbs["worklist"])

        self._write(run)

    def remove_items(self, keys: Iterable[str]) -> int:
        """Remove items by key; a bare Study Instance UID removes all its steps. The count."""
        wanted = list(keys)

        def run(txn: lmdb.Transaction, dbs: dict[str, Any]) -> int:
            removed = 0
            for key in wanted:
                if "/" in key:
                    removed += bool(txn.delete(key.encode(), db=dbs["worklist"]))
                    continue
                prefix = (key + "/").encode()
                cursor = txn.cursor(db=dbs["worklist"])
                found = cursor.set_range(prefix)
                while found and bytes(cursor.key()).startswith(prefix):
                    cursor.delete()  # moves to the next record
                    removed += 1
                    found = cursor.key() != b""
            return removed

        return self._write(run)

    def items(self) -> Iterator[WorklistItem]:
        """Every item, in key order (read in one transaction, then yielded)."""
        def run(txn: lmdb.Transaction, dbs: dict[str, Any]) -> list[bytes]:
            return [bytes(v) for _, v in txn.cursor(db=dbs["worklist"])]

        for raw in self._read(run):
            yield WorklistItem.from_json(raw)

    def get_item(self, key: str) -> WorklistItem | None:
        raw = self._read(lambda txn, dbs: txn.get(key.encode(), db=dbs["worklist"]))
        return WorklistItem.from_json(bytes(raw)) if raw is not None else None

    def mark_step(self, study_instance_uid: str, sps_id: str, status: str) -> bool:
        """Set the Scheduled Procedure Step Status of one item; False when there is none."""
        return self._write(lambda txn, dbs: _mark(txn, dbs, study_instance_uid, sps_id, status))

    # ---- MPPS -------------------------------------------------------------------------

    def create_mpps(self, sop_instance_uid: str, ds: Dataset, calling_ae: str) -> None:
        """N-CREATE (F.7.2.1): validate, refuse a duplicate (0x0111), store, and mark the
        scheduled steps it performs STARTED; MppsError on refusal, nothing written."""
        state = validate_create(sop_instance_uid, ds)
        now = time.time()
        record = MppsRecord.build(sop_instance_uid, state, calling_ae, now, now)

        def run(txn: lmdb.Transaction, dbs: dict[str, Any]) -> None:
            key = sop_instance_uid.encode()
            if txn.get(key, db=dbs["mpps"]) is not None:
                raise MppsError(Status.DUPLICATE_SOP_INSTANCE,
                                "an MPPS with this SOP Instance UID exists")
            txn.put(key, record.to_json(), db=dbs["mpps"])
            for study, step in record.steps:
                _mark(txn, dbs, study, step, step_status(record.status))

        self._write(run)

    def set_mpps(self, sop_instance_uid: str, modification: Dataset) -> Dataset:
        """N-SET (F.7.2.2): read, validate and apply in one write transaction; the new state.
        Reaching COMPLETED or DISCONTINUED marks the linked worklist steps so."""
        def run(txn: lmdb.Transaction, dbs: dict[str, Any]) -> Dataset:
            key = sop_instance_uid.encode()
            raw = txn.get(key, db=dbs["mpps"])
            if raw is None:
                raise MppsError(Status.NO_SUCH_OBJECT_INSTANCE, "no such MPPS instance")
            old = MppsRecord.from_json(bytes(raw))
            state = apply_set(old.dataset, modification)
            new = MppsRecord.build(sop_instance_uid, state, old.calling_ae, old.created_at,
                                   time.time())
            txn.put(key, new.to_json(), db=dbs["mpps"])
            if new.status != old.status:
                for study, step in scheduled_steps(state):
                    _mark(txn, dbs, study, step, step_status(new.status))
            return state

        return self._write(run)

    def get_mpps(self, sop_instance_uid: str) -> MppsRecord | None:
        raw = self._read(lambda txn, dbs: txn.get(sop_instance_uid.encode(), db=dbs["mpps"]))
        return MppsRecord.from_json(bytes(raw)) if raw is not None else None

    def list_mpps(self) -> Iterator[MppsRecord]:
        """Every MPPS record, oldest first."""
        def run(txn: lmdb.Transaction, dbs: dict[str, Any]) -> list[bytes]:
            return [bytes(v) for _, v in txn.cursor(db=dbs["mpps"])]

        records = [MppsRecord.from_json(raw) for raw in self._read(run)]
        yield from sorted(records, key=lambda r: (r.created_at, r.sop_instance_uid))

    # ---- Storage Commitment -----------------------------------------------------------

    def add_commitment(self, req: CommitmentRequest) -> None:
        """Persist a request until its report is acknowledged (a resent Transaction UID
        replaces the earlier request)."""
        self._write(lambda txn, dbs: txn.put(req.transaction_uid.encode(), req.to_json(),
                                             db=dbs["commitments"]))

    def pending_commitments(self) -> list[CommitmentRequest]:
        """Requests whose report has not been acknowledged, oldest first."""
        def run(txn: lmdb.Transaction, dbs: dict[str, Any]) -> list[bytes]:
            return [bytes(v) for _, v in txn.cursor(db=dbs["commitments"])]

        reqs = [CommitmentRequest.from_json(raw) for raw in self._read(run)]
        return sorted(reqs, key=lambda r: (r.received_at, r.transaction_uid))

    def complete_commitment(self, transaction_uid: str) -> None:
        """The report was acknowledged: forget the request (absent is fine)."""
        self._write(lambda txn, dbs: txn.delete(transaction_uid.encode(),
                                                db=dbs["commitments"]))


def _mark(txn: lmdb.Transaction, dbs: dict[str, Any], study_instance_uid: str, sps_id: str,
          status: str) -> bool:
    key = f"{study_instance_uid}/{sps_id}".encode()
    raw = txn.get(key, db=dbs["worklist"])
    if raw is None:
        return False
    item = WorklistItem.from_json(bytes(raw))
    txn.put(key, item.with_status(status).to_json(), db=dbs["worklist"])
    return True


__all__ = ["DEFAULT_MAP_SIZE", "SCHEMA_VERSION", "WorkflowSchemaError", "WorkflowStore"]
