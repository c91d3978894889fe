"""The Query/Retrieve benchmark end to end, small: ``python -m bench retrieve --quick`` against
the appliance (and Orthanc when installed), checking that every retrieve brought back exactly
the study, every query the expected matches, and that the JSON and markdown are written.

No timing assertions (STYLE 2.10). Plus the pieces the figures rest on, checked directly:
the nearest-rank p99, the manifest's expected matches, the UID check, the medians that leave
failed runs out, and the receiver configs that make C-MOVE and Orthanc's Q/R possible.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from appliance import config as appliance_config
from bench.qr_client import check_uids
from bench.qr_corpus import Archive, QRCorpusSpec, StudyEntry
from bench.qr_report import markdown, summarize
from bench.receivers.appliance import ApplianceReceiver
from bench.receivers.orthanc import OrthancReceiver, find_binary
from bench.retrieve import p99
from tests.conftest import PYTHON, REPO, require_tool, run_tool


@pytest.mark.system
@pytest.mark.slow
def test_quick_run_retrieves_the_whole_study_from_every_receiver(tmp_path: Path) -> None:
    for tool in ("storescu", "storescp", "getscu", "movescu"):
        require_tool(tool)
    receivers = ["appliance-batch"] + (["orthanc"] if find_binary() else [])
    results = tmp_path / "results"
    cp = run_tool(
        [PYTHON, "-m", "bench", "retrieve", "--quick", "--receivers", ",".join(receivers),
         "--no-install", "--workdir", str(tmp_path / "work"), "--results", str(results)],
        timeout_s=120, cwd=REPO,
    )  # fmt: skip
    print(cp.stdout[-6000:], cp.stderr[-3000:])
    assert cp.returncode == 0, f"bench exited {cp.returncode}\n{cp.stdout[-3000:]}{cp.stderr}"

    (json_path,) = results.glob("retrieve-*.json")
    data = json.loads(json_path.read_text())
    assert data["skipped"] == {}, data["skipped"]
    assert data["archive"]["study_instances"] == 20
    runs = data["runs"]
    for kind in ("load", "get", "move"):
        assert sorted(r["receiver"] for r in runs if r["kind"] == kind) == sorted(receivers)
    for run in runs:
        where = f"{run['kind']} {run['receiver']} {run.get('query', '')}"
        assert run["ok"], f"{where}: {run['errors']}"
        if run["kind"] in ("get", "move"):
            assert run["received"] == run["expected"] == 20, where
            assert run["mb_per_s"] > 0 and run["receiver_cpu_s"] >= 0, where
    finds = [r for r in runs if r["kind"] == "find"]
    assert len(finds) == 4 * len(receivers)
    for run in finds:
        assert run["queries"] == 20 and len(run["latencies_ms"]) == 20, run["query"]
        assert run["matches"] == run["expected_matches"] == data["queries"][run["query"]]
        assert 0 < run["median_ms"] <= run["p99_ms"], run["query"]
    assert data["queries"]["SERIES StudyInstanceUID=<study>"] == 5

    md = (results / "retrieve-latest.md").read_text()
    assert md == (results / f"retrieve-{data['meta']['timestamp']}.md").read_text()
    assert "| measure | " + " | ".join(receivers) in md
    assert "| C-GET study, MB/s |" in md and "| C-FIND STUDY PatientName=SMI*: p99 ms |" in md
    if "orthanc" in receivers:
        assert "appliance-batch ×Orthanc" in md
    assert md.strip().splitlines()[0] in cp.stdout  # the table is printed too


def test_p99_is_nearest_rank() -> None:
    assert p99([float(x) for x in range(1, 201)]) == 198.0
    assert p99([float(x) for x in range(20, 0, -1)]) == 20.0  # of 20 values: the largest
    assert p99([3.0]) == 3.0


def _entry(uid: str, pid: str, name: str, date: str) -> StudyEntry:
    return StudyEntry(uid, pid, name, date, (uid + ".1",), 1)


def test_expected_matches_follow_the_manifest() -> None:
    entries = (_entry("1", "A", "SMITH^JOHN", "20240115"), _entry("2", "A", "SMITH^JOHN",
               "20231231"), _entry("3", "B", "SMIRNOV^P1", "20240131"),
               _entry("4", "C", "JONES^P2", "20240201"), _entry("5", "D", "SCHMIDT^P3",
               "20240101"))  # fmt: skip
    archive = Archive(QRCorpusSpec(1, 4), Path(), Path(), Path(), entries[0], frozenset(), 0,
                      entries)  # fmt: skip
    assert archive.files == 5
    assert archive.matching_studies(patient_id="A") == {"1", "2"}
    assert archive.matching_studies(name_prefix="SMI") == {"1", "2", "3"}
    assert archive.matching_studies(date_range=("20240101", "20240131")) == {"1", "3", "5"}
    assert archive.matching_studies(patient_id="A", date_range=("20240101", "20240131")) == {"1"}


def test_uid_check_names_missing_extra_and_duplicate_objects() -> None:
    want = frozenset({"1", "2", "3"})
    assert check_uids(["3", "1", "2"], want) == []
    assert check_uids(["1", "2"], want) == ["1 of 3 instances missing"]
    assert check_uids(["1", "2", "3", "9"], want) == ["1 unexpected instances"]
    assert check_uids(["1", "1", "2", "3"], want) == ["1 duplicate objects"]


def _results() -> dict[str, Any]:
    def get(name: str, mb: float, ok: bool = True) -> dict[str, Any]:
        return {"kind": "get", "receiver": name, "rep": 0, "ok": ok,
                "errors": [] if ok else ["3 of 20 instances missing"], "mb_per_s": mb,
                "inst_per_s": mb * 2, "receiver_cpu_s": 1.0, "client_cpu_s": 0.5}

    def find(name: str, median: float) -> dict[str, Any]:
        return {"kind": "find", "receiver": name, "rep": 0, "query": "Q", "ok": True,
                "errors": [], "median_ms": median, "p99_ms": median * 2,
                "cpu_us_per_query": 100.0}

    return {
        "meta": {"timestamp": "T", "command": "c", "reps": 3, "queries": 200, "quick": False},
        "machine": {"cpu": "x", "cores": 2, "memory_gib": 1, "os": "o",
                    "workdir_filesystem": "f", "dcmtk": "d", "git_sha": "s"},
        "archive": {"study_instances": 20, "study_bytes": 10_000_000, "studies": 3,
                    "instances": 22},
        "queries": {"Q": 2}, "receiver_order": ["appliance-batch", "orthanc"],
        "receivers": {"appliance-batch": {}, "orthanc": {}}, "skipped": {},
        "runs": [get("appliance-batch", mb) for mb in (300, 100, 200)]
        + [get("appliance-batch", 9999, ok=False)]
        + [get("orthanc", mb) for mb in (400, 400, 400)]
        + [find("appliance-batch", 2.0), find("orthanc", 4.0)],
    }  # fmt: skip


def test_summary_takes_medians_of_ok_runs_and_ratios_to_orthanc() -> None:
    results = _results()
    summary = summarize(results)
    assert summary["rows"]["C-GET study, MB/s"]["appliance-batch"] == (200, 100, 300)
    assert summary["rows"]["C-GET study, MB/s"]["orthanc"] == (400, 400, 400)
    assert summary["rows"]["C-MOVE study, MB/s"]["orthanc"] is None
    assert summary["rows"]["C-FIND Q: p99 ms"]["appliance-batch"] == (4.0, 4.0, 4.0)
    md = markdown(results, summary)
    assert "| C-GET study, MB/s | 200 (100–300) | 400 | 0.50× |" in md
    assert "| C-FIND Q: median ms | 2.00 | 4.00 | 0.50× |" in md
    assert "| C-MOVE study, MB/s | – | – | – |" in md
    assert "8 of 9 runs ok" in md and "get appliance-batch 3/4" in md
    assert "3 of 20 instances missing" in md  # the failed run is listed


def test_receiver_configs_name_the_move_destination(tmp_path: Path) -> None:
    app = ApplianceReceiver("appliance-batch", "batch", 1)
    app.ae_table = {"STORESCP": ("127.0.0.1", 10404)}
    app.run_dir = tmp_path
    app.prepare()
    (config_file,) = tmp_path.glob("*.toml")
    assert ["--config", str(config_file)] == app.command()[-2:]
    remote = appliance_config.load(config_file).remote_ae("STORESCP")
    assert remote is not None and (remote.host, remote.port) == ("127.0.0.1", 10404)

    orthanc = OrthancReceiver("orthanc", "/usr/sbin/Orthanc")
    orthanc.modalities = {"STORESCP": ("STORESCP", "127.0.0.1", 10404)}
    orthanc.run_dir, orthanc.store = tmp_path, tmp_path / "store"
    orthanc.prepare()
    written = json.loads((tmp_path / "orthanc.json").read_text())
    assert written["DicomModalities"] == {"STORESCP": ["STORESCP", "127.0.0.1", 10404]}
