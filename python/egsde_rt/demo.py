"""The embedded demo: self-trained two-domain networks shipped in the package.

``engine_dir()`` exports the shipped score model and DSE (``demo_weights/``) to an engine
directory in the user cache on first use, and reuses it until the package version or the
weights change. ``run_demo`` translates generated source images (smooth blobs) towards the
target domain (striped blobs) with SDEdit (no guidance) and EGSDE, grades realism with a
separately trained judge (not the DSE that guides sampling) and faithfulness with PSNR / SSIM to
the source, and writes a grid PNG (source | SDEdit | EGSDE).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from tqdm import tqdm

from . import __version__
from .demo_data import domain_batch
from .demo_networks import DEMO_DSE_CONFIG, DEMO_SCORE_CONFIG, JudgeNet
from .engine import EngineDirError, load_engine_dir
from .errors import EgsdeError
from .evaluation.metrics import psnr, ssim
from .io import tensor_to_images
from .models import ADMUNet, DSE, load_checkpoint
from .noise import derive_seed
from .settings import EGSDESettings

WEIGHTS_DIR = Path(__file__).parent / "demo_weights"
WEIGHT_FILES = {"score": "score.pt", "dse": "dse.pt", "judge": "judge.pt"}
# The demo's method settings (tuned on the procedural domains, see demo_weights/TRAINING.md).
DEMO_SETTINGS = EGSDESettings(M=60, steps=30, ls=1000.0, li=2.0, s1="cosine", s2="neg_l2", down_N=8)
DEMO_IMAGE_SEED = 20221  # held out: training draws its images with seeds 0..4
GRID_SCALE = 4


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


def cache_root() -> Path:
    if os.environ.get("EGSDE_RT_CACHE"):
        return Path(os.environ["EGSDE_RT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "egsde-rt"


def engine_dir(*, rebuild: bool = False, log: Callable[[str], None] = print) -> Path:
    """The demo engine directory, exported on first use and cached (see the module docstring)."""
    path = cache_root() / f"demo-{__version__}-{weights_digest()[:12]}"
    if not rebuild:
        try:
            load_engine_dir(path)
            return path
        except EngineDirError:
            pass
    from .export import export_engine

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


def _grid(columns: list[torch.Tensor]) -> Image.Image:
    rows = len(columns[0])
    cell = 32 * GRID_SCALE
    grid = Image.new("RGB", (cell * len(columns), cell * rows), "white")
    for c, column in enumerate(columns):
        for r, image in enumerate(tensor_to_images(column)):
            grid.paste(image.resize((cell, cell), Image.NEAREST), (c * cell, r * cell))
    return grid


def run_demo(output_dir, *, count: int = 8, seed: int = 0, backend: str = "auto",
             log: Callable[[str], None] = print) -> dict:
    from .runtime.translator import Translator

    output_dir = Path(output_dir)
    path = engine_dir(log=log)
    translator = Translator(path, backend=backend)
    log(f"backend: {translator.backend} on {translator.choice.device} ({translator.choice.reason})")
    if translator.backend != "compiled":
        log(f"for a faster engine, compile it for this machine once (about 2 minutes on 2 cores): "
            f"egsde-rt build {path} --backend compiled")
    x0 = domain_batch("source", range(count), seed=DEMO_IMAGE_SEED)
    settings = translator.settings
    per_run = settings.num_updates * settings.repeats
    seeds = [derive_seed(seed, f"demo/{i}") for i in range(count)]  # each image its own noise
    with tqdm(total=2 * per_run, desc="SDEdit + EGSDE", unit="step") as bar:
        sdedit = translator.run_tensor(x0, seed=seeds, ls=0.0, li=0.0, callback=lambda d, t: bar.update(1))
        egsde = translator.run_tensor(x0, seed=seeds, callback=lambda d, t: bar.update(1))
    results = {"source": x0}
    results.update(SDEdit=torch.from_numpy(sdedit).clamp(-1, 1), EGSDE=torch.from_numpy(egsde).clamp(-1, 1))

    judge = load_judge()
    source01 = (x0 + 1) / 2
    table = {}
    with torch.no_grad():
        for name in ("SDEdit", "EGSDE"):
            y = results[name]
            y01 = (y + 1) / 2
            table[name] = {
                "realism": float(judge(y).softmax(1)[:, 1].mean()),
                "psnr": float(psnr(y01, source01).mean()),
                "ssim": float(ssim(y01, source01).mean()),
            }
        table["source (reference)"] = {"realism": float(judge(x0).softmax(1)[:, 1].mean()),
                                       "psnr": float("inf"), "ssim": 1.0}
    output_dir.mkdir(parents=True, exist_ok=True)
    grid_path = output_dir / "demo.png"
    _grid([results["source"], results["SDEdit"], results["EGSDE"]]).save(grid_path)
    (output_dir / "demo.json").write_text(json.dumps(
        {"settings": settings.to_dict(), "backend": translator.backend, "count": count, "seed": seed,
         "results": {k: {m: (v if np.isfinite(v) else None) for m, v in row.items()} for k, row in table.items()}},
        indent=2) + "\n")
    return {"table": table, "grid": grid_path}


def format_table(table: dict) -> str:
    lines = [f"{'method':20s} {'realism P(target)':>18s} {'PSNR dB':>8s} {'SSIM':>6s}"]
    for name, row in table.items():
        lines.append(f"{name:20s} {row['realism']:18.3f} {row['psnr']:8.2f} {row['ssim']:6.3f}")
    return "\n".join(lines)
