"""Engines to benchmark when no checkpoint is at hand: the demo engine, or a preset's networks
with seeded random non-degenerate weights (``models.nonzero_random_weights``), exported once
into the user cache and reused."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .._version import __version__
from ..demo import cache_root, engine_dir as demo_engine_dir
from ..engine import EngineDirError, load_engine_dir
from ..models import build_preset_models, nonzero_random_weights
from ..presets import get_preset


def preset_engine(name: str, *, seed: int = 0, cache: str | None = None, log: Callable[[str], None] = print) -> Path:
    """The engine directory of preset ``name`` (``demo``: the demo engine) for benchmarking."""
    if name == "demo":
        return demo_engine_dir(log=log)
    preset = get_preset(name)
    path = Path(cache) if cache else cache_root() / f"bench-{name}-seed{seed}-{__version__}"
    try:
        load_engine_dir(path)
        return path
    except EngineDirError:
        pass
    from ..export import export_engine

    log(f"exporting {name} with random non-degenerate weights (seed {seed}) to {path} (once) ...")
    score, dse = build_preset_models(preset)
    nonzero_random_weights(score, seed)
    nonzero_random_weights(dse, seed + 1)
    return export_engine(score.eval(), dse.eval(), path, image_size=preset.image_size, settings=preset.settings,
                         preset=f"{name} (random weights, seed {seed})", overwrite=True, log=log)
