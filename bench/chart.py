"""The PNG the README shows: per (corpus, associations), median throughput with its min–max
range (top row: instances/s; MB/s for the large corpus) and receiver CPU per instance
(bottom row; CPU s per GB for the large corpus), one bar per receiver, the appliance's bars
in one colour.

matplotlib is in the ``bench`` extra; without it ``draw`` returns None and says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_COLOURS = {"appliance": "#1f77b4", "storescp": "#7f7f7f", "orthanc": "#ff7f0e",
            "pynetdicom": "#2ca02c"}


def draw(results: dict[str, Any], summary: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib not installed (pip install -e '.[bench]'): no chart")
        return None
    scaling = set(results.get("scaling_names", []))
    order = {n: i for i, n in enumerate(results.get("receiver_order", []))}
    corpora = list(results["corpora"])
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in summary["ingest"]:
        if row["receiver"] not in scaling and row["inst_per_s"]:
            groups.setdefault((row["corpus"], row["assocs"]), []).append(row)
    if not groups:
        return None
    keys = sorted(groups, key=lambda k: (corpora.index(k[0]), k[1]))
    fig, axes = plt.subplots(2, len(keys), figsize=(3.2 * len(keys) + 1, 7), squeeze=False)
    for col, key in enumerate(keys):
        rows = sorted(groups[key], key=lambda r: order.get(r["receiver"], 99))
        names = [r["receiver"] for r in rows]
        colours = [_colour(results, n) for n in names]
        metric = "mb_per_s" if key[0] in ("large", "huge") else "inst_per_s"
        large = metric == "mb_per_s"
        cpu = ("cpu_s_per_gb", "receiver CPU s / GB") if large else (
            "cpu_us_per_inst", "receiver CPU µs / instance")
        for ax, m, label in ((axes[0][col], metric, "MB/s" if large else "instances/s"),
                             (axes[1][col], *cpu)):
            stats = [r[m] for r in rows]
            med = [s[0] if s else 0.0 for s in stats]
            err = [[s[0] - s[1] if s else 0.0 for s in stats],
                   [s[2] - s[0] if s else 0.0 for s in stats]]
            ax.barh(range(len(names)), med, xerr=err, color=colours, capsize=3)
            ax.set_yticks(range(len(names)), names, fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel(label, fontsize=8)
            ax.tick_params(axis="x", labelsize=8)
            if m == metric:
                ax.set_title(f"{key[0]}, {key[1]} assoc{'s' if key[1] > 1 else ''}", fontsize=10)
    machine = results["machine"]
    fig.suptitle(f"DICOM ingest, same client (storescu), medians and min–max of "
                 f"{results['meta']['reps']} run(s) — {machine['cores']} cores, "
                 f"{results['meta']['timestamp']}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _colour(results: dict[str, Any], name: str) -> str:
    family = results["receivers"].get(name, {}).get("family", "")
    return _COLOURS.get(str(family), "#9467bd")
