"""The arbiter restarts acceptor, workers and index writer in place (appliance/arbiter.py).

kill -9 of the acceptor or of the index writer, under load from two storers
(tests/system/ack_checker.py): the arbiter keeps its pid and its listening sockets, stops and
reaps the rest of the core set, and forks all three roles again with the next generation.
Checked each time: a new pid for the role, the arbiter still the same process, a connection
made while the new set boots is served (it waited in the backlog), stores succeed again
within seconds, readiness came back (``arbiter.ready`` a second time), the restart is logged
and counted; after a clean stop, every acknowledged SOP Instance UID is on disk and in the
index and ``pacs db verify`` finds nothing half-indexed. Then the crash-loop guard: more
restarts than ``[processes] core_restart_limit`` within the window halt the appliance with
exit 1. And the TLS port: still the same socket after a restart, and the new acceptor serves
the certificate a SIGHUP loaded, not the one from boot.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.negotiation.sop_classes import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION
from appliance.scu import SCU, ProposedContext
from appliance.tls import client_context
from tests.conftest import Appliance, _finish, temp_files, wait_until
from tests.fixtures.make_datasets import Hierarchy, new_uid
from tests.interop.test_tls import Pki, TlsAppliance
from tests.interop.test_tls import pki as pki  # noqa: PLC0414 - the module-scoped fixture
from tests.system.ack_checker import (
    CALLING_AE,
    CT,
    EXPLICIT_VR_LE,
    Storer,
    acked_count,
    acked_problems,
    assert_verify_clean,
    ct_dataset,
)

pytestmark = pytest.mark.system

CONFIG = """\
[processes]
graceful_timeout_s = 1.0
[storage]
min_free_bytes = 0
"""
RESTART_TIMEOUT_S = 20.0  # the new set is ready in about a second; a loaded CI box is slower


def _one(app: Appliance, role: str) -> dict[str, Any]:
    procs = app.processes(role)
    assert len(procs) == 1, procs
    return procs[0]


def _zombie_or_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _kill_and_wait_restart(app: Appliance, role: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """SIGKILL the process of ``role``; return (old, new) /status entries of the role once the
    arbiter has forked its successor (the acceptor's slot is claimed last, so by then the old
    set is gone)."""
    old = _one(app, role)
    acceptor_gen = _one(app, "acceptor")["generation"]
    os.kill(old["pid"], signal.SIGKILL)
    wait_until(lambda: _zombie_or_gone(old["pid"]), 5, f"the {role} to die")
    wait_until(lambda: not app.running() or _one(app, "acceptor")["generation"] > acceptor_gen,
               RESTART_TIMEOUT_S, "the arbiter to fork a new acceptor", interval_s=0.01)
    assert app.running(), f"the arbiter exited after the {role}'s death\n{app.logs()}"
    return old, _one(app, role)


def _store_now(app: Appliance, seed: int) -> str:
    """One association, opened at once (the new acceptor may not listen yet: the connection
    waits in the arbiter's backlog), with a C-ECHO and a C-STORE; the stored UID."""
    rng = random.Random(seed)
    uid, body = ct_dataset(rng, Hierarchy("NOW", new_uid(rng), new_uid(rng)), 1)
    with SCU("127.0.0.1", app.port, calling_ae=CALLING_AE, called_ae=app.ae_title,
             timeout_s=RESTART_TIMEOUT_S,
             contexts=[ProposedContext(CT, (EXPLICIT_VR_LE,)),
                       ProposedContext(VERIFICATION, (IMPLICIT_VR_LITTLE_ENDIAN,))]) as scu:
        assert scu.echo() == 0x0000
        assert scu.store(body, CT, uid, EXPLICIT_VR_LE).status == 0x0000
    return uid


def _metric(app: Appliance, sample: str) -> float:
    code, body = app.get("/metrics")
    assert code == 200
    for line in body.decode().splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def _ready_events(app: Appliance) -> int:
    return app.stdout_path.read_text().count('"event": "arbiter.ready"')


@pytest.mark.parametrize("role", ["acceptor", "index_writer"])
def test_kill9_restarts_the_core_set_in_place(
    appliance_factory: Callable[..., Appliance], role: str
) -> None:
    # In `os` mode the workers index and there is no index writer to kill (inline_index).
    durability = "os" if role == "acceptor" else "batch"
    app = appliance_factory(workers=2, durability=durability, config=CONFIG).start()
    assert app.proc is not None
    arbiter = app.proc.pid
    stop = threading.Event()
    storers = [Storer(app, f"C{i}", 900 + i, stop).start() for i in range(2)]
    extra: list[str] = []
    try:
        wait_until(lambda: acked_count(storers) >= 20, 30, "stores before the kill")
        workers_before = {w["slot"]: w for w in app.processes("worker")}
        readies = _ready_events(app)
        t0 = time.monotonic()
        old, new = _kill_and_wait_restart(app, role)
        extra.append(_store_now(app, 1))  # a connection made while the new set boots
        served_s = time.monotonic() - t0
        before = acked_count(storers)
        wait_until(lambda: acked_count(storers) >= before + 20, RESTART_TIMEOUT_S,
                   "the storers' stores to succeed again")

        assert app.running() and app.status()["arbiter_pid"] == arbiter == app.proc.pid
        assert new["pid"] != old["pid"] and new["generation"] == old["generation"] + 1, new
        for w in app.processes("worker"):  # the workers were restarted with the set
            assert w["generation"] == workers_before[w["slot"]]["generation"] + 1, w
            assert w["pid"] != workers_before[w["slot"]]["pid"], w
        assert app.get("/readyz")[0] == 200
        # The arbiter marks the appliance ready again (READY=1, STATUS) on its next tick.
        wait_until(lambda: _ready_events(app) == readies + 1, 5, "arbiter.ready once more")
        log = app.stdout_path.read_text()
        assert '"event": "arbiter.core_restarted"' in log and '"died": "' + role + '"' in log
        assert _metric(app, f'pacs_core_restarts_total{{role="{role}"}}') == 1.0
        print(f"{role} killed: new set served a new association after {served_s:.2f} s")
    finally:
        stop.set()
        ended = [s.join(30) for s in storers]
    assert all(ended)
    acked = [uid for s in storers for uid in s.acked] + extra
    broken = sum(s.broken for s in storers)
    print(f"{len(acked)} acknowledged, {broken} broken associations")

    app.stop()  # exit 0: the arbiter was never restarted, and stops cleanly
    assert temp_files(app.data) == [], temp_files(app.data)
    problems = acked_problems(app, acked)
    assert not problems, f"{len(problems)} acknowledged instance(s) lost:\n" + "\n".join(
        problems[:40])
    assert_verify_clean(app, len(acked))


def test_crash_loop_guard_halts(appliance_factory: Callable[..., Appliance]) -> None:
    config = CONFIG.replace("[processes]\n", "[processes]\ncore_restart_limit = 2\n"
                                             "core_restart_window_s = 600.0\n")
    app = appliance_factory(workers=1, config=config).start()
    for _ in range(2):  # within the limit: restarted in place
        _kill_and_wait_restart(app, "acceptor")
        app.wait_ready(RESTART_TIMEOUT_S)
    os.kill(_one(app, "acceptor")["pid"], signal.SIGKILL)  # one more within the window
    rc = app.wait_exit(30)
    assert rc == 1, f"exit {rc}\n{app.logs()}"
    log = app.stdout_path.read_text()
    assert log.count('"event": "arbiter.core_restarted"') == 2
    assert '"event": "arbiter.halting"' in log and "2 core restarts within 600 s" in log


def _served_fingerprint(port: int, ca: Path) -> str:
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def test_tls_port_survives_and_uses_the_reloaded_certificate(pki: Pki, tmp_path: Path) -> None:
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copyfile(pki.server_cert, cert)
    shutil.copyfile(pki.server_key, key)
    renewed_cert, renewed_key = pki.issue("pacs-server-core-restart")
    app = TlsAppliance(tmp_path / "app", pki, verify_client=False, cert=cert, key=key)
    try:
        app.start()
        old_fp = _served_fingerprint(app.tls_port, pki.ca)
        # A renewal and a SIGHUP: the live acceptor's context takes the new files.
        for src, dst in ((renewed_key, key), (renewed_cert, cert)):
            shutil.copyfile(src, dst.with_suffix(".new"))
            os.replace(dst.with_suffix(".new"), dst)
        app.signal(signal.SIGHUP)
        wait_until(lambda: _served_fingerprint(app.tls_port, pki.ca) != old_fp, 20,
                   "the renewed certificate", interval_s=0.2)
        new_fp = _served_fingerprint(app.tls_port, pki.ca)

        _kill_and_wait_restart(app, "acceptor")
        # Straight away, on the same TLS port: the handshake waits in the backlog.
        scu = SCU("127.0.0.1", app.tls_port, called_ae=app.ae_title,
                  contexts=[ProposedContext(VERIFICATION, (IMPLICIT_VR_LITTLE_ENDIAN,))],
                  timeout_s=RESTART_TIMEOUT_S, ssl_context=client_context(ca_file=str(pki.ca)))
        with scu:
            assert scu.echo() == 0x0000
        assert _served_fingerprint(app.tls_port, pki.ca) == new_fp  # not the boot-time one
        assert app.running()
    finally:
        _finish(app)
