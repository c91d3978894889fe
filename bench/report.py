"""Results of a session: the JSON of every run, the markdown table of medians, the PNG chart.

Medians with (min–max) over the repetitions, of the runs where every instance arrived;
ratios are of medians, within the same session (a noisy machine shifts every receiver of a
round together, so ratios travel better than absolute figures). MB = 10^6 bytes, GB = 10^9,
MiB = 2^20. Receiver CPU is its whole process tree during the transfer only.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.machine import SLOW_CREATE_US
from bench.receivers import BASELINE, ORTHANC

ECHO_BASELINES = ("storescp", "storescp-fork")  # the first one that ran
METRICS = ("inst_per_s", "mb_per_s", "cpu_s_per_gb", "cpu_us_per_inst", "peak_rss_mib",
           "peak_pss_mib", "client_cpu_us_per_inst", "wall_s", "stored_bytes", "saved_bytes")
ECHO_METRICS = ("echo_per_s", "scu_echo_per_s", "assoc_per_s")
# The appliance's processes by role (bench.procstat.role_of): the acceptor is one process
# whatever the host, so its CPU per instance bounds ingest on any number of cores.
ROLE_METRICS = {"pacs-acceptor": "acceptor_cpu_us_per_inst",
                "pacs-worker": "workers_cpu_us_per_inst"}
Stat = tuple[float, float, float]  # median, min, max


def _stat(values: Iterable[float]) -> Stat | None:
    vals = sorted(values)
    return (statistics.median(vals), vals[0], vals[-1]) if vals else None


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Medians per (corpus, assocs, receiver) and per receiver for C-ECHO, plus ratios."""
    ingest: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    echo: dict[str, list[dict[str, Any]]] = {}
    for run in results["runs"]:
        if run["kind"] == "ingest":
            ingest.setdefault((run["corpus"], run["assocs"], run["receiver"]), []).append(run)
        elif run["kind"] == "echo":
            echo.setdefault(run["receiver"], []).append(run)
    rows = []
    for (corpus, assocs, name), runs in ingest.items():
        ok = [r for r in runs if r["ok"]]
        row: dict[str, Any] = {"corpus": corpus, "assocs": assocs, "receiver": name,
                               "runs": len(runs), "ok": len(ok)}
        for metric in METRICS:
            row[metric] = _stat(r[metric] for r in ok if metric in r)
        for role, key in ROLE_METRICS.items():
            row[key] = _stat(r["cpu_us_per_inst_by_role"][role] for r in ok
                             if role in r.get("cpu_us_per_inst_by_role", {}))
        rows.append(row)
    by_key = {(r["corpus"], r["assocs"], r["receiver"]): r for r in rows}
    for row in rows:
        for ref, key in ((BASELINE, "fork"), (ORTHANC, "orthanc")):
            base = by_key.get((row["corpus"], row["assocs"], ref))
            row[f"x_{key}_inst"] = _ratio(row, base, "inst_per_s")
            row[f"x_{key}_cpu"] = _ratio(row, base, "cpu_us_per_inst")
    echo_rows = []
    for name, runs in echo.items():
        ok = [r for r in runs if r["ok"]]
        erow: dict[str, Any] = {"receiver": name, "runs": len(runs), "ok": len(ok)}
        for metric in ECHO_METRICS:
            erow[metric] = _stat(r[metric] for r in ok if metric in r)
        echo_rows.append(erow)
    ran = {e["receiver"]: e for e in echo_rows if e["echo_per_s"]}
    echo_base = next((name for name in ECHO_BASELINES if name in ran), None)
    for erow in echo_rows:
        erow["x_base_echo"] = _ratio(erow, ran.get(echo_base or ""), "echo_per_s")
    disk = _stat(d["mb_per_s"] for d in results.get("disk", []) if "mb_per_s" in d)
    return {"ingest": rows, "echo": echo_rows, "echo_baseline": echo_base,
            "disk_mb_per_s": disk}


