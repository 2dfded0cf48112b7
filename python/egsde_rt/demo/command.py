"""The embedded demo: self-trained two-domain networks shipped in the package.

``engine_dir()`` exports the shipped score model and DSE (``demo_weights/``) to an engine
directory in the user cache on first use, and reuses it until the package version or the
weights change. ``run_demo`` translates generated source images (smooth blobs) towards the
target domain (striped blobs) with SDEdit (no guidance), EGSDE (the official sampler) and the
few-step EGSDE setting chosen by the quality-cost curve, grades realism with a separately trained
judge (not the DSE that guides sampling), faithfulness with PSNR / SSIM to the source and the
distance to the paired true target, and writes a titled grid PNG (source | SDEdit | EGSDE |
EGSDE fast | true target).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from tqdm import tqdm

from .. import __version__
from .data import domain_batch, paired_target
from .networks import DEMO_DSE_CONFIG, DEMO_SCORE_CONFIG, JudgeNet
from ..engine import EngineDirError, load_engine_dir
from ..errors import EgsdeError
from ..evaluation.metrics import psnr, ssim
from ..io import tensor_to_images
from ..models import ADMUNet, DSE, load_checkpoint
from ..noise import derive_seed
from ..settings import EGSDESettings
from ..user_cache import cache_root

WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHT_FILES = {"score": "score.pt", "dse": "dse.pt", "judge": "judge.pt"}
# The demo's method settings (tuned on the procedural domains, see demo_weights/TRAINING.md).
DEMO_SETTINGS = EGSDESettings(M=60, ls=1000.0, li=2.0, s1="cosine", s2="neg_l2", down_N=8)  # the official sampler
# The few-step setting, chosen by the quality-cost curve (egsde-rt bench --quality: the cheapest
# setting matching the official sampler on the tuning split; bench/results/quality-demo-cpu.json).
DEMO_FAST = {"solver": "dpmpp-2m-sde", "steps": 12, "ls": 750.0}
DEMO_IMAGE_SEED = 20221  # held out: training draws its images with seeds 0..4
GRID_SCALE = 4
# The quality protocol's image sets (egsde-rt bench --quality): seeds that no training (0..4), no
# test and the demo grid (DEMO_IMAGE_SEED) use. Settings are chosen on "tuning" and reported on
# "held_out"; "reference_target" is the real target-domain set the Frechet distance compares to.
QUALITY_SPLITS = {"tuning": 30001, "held_out": 30002, "reference_target": 30003}


def weights_path(name: str) -> Path:
    path = WEIGHTS_DIR / WEIGHT_FILES[name]
    if not path.is_file():
        raise EgsdeError(f"the demo weights are missing from the package: {path}")
    return path


def weights_digest() -> str:
    digest = hashlib.sha256()
    for name in ("score", "dse"):
        digest.update(weights_path(name).read_bytes())
    digest.update(json.dumps(DEMO_SETTINGS.to_dict(), sort_keys=True).encode())
    return digest.hexdigest()


def engine_dir(*, rebuild: bool = False, log: Callable[[str], None] = print) -> Path:
    """The demo engine directory, exported on first use and cached (see the module docstring)."""
    path = cache_root() / f"demo-{__version__}-{weights_digest()[:12]}"
    if not rebuild:
        try:
            load_engine_dir(path)
            return path
        except EngineDirError:
            pass
    from ..export import export_engine

    log(f"exporting the demo engine to {path} (once; about a minute) ...")
    score, dse = ADMUNet(**DEMO_SCORE_CONFIG), DSE(**DEMO_DSE_CONFIG)
    load_checkpoint(score, weights_path("score"))
    load_checkpoint(dse, weights_path("dse"))
    return export_engine(score, dse, path, image_size=32, settings=DEMO_SETTINGS, overwrite=True, preset="demo",
                         log=log)


def load_judge() -> JudgeNet:
    judge = JudgeNet()
    judge.load_state_dict(torch.load(weights_path("judge"), map_location="cpu", weights_only=True))
    return judge.eval()


def judge_features(judge: JudgeNet, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """The judge's penultimate features [N, 64] (the space of the demo's Frechet distance)."""
    with torch.no_grad():
        return torch.cat([judge.features(images[i:i + batch_size]).flatten(1)
                          for i in range(0, len(images), batch_size)]).double().numpy()


def reference_target_statistics(judge: JudgeNet, count: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the judge's features of ``count`` real target-domain images."""
    from ..evaluation.fid import statistics_from_features

    images = domain_batch("target", range(count), seed=QUALITY_SPLITS["reference_target"])
    return statistics_from_features(judge_features(judge, images))


