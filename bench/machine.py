"""The machine a run happened on, and its sequential write bandwidth.

``describe()`` goes into every results file (a figure without its machine is not a
figure); ``disk_write_mb_s`` is the yardstick of the large-object runs: ``dd`` of zeros with
``conv=fdatasync``, so the page cache does not flatter it.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import time
from pathlib import Path

from bench.micro.ring import cpu_model, git_sha
from bench.packages import dcmtk


def _run(argv: list[str]) -> str:
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return cp.stdout


def _mem_total_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024**2
    return 0.0


def _filesystem(path: Path) -> str:
    out = _run(["df", "-T", str(path)]).splitlines()
    return " ".join(out[-1].split()[:2]) if len(out) > 1 else "unknown"


def describe(workdir: Path) -> dict[str, object]:
    version = _run([dcmtk("storescu"), "--version"]).strip().splitlines()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(_mem_total_gib(), 1),
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
        "dcmtk": version[0].strip("$ ") if version else None,
        "workdir_filesystem": _filesystem(workdir),
        "file_create_us": round(file_create_cpu_us(workdir), 1),
        "git_sha": git_sha(),
        "load_avg_at_start": list(os.getloadavg()),
    }


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


# A file creation above this much CPU means the folder pays for something other than the
# receivers (25-35 µs here normally; 490-570 µs in a folder next to thousands of files deleted
# minutes before, on ext4 without a journal: the allocator skips recently deleted inodes).
SLOW_CREATE_US = 150.0


def file_create_cpu_us(directory: Path, files: int = 300) -> float:
    """CPU µs (this process's user+system) per create+write(4 KiB)+close of a new file in a
    fresh folder under ``directory``: what every receiver pays per object stored there."""
    probe = directory / f"create-probe-{os.getpid()}"
    probe.mkdir(parents=True, exist_ok=True)
    block = b"\0" * 4096
    try:
        t0 = time.process_time()
        for i in range(files):
            fd = os.open(probe / f"{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, block)
            finally:
                os.close(fd)
        return (time.process_time() - t0) / files * 1e6
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def disk_write_mb_s(directory: Path, megabytes: int = 1024) -> float:
    """``dd if=/dev/zero of=<directory>/ddtest bs=1M count=N conv=fdatasync``, in MB/s
    (10^6 bytes, computed from dd's own byte count and seconds)."""
    if shutil.which("dd") is None:
        raise RuntimeError("dd not found")
    target = directory / "ddtest"
    try:
        cp = subprocess.run(
            ["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={megabytes}",
             "conv=fdatasync"],
            capture_output=True, text=True, timeout=600, check=False,
            env=dict(os.environ, LC_ALL="C"),
        )  # fmt: skip
    finally:
        target.unlink(missing_ok=True)
    # "1073741824 bytes (1.1 GB, 1.0 GiB) copied, 1.41 s, 760 MB/s"
    m = re.search(r"^(\d+) bytes .* copied, ([\d.]+) s", cp.stderr, re.MULTILINE)
    if cp.returncode != 0 or m is None:
        raise RuntimeError(f"dd failed ({cp.returncode}): {cp.stderr.strip()[-200:]}")
    return int(m.group(1)) / float(m.group(2)) / 1e6
