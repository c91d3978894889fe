"""The exporter process: management HTTP (/livez, /readyz, /status) on its own address.

It only reads the shared control block, so a scrape never touches the acceptor's event loop.
It also samples the data volume's free space into the control block (readiness input) every
second against the free-space floor (metrics/disk.py); /readyz then names the floor.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from appliance.ipc.control import ControlBlock, ProcState
from metrics import registry as m
from metrics.disk import DiskFloor, FullLatch
from metrics.health import liveness, readiness, status

log = structlog.get_logger(component="exporter")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        srv = self.server
        path = self.path.split("?", 1)[0]
        if path == "/livez":
            h = liveness(srv.cb, srv.heartbeat_timeout_s)
            self._json(200 if h.ok else 503, h.body())
        elif path == "/readyz":
            h = readiness(srv.cb, srv.heartbeat_timeout_s)
            body = h.body()
            body["disk"] = {"free_bytes": srv.cb.global_area.disk_free_bytes,
                            "floor_bytes": srv.floor_bytes}
            self._json(200 if h.ok else 503, body)
        elif path == "/status":
            self._json(200, status(srv.cb))
        elif path == "/metrics":
            self._metrics()
        else:
            self._json(404, {"error": "not found"})

    def _metrics(self) -> None:
        """Every process's samples merged (prometheus-client multiprocess mode)."""
        srv = self.server
        m.READY.set(1 if readiness(srv.cb, srv.heartbeat_timeout_s).ok else 0)
        registry = CollectorRegistry()
        if m.multiprocess_enabled():
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        data = generate_latest(registry if m.multiprocess_enabled() else REGISTRY)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _json(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return  # access logs would drown journald; Prometheus scrapes every few seconds


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    cb: ControlBlock
    heartbeat_timeout_s: float
    floor_bytes: int = 0


_DISK_SAMPLE_S = 1.0


def _disk_sampler(srv: _Server, data_dir: Path, floor: DiskFloor,
                  stop: threading.Event) -> None:
    cb = srv.cb
    g = cb.global_area
    was_ok, was_full = True, False
    latch = FullLatch()
    while not stop.is_set():
        state = floor.sample()
        srv.floor_bytes = state.floor_bytes
        full = latch.full(g.disk_full_ns, g.disk_full_until_free, state.free_bytes)
        g.set_disk(state.ok and not full, state.free_bytes)
        m.DISK_FREE.set(state.free_bytes)
        if state.ok != was_ok:
            (log.info if state.ok else log.error)(
                "disk.floor_recovered" if state.ok else "disk.below_floor",
                free_bytes=state.free_bytes, floor_bytes=state.floor_bytes)
            was_ok = state.ok
        if full != was_full:  # a write failed with ENOSPC (metrics/disk.py FullLatch)
            if full:
                log.error("disk.full", free_bytes=state.free_bytes,
                          ready_above_free_bytes=latch.until_free)
            else:
                log.info("disk.space_returned", free_bytes=state.free_bytes)
            was_full = full
        try:
            index_file = data_dir / "index" / "data.mdb"
            if index_file.exists():
                m.INDEX_SIZE.set(index_file.stat().st_size)
        except OSError:
            pass  # the index file is being replaced: the next sample has it
        stop.wait(_DISK_SAMPLE_S)


def _version() -> str:
    try:
        return importlib.metadata.version("dicom-ingest-appliance")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def run_exporter(
    cb: ControlBlock, slot_index: int, host: str, port: int, data_dir: Path,
    heartbeat_timeout_s: float, floor: DiskFloor | None = None,
) -> int:
    """Entry point in the forked child. ``floor``: the free-space floor (none: 0 bytes)."""
    me = cb.slot(slot_index)
    srv = _Server((host, port), _Handler)
    srv.cb = cb
    srv.heartbeat_timeout_s = heartbeat_timeout_s
    stop = threading.Event()
    floor = floor or DiskFloor(data_dir)
    threading.Thread(target=_disk_sampler, args=(srv, data_dir, floor, stop),
                     daemon=True).start()

    def _term(_signo: int, _frame: object) -> None:
        stop.set()
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ppid = os.getppid()

    def _beat() -> None:
        while not stop.is_set():
            me.heartbeat()
            if os.getppid() != ppid:
                _term(0, None)
            stop.wait(0.5)

    threading.Thread(target=_beat, daemon=True).start()
    m.BUILD_INFO.labels(_version()).set(1)
    me.state = ProcState.READY
    log.info("exporter.listening", address=f"{host}:{srv.server_address[1]}")
    srv.serve_forever(poll_interval=0.5)
    srv.server_close()
    return 0
