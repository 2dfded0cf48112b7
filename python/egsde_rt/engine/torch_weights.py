"""The engine's ``torch/`` weights: the networks rebuilt from their recorded class and config,
loaded with ``weights_only=True`` (the torch backend runs them; the compiled backend is built
from them)."""

from __future__ import annotations

from ..models import build_model, load_checkpoint
from .format import EngineDir
from ..errors import EngineDirError


def load_engine_models(engine: EngineDir, device: str = "cpu"):
    """(score_model, dse) in eval mode on ``device``."""
    if not engine.manifest.torch_weights:
        raise EngineDirError(f"{engine.path}: the engine has no torch/ weights (exported with "
                             "include_torch_weights=False); export it again with them")
    models = []
    for name in ("score", "dse"):
        entry = engine.manifest.torch_weights[name]
        model = build_model(entry.model_class, entry.config)
        load_checkpoint(model, engine.file(entry.file))
        models.append(model.to(device).eval())
    return tuple(models)
