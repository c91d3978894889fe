"""The benchmark harness end to end, small: ``python -m bench ingest --quick`` against the
appliance and DCMTK ``storescp`` (and Orthanc when installed), checking that it writes the
JSON, the markdown and the chart, and that every instance arrived at every receiver.

No timing assertions (STYLE 2.10): figures are printed, never gated. Plus the one piece of
accounting the harness's CPU figures rest on, checked directly: a process tree's CPU includes
the children it forked and reaped during the interval (``storescp --fork``'s case).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from bench.procstat import Sampler
from bench.receivers.orthanc import find_binary
from tests.conftest import PYTHON, REPO, require_tool, run_tool

SMALL = 24  # objects: 6 per folder, so 4 associations each send some


@pytest.mark.system
@pytest.mark.slow
def test_quick_run_writes_results_and_every_instance_arrives(tmp_path: Path) -> None:
    for tool in ("storescu", "storescp", "echoscu", "dd"):
        require_tool(tool)
    receivers = ["appliance-os", "storescp"] + (["orthanc"] if find_binary() else [])
    results = tmp_path / "results"
    cp = run_tool(
        [PYTHON, "-m", "bench", "ingest", "--quick", "--corpus", "small", "--small", str(SMALL),
         "--assocs", "1,4", "--receivers", ",".join(receivers), "--no-install",
         "--workdir", str(tmp_path / "work"), "--results", str(results)],
        timeout_s=240, cwd=REPO,
    )  # fmt: skip
    print(cp.stdout[-6000:], cp.stderr[-3000:])
    assert cp.returncode == 0, f"bench exited {cp.returncode}\n{cp.stdout[-3000:]}{cp.stderr}"

    (json_path,) = results.glob("*.json")
    data = json.loads(json_path.read_text())
    assert data["skipped"] == {}, data["skipped"]
    corpus_files = [p for p in (tmp_path / "work" / "corpora").rglob("*.dcm")]
    assert len(corpus_files) == SMALL == data["corpora"]["small"]["files"]

    ingest = [r for r in data["runs"] if r["kind"] == "ingest"]
    assert sorted((r["receiver"], r["assocs"]) for r in ingest) == sorted(
        (name, n) for name in receivers for n in (1, 4))
    for run in ingest:
        where = f"{run['receiver']} x{run['assocs']}"
        assert run["ok"], f"{where}: {run['errors']}"
        assert run["arrived"] == run["expected"] == SMALL, where
        assert run["wall_s"] > 0 and run["inst_per_s"] > 0, where
        assert run["receiver_cpu_s"] >= 0 and run["peak_rss_mib"] > 0, where
        if run["receiver"].startswith("appliance"):
            assert run["object_files"] == SMALL, where  # the index agrees with the disk
    echo = {r["receiver"]: r for r in data["runs"] if r["kind"] == "echo"}
    assert set(echo) == set(receivers)
    for name, run in echo.items():
        assert run["ok"] and run["echo_per_s"] > 0 and run["assoc_per_s"] > 0, (name, run)

    assert data["machine"]["file_create_us"] > 0
    md = (results / "latest.md").read_text()
    assert md == (results / f"{data['meta']['timestamp']}.md").read_text()
    assert "(file create " in md
    assert "| corpus, assocs | receiver | inst/s |" in md
    for name in receivers:
        assert f"| small, 4 | {name} |" in md
    assert md.strip().splitlines()[0] in cp.stdout  # the table is printed too
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (results / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_tree_cpu_includes_reaped_children() -> None:
    """A child that burns CPU, exits and is reaped inside the interval is still counted."""
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    parent = os.fork()
    if parent == 0:  # the "receiver": forks a worker for one request, reaps it
        try:
            os.read(go_r, 1)
            child = os.fork()
            if child == 0:
                end = time.process_time() + 0.3
                while time.process_time() < end:
                    pass
                os._exit(0)
            os.waitpid(child, 0)
            os.write(done_w, b"d")
            os.read(go_r, 1)  # stay alive until the sampler has stopped
        finally:
            os._exit(0)
    sampler = Sampler(parent, interval_s=0.05)
    sampler.start()
    os.write(go_w, b"g")
    assert os.read(done_r, 1) == b"d"  # the burner has exited and been reaped
    usage = sampler.stop()
    os.write(go_w, b"x")
    os.waitpid(parent, 0)
    for fd in (go_r, go_w, done_r, done_w):
        os.close(fd)
    assert 0.25 <= usage.cpu_s < 5, usage


def test_orthanc_lookup_reports_why_not_without_install() -> None:
    from bench.receivers.orthanc import locate

    binary, why = locate(install=False)
    if shutil.which("Orthanc") or find_binary():
        assert binary is not None
    else:
        assert binary is None and "--no-install" in why


def test_package_lookup_says_what_it_found_or_why_not() -> None:
    from bench import packages

    found, why = packages.locate("nothing", ("no-such-tool", "/bin/sh"), install=False)
    assert found == "/bin/sh" and why == "found /bin/sh"
    found, why = packages.locate("nothing", ("no-such-tool",), install=False)
    assert found is None and "no-such-tool (Debian package nothing)" in why
    assert "--no-install" in why


def test_dcmtk_lookup_skips_same_named_python_scripts(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom installs `storescu` & co. as Python scripts; first on PATH in an activated
    virtualenv, they must not stand in for DCMTK's tools in a run that says DCMTK."""
    from bench import packages

    script_dir, native_dir = tmp_path / "venv-bin", tmp_path / "usr-bin"
    script_dir.mkdir()
    native_dir.mkdir()
    (script_dir / "storescu").write_text("#!/usr/bin/env python3\nprint('pynetdicom')\n")
    (script_dir / "storescu").chmod(0o755)
    shutil.copy("/bin/true", native_dir / "storescu")  # an ELF executable
    monkeypatch.setenv("PATH", f"{script_dir}{os.pathsep}{native_dir}")
    monkeypatch.setattr(packages, "_dcmtk_found", {})
    assert shutil.which("storescu") == str(script_dir / "storescu")
    assert packages.find_dcmtk("storescu") == str(native_dir / "storescu")
    assert packages.dcmtk("storescu") == str(native_dir / "storescu")
    monkeypatch.setenv("PATH", str(script_dir))
    monkeypatch.setattr(packages, "_dcmtk_found", {})
    assert packages.find_dcmtk("storescu") is None
    with pytest.raises(SystemExit) as info:
        packages.require_dcmtk(("storescu",), install=False)
    assert "DCMTK's storescu missing" in str(info.value)


