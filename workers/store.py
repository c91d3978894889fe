"""One object on its way to disk: spool, parse, validate, place (DESIGN "Ingest data flow").

THEORY OF OPERATION
-------------------
A ``StoreJob`` is created when a C-STORE-RQ command (or a file to ingest) is known, before any
dataset byte arrives: the command already names the SOP Class/Instance and the presentation
context the transfer syntax, so the File Meta group is packed up front and the dataset
fragments are appended to a temp file in ``<data>/tmp`` as they come (a 2 GB object never sits
in memory). The first ``HEAD_BYTES`` of the dataset are also kept in memory for the header walk.

``finish()`` parses and validates, makes the file durable when the mode asks for it, and
renames it into ``<data>/objects/...`` under a name unique to this copy. Invariants:
  - a file under objects/ is always complete (rename is atomic, same filesystem);
  - on any failure the temp file is removed (``discard()`` is idempotent);
  - the caller sends the returned record to the index writer and answers the peer only after
    the index writer acknowledged it (Success means stored *and* indexed).

Below the data volume's free-space floor (``configure_disk_floor``, ``metrics.disk``) a new
StoreJob raises ``OSError(ENOSPC)`` before creating anything: the service answers 0xA700.
With tracing on, ``prepare`` and ``commit`` are the ``ingest.parse`` and ``ingest.store`` spans
under whatever span is current (the service's ``dicom.c_store``).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.config import CompressOnIngest
from appliance.dimse.status import Status
from appliance.dimse.transfer_syntax import EXPLICIT_VR_LE, IMPLICIT_VR_LE
from appliance.errors import IngestError
from metrics import fast, tracing
from metrics import registry as m
from metrics.disk import DiskFloor
from workers.completeness import SpoolReader, incomplete
from workers.durability import fsync_dir, is_no_space, report_disk_full
from workers.header import (
    IndexAttributes,
    NeedMoreData,
    read_index_attributes,
    validate_against_command,
)
from workers.index.schema import InstanceRecord
from workers.layout import object_relpath
from workers.part10 import build_file_meta
from workers.spool import open_spool, write_all

HEAD_BYTES = 64 * 1024
# What compress_on_ingest may compress (workers/compress.py COMPRESSIBLE; imported lazily, as
# it pulls in the transcoder).
_COMPRESSIBLE = frozenset({IMPLICIT_VR_LE, EXPLICIT_VR_LE})
# Compression holds the data set, its RLE form and the restored copy in memory at once: larger
# objects are stored as received, so a worker's memory stays bounded.
COMPRESS_MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoreSettings:
    data_dir: Path
    fsync_each: bool  # durability "fsync": fsync file + directory before the index record
    max_dataset_bytes: int  # 0 = unlimited
    implementation_class_uid: str
    implementation_version_name: str
    compress_on_ingest: CompressOnIngest = CompressOnIngest.NONE  # workers/compress.py
    direct_io: bool = False  # large objects written with O_DIRECT (workers/spool.py)


class _Floor:
    """This process's free-space floor (one per process, like its LMDB environment)."""

    current: DiskFloor | None = None


def configure_disk_floor(data_dir: Path, min_free_bytes: int,
                         min_free_percent: float) -> DiskFloor | None:
    """Set (or, with both limits 0, clear) this process's free-space floor for new jobs;
    called after fork and again on SIGHUP with the new limits."""
    floor = _Floor.current
    if min_free_bytes <= 0 and min_free_percent <= 0:
        floor = None
    elif floor is not None and floor.path == data_dir:
        floor.update(min_free_bytes, min_free_percent)
    else:
        floor = DiskFloor(data_dir, min_free_bytes, min_free_percent)
    _Floor.current = floor
    return floor


def check_disk_floor() -> None:
    """Raise OSError(ENOSPC) when the data volume is below the floor (cached statvfs)."""
    floor = _Floor.current
    if floor is not None:
        state = floor.check()
        if not state.ok:
            # short: it ends up in the 64-character Error Comment (0000,0902)
            raise OSError(errno.ENOSPC, "disk below the free-space floor")


class _Pid:
    """This process's pid for spool names (getpid() is a syscall; refreshed after fork)."""

    value = os.getpid()


def _refresh_pid() -> None:
    _Pid.value = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)


