"""C-MOVE sub-operations (PS3.4 C.4.2): a new association from us to the Move Destination.

The sub-operations run on a thread of the worker (blocking socket I/O, which releases the
GIL), so the worker loop keeps serving its other associations; the thread touches neither
LMDB nor the rings. It posts progress to a queue and rings the service's wake-up pipe; the
loop turns progress into pending C-MOVE-RSPs (at most one per ``pending_interval_s``) and the
end into the final response. A C-CANCEL, or the requesting association going away, sets an
event the thread checks between sub-operations.

Proposed presentation contexts: one per (SOP Class, stored transfer syntax) among the
objects, each offering the stored syntax first, then Explicit and Implicit VR Little Endian,
so the destination can take the object as stored or in a syntax we can convert it to.
Every sub-operation C-STORE-RQ carries Move Originator AE Title and Message ID (PS3.7
§9.1.1.1).
"""

from __future__ import annotations

import mmap
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from appliance import tls
from appliance.config import RemoteAE
from appliance.dimse.messages import CMoveRQ
from appliance.dimse.status import Status
from appliance.dimse.transfer_syntax import EXPLICIT_VR_LE, IMPLICIT_VR_LE
from appliance.errors import ConfigError
from appliance.scu import SCU, ProposedContext, SCUError
from workers.qr.suboperations import CannotSend, Counts, Prepared, RetrieveItem, prepare

if TYPE_CHECKING:
    from workers.qr.service import QueryRetrieve
    from workers.service import AssociationState

log = structlog.get_logger(component="worker")

_MAX_CONTEXTS = 128  # PS3.8 §9.3.2.2: odd ids 1-255


@dataclass(frozen=True, slots=True)
class _Progress:
    counts: Counts
    done: bool
    status: int | None = None  # a final status other than the one the counts imply
    comment: str | None = None


def proposed_contexts(items: list[RetrieveItem]) -> list[ProposedContext]:
    pairs = sorted({(i.sop_class_uid, i.transfer_syntax_uid) for i in items})
    contexts = []
    for sop_class, stored in pairs[:_MAX_CONTEXTS]:
        syntaxes = tuple(dict.fromkeys((stored, EXPLICIT_VR_LE, IMPLICIT_VR_LE)))
        contexts.append(ProposedContext(sop_class, syntaxes))
    return contexts


