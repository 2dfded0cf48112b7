"""The engine's networks for PyTorch: rebuilt from their recorded class and config and loaded
from the weights files (``weights/*.safetensors``; ``torch/*.pt`` with ``weights_only=True`` in a
format 1 engine). The torch backend runs them; the compiled backend is built from them."""

from __future__ import annotations

from ..models import build_model, load_checkpoint
from .format import EngineDir
from ..errors import EngineDirError


def load_engine_networks(engine: EngineDir, device: str = "cpu") -> dict:
    """{network name: network} in eval mode on ``device``: the networks of the engine's graphs
    (``EngineDir.contracts``: "score" and "dse" of an egsde engine, "student" of a distilled one)."""
    if "torch" not in engine.formats:
        raise EngineDirError(f"{engine.path}: the engine's networks cannot be rebuilt for PyTorch (exported with "
                             "--formats onnx); export it again with --formats onnx torch")
    networks = {}
    for name in (contract.weights for contract in engine.contracts):
        entry = engine.manifest.torch_weights[name]
        try:
            model = build_model(entry.model_class, entry.config)
        except Exception as err:  # noqa: BLE001 - a network's constructor may fail in many ways on a bad config
            raise EngineDirError(f"{engine.path}: the manifest's config of the {name} network does not build a "
                                 f"{entry.model_class} ({type(err).__name__}: {err}); export the engine again") from err
        load_checkpoint(model, engine.file(entry.file, f"torch_weights.{name}.file"))
        networks[name] = model.to(device).eval()
    return networks


def load_engine_models(engine: EngineDir, device: str = "cpu"):
    """(score_model, dse) of an egsde engine (a teacher), in eval mode on ``device``."""
    if engine.manifest.kind != "egsde":
        raise EngineDirError(f"{engine.path}: a {engine.manifest.kind} engine holds a student, not a score network "
                             "and a DSE: give the engine it was distilled from (its teacher)")
    networks = load_engine_networks(engine, device)
    return networks["score"], networks["dse"]
