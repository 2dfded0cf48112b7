"""The engine's networks for PyTorch: rebuilt from their recorded class and config and loaded
from the weights files (``weights/*.safetensors``; ``torch/*.pt`` with ``weights_only=True`` in a
format 1 engine). The torch backend runs them; the compiled backend is built from them."""

from __future__ import annotations

from ..models import build_model, load_checkpoint
from .format import EngineDir
from ..errors import EngineDirError


def load_engine_models(engine: EngineDir, device: str = "cpu"):
    """(score_model, dse) in eval mode on ``device``."""
    if "torch" not in engine.formats:
        raise EngineDirError(f"{engine.path}: the engine's networks cannot be rebuilt for PyTorch (exported with "
                             "--formats onnx); export it again with --formats onnx torch")
    models = []
    for name in ("score", "dse"):
        entry = engine.manifest.torch_weights[name]
        model = build_model(entry.model_class, entry.config)
        load_checkpoint(model, engine.file(entry.file))
        models.append(model.to(device).eval())
    return tuple(models)
