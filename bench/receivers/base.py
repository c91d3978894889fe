"""What every benchmarked receiver (C-STORE SCP) has in common: a subprocess tree on free
ports with a fresh, empty store per run, a DICOM readiness check, a count of what arrived.

THEORY OF OPERATION
-------------------
``start(run_dir)`` makes ``run_dir/store`` (empty), picks free ports, launches ``command()``
in its own session (so ``stop`` can signal exactly the group we created, by its id) with its
output in ``run_dir/receiver.log``, and returns once ``ready()`` holds: by default one
association with a C-ECHO (PS3.7 §9.1.5) through our own SCU, which proves the receiver is
negotiating, not merely listening. ``count()`` is called while the receiver still runs (Orthanc
answers it over HTTP); ``stop()`` sends SIGTERM to the group, then SIGKILL after a grace
period. ``available()`` says why a receiver cannot run here (None = it can).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import ClassVar

from appliance.scu import SCU, ProposedContext
from bench.procstat import group_members

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
CALLED_AE = "PACS"
CALLING_AE = "BENCH"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class ReceiverError(RuntimeError):
    """A receiver could not start, answer or stop."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def echo_ok(port: int, called_ae: str = CALLED_AE, timeout_s: float = 2.0) -> bool:
    """One association, one C-ECHO with Success status."""
    try:
        with SCU("127.0.0.1", port, calling_ae=CALLING_AE, called_ae=called_ae,
                 contexts=[ProposedContext(VERIFICATION, (IMPLICIT_LE,))],
                 timeout_s=timeout_s) as scu:  # fmt: skip
            return scu.echo() == 0
    except Exception:  # noqa: BLE001 - not ready yet, whatever the reason
        return False


def count_files(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file()) if root.exists() else 0


class Receiver:
    """Base class: subclasses set ``name``/``family`` and implement ``command``."""

    family: ClassVar[str] = "receiver"
    called_ae: str = CALLED_AE

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.run_dir = Path()
        self.store = Path()
        self.proc: subprocess.Popen[bytes] | None = None
        self.cwd: Path | None = None

    # -- to override

    def available(self) -> str | None:
        """Why this receiver cannot run here, or None."""
        return None

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        # DCMTK-based receivers (storescp, Orthanc) leave Nagle on without it and stall ~40 ms
        # per response (README, "the Nagle trap"); every receiver gets it, the others ignore it.
        return dict(os.environ, TCP_NODELAY="1")

    def prepare(self) -> None:
        """Ports, config files: called after ``store`` exists, before ``command``."""
        self.port = free_port()

    def ready(self) -> bool:
        return echo_ok(self.port, self.called_ae)

    def count(self) -> int:
        """Instances stored so far (files in the store, unless the receiver says better)."""
        return count_files(self.store)

    def describe(self) -> dict[str, object]:
        """Settings worth recording in the results (version, mode, workers, ...)."""
        return {"family": self.family}

    # -- lifecycle

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ReceiverError(f"{self.name} is not running")
        return self.proc.pid

    def start(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.store = run_dir / "store"
        self.store.mkdir(parents=True)
        self.prepare()
        log = run_dir / "receiver.log"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env(), cwd=self.cwd, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + READY_TIMEOUT_S
        try:
            while not self.ready():
                rc = self.proc.poll()
                if rc is not None:
                    raise ReceiverError(
                        f"{self.name} exited with {rc} before ready: {_tail(log)}")
                if time.monotonic() > deadline:
                    raise ReceiverError(
                        f"{self.name} not ready after {READY_TIMEOUT_S:.0f} s")
                time.sleep(0.1)
        except BaseException:  # not ready, or the harness is stopping (Ctrl-C, SIGTERM)
            self.stop()
            raise

    def stop(self) -> int | None:
        """SIGTERM to the group we created, SIGKILL after ``STOP_TIMEOUT_S``; exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            rc: int | None = proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            rc = None
        # Stragglers (forked children): while any member lives, the group id cannot be reused.
        if rc is None or group_members(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if rc is None:
            rc = proc.wait()
        return rc


def _tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
