"""kill -9 in a loop under load, with a checker of every acknowledged SOP Instance UID.

Three clients (our SCU, appliance/scu.py, one thread each; tests/system/ack_checker.py) store
small CT objects without pause, reconnecting whenever their association breaks, and record
every SOP Instance UID answered with Success. Meanwhile the test SIGKILLs a random process of
a random role, at least ``KILLS`` times:

  worker        the arbiter replaces it (same slot, next generation) while the others go on;
  acceptor,     the arbiter restarts acceptor, workers and index writer in place (their ring
  index writer  positions cannot be recovered; appliance/arbiter.py), keeping the listening
                socket: the arbiter's pid stays, the role comes back with a new pid;
  arbiter       the orphans notice (getppid) and exit, systemd's KillMode=mixed SIGKILLs any
                straggler, and systemd restarts the whole.

The test plays systemd (Restart=on-failure): whenever the arbiter has exited it restarts the
appliance on the same data directory; only an arbiter kill may make it exit. At the end,
after a clean stop: every acknowledged UID is in the index, its file exists with the indexed
size and parses with the same UID; ``pacs db verify`` finds no record without its file and no
size mismatch (files written but never indexed may remain: they were never acknowledged, and
``--repair`` moves them aside); no temp file remains.

Durability ``os``: a kill -9 is our crash, not a power loss, and the page cache survives it,
so ``os`` is the weakest mode that must pass; ``batch`` and ``fsync`` only add flushes to the
same ordering (README "Durability modes"). In ``os`` mode the two workers commit their own
index records (workers/inline_index.py: a worker may die holding LMDB's write lock) and no
index writer runs, so its kill is left out here; tests/system/test_core_restart.py kills it
in ``batch`` mode.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable

import pytest

from tests.conftest import Appliance, group_members, temp_files, wait_until
from tests.system.ack_checker import Storer, acked_count, acked_problems, assert_verify_clean

pytestmark = pytest.mark.system

KILLS = 20
CLIENTS = 3
ROLES = ("arbiter", "acceptor", "worker", "index_writer")
# The crash-loop guard would halt after 5 core restarts a minute: this loop makes more on
# purpose (tests/system/test_core_restart.py tests the guard).
CONFIG = """\
[processes]
graceful_timeout_s = 1.0
core_restart_limit = 1000
[storage]
min_free_bytes = 0
"""


# --------------------------------------------------------------------------- systemd's part


def _restart_if_down(app: Appliance) -> bool:
    """What systemd does with Restart=on-failure and KillMode=mixed: once the main process
    has exited, SIGKILL what is left of the unit and start it again on the same data."""
    assert app.proc is not None
    if app.proc.poll() is None:
        return False
    pgid = app.proc.pid
    with contextlib.suppress(AssertionError, pytest.fail.Exception):
        wait_until(lambda: not group_members(pgid), 1, "orphans to notice and exit")
    for pid in group_members(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not group_members(pgid), 10, "the old process group to be gone")
    app.start()
    return True


def _live_pid(app: Appliance, role: str, rng: random.Random) -> tuple[int, int]:
    """(pid, slot) of a running process of ``role`` (a random worker)."""
    if role == "arbiter":
        assert app.proc is not None
        return app.proc.pid, 0
    procs = [p for p in app.processes(role) if p["state"] == "ready"]
    assert procs, f"no ready {role}: {app.processes()}"
    p = rng.choice(procs)
    return int(p["pid"]), int(p["slot"])


def _kill(app: Appliance, role: str, rng: random.Random) -> str:
    """SIGKILL one process of ``role`` and wait for the consequence; returns what happened."""
    pid, slot = _live_pid(app, role, rng)
    assert app.proc is not None
    arbiter = app.proc.pid
    os.kill(pid, signal.SIGKILL)
    if role == "arbiter":
        rc = app.wait_exit(15)
        assert rc == -signal.SIGKILL, f"killing the arbiter: exit {rc}"
        _restart_if_down(app)
        return "arbiter killed, appliance restarted"

    def replaced() -> bool:
        now = [p for p in app.processes(role) if p["slot"] == slot]
        return bool(now) and now[0]["pid"] != pid and now[0]["state"] == "ready"

    wait_until(lambda: not app.running() or (replaced() and app.get("/readyz")[0] == 200), 20,
               f"{role} slot {slot} to be replaced by the arbiter")
    assert app.running(), f"the arbiter must survive the {role}'s death\n{app.logs()}"
    assert app.status()["arbiter_pid"] == arbiter
    return f"{role} replaced" if role == "worker" else f"{role} killed, core set restarted"


# --------------------------------------------------------------------------- the test


def test_random_kill9_loop_loses_nothing_acknowledged(
    appliance_factory: Callable[..., Appliance],
) -> None:
    rng = random.Random(int(os.environ.get("PACS_KILL_SEED", "20261128")))
    app = appliance_factory(workers=2, durability="os", config=CONFIG).start()
    stop = threading.Event()
    clients = [Storer(app, f"K{i}", 700 + i, stop).start() for i in range(CLIENTS)]
    history: list[str] = []
    # Every role at least once, in random order, then random roles.
    roles = [r for r in ROLES if r == "arbiter" or app.processes(r)]
    assert "worker" in roles and "acceptor" in roles, app.processes()
    plan = rng.sample(roles, len(roles)) + [rng.choice(roles) for _ in range(KILLS - len(roles))]
    started = time.monotonic()
    try:
        for k, role in enumerate(plan):
            _restart_if_down(app)
            before = acked_count(clients)
            # Let load build up: a few acknowledgements since the last kill (bounded wait).
            deadline = time.monotonic() + 3.0
            while acked_count(clients) < before + 5:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.3))
            t0 = time.monotonic()
            history.append(f"#{k} {_kill(app, role, rng)} ({time.monotonic() - t0:.1f} s)")
        _restart_if_down(app)
        # After the last kill the appliance stores again.
        before = acked_count(clients)
        wait_until(lambda: acked_count(clients) >= before + 20, 20,
                   "stores to succeed after the last kill")
    finally:
        stop.set()
        ended = [c.join(30) for c in clients]
    elapsed = time.monotonic() - started
    acked = [uid for c in clients for uid in c.acked]
    summary = (f"{len(acked)} acknowledged, {sum(c.failed for c in clients)} refused, "
               f"{sum(c.broken for c in clients)} broken associations in {elapsed:.1f} s; "
               + "; ".join(history))
    print(summary)
    assert all(ended), summary
    assert len(history) >= KILLS
    assert len(acked) == len(set(acked))

    app.stop()  # a clean stop: exit 0
    assert temp_files(app.data) == [], temp_files(app.data)
    problems = acked_problems(app, acked)
    assert not problems, f"{len(problems)} acknowledged instance(s) lost:\n" + "\n".join(
        problems[:40]) + "\n" + summary
    report = assert_verify_clean(app, len(acked))  # nothing half-indexed
    print(f"after the loop: {report['instances']} indexed, {report['files']} files, "
          f"{len(report['unindexed'])} never indexed")
