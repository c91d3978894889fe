"""The acceptor process: uvloop, the listening socket, and the rings to every worker.

THEORY OF OPERATION
-------------------
Forked by the arbiter with the listening socket, the control block, one WorkerLink per worker
slot, and a control channel (SEQPACKET) on which the arbiter announces replaced workers.
Reply rings are read with ``loop.add_reader`` on their doorbells; each record is dispatched to
its association by id. When a worker is replaced, the old reply ring is drained first (its
finished responses still count), then each pinned association fails what remains in flight
and is re-pinned to the new incarnation (DicomProtocol.worker_replaced).

Access control (appliance/access.py): ``negotiate`` matches each requestor (Calling AE Title,
address, verified TLS client-certificate subject) to the ``[access]`` rules before the
negotiation policy answers; the rules are swapped whole on SIGHUP, so an association keeps
the rights it was accepted with and the next one gets the new rules.

SIGTERM drains: the listener closes, every association is asked to release when idle, and the
process exits when none remain or ``graceful_timeout_s`` has passed (stragglers are aborted).
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import os
import resource
import signal
import socket
import ssl
import struct
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import structlog

from appliance import audit, reload, tls
from appliance.acceptor.links import WorkerLink
from appliance.acceptor.protocol import DicomProtocol
from appliance.access import AccessConfig, Decision, Peer, Refusal, subject_from_peercert
from appliance.config import Config
from appliance.errors import ConfigError
from appliance.ipc.control import ControlBlock, ProcState
from appliance.ipc.fdpass import recv_with_fds
from appliance.ipc.ring import Ring
from appliance.negotiation.policy import (
    NegotiationPolicy,
    accepted_contexts,
    negotiate,
    reject_calling_ae,
    reject_no_contexts,
    user_rejected,
)
from appliance.negotiation.qr_classes import QR_SOP_CLASSES, WORKFLOW_SOP_CLASSES
from appliance.negotiation.sop_classes import NATIVE_TRANSFER_SYNTAXES, STORAGE_SOP_CLASSES
from appliance.ul.association import ULLimits
from appliance.ul.pdu import AssociateAC, AssociateRJ, AssociateRQ
from metrics import registry as m
from metrics import tracing

log = structlog.get_logger(component="acceptor")


@dataclass
class AcceptorSetup:
    cfg: Config
    listen: socket.socket | None  # None: [tls] plain = false, TLS only
    control: ControlBlock
    slot_index: int  # our slot in the control block
    worker_slots: dict[int, int]  # worker slot number -> control block index
    links: list[tuple[int, int, tuple[int, int, int], tuple[int, int, int]]]
    channel: socket.socket | None
    tls_listen: socket.socket | None = None  # [tls] port: same protocol, wrapped in TLS
    tls_context: ssl.SSLContext | None = None


def negotiation_policy(cfg: Config) -> NegotiationPolicy:
    net = cfg.network
    return NegotiationPolicy(
        ae_title=net.ae_title,
        require_called_ae=net.require_called_ae,
        allowed_calling_aes=frozenset(net.allowed_calling_aes) or None,
        promiscuous=net.promiscuous,
        transfer_syntax_preference=net.transfer_syntax_preference or NATIVE_TRANSFER_SYNTAXES,
        # An archive stores what it is sent: when the SCU proposes its compressed syntax first,
        # accept it rather than make the SCU decompress (or fail to, as storescu does).
        prefer_encapsulated=True,
        max_pdu_bytes=net.max_pdu_bytes,
        extra_abstract_syntaxes=QR_SOP_CLASSES | WORKFLOW_SOP_CLASSES,
        # C-GET sub-operations: we act as the Storage SCU when the requestor asks to be SCP.
        scp_role_sop_classes=STORAGE_SOP_CLASSES,
        relational=cfg.query.relational,
    )


class AcceptorServer:
    def __init__(self, setup: AcceptorSetup, loop: asyncio.AbstractEventLoop) -> None:
        self.setup = setup
        self.cfg = setup.cfg
        self.loop = loop
        self.policy = negotiation_policy(self.cfg)
        self._policy_all_contexts = replace(self.policy, reject_if_no_contexts=False)
        self.access: AccessConfig = self.cfg.access
        net = self.cfg.network
        self.ul_limits = ULLimits(
            max_pdu_bytes=net.max_pdu_bytes,
            max_presentation_contexts=net.max_presentation_contexts,
            artim_timeout_s=net.artim_timeout_s,
        )
        self.links: dict[int, WorkerLink] = {}
        self.protocols: dict[int, DicomProtocol] = {}
        self.active_total = 0
        self.active_by_ae: dict[str, int] = {}
        # Connections still waiting for their A-ASSOCIATE-RQ, oldest first (an ordered set).
        self.unassociated: dict[DicomProtocol, None] = {}
        self._evicted = 0
        self._evicted_logged_at = 0.0
        self.paused_count = 0
        self._paused_since = 0.0
        self.draining = False
        self.server: asyncio.AbstractServer | None = None
        self.tls_server: asyncio.AbstractServer | None = None
        self._ids = itertools.count(1)
        self._done = loop.create_future()
        self.me = setup.control.slot(setup.slot_index)
        for slot, gen, jobs, replies in setup.links:
            self._add_link(WorkerLink(slot, gen, Ring.attach(jobs), Ring.attach(replies)))

    # ---- bookkeeping used by protocols ----------------------------------------------------

    def next_assoc_id(self) -> int:
        return next(self._ids) & 0xFFFFFFFF or next(self._ids)

    def register(self, proto: DicomProtocol) -> None:
        self.protocols[proto.assoc_id] = proto

    def unregister(self, proto: DicomProtocol, outcome: str) -> None:
        self.protocols.pop(proto.assoc_id, None)
        log.info("assoc.closed", assoc_id=proto.assoc_id, outcome=outcome)
        if outcome == "evicted":  # never associated: counted, not audited
            m.ASSOCIATIONS.labels(outcome).inc()
        elif outcome != "rejected":  # rejections were counted (and audited) when sent
            m.ASSOCIATIONS.labels(outcome).inc()
            audit.emit(audit.AuditEvent.ASSOCIATION_CLOSED,
                       audit.SUCCESS if outcome == "released" else audit.MINOR_FAILURE,
                       assoc_id=proto.assoc_id, peer=proto.peer, calling_ae=proto.calling_ae,
                       ending=outcome)
            tracing.end_span(proto.span, error=None if outcome == "released" else outcome,
                             outcome=outcome)
        if self.draining and not self.protocols and not self._done.done():
            self._done.set_result(None)

    def track_connection(self, proto: DicomProtocol) -> None:
        """A new connection (Sta2). Beyond ``max_pending_connections`` the oldest one still
        without its A-ASSOCIATE-RQ is dropped: a flood of silent connections then cycles
        through the table while a real requestor, which sends its RQ at once, gets in."""
        self.unassociated[proto] = None
        limit = self.cfg.network.max_pending_connections
        if not limit or len(self.unassociated) <= limit:
            return
        oldest = _eviction_victim(self.unassociated)
        del self.unassociated[oldest]
        oldest.outcome = "evicted"
        if oldest.transport is not None:
            oldest.transport.abort()  # RST: nothing was asked, so there is nothing to answer
        self._evicted += 1
        now = time.monotonic()
        if now - self._evicted_logged_at >= 1.0:  # a flood: one warning a second, with a count
            log.warning("acceptor.connections_evicted", count=self._evicted, limit=limit,
                        peer=oldest.peer)
            self._evicted_logged_at = now
            self._evicted = 0

    def untrack_connection(self, proto: DicomProtocol) -> None:
        self.unassociated.pop(proto, None)

    def count_association(self, proto: DicomProtocol, delta: int) -> None:
        self.active_total += delta
        ae = proto.calling_ae
        self.active_by_ae[ae] = self.active_by_ae.get(ae, 0) + delta
        if self.active_by_ae[ae] <= 0:
            del self.active_by_ae[ae]
        self.me.associations_active = max(self.active_total, 0)
        m.ASSOCIATIONS_ACTIVE.inc(delta)

    def active_for(self, calling_ae: str) -> int:
        return self.active_by_ae.get(calling_ae, 0)

    def note_paused(self, delta: int) -> None:
        """Backpressure accounting: time with at least one association's reading paused."""
        now = time.monotonic()
        if self.paused_count > 0:
            m.READ_PAUSED.inc(now - self._paused_since)
        self._paused_since = now
        self.paused_count += delta

    def pick_link(self) -> WorkerLink | None:
        """Least-loaded ready worker (by pinned associations)."""
        best: WorkerLink | None = None
        for link in self.links.values():
            idx = self.setup.worker_slots[link.slot]
            slot = self.setup.control.slot(idx)
            if slot.state is not ProcState.READY or slot.generation != link.generation:
                continue
            if best is None or len(link.associations) < len(best.associations):
                best = link
        return best

    # ---- access control ------------------------------------------------------------------

    def negotiate(self, proto: DicomProtocol, rq: AssociateRQ) -> AssociateAC | AssociateRJ:
        """The A-ASSOCIATE-AC or -RJ for ``proto``'s requestor under the ``[access]`` rules:
        a peer they refuse gets RJ permanent, service-user, calling-AE-title-not-recognized
        (PS3.8 Table 9-21 reason 3); an admitted one only the contexts of its operations."""
        peer = _peer_of(proto, rq)
        decision = self.access.decide(peer)
        proto.tls_subject = peer.tls_subject
        if not decision.allowed:
            self._denied(proto, peer, decision, rq)
            return reject_calling_ae()
        proto.move_destinations = decision.move_destinations
        proto.operations = None if decision.rule is None else decision.operations
        if decision.rule is None:  # the open default: no restriction
            return negotiate(self.policy, rq)
        # Negotiated with every context answered, so that the refused ones are known even
        # when none is left (then the RJ the policy would have sent goes out).
        result = negotiate(self._policy_all_contexts, rq, decision.operations)
        if isinstance(result, AssociateRJ):
            return result
        refused = user_rejected(result, rq)
        if refused:
            self._denied(proto, peer, decision, rq, refused)
        if self.policy.reject_if_no_contexts and not accepted_contexts(result, rq):
            return reject_no_contexts()
        return result

    def _denied(self, proto: DicomProtocol, peer: Peer, decision: Decision, rq: AssociateRQ,
                abstract_syntaxes: list[str] | None = None) -> None:
        """Log, count and audit one refusal by the access rules."""
        reason = (decision.refusal or Refusal.OPERATION).value
        fields = dict(assoc_id=proto.assoc_id, peer=proto.peer, calling_ae=peer.ae_title,
                      called_ae=rq.called_ae.strip(), tls_subject=peer.tls_subject,
                      rule=decision.rule, reason=reason)
        if abstract_syntaxes is not None:  # storescu proposes ~120 classes: name a few
            refused = sorted(set(abstract_syntaxes))
            fields["refused_contexts"] = len(refused)
            fields["refused_sop_classes"] = refused[:_LOGGED_SOP_CLASSES]
        log.warning("access.denied", **fields)
        m.ACCESS_DENIED.labels(reason).inc()
        audit.emit(audit.AuditEvent.ACCESS_DENIED, audit.MINOR_FAILURE, **fields)

    def _reload_access(self, cfg: Config) -> None:
        self.access = cfg.access  # one reference swap (runs in the SIGHUP handler)
        log.info("access.reloaded", default=cfg.access.default.value,
                 peers=[rule.name for rule in cfg.access.peers])

    # ---- rings ---------------------------------------------------------------------------

    def _add_link(self, link: WorkerLink) -> None:
        self.links[link.slot] = link
        self.loop.add_reader(link.replies.data_fd, self._on_replies, link)
        self.loop.add_reader(link.jobs.space_fd, link.on_space)

    def _on_replies(self, link: WorkerLink) -> None:
        ring = link.replies
        ring.drain_doorbell()
        protocols = self.protocols
        while (rec := ring.peek()) is not None:
            proto = protocols.get(rec.assoc_id)
            if proto is not None:
                proto.deliver(rec.kind, rec.msg_id, rec.flags, rec.aux, rec.payload)
            del rec
            ring.release()
        for p in list(link.associations):
            if p.link is not None:
                p.link.flush()

    def _on_channel(self) -> None:
        channel = self.setup.channel
        assert channel is not None
        try:
            got = recv_with_fds(channel)
        except EOFError:
            self.loop.remove_reader(channel.fileno())
            return
        if got is None:
            return
        header, fds = got
        if header.get("kind") != "worker_rings":
            for fd in fds:
                os.close(fd)
            return
        slot, gen = int(header["slot"]), int(header["generation"])
        new = WorkerLink(slot, gen, Ring.attach(tuple(fds[0:3]), own=True),  # type: ignore[arg-type]
                         Ring.attach(tuple(fds[3:6]), own=True))  # type: ignore[arg-type]
        old = self.links.get(slot)
        if old is not None:
            self.loop.remove_reader(old.replies.data_fd)
            self.loop.remove_reader(old.jobs.space_fd)
            self._on_replies(old)  # responses the dead worker finished still go out
        self._add_link(new)
        if old is not None:
            for proto in list(old.associations):
                old.associations.discard(proto)
                proto.worker_replaced(new)
            new.flush()
            old.close()
        log.info("acceptor.worker_replaced", slot=slot, generation=gen)

    # ---- lifecycle -------------------------------------------------------------------------

    async def serve(self) -> None:
        if self.setup.listen is not None:
            self.server = await self.loop.create_server(
                lambda: DicomProtocol(self), sock=self.setup.listen, backlog=1024
            )
        if self.setup.tls_listen is not None and self.setup.tls_context is not None:
            # Plain TCP accept, then each DicomProtocol runs the handshake itself (start_tls):
            # pending until its A-ASSOCIATE-RQ like a plain connection, failures logged.
            ctx = self.setup.tls_context
            self.tls_server = await self.loop.create_server(
                lambda: DicomProtocol(self, ctx), sock=self.setup.tls_listen, backlog=1024)
            tls_addr = self.setup.tls_listen.getsockname()
            log.info("acceptor.listening_tls", address=f"{tls_addr[0]}:{tls_addr[1]}",
                     verify_client=self.cfg.tls.verify_client,
                     fingerprint=tls.fingerprint(self.cfg.tls.certificate))
            reload.on_reload(partial(_reload_tls, self.setup.tls_context))  # SIGHUP
        reload.on_reload(self._reload_access)  # SIGHUP: new rules for the next association
        if self.setup.channel is not None:
            self.setup.channel.setblocking(False)
            self.loop.add_reader(self.setup.channel.fileno(), self._on_channel)
        self.me.state = ProcState.READY
        if self.setup.listen is not None:
            addr = self.setup.listen.getsockname()
            log.info("acceptor.listening", address=f"{addr[0]}:{addr[1]}",
                     ae_title=self.cfg.network.ae_title)
        self.loop.add_signal_handler(signal.SIGTERM, self.start_drain)
        self.loop.add_signal_handler(signal.SIGINT, lambda: None)
        heartbeat = self.loop.create_task(self._heartbeat())
        await self._done
        heartbeat.cancel()

    def start_drain(self) -> None:
        if self.draining:
            return
        self.draining = True
        self.me.state = ProcState.DRAINING
        log.info("acceptor.draining", associations=len(self.protocols))
        for server in (self.server, self.tls_server):
            if server is not None:
                server.close()
        for proto in list(self.protocols.values()):
            proto.start_drain()
        if not self.protocols and not self._done.done():
            self._done.set_result(None)
        self.loop.call_later(self.cfg.processes.graceful_timeout_s, self._force_stop)

    def _force_stop(self) -> None:
        for proto in list(self.protocols.values()):
            log.warning("assoc.drain_timeout", assoc_id=proto.assoc_id)
            proto.abort_now()
        if not self._done.done():
            self._done.set_result(None)

    async def _heartbeat(self) -> None:
        ppid = os.getppid()
        while True:
            self.me.heartbeat()
            self.me.in_flight = sum(len(p.in_flight) for p in self.protocols.values())
            if os.getppid() != ppid:
                log.warning("acceptor.orphaned")
                self._force_stop()
            await asyncio.sleep(0.5)


