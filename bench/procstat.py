"""CPU seconds and resident memory of a whole process tree, read from /proc (Linux only).

Why not one ``getrusage``: a receiver is a tree (the appliance's arbiter, acceptor, workers,
index writer and exporter; ``storescp --fork``'s child per association), and we want its cost
*during the transfer*, not its start-up (numba warm-up, imports) nor its shutdown.

THEORY OF OPERATION
-------------------
The CPU a tree has used so far is the sum, over its live processes, of ``utime + stime +
cutime + cstime`` (proc(5) fields 14-17): a child that exited and was reaped moved its own
times, and those of the descendants it had reaped, into its parent's ``cutime``/``cstime``,
so nothing is counted twice and nothing is lost as long as every exit is reaped inside the
tree. A zombie not yet reaped still shows its own times. ``Sampler`` takes a snapshot at the
start and at the end of a run (CPU = difference) and, on a thread in between, sums the RSS
(``statm``) and PSS (``smaps_rollup``: shared pages split between their users, the fairer
figure for processes sharing memory rings) over the tree, keeping the peaks.

The same CPU is also split by *role*: a process's command name (``/proc/<pid>/comm``) with a
trailing ``-N`` dropped, so the appliance's ``pacs-worker-0`` and ``pacs-worker-1`` add up
under ``pacs-worker`` beside ``pacs-acceptor``. A process alive at both snapshots counts its
difference, one born during the run all of its CPU; one that exited during the run is in its
parent's ``cutime`` (the arbiter's, for the appliance).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

_PROC = Path("/proc")
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_INSTANCE_SUFFIX = re.compile(r"-\d+$")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces)."""
    try:
        raw = (_PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rindex(b")") + 2 :].decode().split()


def parents() -> dict[int, int]:
    """pid -> ppid of every process (one pass over /proc)."""
    out: dict[int, int] = {}
    for entry in os.scandir(_PROC):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                out[int(entry.name)] = int(fields[1])  # field 4: ppid
    return out


def group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid``."""
    out = []
    for entry in os.scandir(_PROC):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[2]) == pgid:  # field 5: pgrp
                out.append(int(entry.name))
    return out


def tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents().items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def cpu_s(pids: list[int]) -> float:
    """utime + stime + cutime + cstime summed over ``pids`` (see the module docstring)."""
    return sum(cpu_by_pid(pids).values())


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """utime + stime + cutime + cstime of each live process of ``pids``."""
    out: dict[int, float] = {}
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            out[pid] = sum(int(f) for f in fields[11:15]) * _TICK_S  # fields 14-17 of proc(5)
    return out


def role_of(pid: int) -> str:
    """The process's command name without a trailing instance number (module docstring)."""
    try:
        comm = (_PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return "?"
    return _INSTANCE_SUFFIX.sub("", comm)


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int((_PROC / str(pid) / "statm").read_text().split()[1]) * _PAGE
    return total


def pss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            for line in (_PROC / str(pid) / "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total


@dataclass(slots=True)
class TreeUsage:
    """What one ``Sampler`` saw between ``start`` and ``stop``."""

    cpu_s: float = 0.0
    cpu_s_by_role: dict[str, float] = field(default_factory=dict)
    peak_rss_bytes: int = 0
    peak_pss_bytes: int = 0
    max_processes: int = 0
    samples: int = 0


class Sampler:
    """CPU over an interval and peak RSS/PSS of the tree under ``root``, sampled every
    ``interval_s`` on a daemon thread."""

    def __init__(self, root: int, interval_s: float = 0.1) -> None:
        self.root = root
        self.interval_s = interval_s
        self.usage = TreeUsage()
        self._cpu0: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        pids = tree(self.root)
        self._cpu0 = cpu_by_pid(pids)
        self._sample(pids)
        self._thread = threading.Thread(target=self._run, name="procstat", daemon=True)
        self._thread.start()

    def settle(self, timeout_s: float = 3.0, quiet_s: float = 0.15) -> None:
        """Wait until the tree's CPU counter stops moving (children of ``--fork`` receivers
        finishing their last file), at most ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        last = cpu_s(tree(self.root))
        while time.monotonic() < deadline:
            time.sleep(quiet_s)
            now = cpu_s(tree(self.root))
            if now == last:
                return
            last = now

    def stop(self) -> TreeUsage:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        pids = tree(self.root)
        self._sample(pids)
        now = cpu_by_pid(pids)
        self.usage.cpu_s = max(0.0, sum(now.values()) - sum(self._cpu0.values()))
        by_role: dict[str, float] = {}
        for pid, cpu in now.items():
            role = role_of(pid)
            by_role[role] = by_role.get(role, 0.0) + max(0.0, cpu - self._cpu0.get(pid, 0.0))
        self.usage.cpu_s_by_role = by_role
        return self.usage

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample(tree(self.root))

    def _sample(self, pids: list[int]) -> None:
        u = self.usage
        u.samples += 1
        u.max_processes = max(u.max_processes, len(pids))
        u.peak_rss_bytes = max(u.peak_rss_bytes, rss_bytes(pids))
        u.peak_pss_bytes = max(u.peak_pss_bytes, pss_bytes(pids))