def test_ingest_without_dcmtk_exits_naming_it(tmp_path: Path) -> None:
    """With only the virtualenv on PATH (pynetdicom's storescu/echoscu scripts, no DCMTK)
    `bench ingest` stops at once, naming what is missing, instead of failing every run or
    measuring pynetdicom's client as if it were DCMTK's."""
    env = dict(os.environ, PATH=str(Path(PYTHON).parent))
    cp = run_tool([PYTHON, "-m", "bench", "ingest", "--quick", "--no-install",
                   "--workdir", str(tmp_path / "w"), "--results", str(tmp_path / "r")],
                  timeout_s=60, cwd=REPO, env=env)  # fmt: skip
    assert cp.returncode != 0
    assert "DCMTK's storescu, echoscu missing" in cp.stderr, cp.stderr[-2000:]
    assert not (tmp_path / "r").exists()  # stopped before any corpus or run


def _results(corpora: dict[str, object], *, reps: int, assocs: int, skipped: dict[str, str],
             runs: list[dict[str, object]]) -> dict[str, object]:
    """A results document as bench.ingest writes it, around synthetic ``runs``."""
    return {
        "meta": {"timestamp": "T", "command": "c", "reps": reps, "assocs": [assocs],
                 "quick": False},
        "machine": {"cpu": "x", "cores": 2, "memory_gib": 1, "os": "o",
                    "workdir_filesystem": "f", "dcmtk": "d", "git_sha": "s"},
        "corpora": corpora, "receiver_order": ["appliance-os", "storescp-fork"],
        "scaling_names": [], "receivers": {}, "skipped": skipped, "disk": [], "runs": runs,
    }


