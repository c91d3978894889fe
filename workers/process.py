"""The worker process: a synchronous loop over its job ring and its index-ack ring.

THEORY OF OPERATION
-------------------
Forked by the arbiter (or the ingest driver). Everything heavy (LMDB, pydicom) is set up here,
after the fork. The loop blocks in poll() on two doorbells: ``jobs`` (records from the acceptor
or the ingest driver) and ``acks`` (commit acknowledgements from the index writer). With
``inline_index`` (one worker, or `os` durability) the worker commits its own index records
instead, once per turn after its jobs (workers/inline_index.py), and ``acks`` stays silent.
Records are consumed in place (payload views into shared memory) and released as soon as they
are handled.
Outbound records are put without ringing; each outbound ring touched in an iteration is rung
once at the end of it (one eventfd write per batch, not per record).

A record handler that raises is a bug: it is logged with the association and the loop goes on
(the per-job boundary of STYLE 2.5); an error that leaves LMDB or a ring in doubt
(``STATE_CORRUPT``) ends the loop and the process exits with EXIT_STATE_CORRUPT, so the arbiter
replaces it.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import lmdb
import msgpack
import structlog

from appliance import reload
from appliance.config import Config, DuplicatePolicy, Durability
from appliance.dimse.fragment import PduParts, framed, pdu_body_length
from appliance.dimse.status import Status
from appliance.ipc.channels import WorkerChannels
from appliance.ipc.control import EXIT_BOOT_FAILED, EXIT_STATE_CORRUPT
from appliance.ipc.kinds import Flag, Kind
from appliance.ipc.ring import Record, Ring, RingCorruptError
from metrics import fast
from workers.group_commit import INDEX_FAILED, INDEX_OUT_OF_RESOURCES, POLICY_CODES
from workers.index.reader import IndexReader
from workers.index.schema import InstanceRecord, Outcome, pack_record
from workers.service import AssociationState, Services
from workers.store import StoreSettings

if TYPE_CHECKING:
    from workers.inline_index import InlineIndex

log = structlog.get_logger(component="worker")

EXIT_OK = 0
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1461.1.1"
IMPLEMENTATION_VERSION_NAME = "PACS_APPL_010"
_PUT_TIMEOUT_S = 30.0
_SEND_RECORD_BYTES = 256 * 1024
# What a worker cannot carry on after (STYLE 2.5): LMDB reporting its environment damaged or
# unusable, a shared ring holding what no correct producer writes.
STATE_CORRUPT: tuple[type[BaseException], ...] = (
    lmdb.PanicError, lmdb.CorruptedError, lmdb.InvalidError, lmdb.VersionMismatchError,
    lmdb.BadRslotError, lmdb.BadTxnError, RingCorruptError)
_BEAT_INTERVAL_S = 0.25  # heartbeat (and orphan check) at least this often while busy
_FRAMED, _FINAL, _HELD = int(Flag.FRAMED), int(Flag.FINAL), int(Flag.HELD)


@dataclass
class WorkerHooks:
    """How the worker reports to its supervisor (the control block, in the appliance)."""

    ready: Callable[[], None]
    heartbeat: Callable[[int], None]  # in-flight operations
    should_exit: Callable[[], bool] = lambda: False


class RingOutbox:
    """The worker's Outbox: puts records on the replies and index rings (or, with
    ``inline_index``, hands index records to the worker's own ``InlineIndex``)."""

    def __init__(self, replies: Ring, index: Ring, inline: InlineIndex | None = None) -> None:
        self.replies = replies
        self.index = index
        self.inline = inline
        self.dirty: set[Ring] = set()

    def _put(self, ring: Ring, kind: int, assoc: int, msg: int, flags: int, aux: int,
             *parts: bytes | memoryview) -> None:
        if not ring.try_put(kind, assoc, msg, flags, aux, *parts, notify=False):
            ring.notify()  # let the consumer see what is there before we wait for space
            ring.put_blocking(kind, assoc, msg, flags, aux, *parts, timeout_s=_PUT_TIMEOUT_S)
        self.dirty.add(ring)

    def send_pdus(self, assoc_id: int, msg_id: int, pdus: list[PduParts], final: bool,
                  held_for: int = 0) -> None:
        """Whole PDUs, framed here, about ``_SEND_RECORD_BYTES`` per ring record: the acceptor
        writes each record as it is, so its cost is per record, not per PDU (a peer with a
        16 KiB maximum PDU gets a 0.5 MB object in 2 records instead of 32)."""
        group: list[PduParts] = []
        size = 0
        for i, parts in enumerate(pdus):
            group.append(parts)
            size += pdu_body_length(parts) + 6
            if size >= _SEND_RECORD_BYTES or i == len(pdus) - 1:
                # plain ints: IntFlag's | builds a new enum member, once per response
                flags = _FRAMED | (_FINAL if (final and i == len(pdus) - 1) else 0)
                if held_for:
                    flags |= _HELD
                self._put(self.replies, Kind.SEND, assoc_id, msg_id, flags, held_for,
                          *framed(group))
                group, size = [], 0

    def abort(self, assoc_id: int, reason: int) -> None:
        self._put(self.replies, Kind.ABORT, assoc_id, 0, Flag.NONE, reason, b"")

    def request_index(self, token: int, record: InstanceRecord, policy: DuplicatePolicy) -> None:
        if self.inline is not None:
            self.inline.add(token, record, policy)
            return
        self._put(self.index, Kind.INDEX, 0, token, Flag.NONE, POLICY_CODES[policy],
                  pack_record(record))

    def ingested(self, job_id: int, outcome: dict[str, object]) -> None:
        self._put(self.replies, Kind.INGESTED, 0, job_id, Flag.NONE, 0,
                  msgpack.packb(outcome))

    def flush(self) -> None:
        for ring in self.dirty:
            ring.notify()
        self.dirty.clear()


