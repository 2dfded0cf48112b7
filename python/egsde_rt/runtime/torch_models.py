"""The torch backend: rebuild the engine's networks from its torch/ weights (weights_only)."""

from __future__ import annotations

from ..engine import EngineDir
from ..models import build_model, load_checkpoint
from .runners import TorchRunner


def load_engine_models(engine: EngineDir, device: str = "cpu"):
    """(score_model, dse) in eval mode on ``device``."""
    models = []
    for name in ("score", "dse"):
        entry = engine.manifest.torch_weights[name]
        model = build_model(entry.model_class, entry.config)
        load_checkpoint(model, engine.file(entry.file))
        models.append(model.to(device).eval())
    return tuple(models)


def torch_runner(engine: EngineDir, device: str = "cpu") -> TorchRunner:
    score, dse = load_engine_models(engine, device)
    settings = engine.manifest.method
    return TorchRunner(score, dse, s1=settings.s1, score_kind=settings.score_kind)