def test_summary_takes_medians_of_ok_runs_and_ratios_to_storescp_fork() -> None:
    from bench.report import markdown, summarize

    def run(name: str, rate: float, cpu_us: float, ok: bool = True) -> dict[str, object]:
        return {"kind": "ingest", "receiver": name, "corpus": "ct", "assocs": 4, "rep": 0,
                "ok": ok, "errors": [] if ok else ["3 of 10 instances arrived"],
                "inst_per_s": rate, "mb_per_s": rate / 2, "cpu_s_per_gb": 1.0,
                "cpu_us_per_inst": cpu_us, "peak_rss_mib": 100.0, "peak_pss_mib": 50.0,
                "client_cpu_us_per_inst": 500.0, "wall_s": 1.0}

    results = _results(
        {"ct": {"files": 10, "bytes": 5_000_000, "mean_bytes": 500_000}}, reps=3, assocs=4,
        skipped={"orthanc": "not installed"},
        runs=[run("appliance-os", r, 1000) for r in (300, 100, 200)]
        + [run("appliance-os", 9999, 1, ok=False)]
        + [run("storescp-fork", r, 2000) for r in (400, 400, 400)])
    summary = summarize(results)
    rows = {r["receiver"]: r for r in summary["ingest"]}
    app = rows["appliance-os"]
    assert app["inst_per_s"] == (200, 100, 300)  # the failed run's 9999 is left out
    assert (app["ok"], app["runs"]) == (3, 4)
    assert app["x_fork_inst"] == 0.5 and app["x_fork_cpu"] == 0.5
    assert app["x_orthanc_inst"] is None
    md = markdown(results, summary)
    assert "| ct, 4 | appliance-os | 200 (100–300) |" in md
    assert "PSS 50.0" in md
    assert "| ct, 4 | storescp-fork | 400 |" in md
    assert "- **orthanc**: not installed" in md
    assert "3 of 10 instances arrived" in md


def test_huge_corpus_gets_a_memory_table_and_one_association() -> None:
    from bench.__main__ import _specs, build_parser
    from bench.report import markdown, summarize

    args = build_parser().parse_args(["ingest", "--corpus", "huge,ct", "--quick"])
    assert [s.name for s in _specs(args)] == ["ct", "huge"]  # the corpora's own order

    def run(name: str, pss: float) -> dict[str, object]:
        return {"kind": "ingest", "receiver": name, "corpus": "huge", "assocs": 1, "rep": 0,
                "ok": True, "errors": [], "inst_per_s": 0.5, "mb_per_s": 1000.0,
                "cpu_s_per_gb": 0.5, "cpu_us_per_inst": 1e6, "peak_rss_mib": 2 * pss,
                "peak_pss_mib": pss, "client_cpu_us_per_inst": 1e6, "wall_s": 2.0}

    results = _results(
        {"huge": {"files": 1, "bytes": 2_100_000_000, "mean_bytes": 2.1e9}}, reps=1, assocs=1,
        skipped={}, runs=[run("appliance-os", 200.0), run("storescp-fork", 40.0)])
    md = markdown(results, summarize(results))
    assert "Memory while one huge object arrives" in md
    assert "| appliance-os | 1000 | 200 | 400 |" in md
    assert "| storescp-fork | 1000 | 40.0 | 80.0 |" in md


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_cpu_is_split_by_role_with_instance_numbers_merged() -> None:
    """`pacs-worker-0` and `pacs-worker-1` add up under `pacs-worker`; the idle parent's own
    role gets (almost) nothing."""
    go_r, go_w = os.pipe()
    parent = os.fork()
    if parent == 0:
        try:
            kids = []
            for i in range(2):
                pid = os.fork()
                if pid == 0:
                    Path("/proc/self/comm").write_text(f"bench-burn-{i}")
                    os.read(go_r, 1)
                    end = time.process_time() + 0.25
                    while time.process_time() < end:
                        pass
                    os.read(go_r, 1)  # alive until the sampler has stopped
                    os._exit(0)
                kids.append(pid)
            Path("/proc/self/comm").write_text("bench-idle")
            for pid in kids:
                os.waitpid(pid, 0)
        finally:
            os._exit(0)
    time.sleep(0.2)  # both children named
    sampler = Sampler(parent, interval_s=0.05)
    sampler.start()
    os.write(go_w, b"gg")
    time.sleep(0.9)  # both burn 0.25 s of CPU (2 cores or 1)
    usage = sampler.stop()
    os.write(go_w, b"xx")
    os.waitpid(parent, 0)
    os.close(go_r)
    os.close(go_w)
    roles = usage.cpu_s_by_role
    assert 0.45 <= roles.get("bench-burn", 0.0) < 2, roles
    assert roles.get("bench-idle", 0.0) < 0.1, roles
    assert abs(sum(roles.values()) - usage.cpu_s) < 0.05, (roles, usage.cpu_s)


