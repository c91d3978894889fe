"""Ring micro-benchmark: prints one JSON object (STYLE 2.10: never gated on wall time).

    python -m bench.micro.ring [--quick]

- ``xproc_8k_us_per_record``: wall µs per 8 KiB record, producer in a forked child, consumer
  here, a doorbell per record (what the acceptor does per PDV); plus CPU µs on each side.
- ``xproc_512k_gb_per_s``: same with 512 KiB records.
- ``xproc_64b_records_per_s`` and ``local_64b_records_per_s``: tiny records, doorbell per 64.
- ``first_pass_*``: one pass over a fresh 64 MiB ring with and without pre-faulting.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

from appliance.ipc.ring import Ring


def git_sha() -> str:
    git = Path(__file__).resolve().parents[2] / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git / ref).exists():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_s(who: int) -> float:
    ru = resource.getrusage(who)
    return ru.ru_utime + ru.ru_stime


def xproc(record_bytes: int, n: int, cap: int, batch: int) -> dict[str, float]:
    """Producer child puts ``n`` records (doorbell every ``batch``); we consume them."""
    ring = Ring.create(cap)
    body = os.urandom(record_bytes)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: producer
        code = 1
        try:
            prod = Ring.attach(ring.fds)
            os.read(r, 1)  # start together
            for i in range(n):
                notify = (i + 1) % batch == 0
                if not prod.try_put(1, 0, i, 0, 0, body, notify=notify):
                    prod.notify()
                    prod.put_blocking(1, 0, i, 0, 0, body, timeout_s=30)
            prod.notify()
            code = 0
        finally:
            os._exit(code)
    cons = Ring.attach(ring.fds)
    self_cpu0, child_cpu0 = cpu_s(resource.RUSAGE_SELF), cpu_s(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    os.write(w, b"g")
    got = 0
    while got < n:
        if not cons.wait_data(30):
            raise RuntimeError("benchmark producer stalled")
        while cons.peek() is not None:
            cons.release()
            got += 1
    wall = time.perf_counter() - t0
    os.waitpid(pid, 0)
    self_cpu = cpu_s(resource.RUSAGE_SELF) - self_cpu0
    child_cpu = cpu_s(resource.RUSAGE_CHILDREN) - child_cpu0
    cons.close()
    ring.close()
    os.close(r)
    os.close(w)
    return {
        "wall_us_per_record": wall / n * 1e6,
        "producer_cpu_us_per_record": child_cpu / n * 1e6,
        "consumer_cpu_us_per_record": self_cpu / n * 1e6,
        "gb_per_s": record_bytes * n / wall / 1e9,
        "records_per_s": n / wall,
    }


def local_small(n: int) -> float:
    """Records/s for 64-byte put+get in one process, doorbell per 64 records."""
    prod = Ring.create(1 << 20)
    cons = Ring.attach(prod.fds)
    body = b"x" * 64
    t0 = time.perf_counter()
    for i in range(0, n, 64):
        for j in range(64):
            prod.try_put(1, 0, i + j, 0, 0, body, notify=False)
        prod.notify()
        cons.drain_doorbell()
        while cons.peek() is not None:
            cons.release()
    wall = time.perf_counter() - t0
    cons.close()
    prod.close()
    return n / wall


def first_pass(prefault: bool, cap: int = 64 << 20, record_bytes: int = 512 << 10) -> float:
    """GB/s of one put+get pass over a fresh ring (the pass that pays any page faults)."""
    prod = Ring.create(cap, prefault=prefault)
    body = os.urandom(record_bytes)
    t0 = time.perf_counter()
    for i in range(cap // (record_bytes + 4096)):
        prod.try_put(1, 0, i, 0, 0, body, notify=False)
    wall = time.perf_counter() - t0
    prod.close()
    return cap // (record_bytes + 4096) * record_bytes / wall / 1e9


def main() -> None:
    quick = "--quick" in sys.argv
    scale = 10 if quick else 1
    x8k = xproc(8192, 100_000 // scale, 8 << 20, batch=1)
    x512k = xproc(512 << 10, 8000 // scale, 32 << 20, batch=1)
    x64 = xproc(64, 400_000 // scale, 4 << 20, batch=64)
    out = {
        "bench": "ring",
        "git_sha": git_sha(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "xproc_8k_us_per_record": round(x8k["wall_us_per_record"], 2),
        "xproc_8k_producer_cpu_us": round(x8k["producer_cpu_us_per_record"], 2),
        "xproc_8k_consumer_cpu_us": round(x8k["consumer_cpu_us_per_record"], 2),
        "xproc_512k_gb_per_s": round(x512k["gb_per_s"], 2),
        "xproc_512k_producer_cpu_s_per_gb": round(
            x512k["producer_cpu_us_per_record"] / (512 << 10) * 1e3, 3),
        "xproc_64b_records_per_s": round(x64["records_per_s"]),
        "local_64b_records_per_s": round(local_small(200_000 // scale)),
        "first_pass_prefault_gb_per_s": round(first_pass(True), 2),
        "first_pass_no_prefault_gb_per_s": round(first_pass(False), 2),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
