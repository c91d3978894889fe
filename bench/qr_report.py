"""Results of a ``python -m bench retrieve`` session: the JSON of every run and a markdown
table of medians (min–max) over the repetitions, with the ratio of each appliance receiver to
Orthanc (a ratio of medians, within the session).

Only runs that were ``ok`` (every instance retrieved, every query answered as expected) count
in the medians. MB = 10^6 bytes. Latencies are per query, request to final response, in ms;
p99 is per run (nearest rank), and the table gives the median of those.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.receivers import ORTHANC
from bench.report import _cell, _x

Stat = tuple[float, float, float]  # median, min, max

# (kind, metric, label): the table's rows, in order; "find" rows repeat per query.
RETRIEVE_ROWS = (
    ("get", "mb_per_s", "C-GET study, MB/s"),
    ("get", "inst_per_s", "C-GET study, inst/s"),
    ("get", "receiver_cpu_s", "C-GET receiver CPU s"),
    ("get", "client_cpu_s", "C-GET client CPU s (getscu)"),
    ("move", "mb_per_s", "C-MOVE study, MB/s"),
    ("move", "inst_per_s", "C-MOVE study, inst/s"),
    ("move", "receiver_cpu_s", "C-MOVE receiver CPU s"),
    ("move", "destination_cpu_s", "C-MOVE destination CPU s (storescp)"),
)
FIND_ROWS = (
    ("median_ms", "median ms"),
    ("p99_ms", "p99 ms"),
    ("cpu_us_per_query", "receiver CPU µs/query"),
)


def _stat(values: Iterable[float]) -> Stat | None:
    vals = sorted(values)
    return (statistics.median(vals), vals[0], vals[-1]) if vals else None


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """``{row label: {receiver: Stat | None}}`` in table order, plus the ok/total counts."""
    ok: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    total: dict[tuple[str, str, str], int] = {}
    for run in results["runs"]:
        if run["kind"] == "load":
            continue
        key = (run["kind"], run.get("query", ""), run["receiver"])
        total[key] = total.get(key, 0) + 1
        if run["ok"]:
            ok.setdefault(key, []).append(run)
    names = [n for n in results["receiver_order"] if n in results["receivers"]]
    rows: dict[str, dict[str, Stat | None]] = {}
    for kind, metric, label in RETRIEVE_ROWS:
        rows[label] = {n: _stat(r[metric] for r in ok.get((kind, "", n), []) if metric in r)
                       for n in names}  # fmt: skip
    for query in results["queries"]:
        for metric, what in FIND_ROWS:
            rows[f"C-FIND {query}: {what}"] = {
                n: _stat(r[metric] for r in ok.get(("find", query, n), []) if metric in r)
                for n in names
            }
    counts = {f"{k[0]} {k[1]}".strip() + f" {k[2]}": f"{len(ok.get(k, []))}/{v}"
              for k, v in total.items()}  # fmt: skip
    return {"rows": rows, "receivers": names, "ok_counts": counts}


def _ratio(a: Stat | None, b: Stat | None) -> float | None:
    return a[0] / b[0] if a and b and b[0] else None


def markdown(results: dict[str, Any], summary: dict[str, Any]) -> str:
    meta, machine, archive = results["meta"], results["machine"], results["archive"]
    names: list[str] = summary["receivers"]
    others = [n for n in names if n != ORTHANC]
    ratios = others if ORTHANC in names else []
    out = [
        f"# Query/Retrieve benchmark {meta['timestamp']}",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"{machine['os']}, {machine['workdir_filesystem']}; {machine['dcmtk']}; "
        f"git {str(machine['git_sha'])[:12]}{_load(machine)}.",
        f"Command: `{meta['command']}`",
        "",
        f"Archive: a study of {archive['study_instances']} CT instances "
        f"({archive['study_bytes'] / 1e6:.0f} MB, "
        f"{archive['study_bytes'] / max(archive['study_instances'], 1) / 1e6:.2f} MB each) "
        f"among {archive['studies']} studies ({archive['instances']} instances). "
        f"Medians (min–max) of {meta['reps']} alternated repetition(s), only runs where every "
        "instance was retrieved and every query returned the expected matches. C-GET: DCMTK "
        "`getscu`; C-MOVE: `movescu` to a DCMTK `storescp`; C-FIND: our SCU "
        f"(`appliance/qr_scu.py`), {meta['queries']} queries of each kind on one association "
        "after one warm-up. Receiver CPU = its process tree during the measurement. "
        "×Orthanc = ratio of medians (above 1 = more for throughput, slower for latency "
        "and CPU).",
        "",
        "| measure | " + " | ".join(names) + "".join(f" | {n} ×Orthanc" for n in ratios)
        + " |",
        "|---" * (1 + len(names) + len(ratios)) + "|",
    ]  # fmt: skip
    for label, stats in summary["rows"].items():
        cells = [_cell(stats[n]) for n in names]
        cells += [_x(_ratio(stats[n], stats[ORTHANC])) for n in ratios]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out += ["", "Expected matches per query: " + "; ".join(
        f"{q} → {n}" for q, n in results["queries"].items()) + "."]  # fmt: skip
    counts = summary["ok_counts"]
    short = {k: v for k, v in counts.items() if v.split("/")[0] != v.split("/")[1]}
    n_ok = sum(int(v.split("/")[0]) for v in counts.values())
    n_all = sum(int(v.split("/")[1]) for v in counts.values())
    out += ["", f"{n_ok} of {n_all} runs ok" + (
        "; not all ok: " + ", ".join(f"{k} {v}" for k, v in short.items()) if short else "")
        + "."]  # fmt: skip
    loads = [r for r in results["runs"] if r["kind"] == "load" and r.get("wall_s")]
    if loads:
        out += ["", "Loading (storescu, one association; not part of the comparison): "
                + "; ".join(f"{r['receiver']} {r['inst_per_s']:.0f} inst/s" for r in loads)
                + "."]  # fmt: skip
    return "\n".join(out + _problems(results)) + "\n"


def _load(machine: dict[str, Any]) -> str:
    load = machine.get("load_avg_at_start")
    return f"; load average at start {', '.join(f'{x:.2f}' for x in load)}" if load else ""


def _problems(results: dict[str, Any]) -> list[str]:
    out = []
    if results.get("skipped"):
        out += ["", "Not run:", ""]
        out += [f"- **{name}**: {why}" for name, why in results["skipped"].items()]
    failed = [r for r in results["runs"] if not r["ok"]]
    if failed:
        out += ["", f"Failed runs ({len(failed)}, excluded from the medians):", ""]
        for r in failed:
            what = f"{r['kind']} {r.get('query', '')}".strip()
            out.append(f"- {r['receiver']} {what} rep {r['rep'] + 1}: "
                       f"{'; '.join(r['errors'])[:300]}")
    return out


def write(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """``retrieve-<timestamp>.json``, ``retrieve-<timestamp>.md`` and ``retrieve-latest.md``
    in ``out_dir``; returns (json, markdown)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(results)
    stamp = results["meta"]["timestamp"]
    json_path = out_dir / f"retrieve-{stamp}.json"
    json_path.write_text(json.dumps({**results, "summary": summary}, indent=1, default=str)
                         + "\n")  # fmt: skip
    text = markdown(results, summary)
    md_path = out_dir / f"retrieve-{stamp}.md"
    md_path.write_text(text)
    (out_dir / "retrieve-latest.md").write_text(text)
    return json_path, md_path
