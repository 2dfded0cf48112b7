"""The benchmark's outputs: a table, the JSON record (schema below) and a stacked-bar plot.

JSON: ``{"device": {...}, "versions": {...}, "config": {...}, "command": ..., "date": ...,
"runs": [{"name", "backend", "precision", "batch_size", "seconds_per_image",
"images_per_second", "first_run_seconds", "peak_host_mb", "peak_device_mb",
"device_free_before_mb", "device_free_after_mb", "device_driver_mb", "timed_path", "captured",
"timed_with_progress" (the timed runs passed a progress callback, as the CLI does),
"per_step_ms": {phase: {"median", "min", "max"}}, "phases_from", "timed_updates",
"total_updates", "extrapolated", "speedup_vs_eager", ...}]}``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import EgsdeError
from .end_to_end import EAGER, PHASES

BAR_PHASES = (*PHASES, "rest")


def add_speedups(runs: list) -> None:
    """``speedup_vs_eager``: the eager run's seconds per image over this run's, same batch size."""
    eager = {r["batch_size"]: r["seconds_per_image"] for r in runs if r["backend"] == EAGER}
    for r in runs:
        base = eager.get(r["batch_size"])
        r["speedup_vs_eager"] = base / r["seconds_per_image"] if base else None


def format_table(record: dict) -> str:
    runs = record["runs"]
    head = (f"{'run':24s} {'s/image':>9s} {'img/s':>8s} {'vs eager':>8s} {'first s':>8s} {'host MB':>8s} "
            f"{'dev MB':>7s} {'drv MB':>7s} {'path':>10s} | ms per update: "
            + " ".join(f"{p:>12s}" for p in ("step", *BAR_PHASES)))
    lines = [head]
    for r in runs:
        ms = r["per_step_ms"]
        speed = f"{r['speedup_vs_eager']:.2f}x" if r.get("speedup_vs_eager") else "-"
        driver = f"{r['device_driver_mb']:7.0f}" if r.get("device_driver_mb") is not None else f"{'-':>7s}"
        path = "captured" if r.get("captured") else "eager" if r["backend"] == EAGER else "uncaptured"
        lines.append(
            f"{r['name']:24s} {r['seconds_per_image']:9.3f} {r['images_per_second']:8.3f} {speed:>8s} "
            f"{r['first_run_seconds']:8.2f} {r['peak_host_mb']:8.0f} {r['peak_device_mb']:7.0f} {driver} {path:>10s} |"
            "                 " + " ".join(f"{ms[p]['median']:12.2f}" for p in ("step", *BAR_PHASES)))
    extrapolated = [r for r in runs if r["extrapolated"]]
    if extrapolated:
        r = extrapolated[0]
        lines.append(f"(timed {r['timed_updates']} of {r['total_updates']} updates; seconds per image "
                     "extrapolated linearly to the full schedule)")
    for batch, found in record.get("student_speedup", {}).items():
        lines.append(f"student ({found['student_backend']}) at batch {batch}: {found['speedup']:.1f}x the official "
                     f"sampler's images per second ({found['official_backend']})")
    if any(r["backend"] != EAGER for r in runs):
        lines.append("(engine backends: times from Translator.run_tensor, the path users take; their phases from "
                     "separate uncaptured profiled runs)")
    return "\n".join(lines)


def write_json(record: dict, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def pyplot():
    """matplotlib.pyplot on the Agg backend, or an EgsdeError naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EgsdeError("--plot needs matplotlib: pip install 'egsde-rt[plot]' (or matplotlib)") from None
    return plt


def save_figure(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def plot(record: dict, path) -> Path:
    """One stacked bar per run (ms per update and image, by phase), the speedup over eager on it."""
    plt = pyplot()
    runs = record["runs"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(runs) + 2), 4.5))
    bottoms = [0.0] * len(runs)
    for phase in BAR_PHASES:
        heights = [max(r["per_step_ms"][phase]["median"], 0.0) / r["batch_size"] for r in runs]
        ax.bar(range(len(runs)), heights, bottom=bottoms, label=phase)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    for i, r in enumerate(runs):
        if r.get("speedup_vs_eager"):
            ax.text(i, bottoms[i], f"{r['speedup_vs_eager']:.2f}x", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(len(runs)), [r["name"] for r in runs], rotation=30, ha="right")
    ax.set_ylabel("ms per update and image")
    device = record["device"].get("gpu") or record["device"].get("cpu", "")
    ax.set_title(f"egsde-rt bench: {record['config'].get('engine_name', '')} on {device}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
