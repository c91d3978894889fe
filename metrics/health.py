"""Liveness and readiness, computed from the control block alone (no calls into the roles).

/livez: the arbiter's heartbeat is fresh, and the acceptor and the index writer are each
beating or still booting (forked, not yet READY: the arbiter's watchdog gives a booting child
heartbeat_timeout_s before it kills it, so "booting" cannot hide a hang for longer than a
stale heartbeat would), so a core restart in progress is not reported as dead.
/readyz: live, the appliance is not draining, the acceptor listens, at least one worker is
ready, the index is writable and the data volume has space.
When the workers commit their own index records (``workers_index``: one worker, or `os`
durability) no index writer runs: there is no index_writer_heartbeat check, and the index is
writable when a worker is ready (a worker opens its LMDB writer before it reports READY).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from appliance.ipc.control import ApplianceState, ControlBlock, ProcState, Role, SlotState

_ROLE_NAMES = {
    Role.ARBITER: "arbiter",
    Role.ACCEPTOR: "acceptor",
    Role.WORKER: "worker",
    Role.INDEX_WRITER: "index_writer",
    Role.EXPORTER: "exporter",
}


@dataclass
class Health:
    ok: bool
    checks: dict[str, bool] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        failed = [k for k, v in self.checks.items() if not v]
        return {"status": "ok" if self.ok else "fail", "checks": self.checks, "failed": failed}


def _fresh(s: SlotState, now_ns: int, timeout_s: float) -> bool:
    return s.pid > 0 and now_ns - s.heartbeat_ns < timeout_s * 1e9


def _booting(s: SlotState) -> bool:
    return s.pid > 0 and s.state is ProcState.STARTING


def liveness(cb: ControlBlock, heartbeat_timeout_s: float) -> Health:
    now = time.monotonic_ns()
    slots = [s for s in cb.snapshot() if s.role is not Role.NONE]
    checks = {"arbiter_heartbeat": any(
        s.role is Role.ARBITER and _fresh(s, now, heartbeat_timeout_s) for s in slots)}
    roles = [Role.ACCEPTOR]
    if not cb.global_area.workers_index:
        roles.append(Role.INDEX_WRITER)
    for role in roles:
        checks[f"{_ROLE_NAMES[role]}_heartbeat"] = any(
            _fresh(s, now, heartbeat_timeout_s) or _booting(s) for s in slots if s.role is role
        )
    return Health(all(checks.values()), checks)


def readiness(cb: ControlBlock, heartbeat_timeout_s: float) -> Health:
    live = liveness(cb, heartbeat_timeout_s)
    g = cb.global_area.snapshot()
    slots = [s for s in cb.snapshot() if s.role is not Role.NONE]

    def ready(role: Role) -> bool:
        return any(s.role is role and s.state is ProcState.READY for s in slots)

    checks = dict(live.checks)
    checks["not_draining"] = g.appliance_state is not ApplianceState.DRAINING
    checks["listening"] = ready(Role.ACCEPTOR)
    checks["worker_ready"] = ready(Role.WORKER)
    checks["index_writable"] = ready(Role.WORKER if g.workers_index else Role.INDEX_WRITER)
    checks["disk_space"] = g.disk_ok
    return Health(all(checks.values()), checks)


def status(cb: ControlBlock) -> dict[str, Any]:
    g = cb.global_area.snapshot()
    procs = []
    slots = cb.snapshot()
    # Workers are numbered from 0 (their ring slot), whatever their control-block index.
    first_worker = min((s.index for s in slots if s.role is Role.WORKER), default=0)
    for s in slots:
        if s.role is Role.NONE or s.role is Role.ARBITER:
            continue
        procs.append({
            "role": _ROLE_NAMES[s.role],
            "slot": s.index - first_worker if s.role is Role.WORKER else 0,
            "pid": s.pid,
            "state": s.state.name.lower(),
            "generation": s.generation,
            "in_flight": s.in_flight,
            "associations_active": s.associations_active,
        })
    return {
        "arbiter_pid": g.arbiter_pid,
        "appliance_state": g.appliance_state.name.lower(),
        "disk_free_bytes": g.disk_free_bytes,
        "processes": procs,
    }
