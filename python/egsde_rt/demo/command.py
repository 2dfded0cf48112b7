"""``egsde-rt demo``: the shipped networks translate discs into squares, and what that is worth.

``engine_dir()`` exports the shipped score model and DSE (``weights/``) to an engine directory in
the user cache on first use, and reuses it until the package version, the weights or the demo's
settings change. ``run_demo`` translates generated source images with every method of
``demo_methods()`` (SDEdit, ILVR, EGSDE with the official sampler, the few-step EGSDE) and the
distilled student (``distilled_engine_dir()``: its own engine, exported and cached the same way),
grades them with a separately trained judge (not the DSE that guides sampling) and the paired true
targets, and writes a titled grid PNG (source | SDEdit | ILVR | EGSDE | EGSDE fast | EGSDE
distilled | true target) with each column's metrics under it. ``run_eval`` is the quality
protocol: every method on the held-out split (``quality.QUALITY_SPLITS``), the JSON the README's
held-out table comes from.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from .. import __version__
from ..engine import EngineDirError, load_engine_dir
from ..images import tensor_to_images
from ..models import ADMUNet, DSE, load_checkpoint
from ..models.student import few_step_settings, student_from_teacher
from ..method.noise import derive_seed
from ..method.settings import EGSDESettings, check_positive_int
from ..user_cache import cache_root
from .data import IMAGE_SIZE, domain_batch, paired_target
from .networks import DEMO_DSE_CONFIG, DEMO_SCORE_CONFIG, load_judge, weights_path
from .scoring import QUALITY_SPLITS, SplitEvaluator, quality_metrics, settings_row

# The demo's settings, the official sampler (chosen on the tuning split: weights/TRAINING.md).
DEMO_SETTINGS = EGSDESettings(M=100, ls=500.0, li=200.0, s1="cosine", s2="neg_l2", down_N=8)
# The few-step setting: the one egsde-rt bench --quality chose on the tuning split (the cheapest that
# matches the official sampler on every bound; bench/results/quality-demo-cpu.json): a fifth of the
# updates, the official li with the low-pass expert integrated implicitly.
DEMO_FAST = {"solver": "dpmpp-2m-sde", "steps": 20, "ls": 700.0, "li": 200.0, "lowpass": "implicit"}
# The shipped distilled student (weights/student.pt, weights/TRAINING.md): stage 2 of `egsde-rt distill`
# from the demo engine, in this many updates.
DISTILLED_UPDATES = 5
DISTILLED = "EGSDE distilled"
DEMO_IMAGE_SEED = 20221  # the grid's images: no training (seeds 0..5) and no split uses it
GRID_SCALE = 5  # each 32 x 32 image is shown smoothly upscaled to 160 x 160


def demo_methods() -> dict[str, dict]:
    """The compared methods, as run-time overrides of the demo engine's settings: SDEdit (no
    guidance), ILVR (the source's low-pass band imposed at every step), EGSDE (the official
    sampler) and the few-step EGSDE."""
    return {"SDEdit": {"ls": 0.0, "li": 0.0}, "ILVR": {"ls": 0.0, "li": 0.0, "ilvr": True}, "EGSDE": {},
            "EGSDE fast": DEMO_FAST}


def weights_digest() -> str:
    digest = hashlib.sha256()
    for name in ("score", "dse"):
        digest.update(weights_path(name).read_bytes())
    digest.update(json.dumps(DEMO_SETTINGS.to_dict(), sort_keys=True).encode())
    return digest.hexdigest()


def _cached_engine(path: Path, rebuild: bool, export: Callable[[Path], Path]) -> Path:
    """``path`` if it holds a readable engine (and ``rebuild`` is not asked), else ``export(path)``."""
    if not rebuild:
        try:
            load_engine_dir(path)
            return path
        except EngineDirError:
            pass
    return export(path)


def engine_dir(*, rebuild: bool = False, log: Callable[[str], None] = print) -> Path:
    """The demo engine directory, exported on first use and cached (see the module docstring)."""

    def export(path: Path) -> Path:
        from ..export import export_engine

        log(f"exporting the demo engine to {path} (once; about a minute) ...")
        score, dse = ADMUNet(**DEMO_SCORE_CONFIG), DSE(**DEMO_DSE_CONFIG)
        load_checkpoint(score, weights_path("score"))
        load_checkpoint(dse, weights_path("dse"))
        return export_engine(score, dse, path, image_size=32, settings=DEMO_SETTINGS, overwrite=True, preset="demo",
                             log=log)

    return _cached_engine(cache_root() / f"demo-{__version__}-{weights_digest()[:12]}", rebuild, export)


def distilled_engine_dir(*, rebuild: bool = False, log: Callable[[str], None] = print) -> Path:
    """The demo's distilled student as an engine (``weights/student.pt``, distilled from
    ``engine_dir()``), exported on first use and cached like it."""
    teacher = engine_dir(log=log)

    def export(path: Path) -> Path:
        from ..export.student_engine import export_student

        log(f"exporting the demo's distilled student to {path} (once) ...")
        student = student_from_teacher(ADMUNet(**DEMO_SCORE_CONFIG))  # the teacher's architecture, as recorded
        load_checkpoint(student, weights_path("student"))
        return export_student(student, load_engine_dir(teacher), path, stage=2,
                              settings=few_step_settings(DEMO_SETTINGS, DISTILLED_UPDATES), overwrite=True, log=log)

    digest = hashlib.sha256(weights_digest().encode() + weights_path("student").read_bytes()).hexdigest()
    return _cached_engine(cache_root() / f"demo-distilled-{__version__}-{digest[:12]}", rebuild, export)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _grid(columns: dict[str, torch.Tensor], titles: dict[str, list[str]], footers: dict[str, list[str]]
          ) -> Image.Image:
    """One column per method: its title lines above, the images smoothly upscaled so that a person
    can see them, its metrics below."""
    rows, cell, line = len(next(iter(columns.values()))), IMAGE_SIZE * GRID_SCALE, 16
    top = line * max(len(t) for t in titles.values()) + 8
    bottom = line * max((len(f) for f in footers.values()), default=0) + 8
    grid = Image.new("RGB", (cell * len(columns), top + cell * rows + bottom), "white")
    draw, bold, font = ImageDraw.Draw(grid), _font(14), _font(12)
    for c, (name, column) in enumerate(columns.items()):
        for k, text in enumerate(titles[name]):
            draw.text((c * cell + 4, 4 + line * k), text, fill="black", font=bold if k == 0 else font)
        for r, image in enumerate(tensor_to_images(column)):
            grid.paste(image.resize((cell, cell), Image.BICUBIC), (c * cell, top + r * cell))
        for k, text in enumerate(footers.get(name, [])):
            draw.text((c * cell + 4, top + rows * cell + 4 + line * k), text, fill="black", font=font)
    return grid


def _finite(table: dict) -> dict:
    """JSON-safe: infinite PSNRs (identical images) become null."""
    return {k: {m: (v if not isinstance(v, float) or np.isfinite(v) else None) for m, v in row.items()}
            for k, row in table.items()}


def _translator(path: Path, backend: str, threads: int | None, log: Callable[[str], None]):
    from ..runtime.translator import Translator

    translator = Translator(path, backend=backend, threads=threads)
    log(f"backend: {translator.backend} on {translator.choice.device} ({translator.choice.reason})")
    return translator


def _runs(backend: str, threads: int | None, log: Callable[[str], None]) -> dict:
    """{method: (its translator, its run-time overrides)}: ``demo_methods()`` on the demo engine,
    then the distilled student on its own engine."""
    translator = _translator(engine_dir(log=log), backend, threads, log)
    if translator.backend != "compiled":
        log(f"for a faster engine, compile it for this machine once (about 2 minutes on 2 cores): "
            f"egsde-rt build {translator.engine.path} --backend compiled")
    runs = {name: (translator, overrides) for name, overrides in demo_methods().items()}
    runs[DISTILLED] = (_translator(distilled_engine_dir(log=log), backend, threads, log), {})
    return runs


def run_demo(output_dir, *, count: int = 8, seed: int = 0, backend: str = "auto", threads: int | None = None,
             log: Callable[[str], None] = print) -> dict:
    """Translate ``count`` generated sources with every method; write ``demo.png`` and ``demo.json``."""
    check_positive_int(count, "count")
    output_dir = Path(output_dir)
    runs = _runs(backend, threads, log)
    translator = runs["EGSDE"][0]
    x0 = domain_batch("source", range(count), seed=DEMO_IMAGE_SEED)
    true_target = paired_target(range(count), seed=DEMO_IMAGE_SEED)
    seeds = [derive_seed(seed, f"demo/{i}") for i in range(count)]  # each image its own noise
    total = sum(t.settings_with(**o).network_evaluations for t, o in runs.values())
    judge = load_judge()
    results, table = {"source": x0}, {}
    with tqdm(total=total, desc="translate", unit="step") as bar:
        for name, (translator, overrides) in runs.items():
            settings = translator.settings_with(**overrides)
            start = time.perf_counter()
            y = translator.run_tensor(x0, seed=seeds, callback=lambda d, t: bar.update(1), **overrides)
            seconds = time.perf_counter() - start
            results[name] = y.clamp(-1, 1)
            table[name] = {**quality_metrics(results[name], x0, true_target, judge),
                           "network_evaluations": settings.network_evaluations, "seconds_per_image": seconds / count,
                           "settings": settings_row(settings)}
    results["true target"] = true_target
    table["source (reference)"] = quality_metrics(x0, x0, true_target, judge)
    table["true target (reference)"] = quality_metrics(true_target, x0, true_target, judge)
    titles = {"source": ["source", "(discs)"], "true target": ["true target", "(the same layout,", "squares)"]}
    footers = {"source": [f"realism {table['source (reference)']['realism']:.2f}"],
               "true target": [f"realism {table['true target (reference)']['realism']:.2f}"]}
    for name in runs:
        row = table[name]
        titles[name] = [name, f"{row['settings']['solver']}, {row['network_evaluations']} updates",
                        f"{row['seconds_per_image'] * 1000:.0f} ms/image"]
        footers[name] = [f"realism {row['realism']:.2f}", f"PSNR to target {row['psnr_target']:.1f}",
                         f"PSNR to source {row['psnr_source']:.1f}"]
    output_dir.mkdir(parents=True, exist_ok=True)
    grid_path = output_dir / "demo.png"
    _grid(results, titles, footers).save(grid_path)
    official = runs["EGSDE"][0]
    (output_dir / "demo.json").write_text(json.dumps(
        {"settings": official.settings.to_dict(), "backend": official.backend, "count": count, "seed": seed,
         "image_seed": DEMO_IMAGE_SEED, "results": _finite(table)}, indent=2) + "\n")
    return {"table": table, "grid": grid_path, "columns": list(results)}


def run_eval(output_dir, *, count: int | None = None, backend: str = "auto", batch_size: int = 32,
             threads: int | None = None, log: Callable[[str], None] = print) -> dict:
    """The quality protocol: every method of ``demo_methods()`` on the held-out split, plus the
    source and the true target themselves as references; writes ``demo-eval.json``."""
    if count is not None:
        check_positive_int(count, "count")
    runs = _runs(backend, threads, log)
    translator = runs["EGSDE"][0]
    counts = {"tuning": 0, **({"held_out": count} if count else {})}
    evaluate = SplitEvaluator(translator, counts=counts, batch_size=batch_size, log=log)
    x0, true_target = evaluate.splits["held_out"]
    methods = {name: evaluate("held_out", overrides, run_translator)
               for name, (run_translator, overrides) in runs.items()}
    references = {"source (as is)": x0, "true target": true_target}
    for name, images in references.items():
        methods[name] = quality_metrics(images, x0, true_target, evaluate.judge, evaluate.reference)
    record = {"split": "held_out", "image_seed": QUALITY_SPLITS["held_out"], "count": len(x0),
              "settings_chosen_on": {"split": "tuning", "image_seed": QUALITY_SPLITS["tuning"],
                                     "records": ["egsde_rt/demo/weights/TRAINING.md",
                                                 "bench/results/quality-demo-cpu.json"]},
              "reference_target": {"image_seed": QUALITY_SPLITS["reference_target"],
                                   "count": evaluate.counts["reference_target"]},
              "engine": str(translator.engine.path), "backend": translator.backend,
              "settings": translator.settings.to_dict(), "methods": _finite(methods)}
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "demo-eval.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _cell(metric: str, value) -> str:
    if metric.startswith("psnr") and (value is None or value >= 100):
        return "identical"
    return f"{value:.3f}" if metric == "realism" or metric.startswith("ssim") else \
        f"{value:.1f}" if metric == "fd" else f"{value:.2f}"


def format_eval(record: dict) -> str:
    """The held-out table as Markdown (the README's held-out table)."""
    lines = [f"Held-out split: {record['count']} images (seed {record['image_seed']}); settings chosen on the "
             f"tuning split (seed {record['settings_chosen_on']['image_seed']}).", "",
             "| method | updates | realism | FD | PSNR src | SSIM src | PSNR tgt | SSIM tgt | L2 tgt |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, row in record["methods"].items():
        evals = row.get("network_evaluations", "")
        cells = [_cell(k, row[k]) for k in ("realism", "fd", "psnr_source", "ssim_source", "psnr_target",
                                             "ssim_target", "l2_target")]
        lines.append(f"| {name} | {evals} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_table(table: dict) -> str:
    lines = [f"{'method':24s} {'realism':>7s} {'PSNR src':>8s} {'SSIM src':>8s} {'PSNR tgt':>8s} {'evals':>5s} "
             f"{'ms/image':>8s}"]
    for name, row in table.items():
        evals = f"{row['network_evaluations']:5d}" if "network_evaluations" in row else f"{'':5s}"
        ms = f"{row['seconds_per_image'] * 1000:8.0f}" if "seconds_per_image" in row else f"{'':8s}"
        lines.append(f"{name:24s} {row['realism']:7.3f} {row['psnr_source']:8.2f} {row['ssim_source']:8.3f} "
                     f"{row['psnr_target']:8.2f} {evals} {ms}")
    return "\n".join(lines)
