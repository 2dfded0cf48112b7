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
        try:
            model = build_model(entry.model_class, entry.config)
        except Exception as err:  # noqa: BLE001 - a network's constructor may fail in many ways on a bad config
            raise EngineDirError(f"{engine.path}: the manifest's config of the {name} network does not build a "
                                 f"{entry.model_class} ({type(err).__name__}: {err}); export the engine again") from err
        load_checkpoint(model, engine.file(entry.file, f"torch_weights.{name}.file"))
        models.append(model.to(device).eval())
    return tuple(models)
