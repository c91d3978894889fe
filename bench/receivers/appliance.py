"""This appliance as a benchmarked receiver: ``python -m appliance serve`` in one durability
mode with N workers, management HTTP on a free port, logs at ``error`` (a log line per object
would be a cost the other receivers do not pay).

Ready = ``/readyz`` answers 200 (boot includes the numba warm-up) and a C-ECHO succeeds.
Arrived = the index's instance count (``pacs db stats --json``): an object counts only once
it is stored *and* indexed, which is what a Success C-STORE-RSP promises here. The object
files under ``objects/`` are counted too, as a cross-check.

``ae_table`` (AE title -> host, port) becomes ``[ae_table.TITLE]`` tables of a generated
config file (C-MOVE destinations, for ``python -m bench retrieve``), ``compress = "rle"``
``[storage] compress_on_ingest`` (the ``appliance-rle`` receiver); neither = no config file.
``disk_usage`` reads the bytes stored and saved by compression from the index, for the
report's disk table.

``src`` runs the appliance from another checkout (``--appliance-src``), for A/B comparisons of
two commits with the same harness and corpora.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from bench.receivers.base import Receiver, count_files, echo_ok, free_port

REPO = Path(__file__).resolve().parents[2]


def venv_python() -> str:
    """The project's virtualenv interpreter (as the tests use it), else ours."""
    candidate = REPO / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


class ApplianceReceiver(Receiver):
    family = "appliance"

    def __init__(self, name: str, durability: str, workers: int, src: Path | None = None,
                 compress: str = "none") -> None:
        super().__init__(name)
        self.durability = durability
        self.compress = compress
        self.workers = workers
        self.cwd = src or REPO
        self.http_port = 0
        self.python = venv_python()
        self.ae_table: dict[str, tuple[str, int]] = {}

    def prepare(self) -> None:
        self.port, self.http_port = free_port(), free_port()
        if self._has_config():
            storage = f'[storage]\ncompress_on_ingest = "{self.compress}"\n'
            self._config_path().write_text(storage + "".join(
                f'[ae_table.{title}]\nhost = "{host}"\nport = {port}\n'
                for title, (host, port) in self.ae_table.items()))  # fmt: skip

    def _has_config(self) -> bool:
        return bool(self.ae_table) or self.compress != "none"

    def _config_path(self) -> Path:
        return self.run_dir / "appliance.toml"

    def command(self) -> list[str]:
        config = ["--config", str(self._config_path())] if self._has_config() else []
        return [
            self.python, "-m", "appliance", "serve",
            "--port", str(self.port), "--host", "127.0.0.1",
            "--http", f"127.0.0.1:{self.http_port}",
            "--data", str(self.store), "--durability", self.durability,
            "--workers", str(self.workers), "--ae-title", self.called_ae,
            "--log-level", "error", *config,
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        prom = self.run_dir / "prometheus"
        prom.mkdir(exist_ok=True)
        env = dict(super().env(), PROMETHEUS_MULTIPROC_DIR=str(prom))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.cwd), env.get("PYTHONPATH")]))
        return env

    def ready(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.http_port}/readyz"
            with urllib.request.urlopen(url, timeout=1) as rsp:
                if rsp.status != 200:
                    return False
        except OSError:
            return False
        return echo_ok(self.port, self.called_ae)

    def count(self) -> int:
        stats = self._stats()
        return int(stats["instances"]) if stats else -1

    def disk_usage(self) -> dict[str, int]:
        """Bytes of the stored objects and bytes saved by compression on ingest (the index's
        totals); empty when the index cannot be read."""
        stats = self._stats()
        if not stats:
            return {}
        return {"stored_bytes": int(stats["stored_bytes"]),
                "saved_bytes": int(stats.get("saved_bytes", 0))}

    def _stats(self) -> dict[str, int]:
        cp = subprocess.run(
            [self.python, "-m", "appliance", "db", "stats", "--data", str(self.store), "--json"],
            capture_output=True, text=True, cwd=self.cwd, env=self.env(), timeout=120,
            check=False,
        )  # fmt: skip
        lines = [ln for ln in cp.stdout.splitlines() if ln.lstrip().startswith("{")]
        if cp.returncode != 0 or not lines:
            return {}
        stats: dict[str, int] = json.loads(lines[-1])
        return stats

    def object_files(self) -> int:
        return count_files(self.store / "objects")

    def describe(self) -> dict[str, object]:
        return {"family": self.family, "durability": self.durability, "workers": self.workers,
                "compress_on_ingest": self.compress, "src": str(self.cwd)}
