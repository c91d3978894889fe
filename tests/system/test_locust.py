"""A shortened locust run (seconds, a few users) against a real appliance, headless, through
``bench/locustfile.py`` and our own SCU core: locust must record no failure, and every
instance that got a Success C-STORE-RSP must be in the index. No timing assertions.

locust is in the ``bench`` extra; without it these tests skip, except with
``PACS_REQUIRE_INTEROP=1`` (CI), where a missing locust fails them.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PYTHON, REPO, Appliance, index_get_many, run_tool
from tests.fixtures.make_datasets import write_ct_corpus

pytestmark = [pytest.mark.system, pytest.mark.slow]
USERS = 4


def _require_locust() -> None:
    if importlib.util.find_spec("locust") is None:
        if os.environ.get("PACS_REQUIRE_INTEROP") == "1":
            pytest.fail("locust not installed (PACS_REQUIRE_INTEROP=1): pip install -e '.[bench]'")
        pytest.skip("locust not installed (pip install -e '.[bench]')")


def _qr_scp_present() -> bool:
    """C-FIND is only exercised once the Query/Retrieve SCP is in this tree."""
    return importlib.util.find_spec("workers.qr.service") is not None


def _run_locust(app: Appliance, tmp: Path, *, find: bool, seconds: int = 4) -> tuple[
        dict[str, dict[str, Any]], set[str]]:  # fmt: skip
    corpus = tmp / "corpus"
    write_ct_corpus(corpus, seed=31, patients=2, studies_per_patient=1, series_per_study=2,
                    instances_per_series=2)  # fmt: skip
    acked = tmp / "acked.txt"
    env = dict(os.environ, PACS_LOCUST_CORPUS=str(corpus), PACS_LOCUST_ACKED=str(acked),
               PACS_LOCUST_FIND="1" if find else "0",
               PACS_LOCUST_TIMEOUT_S="10")  # < --stop-timeout: a hung request becomes a failure
    cp = run_tool(
        [PYTHON, "-m", "locust", "-f", str(REPO / "bench" / "locustfile.py"), "--headless",
         "-u", str(USERS), "-r", str(USERS), "-t", f"{seconds}s", "--stop-timeout", "20",
         "--host", f"dicom://127.0.0.1:{app.port}/{app.ae_title}",
         "--json-file", str(tmp / "stats"), "--only-summary"],
        timeout_s=120, env=env, cwd=tmp,
    )  # fmt: skip
    print(cp.stdout[-4000:], cp.stderr[-4000:])
    stats_file = tmp / "stats.json"
    assert stats_file.exists(), f"locust exited {cp.returncode}, no stats: {cp.stderr[-2000:]}"
    stats = {e["name"]: e for e in json.loads(stats_file.read_text())}
    failures = {name: e["num_failures"] for name, e in stats.items() if e["num_failures"]}
    errors = [ln for ln in cp.stderr.splitlines() if "Error" in ln or "error" in ln][:5]
    assert not failures, f"locust recorded failures: {failures}; {errors}"
    assert cp.returncode == 0, f"locust exited {cp.returncode}: {cp.stderr[-2000:]}"
    uids = set(acked.read_text().split()) if acked.exists() else set()
    return stats, uids


def _check(app: Appliance, stats: dict[str, dict[str, Any]], acked: set[str]) -> None:
    assert "A-ASSOCIATE" in stats, f"no association completed: {sorted(stats)}"
    stores = stats.get("C-STORE", {}).get("num_requests", 0)
    assert stores > 0, f"no C-STORE completed: {sorted(stats)}"
    assert len(acked) == stores  # every C-STORE succeeded, each with a fresh SOP Instance UID
    missing = [uid for uid, rec in index_get_many(app.data, sorted(acked)).items() if rec is None]
    assert not missing, f"{len(missing)} acknowledged instances not indexed, e.g. {missing[:3]}"
    assert app.stats()["instances"] >= len(acked)


def test_locust_store_and_echo(
    appliance_factory: Callable[..., Appliance], tmp_path: Path
) -> None:
    _require_locust()
    app = appliance_factory(workers=2, durability="batch").start()
    stats, acked = _run_locust(app, tmp_path, find=False)
    assert "C-FIND" not in stats
    _check(app, stats, acked)


@pytest.mark.skipif(not _qr_scp_present(), reason="the C-FIND SCP (workers/qr) is not here yet")
def test_locust_with_cfind(appliance_factory: Callable[..., Appliance], tmp_path: Path) -> None:
    _require_locust()
    app = appliance_factory(workers=2, durability="os").start()
    stats, acked = _run_locust(app, tmp_path, find=True)
    _check(app, stats, acked)
    assert "C-FIND" in stats, f"no C-FIND completed: {sorted(stats)}"
