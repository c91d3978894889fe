"""Quick side-by-side ingest measurement: this appliance vs DCMTK storescp, same client.

    python -m bench.quick_ingest [--rounds 3] [--ct 200] [--small 1000]

Generates deterministic corpora (CT-like 512x512x16-bit ~0.5 MB, and 64x64 ~8 KB objects),
then for each receiver (appliance in `os` and `batch` durability, storescp, storescp --fork),
starting each on an empty store, sends the corpus with DCMTK `storescu -xe` (TCP_NODELAY=1)
over 1 and 4 associations, checks every instance arrived, and prints medians of instances/s
over the rounds, receivers alternated. The full harness (Orthanc, pynetdicom, CPU, RSS, charts)
is issue 6; this is the measurement behind the README's preliminary table. Never run in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.fixtures.make_datasets import write_ct_corpus


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def corpus(root: Path, name: str, n: int, rows: int) -> list[Path]:
    out = root / name
    if out.exists():
        return sorted(out.glob("*.dcm"))
    per_series = max(1, n // 100)
    return write_ct_corpus(out, seed=7, patients=10, studies_per_patient=2, series_per_study=5,
                           instances_per_series=per_series, rows=rows, cols=rows)


class Receiver:
    def __init__(self, name: str, argv: list[str], data: Path, http: int | None = None) -> None:
        self.name, self.argv, self.data, self.http = name, argv, data, http
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        shutil.rmtree(self.data, ignore_errors=True)
        self.data.mkdir(parents=True)
        env = dict(os.environ, TCP_NODELAY="1")
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.http is None:
                time.sleep(0.5)
                return
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/readyz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not become ready")

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def count(self) -> int:
        """Objects stored: the appliance's objects/ tree, or storescp's output folder."""
        root = self.data / "objects" if (self.data / "objects").is_dir() else self.data
        return sum(1 for p in root.rglob("*") if p.is_file())


def send(port: int, files: list[Path], n: int) -> float:
    parts = [files[i::n] for i in range(n)]
    env = dict(os.environ, TCP_NODELAY="1")
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-xe", "-nh", "-aec", "PACS", "127.0.0.1", str(port),
                               *map(str, part)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=env) for part in parts]
    for p in procs:
        p.wait()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ct", type=int, default=200)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "pacs-bench")
    args = ap.parse_args()
    work = args.workdir
    corpora = {"ct": corpus(work, f"ct{args.ct}", args.ct, 512),
               "small": corpus(work, f"small{args.small}", args.small, 64)}
    py = sys.executable
    receivers = []
    for mode in ("os", "batch"):
        port, http = free_port(), free_port()
        receivers.append((port, Receiver(
            f"appliance ({mode})",
            [py, "-m", "appliance", "serve", "--port", str(port), "--http", f"127.0.0.1:{http}",
             "--data", str(work / f"data-{mode}"), "--durability", mode, "--log-level", "error"],
            work / f"data-{mode}", http)))
    for fork in (False, True):
        port = free_port()
        data = work / f"scp-{'fork' if fork else 'plain'}"
        receivers.append((port, Receiver(
            "storescp --fork" if fork else "storescp",
            ["storescp", "-od", str(data), *(["--fork"] if fork else []), str(port)], data)))
    results: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for cname, files in corpora.items():
            for n in (1, 4):
                for port, rcv in receivers:
                    rcv.start()
                    try:
                        dt = send(port, files, n)
                        got = rcv.count()
                    finally:
                        rcv.stop()
                    key = f"{cname},{n},{rcv.name}"
                    rate = len(files) / dt if got == len(files) else 0.0
                    results.setdefault(key, []).append(rate)
    print("| corpus, assocs | receiver | inst/s (median) | runs |")
    print("|---|---|---|---|")
    for key, rates in results.items():
        c, n, name = key.split(",")
        print(f"| {c}, {n} | {name} | {statistics.median(rates):.0f} | "
              f"{', '.join(f'{r:.0f}' for r in rates)} |")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
