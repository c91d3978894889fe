"""What the arbiter knows of each child it forks: its record, its name in ps/top, how it
ended, what its end means for the metrics, and what it does before ``os._exit``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from appliance import audit
from appliance.ipc.control import EXIT_BOOT_FAILED, EXIT_STATE_CORRUPT, Role


@dataclass
class Child:
    role: Role
    index: int  # control block slot
    pid: int
    generation: int
    started: float = field(default_factory=time.monotonic)
    abort_sent: bool = False


def exit_cause(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name
        return f"{name} (probably OOM)" if sig == signal.SIGKILL else name
    code = os.WEXITSTATUS(status)
    return {0: "exit 0", EXIT_BOOT_FAILED: f"exit {EXIT_BOOT_FAILED} (boot failed)",
            EXIT_STATE_CORRUPT: f"exit {EXIT_STATE_CORRUPT} (state corrupt)"}.get(
        code, f"exit {code}")


def comm_name(role: Role, name: str, worker: int) -> str:
    """The child's name in ps/top/perf: ``pacs-acceptor``, ``pacs-worker-0``, ``pacs-indexer``
    (Linux keeps 15 bytes of a comm; ``pacs-index_writer`` would be cut mid-word)."""
    if role is Role.WORKER:
        return f"pacs-worker-{worker}"
    return f"pacs-{'indexer' if role is Role.INDEX_WRITER else name}"


def set_comm(comm: str) -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/comm").write_text(comm[:15])


def child_teardown() -> None:
    """Before os._exit in a child (which skips atexit): flush spans, close the audit file."""
    import sys
    if "metrics.tracing" in sys.modules:  # imported by the roles that trace
        sys.modules["metrics.tracing"].shutdown()
    audit.close()


# ---- Prometheus multiprocess mode ------------------------------------------------------


def prepare_metrics_dir(data: Path) -> None:
    """prometheus-client multiprocess mode needs a directory that starts empty on every run:
    systemd's RuntimeDirectory= provides one through $PROMETHEUS_MULTIPROC_DIR; otherwise we
    use <data>/run/prometheus and empty it. Set before any child imports prometheus_client."""
    path = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or data / "run" / "prometheus")
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


def metrics_child_died(pid: int, role: Role, status: int, *, replaced: bool = True) -> None:
    """Merge a dead child's live gauges out (gunicorn's recipe) and count worker restarts
    (``replaced``: not for workers a core restart stopped on purpose)."""
    from prometheus_client import multiprocess

    from metrics import registry as m

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
    if role is Role.WORKER and replaced:
        if os.WIFSIGNALED(status):
            cause = "sigkill" if os.WTERMSIG(status) == signal.SIGKILL else "signal"
        else:
            cause = "boot_failed" if os.WEXITSTATUS(status) == EXIT_BOOT_FAILED else "exit"
        m.WORKER_RESTARTS.labels(cause).inc()