def _ratio(row: dict[str, Any], base: dict[str, Any] | None, metric: str) -> float | None:
    if base is None or not row.get(metric) or not base.get(metric) or not base[metric][0]:
        return None
    return float(row[metric][0] / base[metric][0])


# ---- markdown ------------------------------------------------------------------------------


def _num(v: float) -> str:
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _cell(stat: Stat | None) -> str:
    if stat is None:
        return "–"
    med, lo, hi = stat
    return _num(med) if lo == hi else f"{_num(med)} ({_num(lo)}–{_num(hi)})"


def _x(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}×"


def _create_cost(machine: dict[str, Any]) -> str:
    us = machine.get("file_create_us")
    if us is None:
        return ""
    slow = " — SLOW: recent bulk deletions near the work folder? Figures skewed" \
        if us > SLOW_CREATE_US else ""
    return f" (file create {_num(us)} µs CPU{slow})"


def _order(results: dict[str, Any]) -> dict[str, int]:
    return {name: i for i, name in enumerate(results.get("receiver_order", []))}


def markdown(results: dict[str, Any], summary: dict[str, Any]) -> str:
    meta, machine = results["meta"], results["machine"]
    order = _order(results)
    out = [
        f"# Ingest benchmark {meta['timestamp']}",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"{machine['os']}, {machine['workdir_filesystem']}{_create_cost(machine)}; "
        f"{machine['dcmtk']}; git {str(machine['git_sha'])[:12]}.",
        f"Command: `{meta['command']}`",
        "",
        f"Medians (min–max) of {meta['reps']} repetition(s), receivers alternated; only runs "
        "where every instance arrived. Client: DCMTK `storescu -xe -R -nh +sd +r`, "
        "`TCP_NODELAY=1`; N associations = N storescu processes. Receiver CPU = its process "
        "tree during the transfer; ×fork and ×Orthanc are ratios of medians to "
        "`storescp --fork` and Orthanc. Peak RSS is summed over the tree (shared memory "
        "counted in every process that maps it); PSS splits shared pages among their users.",
        *(["", "(`--quick`: few objects, so CPU per instance is coarse: the kernel counts CPU in "
            "10 ms ticks.)"] if meta.get("quick") else []),
        "",
        "Corpora: " + "; ".join(
            f"**{name}** {c['files']} × {c['mean_bytes'] / 1e6:.3g} MB" for name, c in
            results["corpora"].items()),
        "",
        "| corpus, assocs | receiver | inst/s | MB/s | CPU s/GB | CPU µs/inst | peak RSS MiB "
        "| client CPU µs/inst | inst/s ×fork | CPU/inst ×fork | inst/s ×Orthanc | ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    rows = sorted(summary["ingest"], key=lambda r: (
        list(results["corpora"]).index(r["corpus"]), r["assocs"], order.get(r["receiver"], 99)))
    for r in rows:
        if r["receiver"] in results.get("scaling_names", []):
            continue
        pss = f"; PSS {_num(r['peak_pss_mib'][0])}" if r["peak_pss_mib"] else ""
        out.append(
            f"| {r['corpus']}, {r['assocs']} | {r['receiver']} | {_cell(r['inst_per_s'])} | "
            f"{_cell(r['mb_per_s'])} | {_cell(r['cpu_s_per_gb'])} | "
            f"{_cell(r['cpu_us_per_inst'])} | {_cell(r['peak_rss_mib'])}{pss} | "
            f"{_cell(r['client_cpu_us_per_inst'])} | {_x(r['x_fork_inst'])} | "
            f"{_x(r['x_fork_cpu'])} | {_x(r['x_orthanc_inst'])} | {r['ok']}/{r['runs']} |")
    out += _echo_table(summary, order) + _scaling_table(results, summary)
    out += _disk_section(summary) + _memory_section(summary, order)
    out += _stored_section(results, summary, order)
    out += _problems(results)
    return "\n".join(out) + "\n"