def _has_spoken(proto: DicomProtocol) -> bool:
    """Bytes from this peer, read (in the core's buffer) or still in the socket (FIONREAD)."""
    if proto.conn.buffered_bytes:
        return True
    if proto.sock is None:
        return False
    try:
        raw = fcntl.ioctl(proto.sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError):
        return False
    return bool(struct.unpack("i", raw)[0])


def _eviction_victim(pending: dict[DicomProtocol, None], scan: int = 8) -> DicomProtocol:
    """The oldest pending connection whose peer has sent nothing yet, among the ``scan``
    oldest; else the oldest. A requestor whose A-ASSOCIATE-RQ is already on its way (still
    unread in a busy accept burst) is spared; a flood of silent connections is not."""
    for i, proto in enumerate(pending):
        if i >= scan:
            break
        if not _has_spoken(proto):
            return proto
    return next(iter(pending))


_LOGGED_SOP_CLASSES = 16


def _peer_of(proto: DicomProtocol, rq: AssociateRQ) -> Peer:
    """Who is asking: the Calling AE Title, the address, and the subject of the client
    certificate when the TLS handshake verified one ([tls] verify_client = true)."""
    address, subject = "", None
    tr = proto.transport
    if tr is not None:
        peername = tr.get_extra_info("peername")
        if isinstance(peername, tuple) and peername:
            address = str(peername[0])
        ssl_object = tr.get_extra_info("ssl_object")
        if ssl_object is not None:
            subject = subject_from_peercert(ssl_object.getpeercert())
    return Peer(rq.calling_ae.strip(), address, subject)


