"""The quality-cost curve: ``egsde-rt bench --quality``.

Sweeps solver x updates x ``ls`` (optionally x ``li`` x ``eta`` x step spacing x the low-pass
form: ``SWEPT``) on the demo's tuning split, picks the cheapest setting that matches the official
sampler (ddpm, all M updates) there, and reports the official sampler, the chosen setting, each
method's (solver, spacing, low-pass form) best setting per update count and their Pareto front on
the held-out split (images that neither training nor the tuning saw): realism, the judge-feature
Frechet distance, PSNR / SSIM to the source and to the paired true target, network evaluations and
seconds per image. The match:

- realism at least the official's minus 0.02, the Frechet distance no worse,
- PSNR to the source within 0.5 dB of the official's, PSNR to the true target at least the
  official's minus 0.3 dB.

A distilled student engine (``student``: the demo's shipped one by default, ``egsde-rt distill``'s
otherwise) is measured on the held-out split in the same run, with the same seeds, and judged by
the distillation rule (``STUDENT_MATCH``): realism at least the official's minus 0.02, PSNR to the
source at least its minus 0.5 dB, PSNR to the true target at least its minus 0.3 dB, the Frechet
distance at most 1.25 times the official's (so that blur cannot buy PSNR).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import product
from pathlib import Path
from typing import Callable

from ..demo import QUALITY_SPLITS, SplitEvaluator, distilled_engine_dir, engine_dir, setting_label
from .report import pyplot, save_figure

MATCH = {"realism": 0.02, "psnr_source": 0.5, "psnr_target": 0.3}
STUDENT_MATCH = {**MATCH, "fd_ratio": 1.25}
OFFICIAL = {"solver": "ddpm", "steps": None, "eta": 1.0}  # all M updates of the official update


@dataclass
class QualityConfig:
    engine_dir: Path | None = None  # None: the demo engine
    backend: str = "auto"
    solvers: tuple = ("ddpm", "dpmpp-2m-sde")
    updates: tuple = (6, 8, 10, 12, 15)
    ls: tuple = (250.0, 500.0, 750.0, 1000.0)
    li: tuple = ()  # empty: the engine's li only
    eta: tuple = (1.0,)  # of the solvers that take one (ddpm: 1 only)
    spacing: tuple = ("uniform",)  # where the updates fall (schedule.SPACINGS)
    lowpass: tuple = ("gradient",)  # how an update applies the low-pass expert (lowpass.LOWPASS_FORMS)
    tuning_count: int = 128
    held_out_count: int = 256
    reference_count: int = 1024
    batch_size: int = 16
    seed: int = 0
    student: Path | None = None  # a distilled engine; None: the demo's student (with the demo engine only)
    with_student: bool = True


# The settings a sweep varies (run-time overrides of the engine's), in the order a grid nests them;
# a row's method is its settings but ls, li and eta (the weights a method is tuned with).
SWEPT = ("solver", "steps", "spacing", "lowpass", "ls", "li", "eta")
METHOD = ("solver", "spacing", "lowpass")


def grid(config: QualityConfig, M: int) -> list[dict]:
    """The swept settings (run-time overrides of the engine's): every combination of the axes with
    fewer than M updates (ddpm at eta 1 only; no ``li`` key where the engine's li is kept)."""
    points = []
    for solver in config.solvers:
        etas = (1.0,) if solver == "ddpm" else config.eta
        for values in product([solver], config.updates, config.spacing, config.lowpass, config.ls,
                              config.li or (None,), etas):
            point = dict(zip(SWEPT, values))
            if point["steps"] < M:
                points.append({k: v for k, v in point.items() if v is not None})
    return points


def method_of(row: dict) -> tuple:
    return tuple(row["settings"][k] for k in METHOD)


def matches(row: dict, official: dict) -> bool:
    return (row["realism"] >= official["realism"] - MATCH["realism"] and row["fd"] <= official["fd"]
            and abs(row["psnr_source"] - official["psnr_source"]) <= MATCH["psnr_source"]
            and row["psnr_target"] >= official["psnr_target"] - MATCH["psnr_target"])


def student_matches(row: dict, official: dict) -> bool:
    """The distillation rule (``STUDENT_MATCH``): no worse than the official sampler's realism and
    PSNRs by more than the bounds, its Frechet distance at most 1.25 times the official's."""
    return (row["realism"] >= official["realism"] - STUDENT_MATCH["realism"]
            and row["psnr_source"] >= official["psnr_source"] - STUDENT_MATCH["psnr_source"]
            and row["psnr_target"] >= official["psnr_target"] - STUDENT_MATCH["psnr_target"]
            and row["fd"] <= STUDENT_MATCH["fd_ratio"] * official["fd"])


def choose(rows: list[dict], official: dict) -> dict | None:
    """The matching row with the fewest network evaluations (then the lowest FD), or None."""
    matching = [r for r in rows if matches(r, official)]
    return min(matching, key=lambda r: (r["network_evaluations"], r["fd"])) if matching else None


def best_per_budget(rows: list[dict], official: dict) -> list[dict]:
    """For each method (solver, spacing, low-pass form) and update count: the setting whose row
    matches, else the one with the lowest FD among those faithful to the source (PSNR within the
    match's bound), else the lowest FD."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((*method_of(r), r["settings"]["steps"]), []).append(r)
    best = []
    for key in sorted(groups):
        group = groups[key]
        faithful = [r for r in group if abs(r["psnr_source"] - official["psnr_source"]) <= MATCH["psnr_source"]]
        best.append(choose(group, official) or min(faithful or group, key=lambda r: r["fd"]))
    return best


# What the front trades: fewer network evaluations against the quality the match rule binds on.
PARETO = (("network_evaluations", -1), ("psnr_target", 1), ("fd", -1), ("realism", 1))


def pareto_front(rows: list[dict]) -> list[dict]:
    """The rows no other row dominates (as few network evaluations, as close to the true target,
    as low a Frechet distance and as realistic, and better in one), by network evaluations."""
    def dominates(a, b):
        at_least = all(sign * a[key] >= sign * b[key] for key, sign in PARETO)
        return at_least and any(sign * a[key] > sign * b[key] for key, sign in PARETO)

    front = [r for r in rows if not any(dominates(other, r) for other in rows)]
    return sorted(front, key=lambda r: (r["network_evaluations"], -r["psnr_target"]))


def run_quality(config: QualityConfig, log: Callable[[str], None] = print) -> dict:
    from ..engine import check_teacher
    from ..runtime.translator import Translator

    path = config.engine_dir or engine_dir(log=log)
    translator = Translator(path, backend=config.backend)
    M = translator.settings.M
    log(f"quality sweep on {path} ({translator.backend} on {translator.choice.device}); official: ddpm, "
        f"{M} updates, ls {translator.settings.ls:g}")
    evaluate = SplitEvaluator(translator, counts={"tuning": config.tuning_count, "held_out": config.held_out_count,
                                                  "reference_target": config.reference_count},
                              batch_size=config.batch_size, seed=config.seed, log=log)
    evaluate("tuning", OFFICIAL)  # warm-up: first-run latency stays out of the timings
    official_tuning = evaluate("tuning", OFFICIAL)
    tuning = [evaluate("tuning", overrides) for overrides in grid(config, M)]
    chosen_tuning = choose(tuning, official_tuning)
    curve = best_per_budget(tuning, official_tuning)
    log("held-out split (settings chosen on the tuning split):")

    def overrides_of(row):
        return {k: row["settings"][k] for k in SWEPT}

    official = evaluate("held_out", OFFICIAL)
    held_out = [evaluate("held_out", overrides_of(r)) for r in curve]
    chosen = None
    if chosen_tuning is not None:
        key = overrides_of(chosen_tuning)
        chosen = next((r for r in held_out if overrides_of(r) == key), None) or evaluate("held_out", key)
    record = {
        "config": {**asdict(config), "engine_dir": str(path), "backend": translator.backend,
                   "device": translator.choice.device, "splits": QUALITY_SPLITS, "match": MATCH,
                   "official": {"solver": "ddpm", "updates": M, "ls": translator.settings.ls}},
        "tuning": {"official": official_tuning, "sweep": tuning, "chosen": chosen_tuning},
        "held_out": {"official": official, "curve": held_out, "chosen": chosen,
                     "pareto_front": pareto_front([official, *held_out])},
    }
    student_path = config.student or (distilled_engine_dir(log=log) if config.engine_dir is None else None)
    if config.with_student and student_path is not None:
        student_translator = Translator(student_path, backend=config.backend)
        check_teacher(student_translator.engine, translator.engine)  # measured against its own teacher only
        evaluate.translate("held_out", {}, student_translator)  # warm-up
        student = evaluate("held_out", {}, student_translator)
        student["engine"] = str(student_path)
        record["held_out"]["student"] = student
        record["held_out"]["student_matches_official"] = student_matches(student, official)
        record["held_out"]["student_speedup"] = official["seconds_per_image"] / student["seconds_per_image"]
    if chosen is not None:
        record["held_out"]["chosen_matches_official"] = matches(chosen, official)
        record["held_out"]["evaluations_ratio"] = official["network_evaluations"] / chosen["network_evaluations"]
        record["held_out"]["speedup_at_equal_quality"] = official["seconds_per_image"] / chosen["seconds_per_image"]
    return record


def format_quality(record: dict) -> str:
    held = record["held_out"]
    lines = ["held-out split (settings chosen on the tuning split):",
             f"{'setting':44s} {'evals':>5s} {'realism':>7s} {'FD':>7s} {'PSNR src':>8s} {'SSIM src':>8s} "
             f"{'PSNR tgt':>8s} {'s/image':>8s}"]
    rows = [("official", held["official"])] + [("", r) for r in held["curve"]]
    if held.get("chosen"):
        rows.append(("chosen", held["chosen"]))
    if held.get("student"):
        rows.append(("distilled", held["student"]))
    for label, r in rows:
        name = f"{label + ': ' if label else ''}{setting_label(r['settings'])}"
        lines.append(f"{name:44s} {r['network_evaluations']:5d} {r['realism']:7.3f} {r['fd']:7.1f} "
                     f"{r['psnr_source']:8.2f} {r['ssim_source']:8.3f} {r['psnr_target']:8.2f} "
                     f"{r['seconds_per_image']:8.4f}")
    if held.get("chosen"):
        lines.append(f"chosen: {held['evaluations_ratio']:.1f}x fewer network evaluations, "
                     f"{held['speedup_at_equal_quality']:.2f}x the official's speed; matches on the held-out "
                     f"split: {held['chosen_matches_official']}")
    else:
        lines.append("no swept setting matched the official sampler on the tuning split")
    if held.get("student"):
        lines.append(f"distilled: {held['student_speedup']:.1f}x the official's speed; matches on the held-out split "
                     f"(distillation rule): {held['student_matches_official']}")
    return "\n".join(lines)


def plot_quality(record: dict, path) -> Path:
    """Realism, the Frechet distance and the PSNR to the true target against network evaluations,
    per method (held-out split), with the Pareto front ringed and the match rule's bounds dotted."""
    plt = pyplot()
    held = record["held_out"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, metric, label in zip(axes, ("realism", "fd", "psnr_target"),
                                 ("realism (judge)", "Frechet distance (judge features)", "PSNR to true target dB")):
        for method in dict.fromkeys(method_of(r) for r in held["curve"]):
            rows = sorted((r for r in held["curve"] if method_of(r) == method), key=lambda r: r["network_evaluations"])
            ax.plot([r["network_evaluations"] for r in rows], [r[metric] for r in rows], "o-",
                    label=" ".join(v for v in method if v not in ("uniform", "gradient")))
        off = held["official"]
        ax.axhline(off[metric], color="gray", linestyle="--", label=f"official ({off['network_evaluations']} evals)")
        bound = {"realism": -MATCH["realism"], "psnr_target": -MATCH["psnr_target"]}.get(metric)
        if bound is not None:
            ax.axhline(off[metric] + bound, color="gray", linestyle=":", label="match bound")
        front = held.get("pareto_front", [])
        ax.plot([r["network_evaluations"] for r in front], [r[metric] for r in front], "o", markersize=11,
                markerfacecolor="none", markeredgecolor="black", label="Pareto front")
        if held.get("chosen"):
            ax.plot([held["chosen"]["network_evaluations"]], [held["chosen"][metric]], "k*", markersize=12,
                    label="chosen")
        if held.get("student"):
            ax.plot([held["student"]["network_evaluations"]], [held["student"][metric]], "rD", markersize=9,
                    label="distilled student")
        ax.set_xlabel("network evaluations per image")
        ax.set_title(label, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
