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


# Above this ratio of the slowest run's time to the fastest's, the totals are drawn on a log scale
# (on a linear one the fastest bars would be a few pixels high).
LOG_SCALE_RATIO = 10.0


def figure(record: dict):
    """The bench's figure: the time of each run (ms per update and image, its speedup over eager
    written on it; a log scale when the runs span more than ``LOG_SCALE_RATIO``), and below it
    each run's update split into its phases (shares of the update, so every run's split shows
    whatever its time)."""
    import textwrap

    plt = pyplot()
    runs = record["runs"]
    names = [r["name"] for r in runs]
    phases = [[max(r["per_step_ms"][phase]["median"], 0.0) / r["batch_size"] for phase in BAR_PHASES] for r in runs]
    totals = [sum(p) for p in phases]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(max(6.0, 1.1 * len(runs) + 2), 7.0),
                                      gridspec_kw={"height_ratios": [3, 2]})
    x = range(len(runs))
    top.bar(x, totals, color="tab:gray")
    positive = [t for t in totals if t > 0]
    log = bool(positive) and max(positive) / min(positive) > LOG_SCALE_RATIO
    if log:
        top.set_yscale("log")
        top.set_ylim(min(positive) / 2, max(positive) * 4)
    else:
        top.set_ylim(0, max(totals, default=1.0) * 1.3 or 1.0)
    for i, (r, total) in enumerate(zip(runs, totals)):
        x_eager = r.get("speedup_vs_eager")
        speedup = f"\n{x_eager:.2f}x" if x_eager and x_eager < 10 else f"\n{x_eager:.0f}x" if x_eager else ""
        top.text(i, total, f"{total:.3g} ms{speedup}", ha="center", va="bottom", fontsize=8)
    top.set_ylabel("ms per update and image" + (" (log)" if log else ""))
    shares = [[100 * v / total if total else 0.0 for v in row] for row, total in zip(phases, totals)]
    base = [0.0] * len(runs)
    for k, phase in enumerate(BAR_PHASES):
        heights = [row[k] for row in shares]
        bottom.bar(x, heights, bottom=base, label=phase)
        base = [b + h for b, h in zip(base, heights)]
    bottom.set_ylim(0, 100)
    bottom.set_ylabel("% of the update")
    bottom.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    bottom.set_xticks(list(x), names, rotation=30, ha="right")
    engine = Path(str(record["config"].get("engine_name", ""))).name
    device = record["device"].get("gpu") or record["device"].get("cpu", "")
    width = int(fig.get_figwidth() * 11)  # characters that fit the figure at the title's size
    fig.suptitle(textwrap.fill(f"egsde-rt bench: {engine} on {device}", width), fontsize=10)
    fig.tight_layout()
    return fig


def plot(record: dict, path) -> Path:
    """``figure(record)`` as a PNG at ``path``."""
    return save_figure(figure(record), path)