def test_scaling_table_has_the_acceptor_bound() -> None:
    from bench.report import markdown, summarize

    def run(name: str, acceptor_us: float) -> dict[str, object]:
        return {"kind": "ingest", "receiver": name, "corpus": "small", "assocs": 4, "rep": 0,
                "ok": True, "errors": [], "inst_per_s": 3000.0, "mb_per_s": 27.0,
                "cpu_s_per_gb": 30.0, "cpu_us_per_inst": 300.0, "peak_rss_mib": 100.0,
                "peak_pss_mib": 50.0, "client_cpu_us_per_inst": 150.0, "wall_s": 1.0,
                "cpu_us_per_inst_by_role": {"pacs-acceptor": acceptor_us,
                                            "pacs-worker": 210.0, "pacs": 1.0}}

    results = _results(
        {"small": {"files": 10, "bytes": 90_000, "mean_bytes": 9000}}, reps=1, assocs=4,
        skipped={}, runs=[run("appliance-os", 80.0), run("appliance-os-w2", 100.0)])
    results["receivers"] = {
        "appliance-os": {"family": "appliance", "durability": "os", "workers": 1},
        "appliance-os-w2": {"family": "appliance", "durability": "os", "workers": 2}}
    md = markdown(results, summarize(results))
    assert "| acceptor µs/inst | workers µs/inst | acceptor-bound inst/s |" in md
    assert "| small | 1 | 3000 | 27.0 | 300 | 30.0 | 80.0 | 210 | 12500 |" in md
    assert "| small | 2 | 3000 | 27.0 | 300 | 30.0 | 100 | 210 | 10000 |" in md


def test_file_create_probe_cleans_up_and_a_slow_folder_is_flagged(tmp_path: Path) -> None:
    from bench.machine import SLOW_CREATE_US, file_create_cpu_us
    from bench.report import markdown, summarize

    us = file_create_cpu_us(tmp_path, files=50)
    assert us > 0
    assert list(tmp_path.iterdir()) == []  # the probe folder is gone
    results = _results({}, reps=1, assocs=1, skipped={}, runs=[])
    results["machine"]["file_create_us"] = 30.0
    md = markdown(results, summarize(results))
    assert "(file create 30.0 µs CPU)" in md and "SLOW" not in md
    results["machine"]["file_create_us"] = SLOW_CREATE_US * 3
    assert "SLOW: recent bulk deletions" in markdown(results, summarize(results))
    del results["machine"]["file_create_us"]  # results written before the probe existed
    assert "file create" not in markdown(results, summarize(results))


def _processes_mentioning(text: str) -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = Path(entry.path, "cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline:
                out.append(int(entry.name))
    return out


@pytest.mark.slow
def test_sigterm_to_the_harness_stops_its_receiver(tmp_path: Path) -> None:
    """A harness stopped with SIGTERM (a CI timeout, `kill`) takes the receiver it started
    down with it instead of leaving it listening (it runs in its own process group)."""
    import signal
    import subprocess

    require_tool("storescu")
    work = tmp_path / "work"
    harness = subprocess.Popen(
        [PYTHON, "-m", "bench", "ingest", "--quick", "--corpus", "small", "--small", "8",
         "--assocs", "1", "--receivers", "appliance-os", "--no-scaling", "--no-echo",
         "--no-dd", "--no-install", "--workdir", str(work), "--results", str(tmp_path / "r")],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        receiver = str(work / "runs")
        deadline = time.monotonic() + 120
        while not _processes_mentioning(receiver):
            assert harness.poll() is None, "the harness ended before its receiver started"
            assert time.monotonic() < deadline, "no receiver started"
            time.sleep(0.05)
        harness.send_signal(signal.SIGTERM)
        assert harness.wait(60) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 30
        while _processes_mentioning(receiver):
            assert time.monotonic() < deadline, "the receiver outlived the harness"
            time.sleep(0.1)
    finally:
        if harness.poll() is None:
            harness.kill()
        for pid in _processes_mentioning(str(work)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