def store_settings(cfg: Config) -> StoreSettings:
    return StoreSettings(
        data_dir=cfg.storage.data_dir,
        fsync_each=cfg.storage.durability is Durability.FSYNC,
        max_dataset_bytes=cfg.network.max_dataset_bytes,
        implementation_class_uid=IMPLEMENTATION_CLASS_UID,
        implementation_version_name=IMPLEMENTATION_VERSION_NAME,
        compress_on_ingest=cfg.storage.compress_on_ingest,
        direct_io=cfg.storage.direct_io,
    )


class Worker:
    def __init__(self, cfg: Config, channels: WorkerChannels, hooks: WorkerHooks,
                 inline_index: bool = False) -> None:
        self.cfg = cfg
        self.hooks = hooks
        self.jobs = Ring.attach(channels.jobs)
        self.replies = Ring.attach(channels.replies)
        self.index_ring = Ring.attach(channels.index)
        self.acks = Ring.attach(channels.acks)
        self.inline: InlineIndex | None = None
        if inline_index:
            from workers.inline_index import InlineIndex
            self.inline = InlineIndex(cfg)
            self.reader = self.inline.reader()
        else:
            self.reader = IndexReader(Path(cfg.storage.data_dir) / "index")
        self.outbox = RingOutbox(self.replies, self.index_ring, self.inline)
        self.services = Services(
            store_settings(cfg), cfg.storage.duplicate_policy, self.reader, self.outbox
        )
        from workers.qr.service import QueryRetrieve  # pulls the codecs: after fork only
        self.qr = QueryRetrieve(cfg, self.reader, self.outbox)
        self.services.qr = self.qr
        from workers.workflow_scp import WorkflowService, workflow_settings
        self.workflow = WorkflowService(cfg, workflow_settings(cfg), self.reader, self.outbox,
                                        self.qr, channels.slot)
        self.services.workflow = self.qr.workflow = self.workflow
        reload.on_reload(self._reload)  # SIGHUP: AE table, query limits, workflow settings
        self.stopping = False

    def _reload(self, cfg: Config) -> None:
        # Runs in the SIGHUP handler: only swaps references (appliance/reload.py).
        from workers.workflow_scp import workflow_settings
        self.qr.reload(cfg)
        self.workflow.reload(cfg, workflow_settings(cfg))

    def run(self) -> int:
        jobs_fd, acks_fd, wake_fd = self.jobs.data_fd, self.acks.data_fd, self.qr.wake_r
        poller = select.poll()
        for fd in (jobs_fd, acks_fd, wake_fd):
            poller.register(fd, select.POLLIN)
        self.hooks.ready()
        ppid = os.getppid()
        beat_at = flush_at = 0.0
        beat_n = -1
        while True:
            # Q/R tasks with work to do are stepped every turn, between ring reads.
            timeout = 0 if self.qr.runnable() else 1000
            if fast.pending():  # metric tallies: out within FLUSH_INTERVAL_S (metrics/fast.py)
                timeout = min(timeout, max(0, int((flush_at - time.monotonic()) * 1000) + 1))
            ready = poller.poll(timeout)
            # Only the doorbells that rang are read: a read of a silent eventfd is a syscall
            # and a BlockingIOError, several per object at ingest rates (profiled).
            fds = [fd for fd, _ in ready]
            if jobs_fd in fds:
                self.jobs.drain_doorbell()
            self._drain_jobs()
            if acks_fd in fds:
                self.acks.drain_doorbell()
            self._drain_acks()
            if self.qr.tasks or wake_fd in fds:
                self.qr.run()
            self._commit_inline()
            now = time.monotonic()
            self.workflow.tick(now)
            self.outbox.flush()
            in_flight = self.services.in_flight
            if now >= flush_at:
                fast.flush()
                flush_at = now + fast.FLUSH_INTERVAL_S
            if in_flight != beat_n or now >= beat_at:
                # The supervisor needs a beat within heartbeat_timeout_s (30 s by default)
                # and the in-flight count when it changes, not one per loop turn.
                self.hooks.heartbeat(in_flight)
                beat_n = in_flight
                if now >= beat_at:  # the orphan check (a syscall) on the interval only
                    beat_at = now + _BEAT_INTERVAL_S
                    if os.getppid() != ppid:
                        log.warning("worker.orphaned")
                        return EXIT_OK
            if (self.stopping or self.hooks.should_exit()) and in_flight == 0:
                return EXIT_OK

    def _drain_jobs(self) -> None:
        ring = self.jobs
        while (rec := ring.peek()) is not None:
            try:
                self._handle_job(rec)
            except STATE_CORRUPT:
                raise  # not survivable in place: run_worker exits EXIT_STATE_CORRUPT
            except Exception:  # noqa: BLE001 - per-job boundary (STYLE 2.5)
                log.exception("worker.internal_error", kind=rec.kind, assoc_id=rec.assoc_id)
            finally:
                del rec
                ring.release()

    def _handle_job(self, rec: Record) -> None:
        kind = rec.kind
        svc = self.services
        if kind == Kind.DATA:
            svc.data(rec.assoc_id, rec.aux, rec.payload, bool(rec.flags & Flag.LAST))
        elif kind == Kind.COMMAND:
            svc.command(rec.assoc_id, rec.aux, rec.payload)
        elif kind == Kind.OPEN:
            info = msgpack.unpackb(rec.payload)
            svc.open(AssociationState(
                assoc_id=rec.assoc_id,
                calling_ae=info["calling_ae"],
                called_ae=info["called_ae"],
                peer_max_pdu=info["peer_max_pdu"],
                contexts={int(k): (v[0], v[1]) for k, v in info["contexts"].items()},
                relational=frozenset(info.get("relational", ())),
                scp_roles=frozenset(info.get("scp_roles", ())),
                peer=info.get("peer", ""),
                traceparent=info.get("traceparent", ""),
                move_destinations=(None if info.get("move_destinations") is None
                                   else frozenset(info["move_destinations"])),
                operations=(None if info.get("operations") is None
                            else frozenset(info["operations"])),
            ))
        elif kind == Kind.FLOW:
            svc.flow(rec.assoc_id, bool(rec.aux))
        elif kind == Kind.CLOSE:
            svc.close(rec.assoc_id)
        elif kind == Kind.INGEST:
            svc.ingest_file(rec.msg_id, Path(bytes(rec.payload).decode()))
        else:
            log.error("worker.unknown_record", kind=kind)

    def _drain_acks(self) -> None:
        ring = self.acks
        while (got := ring.get_copy()) is not None:
            hdr, payload = got
            self._on_indexed(hdr.msg_id, hdr.aux, payload.decode())

    def _commit_inline(self) -> None:
        """The worker's own group commit of this turn's records (workers/inline_index.py),
        waiting ``batch_window_ms`` for more first, as the index writer would."""
        if self.inline is None or not self.inline.pending:
            return
        st = self.cfg.storage
        if st.batch_window_ms > 0 and len(self.inline.pending) < st.batch_max:
            time.sleep(st.batch_window_ms / 1000)
            self.jobs.drain_doorbell()
            self._drain_jobs()
        for token, code, old in self.inline.commit():
            self._on_indexed(token, code, old)

    def _on_indexed(self, token: int, code: int, old: str) -> None:
        try:
            if code == INDEX_FAILED:
                self.services.index_failed(token, old)
            elif code == INDEX_OUT_OF_RESOURCES:
                self.services.index_failed(token, old, Status.OUT_OF_RESOURCES)
            else:
                self.services.indexed(token, Outcome(code), old)
        except STATE_CORRUPT:
            raise
        except Exception:  # noqa: BLE001 - per-job boundary (STYLE 2.5)
            log.exception("worker.internal_error", token=token)


