"""Engines to benchmark when no checkpoint is at hand: the demo engine, or a preset's networks
with seeded random non-degenerate weights (``models.nonzero_random_weights``), exported once
into the user cache and reused (``formats=("torch",)``: the torch weights only, for the torch
and compiled backends: seconds instead of minutes, and no ONNX export's memory)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .._version import __version__
from ..demo import DEMO_SETTINGS, engine_dir as demo_engine_dir, weights_path
from ..demo import DEMO_DSE_CONFIG, DEMO_SCORE_CONFIG
from ..engine import EXPORT_FORMATS, EngineDirError, load_engine_dir
from ..models import ADMUNet, DSE, build_preset_models, load_checkpoint, nonzero_random_weights
from ..method.presets import get_preset
from ..user_cache import cache_root


def preset_engine(name: str, *, seed: int = 0, cache: str | None = None, formats=EXPORT_FORMATS,
                  log: Callable[[str], None] = print) -> Path:
    """The engine directory of preset ``name`` for benchmarking, holding at least ``formats`` (see
    ``export.export_engine``). ``demo``: the demo engine (its trained networks), else the preset's
    networks with seeded random non-degenerate weights."""
    from ..export import check_formats, export_engine

    formats = check_formats(formats)
    if name == "demo" and formats == EXPORT_FORMATS and cache is None:
        return demo_engine_dir(log=log)
    suffix = "" if formats == EXPORT_FORMATS else "-" + "-".join(formats)
    label = "demo" if name == "demo" else f"{name}-seed{seed}"
    path = Path(cache) if cache else cache_root() / f"bench-{label}-{__version__}{suffix}"
    try:
        if set(formats) <= set(load_engine_dir(path).formats):
            return path
    except EngineDirError:
        pass
    if name == "demo":
        log(f"exporting the demo networks ({', '.join(formats)}) to {path} ...")
        score, dse = ADMUNet(**DEMO_SCORE_CONFIG), DSE(**DEMO_DSE_CONFIG)
        load_checkpoint(score, weights_path("score"))
        load_checkpoint(dse, weights_path("dse"))
        return export_engine(score.eval(), dse.eval(), path, image_size=DEMO_SCORE_CONFIG["image_size"],
                             settings=DEMO_SETTINGS, preset="demo", formats=formats, overwrite=True, log=log)
    preset = get_preset(name)
    log(f"exporting {name} ({', '.join(formats)}) with random non-degenerate weights (seed {seed}) to {path} "
        "(once) ...")
    score, dse = build_preset_models(preset)
    nonzero_random_weights(score, seed)
    nonzero_random_weights(dse, seed + 1)
    return export_engine(score.eval(), dse.eval(), path, image_size=preset.image_size, settings=preset.settings,
                         preset=f"{name} (random weights, seed {seed})", formats=formats, overwrite=True, log=log)
