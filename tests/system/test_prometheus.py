"""The appliance's ``/metrics`` as a real Prometheus server sees it, and its label hygiene.

``test_prometheus_scrapes_appliance`` starts the Debian ``prometheus`` binary (no network:
config, TSDB and listen address all local to the test) with one job scraping the appliance's
management port every second, waits until the target is ``up``, stores five objects with our
SCU and waits (with a deadline) until Prometheus's own query API shows the counters moved.

``test_metrics_exposition_is_closed`` reads ``/metrics`` directly and checks what every
Prometheus user relies on: our names only (``pacs_*``) and no label value that is a UID or an
AE title (unbounded label sets would blow up the TSDB and leak identifiers).
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from appliance.negotiation.sop_classes import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION
from appliance.scu import SCU, ProposedContext
from tests.conftest import Appliance, free_port, require_tool, tail, wait_until
from tests.fixtures.make_datasets import write_ct_corpus

pytestmark = pytest.mark.system

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
CALLING_AE = "PROMTEST"
JOB = "pacs"

PROM_READY_TIMEOUT_S = 15.0
PROM_STOP_TIMEOUT_S = 10.0
TARGET_UP_TIMEOUT_S = 15.0  # discovery hands targets to the scraper every 5 s
COUNTER_TIMEOUT_S = 10.0

UID_LIKE = re.compile(r"^\d+(\.\d+){3,}$")


# --------------------------------------------------------------------------- a real Prometheus


class Prometheus:
    """One ``prometheus`` subprocess with its config and TSDB under ``root``."""

    def __init__(self, binary: str, root: Path, target: str, metrics_path: str = "/metrics"):
        self.binary = binary
        self.root = root
        self.target = target
        self.metrics_path = metrics_path
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        return (
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            f"  - job_name: {JOB}\n"
            f"    metrics_path: {self.metrics_path}\n"
            "    static_configs:\n"
            f"      - targets: ['{self.target}']\n"
        )

    def start(self) -> Prometheus:
        self.root.mkdir(parents=True, exist_ok=True)
        cfg = self.root / "prometheus.yml"
        cfg.write_text(self.config())
        self.port = free_port()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={cfg}",
                    f"--storage.tsdb.path={self.root / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
            )
        deadline = time.monotonic() + PROM_READY_TIMEOUT_S
        while self._get("/-/ready")[0] != 200:
            rc = self.proc.poll()
            if rc is not None:
                pytest.fail(f"prometheus exited with {rc} before ready\n{self.logs()}")
            if time.monotonic() > deadline:
                pytest.fail(f"prometheus not ready after {PROM_READY_TIMEOUT_S} s\n{self.logs()}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=PROM_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=PROM_STOP_TIMEOUT_S)

    def logs(self, lines: int = 40) -> str:
        return f"--- prometheus log (tail) ---\n{tail(self.log_path, lines)}"

    # -- HTTP API

    def _get(self, path: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout_s) as rsp:
                return int(rsp.status), bytes(rsp.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return 0, b""

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        code, body = self._get(f"/api/v1/{path}{query}")
        assert code == 200, f"prometheus /api/v1/{path} answered {code}: {body!r}\n{self.logs()}"
        doc: dict[str, Any] = json.loads(body)
        assert doc.get("status") == "success", f"prometheus API error: {doc}"
        return doc["data"]

    def targets(self) -> list[dict[str, Any]]:
        data = self.api("targets", state="active")
        active: list[dict[str, Any]] = data["activeTargets"]
        return [t for t in active if t["labels"].get("job") == JOB]

    def target_up(self) -> bool:
        found = self.targets()
        return len(found) == 1 and found[0]["health"] == "up"

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", f"{expr!r} gave {data['resultType']}"
        result: list[dict[str, Any]] = data["result"]
        return result

    def scalar(self, expr: str) -> float:
        """Value of a query that yields exactly one sample (wrap in ``sum(...)``)."""
        result = self.query(expr)
        assert len(result) == 1, f"{expr!r} gave {len(result)} samples: {result}"
        return float(result[0]["value"][1])


@pytest.fixture
def prometheus_binary() -> str:
    return require_tool("prometheus")


@contextlib.contextmanager
def running_prometheus(binary: str, root: Path, target: str) -> Iterator[Prometheus]:
    prom = Prometheus(binary, root, target)
    try:
        yield prom.start()
    finally:
        prom.stop()


def _store_all(port: int, paths: list[Path]) -> None:
    contexts = [
        ProposedContext(VERIFICATION, (IMPLICIT_VR_LITTLE_ENDIAN,)),
        ProposedContext(CT_IMAGE_STORAGE, (EXPLICIT_VR_LE,)),
    ]
    with SCU("127.0.0.1", port, calling_ae=CALLING_AE, called_ae="PACS", contexts=contexts) as scu:
        assert scu.echo() == 0x0000
        for path in paths:
            result = scu.store_file(path)
            assert result.status == 0x0000, f"C-STORE of {path.name}: status {result.status:#06x}"


# --------------------------------------------------------------------------- tests


def test_prometheus_scrapes_appliance(
    prometheus_binary: str, appliance: Appliance, tmp_path: Path
) -> None:
    paths = write_ct_corpus(
        tmp_path / "corpus", seed=1, patients=1, studies_per_patient=1, series_per_study=1,
        instances_per_series=5,
    )  # fmt: skip
    assert len(paths) == 5
    stored = 'sum(pacs_instances_total{result="stored"}) or vector(0)'
    c_store = 'sum(pacs_dimse_operations_total{command="C-STORE"}) or vector(0)'

    target = f"127.0.0.1:{appliance.http_port}"
    with running_prometheus(prometheus_binary, tmp_path / "prometheus", target) as prom:
        wait_until(prom.target_up, TARGET_UP_TIMEOUT_S, f"prometheus target {target} up")
        up = prom.query(f'up{{job="{JOB}"}}')
        assert [float(s["value"][1]) for s in up] == [1.0], f"up: {up}"
        # The appliance exposes its build, so the scrape carried our metrics, not just `up`.
        wait_until(
            lambda: len(prom.query(f'pacs_build_info{{job="{JOB}"}}')) >= 1,
            TARGET_UP_TIMEOUT_S,
            "pacs_build_info in prometheus",
        )
        stored_before = prom.scalar(stored)
        c_store_before = prom.scalar(c_store)

        _store_all(appliance.port, paths)

        wait_until(
            lambda: prom.scalar(stored) >= stored_before + 5,
            COUNTER_TIMEOUT_S,
            f"{stored} to grow by 5 from {stored_before}",
        )
        wait_until(
            lambda: prom.scalar(c_store) >= c_store_before + 5,
            COUNTER_TIMEOUT_S,
            f"{c_store} to grow by 5 from {c_store_before}",
        )
        assert prom.scalar(stored) == stored_before + 5
        assert prom.scalar(c_store) == c_store_before + 5
        ok = 'sum(pacs_dimse_operations_total{command="C-STORE",status_class="success"})'
        assert prom.scalar(ok) >= 5
        assert prom.target_up(), f"target not up at the end: {prom.targets()}"
        assert prom.scalar(f'up{{job="{JOB}"}}') == 1.0


def test_metrics_exposition_is_closed(appliance: Appliance, tmp_path: Path) -> None:
    paths = write_ct_corpus(
        tmp_path / "corpus", seed=2, patients=1, studies_per_patient=1, series_per_study=1,
        instances_per_series=2,
    )  # fmt: skip
    _store_all(appliance.port, paths)  # labelled children exist only once something happened

    code, body = appliance.get("/metrics")
    assert code == 200, f"/metrics answered {code}: {body!r}\n{appliance.logs()}"
    families = list(text_string_to_metric_families(body.decode()))
    names = {f.name for f in families}
    assert families, "no metric families in /metrics"
    # The parser drops the `_total` suffix of counter families.
    for expected in ("pacs_build_info", "pacs_instances", "pacs_dimse_operations"):
        assert expected in names, f"{expected} missing from /metrics: {sorted(names)}"

    foreign = sorted(n for n in names if not n.startswith("pacs_"))
    assert not foreign, f"metric families not named pacs_*: {foreign}"

    label_values: set[str] = set()
    for family in families:
        for sample in family.samples:
            assert sample.name.startswith("pacs_"), f"sample {sample.name} not pacs_*"
            label_values.update(sample.labels.values())
    uid_like = sorted(v for v in label_values if UID_LIKE.match(v))
    assert not uid_like, f"UID-like label values (unbounded label sets): {uid_like}"
    assert CALLING_AE not in label_values, "the calling AE title leaked into a label value"