def run_worker(cfg: Config, channels: WorkerChannels, hooks: WorkerHooks,
               inline_index: bool = False) -> int:
    """Entry point in the forked child. ``inline_index``: commit this worker's own index
    records (workers/inline_index.py, Config.inline_index_for)."""
    start = time.monotonic()
    try:
        from workers.kernels import WORKER_KERNELS, page_out_compiler, warm_up
        warm_up(WORKER_KERNELS)  # after fork (numba is not fork-safe); before ready
        page_out_compiler()  # LLVM's code is not needed again (≈70 MiB resident)
        worker = Worker(cfg, channels, hooks, inline_index)
    except Exception:  # noqa: BLE001 - boot failure is reported by exit code
        log.exception("worker.boot_failed")
        return EXIT_BOOT_FAILED

    def _term(_signo: int, _frame: object) -> None:
        worker.stopping = True

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the arbiter decides; Ctrl-C hits the group
    log.info("worker.started", slot=channels.slot, generation=channels.generation,
             inline_index=inline_index, boot_s=round(time.monotonic() - start, 3))
    try:
        return worker.run()
    except STATE_CORRUPT:
        # The arbiter replaces the worker; its in-flight operations are answered 0x0110.
        log.exception("worker.state_corrupt", slot=channels.slot)
        return EXIT_STATE_CORRUPT
    finally:
        fast.flush()  # the last metric tallies (metrics/fast.py)