def _echo_table(summary: dict[str, Any], order: dict[str, int]) -> list[str]:
    if not summary["echo"]:
        return []
    out = ["", "C-ECHO (PS3.7 §9.1.5): round trips per second on one association, and "
           "associations per second with one C-ECHO each.", "",
           "| receiver | echo/s (`echoscu --repeat`) | echo/s (our SCU) | assoc/s (our SCU) "
           f"| echo/s ×{summary['echo_baseline'] or 'storescp'} |", "|---|---|---|---|---|"]
    for e in sorted(summary["echo"], key=lambda e: order.get(e["receiver"], 99)):
        out.append(f"| {e['receiver']} | {_cell(e['echo_per_s'])} | "
                   f"{_cell(e['scu_echo_per_s'])} | {_cell(e['assoc_per_s'])} | "
                   f"{_x(e['x_base_echo'])} |")
    return out


def _scaling_table(results: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    workers = {name: d.get("workers") for name, d in results["receivers"].items()
               if d.get("family") == "appliance" and d.get("durability") == "os"}
    rows = [r for r in summary["ingest"] if r["receiver"] in workers and r["inst_per_s"]
            and r["assocs"] == max(results["meta"]["assocs"])]
    if len({workers[r["receiver"]] for r in rows}) < 2:
        return []
    out = ["", "Scaling: appliance, `os` durability, "
           f"{max(results['meta']['assocs'])} associations, by worker processes "
           f"(machine: {results['machine']['cores']} cores).", "",
           "| corpus | workers | inst/s | MB/s | CPU µs/inst | CPU s/GB | acceptor µs/inst "
           "| workers µs/inst | acceptor-bound inst/s |",
           "|---|---|---|---|---|---|---|---|---|"]
    seen: set[tuple[str, int]] = set()
    for r in sorted(rows, key=lambda r: (r["corpus"], workers[r["receiver"]])):
        key = (r["corpus"], workers[r["receiver"]])
        if key in seen:
            continue
        seen.add(key)
        acceptor = r.get("acceptor_cpu_us_per_inst")
        bound = _num(1e6 / acceptor[0]) if acceptor and acceptor[0] > 0 else "–"
        out.append(f"| {r['corpus']} | {key[1]} | {_cell(r['inst_per_s'])} | "
                   f"{_cell(r['mb_per_s'])} | {_cell(r['cpu_us_per_inst'])} | "
                   f"{_cell(r['cpu_s_per_gb'])} | {_cell(acceptor)} | "
                   f"{_cell(r.get('workers_cpu_us_per_inst'))} | {bound} |")
    out += ["", "Per role: CPU µs per instance of the acceptor (one process on any host) and of "
            "all workers together. Workers scale with cores; the acceptor does not, so "
            "10⁶ / its µs per instance is the most this design can ingest on any number of "
            "cores (the DESIGN's escape hatch, handing a storage association's socket to its "
            "worker, would lift it)."]
    return out


def _disk_section(summary: dict[str, Any]) -> list[str]:
    disk = summary["disk_mb_per_s"]
    large = [r for r in summary["ingest"] if r["corpus"] == "large" and r["mb_per_s"]]
    if disk is None:
        return []
    out = ["", f"Sequential write bandwidth (`dd bs=1M conv=fdatasync`): {_cell(disk)} MB/s.",
           "", "| large, assocs | receiver | MB/s | % of dd |", "|---|---|---|---|"]
    for r in large:
        out.append(f"| {r['assocs']} | {r['receiver']} | {_cell(r['mb_per_s'])} | "
                   f"{100 * r['mb_per_s'][0] / disk[0]:.0f}% |")
    return out


def _memory_section(summary: dict[str, Any], order: dict[str, int]) -> list[str]:
    """Peak memory of each receiver's whole process tree while the ``huge`` object arrived
    (the issue's bar: the appliance's total under 256 MB for a 2 GB object)."""
    rows = sorted((r for r in summary["ingest"] if r["corpus"] == "huge" and r["mb_per_s"]),
                  key=lambda r: order.get(r["receiver"], 99))
    if not rows:
        return []
    out = ["", "Memory while one huge object arrives (one association; peaks sampled every "
           "0.1 s over the receiver's process tree; PSS counts each shared page once in "
           "total, RSS once per process that maps it):", "",
           "| receiver | MB/s | peak PSS MiB | peak RSS MiB |", "|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['receiver']} | {_cell(r['mb_per_s'])} | {_cell(r['peak_pss_mib'])} | "
                   f"{_cell(r['peak_rss_mib'])} |")
    return out


def _stored_section(results: dict[str, Any], summary: dict[str, Any],
                    order: dict[str, int]) -> list[str]:
    """Disk bytes the appliance receivers stored, and what compression on ingest saved."""
    rows = [r for r in summary["ingest"] if r.get("stored_bytes")
            and r["receiver"] not in results.get("scaling_names", [])]
    if not rows:
        return []
    out = ["", "Disk: Part 10 bytes stored by the appliance (index totals, one run's store), and "
           "what `compress_on_ingest = \"rle\"` saved (`appliance-rle`; objects RLE would not "
           "shrink are stored as received).", "",
           "| corpus, assocs | receiver | corpus MB | stored MB | saved MB | disk saved |",
           "|---|---|---|---|---|---|"]
    corpora = list(results["corpora"])
    for r in sorted(rows, key=lambda r: (corpora.index(r["corpus"]), r["assocs"],
                                         order.get(r["receiver"], 99))):
        stored = r["stored_bytes"][0]
        saved = r["saved_bytes"][0] if r.get("saved_bytes") else 0.0
        share = saved / (stored + saved) if stored + saved else 0.0
        out.append(f"| {r['corpus']}, {r['assocs']} | {r['receiver']} | "
                   f"{_num(results['corpora'][r['corpus']]['bytes'] / 1e6)} | "
                   f"{_num(stored / 1e6)} | {_num(saved / 1e6)} | {100 * share:.1f}% |")
    return out


def _problems(results: dict[str, Any]) -> list[str]:
    out = []
    if results["skipped"]:
        out += ["", "Not run:", ""]
        out += [f"- **{name}**: {why}" for name, why in results["skipped"].items()]
    failed = [r for r in results["runs"] if not r["ok"]]
    if failed:
        out += ["", f"Failed runs ({len(failed)}, excluded from the medians):", ""]
        for r in failed:
            where = f"{r.get('corpus', 'echo')} x{r.get('assocs', 1)}"
            out.append(f"- {r['receiver']} {where} rep {r['rep'] + 1}: "
                       f"{'; '.join(r['errors'])[:300]}")
    return out


# ---- files ---------------------------------------------------------------------------------


def rewrite(json_path: Path, out_dir: Path) -> tuple[Path, Path, Path | None]:
    """Render the markdown and chart again from a results file (``python -m bench report``)."""
    results = json.loads(json_path.read_text())
    results.pop("summary", None)
    return write(results, out_dir)


def write(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path, Path | None]:
    """``<timestamp>.json``, ``<timestamp>.md``, ``latest.md`` and ``latest.png`` (when
    matplotlib is there) in ``out_dir``; returns (json, markdown, png or None)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(results)
    results = {**results, "summary": summary}
    stamp = results["meta"]["timestamp"]
    json_path = out_dir / f"{stamp}.json"
    json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    text = markdown(results, summary)
    md_path = out_dir / f"{stamp}.md"
    md_path.write_text(text)
    (out_dir / "latest.md").write_text(text)
    from bench.chart import draw

    png = draw(results, summary, out_dir / "latest.png")
    return json_path, md_path, png