def raise_fd_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit: every connection is a descriptor, and a flood
    must meet max_pending_connections and max_associations, not EMFILE at accept()."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard not in (soft, resource.RLIM_INFINITY):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft, hard


def _reload_tls(ctx: ssl.SSLContext, cfg: Config) -> None:
    """SIGHUP: new [tls] files into the live context; new handshakes present them, open
    connections keep theirs. Files that do not load are logged and the old identity stays."""
    try:
        tls.reload_server(ctx, cfg.tls)
    except ConfigError as exc:
        log.error("tls.reload_failed", error=str(exc))
        return
    log.info("tls.reloaded", certificate=cfg.tls.certificate,
             fingerprint=tls.fingerprint(cfg.tls.certificate))


def run_acceptor(setup: AcceptorSetup, on_ready: Callable[[], None] | None = None) -> int:
    """Entry point in the forked child: uvloop is created here, after the fork."""
    import uvloop

    soft, hard = raise_fd_limit()
    net = setup.cfg.network
    # An association holds two descriptors (the transport's and the quick-ACK duplicate).
    needed = 2 * net.max_associations + net.max_pending_connections + 64
    (log.warning if soft < needed else log.info)("acceptor.fd_limit", soft=soft, hard=hard,
                                                  needed=needed)

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    server = AcceptorServer(setup, loop)
    start = time.monotonic()
    try:
        loop.run_until_complete(server.serve())
        # let transports flush their final PDUs
        loop.run_until_complete(asyncio.sleep(0.05))
    finally:
        loop.close()
    log.info("acceptor.stopped", uptime_s=round(time.monotonic() - start, 1))
    return 0