class StoreJob:
    """Spool one dataset to a temp file; see the module docstring."""

    _seq = itertools.count()

    def __init__(
        self,
        settings: StoreSettings,
        *,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        calling_ae: str,
    ) -> None:
        self.settings = settings
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid
        self.transfer_syntax_uid = transfer_syntax_uid
        self.calling_ae = calling_ae
        check_disk_floor()
        # str paths, not pathlib: one StoreJob per object, and Path joins were ~10% of the
        # worker's per-object Python (profiled).
        self._root = os.fspath(settings.data_dir)
        self._tmp = f"{self._root}/tmp/{_Pid.value}-{next(self._seq)}.part"
        try:
            self._fd: int | None = os.open(
                self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644
            )
        except OSError as exc:
            if is_no_space(exc):  # no inode left: as full as it gets
                report_disk_full(settings.data_dir, 0)
            raise
        self._meta = self.file_meta(transfer_syntax_uid)
        self.received: tuple[str, int] | None = None  # (syntax, Part 10 size) if compressed
        self._spool = open_spool(self._fd, settings.direct_io)
        self._spool.write(self._meta)
        self.head = bytearray()
        self.dataset_bytes = 0
        self.failed: IngestError | None = None
        self._no_space = False  # a write failed with ENOSPC: discard() reports it

    @property
    def tmp_path(self) -> Path:
        """The spool file (under ``<data>/tmp``) until ``commit`` renames it."""
        return Path(self._tmp)

    def file_meta(self, transfer_syntax_uid: str) -> bytes:
        """This object's preamble and File Meta group for a data set in that syntax."""
        return build_file_meta(
            media_storage_sop_class_uid=self.sop_class_uid,
            media_storage_sop_instance_uid=self.sop_instance_uid,
            transfer_syntax_uid=transfer_syntax_uid,
            source_ae_title=self.calling_ae,
            implementation_class_uid=self.settings.implementation_class_uid,
            implementation_version_name=self.settings.implementation_version_name,
        )

    # ---- streaming ---------------------------------------------------------------------

    def feed(self, data: memoryview, *, last: bool) -> None:
        """Append one fragment. ``data`` may point into a ring: it is consumed before return."""
        if self.failed is not None:
            return  # keep draining the peer's fragments; the failure is answered at the end
        n = len(data)
        self.dataset_bytes += n
        limit = self.settings.max_dataset_bytes
        if limit and self.dataset_bytes > limit:
            self.fail(IngestError(f"data set exceeds {limit} bytes", Status.OUT_OF_RESOURCES))
            return
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]
        try:
            self._spool.write(data)
            if last:
                self._spool.finish()
        except OSError as exc:
            self.fail(self._os_failure(exc))

    def fail(self, error: IngestError) -> None:
        if self.failed is None:
            self.failed = error
        self._close()

    # ---- completion --------------------------------------------------------------------

    def prepare(self) -> tuple[IndexAttributes, str]:
        """Flush, parse and validate; returns the attributes and the object's relative path.

        Raises IngestError (after discarding the temp file) when the object is refused."""
        try:
            with tracing.span("ingest.parse", bytes=self.dataset_bytes):
                if self.failed is not None:
                    raise self.failed
                self._spool.finish()
                attrs = self._parse()
                validate_against_command(attrs, self.sop_class_uid, self.sop_instance_uid)
                self._check_whole()
        except IngestError:
            self.discard()
            raise
        except OSError as exc:
            failure = self._os_failure(exc)
            self.discard()
            raise failure from exc
        base = object_relpath(
            attrs.study_instance_uid, attrs.series_instance_uid, attrs.sop_instance_uid
        )
        # Each stored copy gets its own name: two workers (or `pacs ingest` next to `pacs
        # serve`) receiving the same SOP Instance never rename over each other's file; the
        # index writer picks the copy that stays and the other one is deleted by its worker.
        # Uniqueness is all the tag needs: the random module (reseeded in every forked
        # child) rather than a getrandom() syscall per object.
        return attrs, f"{base[:-4]}.{random.getrandbits(32):08x}.dcm"

    def commit(
        self, attrs: IndexAttributes, relpath: str, received_at: float | None = None
    ) -> InstanceRecord:
        """Make the file durable (per mode) and rename it into place; returns the index record."""
        final = f"{self._root}/{relpath}"
        renamed = False
        try:
            if (self.settings.compress_on_ingest is CompressOnIngest.RLE
                    and self.transfer_syntax_uid in _COMPRESSIBLE
                    and self.dataset_bytes <= COMPRESS_MAX_BYTES):
                self._compress()  # before the fsync: what is made durable is final
            with tracing.span("ingest.store", fsync=self.settings.fsync_each):
                assert self._fd is not None
                if self.settings.fsync_each:
                    os.fsync(self._fd)
                self._close()
                parent = final.rpartition("/")[0]
                created = _ensure_dir(parent)
                os.rename(self._tmp, final)
                renamed = True
                if self.settings.fsync_each:
                    for d in (parent, *created):
                        fsync_dir(d)
        except OSError as exc:
            failure = self._os_failure(exc)
            if renamed:  # refused after all: no unindexed file may stay behind
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(final)
            self.discard()
            raise failure from exc
        stored = len(self._meta) + self.dataset_bytes
        fast.counter(m.STORE_RECEIVED_BYTES).inc(self.received[1] if self.received else stored)
        fast.counter(m.STORE_WRITTEN_BYTES).inc(stored)
        return InstanceRecord.from_attributes(
            attrs,
            relpath=relpath,
            size_bytes=len(self._meta) + self.dataset_bytes,
            transfer_syntax_uid=self.transfer_syntax_uid,
            received_at=received_at if received_at is not None else time.time(),
            calling_ae=self.calling_ae,
            received_transfer_syntax_uid=self.received[0] if self.received else "",
            received_size_bytes=self.received[1] if self.received else 0,
        )

    def _compress(self) -> None:
        """Replace the spool by its RLE Lossless form when that is smaller and restorable
        (workers/compress.py); a write failure leaves the spool as it was and raises."""
        from workers.compress import RLE_LOSSLESS, compress_dataset

        with tracing.span("ingest.compress", bytes=self.dataset_bytes):
            with open(self._tmp, "rb") as fh:
                fh.seek(len(self._meta))
                result = compress_dataset(fh.read(), self.transfer_syntax_uid)
            fast.counter(m.STORE_COMPRESSION, result.decision.value).inc()
            if result.dataset is None:
                return
            meta = self.file_meta(RLE_LOSSLESS)
            path = self._tmp.removesuffix(".part") + ".rle.part"  # *.part: swept after a crash
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                write_all(fd, meta + result.dataset)
            except OSError:
                os.close(fd)
                os.unlink(path)
                raise
            self._close()
            os.unlink(self._tmp)
            self.received = (self.transfer_syntax_uid, len(self._meta) + self.dataset_bytes)
            self._tmp, self._fd, self._meta = path, fd, meta
            self.transfer_syntax_uid = RLE_LOSSLESS
            self.dataset_bytes = len(result.dataset)

    def _parse(self) -> IndexAttributes:
        try:
            complete = len(self.head) >= self.dataset_bytes
            return read_index_attributes(self.head, self.transfer_syntax_uid, complete=complete)
        except NeedMoreData:
            pass
        with open(self._tmp, "rb") as fh:  # header longer than HEAD_BYTES: read the file
            fh.seek(len(self._meta))
            whole = fh.read()
        return read_index_attributes(whole, self.transfer_syntax_uid)

    def _check_whole(self) -> None:
        """Refuse a data set cut short (workers/completeness.py): Success would acknowledge
        an object nobody can read back."""
        reader = SpoolReader(self._tmp, len(self._meta))
        try:
            why = incomplete(self.transfer_syntax_uid, self.dataset_bytes, self.head,
                             reader.read_at)
        finally:
            reader.close()
        if why is not None:
            raise IngestError(f"incomplete data set: {why}", Status.CANNOT_UNDERSTAND)

    def _close(self) -> None:
        self._spool.release()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        """Drop the temp file (idempotent); after an ENOSPC, tell readiness the disk is full."""
        self._close()
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass
        if self._no_space:
            self._no_space = False
            report_disk_full(self.settings.data_dir, len(self._meta) + self.dataset_bytes)

    def _os_failure(self, exc: OSError) -> IngestError:
        self._no_space = self._no_space or is_no_space(exc)
        return _os_failure(exc)


_known_dirs: set[str] = set()


def _ensure_dir(path: str) -> list[str]:
    """mkdir -p with a per-process cache; returns the parents of directories it created
    (their entries must be fsync'd too in fsync mode)."""
    if path in _known_dirs:
        return []
    created: list[str] = []
    missing: list[str] = []
    p = path
    while p and not os.path.exists(p):
        missing.append(p)
        p = os.path.dirname(p)
    for d in reversed(missing):
        try:
            os.mkdir(d)
            created.append(os.path.dirname(d))
        except FileExistsError:
            pass
    _known_dirs.add(path)
    return created


def _os_failure(exc: OSError) -> IngestError:
    return IngestError(f"storage error: {exc.strerror or exc}", Status.OUT_OF_RESOURCES)
