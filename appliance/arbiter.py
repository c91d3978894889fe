"""The arbiter: owns the listening socket, shared memory and children (gunicorn's model).

THEORY OF OPERATION
-------------------
A synchronous loop with no threads and no event loop. Before forking it creates everything
that is shared: the listening socket, the control block, and one set of rings per worker
(WorkerChannels). Children are forked in dependency order: index writer, workers and
exporter at once, the acceptor once the index writer and a worker are ready (until then
connections wait in the listen backlog rather than meet an acceptor with no worker to route
to). Each child sets up its heavy libraries (uvloop, LMDB, pydicom) itself, after the fork,
importing its role's module lazily. Acceptor, workers and index writer are the core set:
``_start_core`` starts it at boot and again after a core restart (below). Where the workers
commit their own index records (one worker, or `os` durability: Config.inline_index_for) no
index writer is forked, and nothing waits for one (``workers_index`` in the control block).

Signal handlers only enqueue; the loop dispatches. Every tick it reaps children, checks
heartbeats and tells systemd how things are.

  - A dead worker is replaced by a new incarnation with fresh rings; the acceptor and the
    index writer receive the new ring fds over their control channels (SCM_RIGHTS). The
    acceptor fails the dead worker's in-flight operations (0x0110).
  - A child that fails to boot (exit 3) is respawned after 0.5, 1 and 2 s; a fourth failure
    in a row halts the appliance with exit code 3 (appliance/boot_backoff.py): a crash loop
    helps nobody, a passing fault (a volume still mounting) should not need an operator.
  - The acceptor or the index writer dying restarts the core set in place: their ring
    positions cannot be recovered, so the arbiter SIGKILLs and reaps what is left of acceptor,
    workers and index writer, removes the dead writers' spool files, and forks the three roles
    again (next generation) on fresh rings and channel pairs. The listening sockets stay open
    in the arbiter meanwhile, so new connections wait in the backlog instead of being refused.
    This loses nothing acknowledged: the acceptor answers Success only after the index commit,
    so whatever the kill interrupted was never acknowledged (at worst a renamed file that was
    never indexed, which ``pacs db verify`` lists and ``--repair`` moves aside). Readiness is
    false until the new set is ready (systemd gets a STATUS= line, then READY=1 again). The
    new acceptor's TLS context is built from the [tls] files as they are now (a SIGHUP may
    have named new ones since boot). More than ``[processes] core_restart_limit`` restarts
    within ``core_restart_window_s`` halt the appliance (exit 1) for systemd instead.
  - The exporter is simply restarted.

systemd (appliance/systemd.py): the listening socket comes from LISTEN_FDS when socket
activated; READY=1 goes out once the acceptor listens and a worker and the index writer are
ready, WATCHDOG=1 every WatchdogSec/2 while they stay so, RELOADING=1 around a SIGHUP reload,
STOPPING=1 when shutdown begins, and STATUS= lines say what the appliance is doing.

SIGHUP (appliance/reload.py): the arbiter reloads and validates its ConfigSource, keeps the
reloadable settings, then passes SIGHUP on; each child reloads the same way in its handler.
SIGHUP is blocked across fork() so a child never dies of one before its handler is in place.

Each child, after the fork and before its role starts, configures its own logging, audit
trail (appliance/audit.py) and, when enabled, OpenTelemetry provider (metrics/tracing.py);
tracing is flushed and the audit file closed before the child exits.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import signal
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from appliance import audit, reload, systemd, tls
from appliance.boot_backoff import BootBackoff
from appliance.children import (
    Child,
    child_teardown,
    comm_name,
    exit_cause,
    metrics_child_died,
    prepare_metrics_dir,
    set_comm,
)
from appliance.config import Config, ConfigSource
from appliance.datadir import ensure_index, prepare_data_dir
from appliance.errors import ConfigError, HaltAppliance
from appliance.ipc.channels import WorkerChannels
from appliance.ipc.control import (
    EXIT_BOOT_FAILED,
    ApplianceState,
    ControlBlock,
    ProcState,
    Role,
)
from appliance.ipc.fdpass import channel_pair, send_with_fds
from appliance.ipc.ring import Ring
from appliance.listeners import bind_listener, bind_tls_listener
from metrics.logging import configure as configure_logging
from metrics.logging import get_logger

log = get_logger("arbiter")

SLOT_ARBITER, SLOT_ACCEPTOR, SLOT_WRITER, SLOT_EXPORTER = 0, 1, 2, 3
FIRST_WORKER_SLOT = 4
_TICK_S = 0.25
_CORE_ROLES = frozenset({Role.ACCEPTOR, Role.WORKER, Role.INDEX_WRITER})
_CORE_REAP_S = 10.0  # a SIGKILLed child still alive after this is stuck in the kernel: halt


class Arbiter:
    def __init__(self, cfg: Config, source: ConfigSource | None = None) -> None:
        self.cfg = cfg
        self.source = source
        self.n_workers = cfg.worker_count
        # The workers commit their own index records: no index writer process is forked.
        self.workers_index = cfg.inline_index_for(self.n_workers)
        self.signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.children: dict[int, Child] = {}
        self.boot = BootBackoff()
        self.stopping = False
        self.exit_code = 0
        self.ready_sent = False
        self.cb: ControlBlock | None = None
        self.listener: socket.socket | None = None
        self.tls_listener: socket.socket | None = None
        self.tls_context: ssl.SSLContext | None = None
        self.channels: dict[int, WorkerChannels] = {}
        self.rings: dict[int, list[Ring]] = {}
        self.acceptor_chan: socket.socket | None = None
        self.writer_chan: socket.socket | None = None
        self._peer_ends: list[socket.socket] = []
        self._last_watchdog = 0.0
        self.core_generation = 0  # of acceptor and index writer; +1 per core restart
        self._core_restarts: deque[float] = deque()  # monotonic times, for the crash-loop guard
        self._acceptor_end: socket.socket | None = None  # set while its fork waits

    # ---- boot --------------------------------------------------------------------------

    def run(self) -> int:
        cfg = self.cfg
        data = Path(cfg.storage.data_dir)
        prepare_data_dir(data)
        prepare_metrics_dir(data)
        ensure_index(cfg)
        port: int | None = None  # [tls] plain = false: TLS only, no plain listener
        if cfg.tls.plain or not cfg.tls.enabled:
            self.listener = bind_listener(cfg.network.host, cfg.network.port)
            port = self.listener.getsockname()[1]
        if cfg.tls.enabled:  # the context is built (files read) before any child exists
            self.tls_context = tls.server_context(cfg.tls)
            self.tls_listener = bind_tls_listener(cfg.network.host, cfg.tls.port)
        self.cb = ControlBlock.create(FIRST_WORKER_SLOT + self.n_workers)
        self.cb.global_area.arbiter_pid = os.getpid()
        self.cb.global_area.workers_index = self.workers_index
        self.cb.global_area.set_disk(True, 0)
        me = self.cb.slot(SLOT_ARBITER)
        me.claim(Role.ARBITER, 1)
        me.pid = os.getpid()
        me.state = ProcState.READY
        me.heartbeat()  # and once per loop turn: /livez sees a hung arbiter (metrics/health.py)
        self._install_signals()
        log.info("arbiter.starting", port=port, tls_port=self._tls_port(), workers=self.n_workers,
                 durability=cfg.storage.durability.value, data=str(data))
        systemd.notify(f"STATUS=starting {self.n_workers} workers")
        audit.emit(audit.AuditEvent.APPLICATION_START, ae_title=cfg.network.ae_title,
                   port=port, data_dir=str(data.absolute()), config=self._config_path())
        self._start_core()
        self._spawn_exporter()
        code = 1
        try:
            code = self._loop()
            return code
        finally:
            if self.listener is not None:
                self.listener.close()
            if self.tls_listener is not None:
                self.tls_listener.close()
            audit.emit(audit.AuditEvent.APPLICATION_STOP,
                       audit.SUCCESS if code == 0 else audit.SERIOUS_FAILURE,
                       ae_title=cfg.network.ae_title, exit_code=code)

    def _start_core(self) -> None:
        """Create the shared rings and control channels of the core set and fork it in
        dependency order: index writer and workers now, the acceptor once they are ready
        (``_spawn_acceptor_when_ready``). Used at boot and by every core restart; the
        listening sockets and the control block are the arbiter's and stay."""
        cfg = self.cfg
        self._drop_pending_acceptor()  # a restart before the last set's acceptor was forked
        self.core_generation += 1
        for i in range(self.n_workers):
            old = self.channels.get(i)
            ch, rings = WorkerChannels.create(
                i, old.generation + 1 if old else 1, cfg.processes.ring_bytes,
                cfg.processes.reply_ring_bytes,
            )
            self.channels[i], self.rings[i] = ch, rings
        self.acceptor_chan, acc_end = channel_pair()
        self.writer_chan = wr_end = None
        self._peer_ends = [acc_end]
        if not self.workers_index:  # else no index writer: the workers commit their records
            self.writer_chan, wr_end = channel_pair()
            self._peer_ends.append(wr_end)
            self._spawn_writer(wr_end)
        for i in range(self.n_workers):
            self._spawn_worker(i)
        if wr_end is not None:
            wr_end.close()
        self._peer_ends = [acc_end]
        self._acceptor_end = acc_end

    def _spawn_acceptor_when_ready(self) -> None:
        """Fork the acceptor once the index writer and a worker are ready: until then new
        connections wait in the listen backlog instead of meeting an acceptor that must
        reject them (no worker: A-ASSOCIATE-RJ transient)."""
        assert self.cb is not None
        end = self._acceptor_end
        if end is None or self.stopping:
            return
        writer_ready = (self.workers_index
                        or self.cb.slot(SLOT_WRITER).state is ProcState.READY)
        if not writer_ready or not any(
                self.cb.slot(FIRST_WORKER_SLOT + i).state is ProcState.READY
                for i in range(self.n_workers)):
            return
        self._spawn_acceptor(end)
        self._drop_pending_acceptor()

    def _drop_pending_acceptor(self) -> None:
        """Close what only the acceptor's fork still needed: its channel end and the rings."""
        if self._acceptor_end is not None:
            self._acceptor_end.close()
            self._acceptor_end = None
        self._peer_ends = []
        for rings in self.rings.values():  # the children hold their own copies
            for r in rings:
                r.close()
        self.rings.clear()

    def _restart_core(self, dead: Child, cause: str) -> None:
        """The acceptor or the index writer died: stop the rest of the core set and start it
        again (module docstring), or halt when this has happened too often."""
        assert self.cb is not None
        role = dead.role.name.lower()
        procs = self.cfg.processes
        now = time.monotonic()
        while self._core_restarts and now - self._core_restarts[0] > procs.core_restart_window_s:
            self._core_restarts.popleft()
        if len(self._core_restarts) >= procs.core_restart_limit:
            raise HaltAppliance(1, f"{role} died ({cause}) after {len(self._core_restarts)} core "
                                   f"restarts within {procs.core_restart_window_s:g} s")
        self._core_restarts.append(now)
        self.ready_sent = False  # readiness comes back with the new set (_notify_systemd)
        self.cb.global_area.appliance_state = ApplianceState.STARTING
        systemd.notify(f"STATUS=restarting acceptor, workers and index writer ({role} died)")
        stopped = self._stop_core()
        prepare_data_dir(Path(self.cfg.storage.data_dir))  # the stopped workers' spool files
        self._renew_tls_context()
        for chan in (self.acceptor_chan, self.writer_chan):
            if chan is not None:
                chan.close()
        try:
            self._start_core()
        except OSError as exc:  # no memory for rings, fork failed: nothing to serve with
            raise HaltAppliance(1, f"core restart failed: {exc}") from exc
        from metrics import registry as m

        m.CORE_RESTARTS.labels(role).inc()
        log.warning("arbiter.core_restarted", died=role, pid=dead.pid, cause=cause,
                    stopped=stopped, generation=self.core_generation,
                    restarts_in_window=len(self._core_restarts))

    def _stop_core(self) -> list[int]:
        """SIGKILL and reap the acceptor, workers and index writer still alive. Nothing they
        hold was acknowledged; a gentler stop would wait on peers that are gone."""
        assert self.cb is not None
        victims = [c for c in self.children.values() if c.role in _CORE_ROLES]
        for c in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(c.pid, signal.SIGKILL)
        deadline = time.monotonic() + _CORE_REAP_S
        for c in victims:
            while True:
                try:
                    pid, status = os.waitpid(c.pid, os.WNOHANG)
                except ChildProcessError:  # reaped already
                    pid, status = c.pid, 0
                if pid:
                    break
                if time.monotonic() > deadline:
                    raise HaltAppliance(1, f"{c.role.name.lower()} {c.pid} survives SIGKILL")
                time.sleep(0.01)
            self.children.pop(c.pid, None)
            self.cb.slot(c.index).state = ProcState.STOPPED
            metrics_child_died(c.pid, c.role, status, replaced=False)
        return [c.pid for c in victims]

    def _renew_tls_context(self) -> None:
        """A new acceptor gets a context built from the current [tls] files (a SIGHUP may
        have named new ones since boot); if they no longer load, it keeps the old one."""
        if self.tls_context is None:
            return
        try:
            self.tls_context = tls.server_context(self.cfg.tls)
        except (ConfigError, OSError) as exc:
            log.error("tls.reload_failed", error=str(exc))

    def _config_path(self) -> str:
        return str(self.source.path.absolute()) if self.source and self.source.path else ""

    def _install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                    signal.SIGCHLD):
            signal.signal(sig, lambda s, _f: self.signals.put_nowait(s))

    # ---- forking -----------------------------------------------------------------------

    def _fork(self, role: Role, index: int, generation: int, name: str,
              target: Callable[[], int]) -> int:
        assert self.cb is not None
        slot = self.cb.slot(index)
        slot.claim(role, generation)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        pid = os.fork()
        if pid:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
            slot.pid = pid
            self.children[pid] = Child(role, index, pid, generation)
            return pid
        code = 1
        try:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            configure_logging(self.cfg.log_level, role=name)
            slot.pid = os.getpid()
            set_comm(comm_name(role, name, index - FIRST_WORKER_SLOT))
            self._child_setup(name)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
            code = target()
        except BaseException:  # noqa: BLE001 - the child must never return into the arbiter
            get_logger(name).exception(f"{name}.crashed")
        finally:
            child_teardown()
            os._exit(code)

    def _child_setup(self, role: str) -> None:
        """Post-fork set-up common to every role: reload, audit trail, tracing."""
        cfg = self.cfg
        reload.install_with_defaults(self.source, cfg, role)
        try:
            audit.configure(cfg, role)
        except OSError as exc:
            get_logger(role).error("audit.unavailable", path=cfg.audit.path, error=str(exc))
        if cfg.tracing.enabled:
            from metrics import tracing
            tracing.configure_from(cfg.tracing, role)

    def _close_foreign(self, keep: set[int]) -> None:
        """In a child: drop inherited rings whose fds it does not use (``keep``: fds it will
        attach), so a replaced worker's shared memory is not pinned by its siblings."""
        for rings in self.rings.values():
            for r in rings:
                if not keep.intersection(r.fds):
                    with contextlib.suppress(OSError):
                        r.close()

    def _spawn_writer(self, chan: socket.socket) -> None:
        slots = [(ch.slot, ch.generation, ch.index, ch.acks) for ch in self.channels.values()]
        cfg, cb = self.cfg, self.cb
        assert cb is not None

        def target() -> int:
            from workers.durability import set_disk_full_reporter
            from workers.indexer import run_index_writer

            set_disk_full_reporter(cb.global_area.report_disk_full)  # readiness after ENOSPC
            assert self.acceptor_chan is not None and self.writer_chan is not None
            self.acceptor_chan.close()
            self.writer_chan.close()
            me = cb.slot(SLOT_WRITER)

            def beat(n: int) -> None:
                me.heartbeat()
                me.in_flight = n

            def ready() -> None:
                me.state = ProcState.READY

            self._close_foreign({fd for c in self.channels.values() for fd in (*c.index, *c.acks)})
            return run_index_writer(cfg, slots, chan, beat, ready)

        self._fork(Role.INDEX_WRITER, SLOT_WRITER, self.core_generation, "index_writer", target)

    def _spawn_worker(self, i: int) -> None:
        ch = self.channels[i]
        cfg, cb = self.cfg, self.cb
        assert cb is not None
        index = FIRST_WORKER_SLOT + i

        def target() -> int:
            from workers.durability import set_disk_full_reporter
            from workers.process import WorkerHooks, run_worker
            from workers.store import configure_disk_floor

            set_disk_full_reporter(cb.global_area.report_disk_full)  # readiness after ENOSPC

            def floor(c: Config) -> None:
                configure_disk_floor(Path(c.storage.data_dir), c.storage.min_free_bytes,
                                     c.storage.min_free_percent)

            floor(cfg)
            reload.on_reload(floor)
            self._close_children_sockets()
            me = cb.slot(index)

            def ready() -> None:
                me.state = ProcState.READY

            def beat(n: int) -> None:
                me.heartbeat()
                me.in_flight = n

            self._close_foreign(set(ch.all_fds()))
            return run_worker(cfg, ch, WorkerHooks(ready=ready, heartbeat=beat),
                              inline_index=self.workers_index)

        self._fork(Role.WORKER, index, ch.generation, "worker", target)

    def _close_children_sockets(self) -> None:
        for s in (self.acceptor_chan, self.writer_chan, *self._peer_ends, self.listener,
                  self.tls_listener):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()

    def _spawn_acceptor(self, chan: socket.socket) -> None:
        cfg, cb, listener = self.cfg, self.cb, self.listener
        assert cb is not None and (listener is not None or self.tls_listener is not None)
        links = [(ch.slot, ch.generation, ch.jobs, ch.replies) for ch in self.channels.values()]
        worker_slots = {i: FIRST_WORKER_SLOT + i for i in range(self.n_workers)}

        def target() -> int:
            from appliance.acceptor.server import AcceptorSetup, run_acceptor

            assert self.acceptor_chan is not None
            self.acceptor_chan.close()
            if self.writer_chan is not None:
                self.writer_chan.close()
            self._close_foreign({fd for c in self.channels.values()
                                 for fd in (*c.jobs, *c.replies)})
            setup = AcceptorSetup(cfg, listener, cb, SLOT_ACCEPTOR, worker_slots, links, chan,
                                  self.tls_listener, self.tls_context)
            return run_acceptor(setup)

        self._fork(Role.ACCEPTOR, SLOT_ACCEPTOR, self.core_generation, "acceptor", target)

    def _spawn_exporter(self, generation: int = 1) -> None:
        cfg, cb = self.cfg, self.cb
        assert cb is not None

        def target() -> int:
            from metrics.disk import DiskFloor
            from metrics.exporter import run_exporter

            self._close_children_sockets()
            self._close_foreign(set())
            st = cfg.storage
            floor = DiskFloor(Path(st.data_dir), st.min_free_bytes, st.min_free_percent)
            reload.on_reload(lambda c: floor.update(c.storage.min_free_bytes,
                                                    c.storage.min_free_percent))
            return run_exporter(cb, SLOT_EXPORTER, cfg.http.host, cfg.http.port,
                                Path(cfg.storage.data_dir), cfg.processes.heartbeat_timeout_s,
                                floor=floor)

        self._fork(Role.EXPORTER, SLOT_EXPORTER, generation, "exporter", target)

    def _replace_worker(self, child: Child) -> None:
        i = child.index - FIRST_WORKER_SLOT
        gen = child.generation + 1
        ch, rings = WorkerChannels.create(
            i, gen, self.cfg.processes.ring_bytes, self.cfg.processes.reply_ring_bytes
        )
        for r in self.rings.get(i, []):  # the dead one's, kept for an acceptor not yet forked
            r.close()
        self.channels[i], self.rings[i] = ch, rings
        self._spawn_worker(i)
        assert self.acceptor_chan is not None
        header = {"kind": "worker_rings", "slot": i, "generation": gen}
        # An acceptor not forked yet inherits the new rings (self.channels) instead.
        pending = self._acceptor_end is not None
        targets = []
        if self.writer_chan is not None:
            targets.append((self.writer_chan, [*ch.index, *ch.acks]))
        if not pending:
            targets.append((self.acceptor_chan, [*ch.jobs, *ch.replies]))
        for chan, fds in targets:
            try:
                send_with_fds(chan, header, fds)
            except OSError as exc:
                log.error("arbiter.channel_failed", error=str(exc))
        if not pending:
            for r in rings:
                r.close()
            self.rings.pop(i, None)
        data = Path(self.cfg.storage.data_dir)
        for leftover in (data / "tmp").glob(f"{child.pid}-*.part"):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        log.info("worker.restarted", slot=i, generation=gen)

    # ---- the loop ------------------------------------------------------------------------

    def _loop(self) -> int:
        handlers: dict[int, Callable[[], None]] = {
            signal.SIGTERM: self._graceful,
            signal.SIGINT: self._graceful,
            signal.SIGQUIT: self._fast,
            signal.SIGHUP: self._hup,
            signal.SIGCHLD: lambda: None,
        }
        assert self.cb is not None
        me = self.cb.slot(SLOT_ARBITER)
        try:
            while True:
                # While the acceptor waits for its peers, look more often than once a tick.
                tick = _TICK_S if self._acceptor_end is None else _TICK_S / 10
                try:
                    sig = self.signals.get(timeout=tick)
                    handlers.get(sig, lambda: None)()
                except queue.Empty:
                    pass
                self._reap()
                if self.boot.failures:
                    self._boot_retries()
                self._spawn_acceptor_when_ready()
                self._check_heartbeats()
                me.heartbeat()
                self._notify_systemd()
                if self.stopping and not self.children:
                    return self.exit_code
        except HaltAppliance as halt:
            log.error("arbiter.halting", exit_code=halt.exit_code, reason=str(halt))
            self._kill_all(signal.SIGTERM)
            self._wait_children(self.cfg.processes.graceful_timeout_s)
            self._kill_all(signal.SIGKILL)
            self._wait_children(5.0)
            return halt.exit_code

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            cause = exit_cause(status)
            assert self.cb is not None
            self.cb.slot(child.index).state = ProcState.STOPPED
            if self.stopping:
                log.info("arbiter.child_exited", role=child.role.name.lower(), pid=pid,
                         cause=cause)
                continue
            log.error("worker.died" if child.role is Role.WORKER else "arbiter.child_died",
                      role=child.role.name.lower(), pid=pid, cause=cause)
            metrics_child_died(pid, child.role, status)
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
            if code == EXIT_BOOT_FAILED:
                self._boot_failed(child, cause)
            else:
                self._respawn(child, cause)

    def _respawn(self, child: Child, cause: str) -> None:
        if child.role is Role.WORKER:
            self._replace_worker(child)
        elif child.role is Role.EXPORTER:
            self._spawn_exporter(child.generation + 1)
        else:  # the acceptor or the index writer
            self._restart_core(child, cause)

    def _boot_failed(self, child: Child, cause: str) -> None:
        """Respawn later, further apart each time, then halt (appliance/boot_backoff.py)."""
        role = child.role.name.lower()
        delay = self.boot.failed(child.index, self.core_generation,
                                 lambda: self._respawn(child, cause))
        if delay is None:
            raise HaltAppliance(EXIT_BOOT_FAILED, f"{role} failed to boot "
                                                  f"{self.boot.retries + 1} times in a row")
        log.error("arbiter.boot_retry", role=role, slot=child.index,
                  failures=self.boot.failures[child.index], retry_in_s=delay)

    def _boot_retries(self) -> None:
        assert self.cb is not None
        for slot in [s for s in self.boot.failures if not self.boot.waiting(s)]:
            if self.cb.slot(slot).state is ProcState.READY:
                self.boot.booted(slot)
        if not self.stopping:
            for respawn in self.boot.due(self.core_generation):
                respawn()

    def _check_heartbeats(self) -> None:
        assert self.cb is not None
        now = time.monotonic_ns()
        timeout_ns = self.cfg.processes.heartbeat_timeout_s * 1e9
        for child in list(self.children.values()):
            slot = self.cb.slot(child.index)
            beat = slot.heartbeat_ns
            if beat == 0:
                # Not yet beating: allow boot time (numba warm-up, LMDB open).
                if time.monotonic() - child.started < self.cfg.processes.heartbeat_timeout_s:
                    continue
            elif now - beat < timeout_ns:
                continue
            sig = signal.SIGKILL if child.abort_sent else signal.SIGABRT
            log.error("arbiter.heartbeat_timeout", role=child.role.name.lower(), pid=child.pid,
                      signal=sig.name)
            child.abort_sent = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, sig)

    def _all_ready(self) -> bool:
        assert self.cb is not None
        states = {c.role: [] for c in self.children.values()}  # type: dict[Role, list[bool]]
        for c in self.children.values():
            states[c.role].append(self.cb.slot(c.index).state is ProcState.READY)
        return (any(states.get(Role.WORKER, [])) and all(states.get(Role.ACCEPTOR, [False]))
                and (self.workers_index or all(states.get(Role.INDEX_WRITER, [False]))))

    def _notify_systemd(self) -> None:
        assert self.cb is not None
        if self.stopping:
            return
        healthy = self._all_ready()
        if healthy and not self.ready_sent:
            self.ready_sent = True
            self.cb.global_area.appliance_state = ApplianceState.READY
            systemd.notify(f"READY=1\nSTATUS={self._status_line()}")
            log.info("arbiter.ready", port=self._port())
        interval = systemd.watchdog_interval_s()
        if interval and healthy and time.monotonic() - self._last_watchdog >= interval:
            self._last_watchdog = time.monotonic()
            systemd.notify("WATCHDOG=1")

    def _port(self) -> int:
        return self.listener.getsockname()[1] if self.listener else 0

    def _tls_port(self) -> int | None:
        return self.tls_listener.getsockname()[1] if self.tls_listener else None

    def _status_line(self) -> str:
        workers = sum(1 for c in self.children.values() if c.role is Role.WORKER)
        return (f"accepting associations on port {self._port()} as "
                f"{self.cfg.network.ae_title}, {workers} workers")

    # ---- stopping ------------------------------------------------------------------------

    def _graceful(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        assert self.cb is not None
        self.cb.global_area.appliance_state = ApplianceState.DRAINING
        systemd.notify("STOPPING=1\nSTATUS=draining associations")
        log.info("arbiter.stopping", mode="graceful")
        grace = self.cfg.processes.graceful_timeout_s
        # Order: the acceptor drains its associations; then workers finish what they hold;
        # then the index writer commits the last batch; the exporter goes last.
        self._stop_role(Role.ACCEPTOR, grace + 5)
        self._stop_role(Role.WORKER, 10)
        self._stop_role(Role.INDEX_WRITER, 10)
        self._stop_role(Role.EXPORTER, 5)

    def _fast(self) -> None:
        self.stopping = True
        systemd.notify("STOPPING=1\nSTATUS=stopping now")
        log.info("arbiter.stopping", mode="fast")
        self._kill_all(signal.SIGKILL)
        self._wait_children(5.0)

    def _hup(self) -> None:
        """Reload (appliance/reload.py): validate here first, then let every child reload."""
        if self.stopping:
            return
        if self.source is None:
            log.warning("arbiter.hup_ignored", reason="no configuration source to reload")
            return
        systemd.notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}\n"
                       "STATUS=reloading configuration")
        new = reload.reload_from(self.source, self.cfg)
        if new is not None:
            self.cfg = new
            audit.emit(audit.AuditEvent.CONFIG_RELOADED, config=self._config_path(),
                       generation=reload.generation(),
                       ae_titles=[ae.ae_title for ae in new.ae_table])
            for pid in list(self.children):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGHUP)
        else:
            audit.emit(audit.AuditEvent.CONFIG_RELOADED, audit.MINOR_FAILURE,
                       config=self._config_path(), error="configuration not loaded")
        systemd.notify(f"READY=1\nSTATUS={self._status_line()}")

    def _stop_role(self, role: Role, timeout_s: float) -> None:
        pids = [c.pid for c in self.children.values() if c.role is role]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while any(c.role is role for c in self.children.values()):
            if time.monotonic() > deadline:
                log.warning("arbiter.stop_timeout", role=role.name.lower())
                for pid in [c.pid for c in self.children.values() if c.role is role]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 5
            self._reap_blocking(0.05)

    def _reap_blocking(self, wait_s: float) -> None:
        time.sleep(wait_s)
        self._reap()

    def _kill_all(self, sig: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _wait_children(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.children and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid:
                self.children.pop(pid, None)
            else:
                time.sleep(0.05)


def serve(cfg: Config, source: ConfigSource | None = None) -> int:
    """Run the appliance until it stops; ``source`` is where ``cfg`` came from (for SIGHUP)."""
    configure_logging(cfg.log_level, role="arbiter")
    reload.install_with_defaults(source, cfg, "arbiter")  # Arbiter's own handler replaces it
    try:
        audit.configure(cfg, "arbiter")
    except OSError as exc:
        log.error("audit.unavailable", path=cfg.audit.path, error=str(exc))
        return EXIT_BOOT_FAILED
    try:
        return Arbiter(cfg, source).run()
    except ConfigError as exc:  # [tls] files that exist but do not load
        log.error("arbiter.boot_failed", error=str(exc))
        return EXIT_BOOT_FAILED
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            log.error("arbiter.boot_failed", error=f"port {cfg.network.port} in use"
                      + (f" or [tls] port {cfg.tls.port}" if cfg.tls.enabled else ""))
            return EXIT_BOOT_FAILED
        raise
