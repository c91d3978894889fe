"""The one client every receiver gets: DCMTK ``storescu``, and the C-ECHO probes.

``send`` runs one ``storescu -xe -R -nh +sd +r`` per group of folders, all at once (4 groups
= 4 parallel associations), with ``TCP_NODELAY=1`` in its environment (Debian's DCMTK leaves
Nagle on otherwise; see the README's "Nagle trap"). Wall time runs from the first start to
the last exit; the client's CPU comes from ``wait4`` on each storescu (its own rusage).

C-ECHO (PS3.7 §9.1.5): ``echoscu --repeat N`` on one association, timed against
``--repeat 1`` so process start and association set-up cancel out; and associations per
second, one C-ECHO each, through our own SCU (``appliance/scu.py``).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from appliance.scu import SCU, ProposedContext
from bench.packages import dcmtk
from bench.receivers.base import CALLING_AE, IMPLICIT_LE, VERIFICATION

_MAX_ECHO_REPEAT = 1_000_000


def dcmtk_env() -> dict[str, str]:
    return dict(os.environ, TCP_NODELAY="1")


@dataclass(slots=True)
class SendResult:
    wall_s: float
    client_cpu_s: float
    exit_codes: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def storescu_argv(port: int, folders: Sequence[Path], called_ae: str) -> list[str]:
    return [dcmtk("storescu"), "-xe", "-R", "-nh", "+sd", "+r", "-aet", CALLING_AE,
            "-aec", called_ae, "127.0.0.1", str(port), *map(str, folders)]


def send(
    port: int, groups: Sequence[Sequence[Path]], called_ae: str, log_dir: Path
) -> SendResult:
    """One storescu per group of folders, all in parallel; see the module docstring."""
    logs = [log_dir / f"storescu{i}.log" for i in range(len(groups))]
    handles = [open(log, "wb") for log in logs]  # noqa: SIM115 - closed below
    try:
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen(storescu_argv(port, group, called_ae), stdout=fh,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=dcmtk_env())
            for group, fh in zip(groups, handles, strict=True)
        ]  # fmt: skip
        cpu = 0.0
        codes = []
        for proc in procs:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            codes.append(proc.returncode)
            cpu += usage.ru_utime + usage.ru_stime
        wall = time.perf_counter() - t0
    finally:
        for fh in handles:
            fh.close()
    errors = []
    for log, code in zip(logs, codes, strict=True):
        lines = log.read_text(errors="replace").splitlines()
        bad = [ln for ln in lines if ln.startswith(("E:", "F:"))]
        if code != 0 or bad:
            errors.append(f"{log.name}: exit {code}; " + " | ".join((bad or lines[-1:])[:3]))
    return SendResult(wall, cpu, codes, errors)


def _timed(argv: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    cp = subprocess.run(argv, capture_output=True, env=dcmtk_env(), timeout=300, check=False)
    return time.perf_counter() - t0, cp.returncode


def echoscu_rate(port: int, called_ae: str, seconds: float, repeat: int = 2000) -> float:
    """C-ECHO round trips per second on one association (``echoscu --repeat``).

    The run with ``--repeat 1`` (best of 3) is subtracted; ``repeat`` grows until the echoes
    themselves take at least ``seconds``, so start-up jitter stays a small part of the time.
    """
    base = [dcmtk("echoscu"), "-aet", CALLING_AE, "-aec", called_ae, "127.0.0.1", str(port)]
    once = []
    for _ in range(3):
        t, rc = _timed([*base, "--repeat", "1"])
        if rc:
            raise RuntimeError(f"echoscu failed (exit {rc})")
        once.append(t)
    t1 = min(once)
    for _ in range(4):
        tn, rc = _timed([*base, "--repeat", str(repeat)])
        if rc:
            raise RuntimeError(f"echoscu --repeat {repeat} failed (exit {rc})")
        spent = tn - t1
        if spent >= seconds or repeat >= _MAX_ECHO_REPEAT:
            break
        repeat = min(_MAX_ECHO_REPEAT, int(repeat * max(2.0, 1.2 * seconds / max(spent, 1e-3))))
    return (repeat - 1) / spent if spent > 0 else repeat / tn


def _contexts() -> list[ProposedContext]:
    return [ProposedContext(VERIFICATION, (IMPLICIT_LE,))]


def scu_echo_rate(port: int, called_ae: str, seconds: float) -> float:
    """C-ECHOs per second on one association through our SCU (its Python cost included)."""
    n = 0
    with SCU("127.0.0.1", port, calling_ae=CALLING_AE, called_ae=called_ae,
             contexts=_contexts()) as scu:  # fmt: skip
        t0 = time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            if scu.echo() != 0:
                raise RuntimeError("C-ECHO answered with a non-Success status")
            n += 1
    return n / elapsed


def association_rate(port: int, called_ae: str, seconds: float) -> float:
    """Associations per second, each: associate, one C-ECHO, release (PS3.8 §9.3.6)."""
    n = 0
    t0 = time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        with SCU("127.0.0.1", port, calling_ae=CALLING_AE, called_ae=called_ae,
                 contexts=_contexts()) as scu:  # fmt: skip
            if scu.echo() != 0:
                raise RuntimeError("C-ECHO answered with a non-Success status")
        n += 1
    return n / elapsed