def quality_metrics(y: torch.Tensor, x0: torch.Tensor, true_target: torch.Tensor, judge: JudgeNet,
                    reference_stats: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """What a translation ``y`` of sources ``x0`` is worth (all [N, 3, S, S] in [-1, 1]):
    realism (the independent judge's mean target probability), the Frechet distance of the judge's
    features to real target images (``reference_stats``; needs 2+ images), faithfulness as the
    paper measures it (PSNR / SSIM to the source) and the distance to the paired true target."""
    from ..evaluation.fid import frechet_distance, statistics_from_features

    y = y.clamp(-1, 1)
    y01, x01, t01 = (y + 1) / 2, (x0 + 1) / 2, (true_target + 1) / 2
    with torch.no_grad():
        row = {"realism": float(judge(y).softmax(1)[:, 1].mean()),
               "psnr_source": float(psnr(y01, x01).mean()), "ssim_source": float(ssim(y01, x01).mean()),
               "psnr_target": float(psnr(y01, t01).mean()), "ssim_target": float(ssim(y01, t01).mean()),
               "l2_target": float((y01 - t01).flatten(1).norm(dim=1).mean())}
    if reference_stats is not None:
        row["fd"] = float(frechet_distance(*statistics_from_features(judge_features(judge, y)), *reference_stats))
    return row


def _grid(columns: dict[str, torch.Tensor]) -> Image.Image:
    """One column per method, titled, cells smoothly upscaled so that a person can see them."""
    from PIL import ImageDraw

    rows, cell, title = len(next(iter(columns.values()))), 32 * GRID_SCALE, 40
    grid = Image.new("RGB", (cell * len(columns), title + cell * rows), "white")
    draw = ImageDraw.Draw(grid)
    for c, (name, column) in enumerate(columns.items()):
        for line, text in enumerate(name.split("\n")):
            draw.text((c * cell + 4, 2 + 12 * line), text, fill="black")
        for r, image in enumerate(tensor_to_images(column)):
            grid.paste(image.resize((cell, cell), Image.BICUBIC), (c * cell, title + r * cell))
    return grid


def demo_methods() -> dict[str, dict]:
    """The demo's columns: run-time overrides of the demo engine's settings (the official sampler)."""
    return {"SDEdit": {"ls": 0.0, "li": 0.0}, "EGSDE": {}, "EGSDE fast": DEMO_FAST}


def run_demo(output_dir, *, count: int = 8, seed: int = 0, backend: str = "auto",
             log: Callable[[str], None] = print) -> dict:
    from ..runtime.translator import Translator

    output_dir = Path(output_dir)
    path = engine_dir(log=log)
    translator = Translator(path, backend=backend)
    log(f"backend: {translator.backend} on {translator.choice.device} ({translator.choice.reason})")
    if translator.backend != "compiled":
        log(f"for a faster engine, compile it for this machine once (about 2 minutes on 2 cores): "
            f"egsde-rt build {path} --backend compiled")
    x0 = domain_batch("source", range(count), seed=DEMO_IMAGE_SEED)
    true_target = domain_batch("target", range(count), seed=DEMO_IMAGE_SEED)  # the same layouts
    seeds = [derive_seed(seed, f"demo/{i}") for i in range(count)]  # each image its own noise
    methods = demo_methods()
    total = sum(translator.settings_with(**o).network_evaluations for o in methods.values())
    judge = load_judge()
    results, table = {"source": x0}, {}
    with tqdm(total=total, desc="translate", unit="step") as bar:
        for name, overrides in methods.items():
            settings = translator.settings_with(**overrides)
            start = time.perf_counter()
            y = translator.run_tensor(x0, seed=seeds, callback=lambda d, t: bar.update(1), **overrides)
            seconds = time.perf_counter() - start
            results[name] = torch.as_tensor(y).clamp(-1, 1)
            table[name] = {**quality_metrics(results[name], x0, true_target, judge),
                           "network_evaluations": settings.network_evaluations, "seconds_per_image": seconds / count,
                           "settings": {k: v for k, v in settings.to_dict().items() if k in ("solver", "steps", "ls",
                                                                                               "li", "M", "eta")}}
    results["true target"] = true_target
    table["source (reference)"] = quality_metrics(x0, x0, true_target, judge)
    table["true target (reference)"] = quality_metrics(true_target, x0, true_target, judge)
    output_dir.mkdir(parents=True, exist_ok=True)
    grid_path = output_dir / "demo.png"
    titles = {"source": "source"}
    for name in methods:
        settings = table[name]["settings"]
        titles[name] = (f"{name}\n{settings['solver']}, {table[name]['network_evaluations']} updates\n"
                        f"{table[name]['seconds_per_image'] * 1000:.0f} ms/image")
    titles["true target"] = "true target"
    _grid({titles[k]: v for k, v in results.items()}).save(grid_path)
    (output_dir / "demo.json").write_text(json.dumps(
        {"settings": translator.settings.to_dict(), "backend": translator.backend, "count": count, "seed": seed,
         "results": {k: {m: (v if not isinstance(v, float) or np.isfinite(v) else None) for m, v in row.items()}
                     for k, row in table.items()}}, indent=2) + "\n")
    return {"table": table, "grid": grid_path, "columns": list(results)}


def format_table(table: dict) -> str:
    lines = [f"{'method':24s} {'realism':>7s} {'PSNR src':>8s} {'SSIM src':>8s} {'PSNR tgt':>8s} {'evals':>5s} "
             f"{'ms/image':>8s}"]
    for name, row in table.items():
        evals = f"{row['network_evaluations']:5d}" if "network_evaluations" in row else f"{'':5s}"
        ms = f"{row['seconds_per_image'] * 1000:8.0f}" if "seconds_per_image" in row else f"{'':8s}"
        lines.append(f"{name:24s} {row['realism']:7.3f} {row['psnr_source']:8.2f} {row['ssim_source']:8.3f} "
                     f"{row['psnr_target']:8.2f} {evals} {ms}")
    return "\n".join(lines)