class MoveTask:
    def __init__(self, qr: QueryRetrieve, state: AssociationState, context_id: int,
                 rq: CMoveRQ, items: list[RetrieveItem], dest: RemoteAE) -> None:
        self.qr = qr
        self.state = state
        self.msg_id = rq.message_id
        self.context_id = context_id
        self.rq = rq
        self.items = items
        self.dest = dest
        self.events: queue.SimpleQueue[_Progress] = queue.SimpleQueue()
        self.stop = threading.Event()
        self.cancelled = False
        self.latest: _Progress | None = None
        self.last_pending = time.monotonic()
        self.thread = threading.Thread(target=self._run, name=f"move-{state.assoc_id}",
                                       daemon=True)
        self.thread.start()

    # ---- the loop's side -------------------------------------------------------------

    def runnable(self) -> bool:
        return not self.events.empty()

    def cancel(self) -> None:
        self.cancelled = True
        self.stop.set()

    def drop(self) -> None:
        self.stop.set()

    def step(self) -> bool:
        while not self.events.empty():
            self.latest = self.events.get_nowait()
            if self.latest.done:
                end = self.latest
                self.qr.retrieve_response(self.state, self.context_id, self.rq, end.counts,
                                          final=True, cancelled=self.cancelled,
                                          status=end.status, comment=end.comment)
                return True
        now = time.monotonic()
        p = self.latest
        if (p is not None and not self.state.send_paused
                and now - self.last_pending >= self.qr.settings.pending_interval_s):
            self.last_pending = now
            self.qr.retrieve_response(self.state, self.context_id, self.rq, p.counts,
                                      final=False)
        return False

    # ---- the thread ------------------------------------------------------------------

    def _post(self, progress: _Progress) -> None:
        self.events.put(progress)
        self.qr.wake()

    def _run(self) -> None:
        counts = Counts(len(self.items))
        status: int | None = None
        comment: str | None = None
        try:
            if self.items:
                status, comment = self._suboperations(counts)
        except Exception as exc:  # noqa: BLE001 - the thread's boundary: answer, never vanish
            log.exception("qr.move_failed", assoc_id=self.state.assoc_id)
            status, comment = Status.UNABLE_TO_PROCESS, f"move failed: {exc}"[:64]
        self._post(_Progress(_snapshot(counts), True, status, comment))

    def _suboperations(self, counts: Counts) -> tuple[int | None, str | None]:
        s = self.qr.settings
        try:
            # [ae_table.X] tls = true: PS3.15 B.9, verified against [tls] ca_file
            ssl_context = tls.scu_context(self.qr.cfg.tls) if self.dest.tls else None
            scu = SCU(self.dest.host, self.dest.port, calling_ae=s.ae_title,
                      called_ae=self.dest.ae_title, contexts=proposed_contexts(self.items),
                      timeout_s=s.connect_timeout_s, ssl_context=ssl_context)
            scu.associate()
        except (SCUError, OSError, ConfigError) as exc:
            log.warning("qr.move_destination_unreachable", destination=self.dest.ae_title,
                        error=str(exc))
            counts.fail_remaining([i.sop_instance_uid for i in self.items])
            return (Status.OUT_OF_RESOURCES_UNABLE_TO_PERFORM_SUB_OPERATIONS,
                    f"cannot associate with {self.dest.ae_title}"[:64])
        log.info("qr.move_associated", destination=self.dest.ae_title,
                 contexts=len(scu.accepted), instances=len(self.items))
        try:
            upcoming: Prepared | CannotSend | None = None
            for n, item in enumerate(self.items):
                if self.stop.is_set():
                    return None, None
                current = upcoming if upcoming is not None else self._prepare_for(scu, item)
                upcoming = None
                try:
                    if isinstance(current, CannotSend):
                        raise current
                    message_id = self._send(scu, item, current)
                    if n + 1 < len(self.items):  # read the next one while this one is stored
                        upcoming = self._prepare_for(scu, self.items[n + 1])
                    counts.record(item.sop_instance_uid, scu.store_result(message_id).status)
                except CannotSend as exc:
                    log.warning("qr.cannot_send", destination=self.dest.ae_title,
                                error=str(exc))
                    counts.record(item.sop_instance_uid, Status.UNABLE_TO_PROCESS)
                except SCUError as exc:
                    # The association is gone: everything not sent yet failed too.
                    log.warning("qr.move_association_lost", destination=self.dest.ae_title,
                                error=str(exc))
                    counts.fail_remaining([i.sop_instance_uid for i in self.items[n:]])
                    return None, f"association with {self.dest.ae_title} lost"[:64]
                self._post(_Progress(_snapshot(counts), False))
        finally:
            try:
                if scu.accepted:
                    scu.release()
            except (SCUError, OSError):
                pass
        return None, None

    def _prepare_for(self, scu: SCU, item: RetrieveItem) -> Prepared | CannotSend:
        """The object as it will go to this destination, or why it cannot."""
        accepted = {ts for abstract, ts in scu.accepted.values()
                    if abstract == item.sop_class_uid}
        if not accepted:
            return CannotSend(f"destination accepted no context for {item.sop_class_uid}")
        try:
            return prepare(self.qr.settings.data_dir, item, accepted)
        except CannotSend as exc:
            return exc

    def _send(self, scu: SCU, item: RetrieveItem, p: Prepared) -> int:
        """Write the C-STORE-RQ and data set; returns its Message ID (answer not awaited)."""
        originator = dict(move_originator_ae=self.state.calling_ae,
                          move_originator_msg_id=self.msg_id)
        if p.converted is not None:
            return scu.send_store(p.converted, item.sop_class_uid, item.sop_instance_uid,
                                  p.transfer_syntax_uid, **originator)  # type: ignore[arg-type]
        with open(p.path, "rb") as fh:
            if p.length == 0:
                return scu.send_store(b"", item.sop_class_uid, item.sop_instance_uid,
                                      p.transfer_syntax_uid,
                                      **originator)  # type: ignore[arg-type]
            # mmap: the data set goes out as slices of the page cache, never copied whole
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            data = memoryview(mm)
            # No close on an exception: its traceback's frames still hold slices of the map,
            # so closing would raise BufferError in place of the real error (an A-ABORT from
            # the destination became "move failed"); the map goes with the traceback.
            message_id = scu.send_store(data[p.offset:p.offset + p.length],
                                        item.sop_class_uid, item.sop_instance_uid,
                                        p.transfer_syntax_uid,
                                        **originator)  # type: ignore[arg-type]
            data.release()
            mm.close()
            return message_id


def _snapshot(counts: Counts) -> Counts:
    return Counts(counts.total, counts.completed, counts.failed, counts.warning,
                  list(counts.failed_uids))
