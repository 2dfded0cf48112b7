"""Export: checkpoints -> a self-describing engine directory (ONNX graphs, manifest, plans).

``export_engine(score_model, dse, out_dir, image_size=..., settings=...)`` exports ``score.onnx`` and ``dse_grad.onnx``
(the DSE input gradient as a forward graph), validates both against PyTorch with ONNX Runtime
at batch 1 and 3, saves the networks' state dicts under ``torch/``, and writes ``manifest.json``
(the engine format of ``egsde_rt.engine``). ``formats=("torch",)`` writes only the torch
weights and the manifest: seconds instead of minutes (and no ONNX export's memory) for the
torch and compiled backends, which never read the graphs. ``export_preset`` does the same from a
preset and two checkpoint files. ``build_plans`` (``tensorrt_plans``) adds TensorRT engines.
"""

from __future__ import annotations

import datetime
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch

from .._version import __version__
from ..errors import CheckpointNotFoundError, ConfigError, EgsdeError
from ..engine import DSE_GRAD, EXPORT_FORMATS, FORMAT_VERSION, SCORE, Manifest, load_engine_dir, sha256_file
from ..engine.format import GraphEntry, TorchWeightsEntry
from ..models import MODEL_CLASSES, build_preset_models, load_checkpoint
from ..presets import get_preset
from ..settings import EGSDESettings
from .gradient_graph import DSEGradient, trace_dse_gradient
from .onnx_graphs import ExportValidationError, export_onnx, validate_onnx
from .score_graph import ScoreGraph

DEFAULT_OPSET = 18
LINEAR_SCHEDULE = {"kind": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_timesteps": 1000}


def export_engine(score_model: torch.nn.Module, dse: torch.nn.Module, out_dir, *, image_size: int,
                  settings: EGSDESettings, schedule: dict | None = None, opset: int = DEFAULT_OPSET,
                  formats=EXPORT_FORMATS, overwrite: bool = False, preset: str | None = None,
                  log: Callable[[str], None] = print) -> Path:
    """Export an engine directory to ``out_dir`` and return its path (see the module docstring).

    ``settings`` are the engine's defaults; ``s1`` and ``score_kind`` are baked into the graphs.
    ``formats``: what to write, one or both of ``EXPORT_FORMATS`` ("onnx": the graphs, for ONNX
    Runtime and TensorRT; "torch": the weights, for the torch and compiled backends)."""
    formats = check_formats(formats)
    schedule = dict(schedule or LINEAR_SCHEDULE)
    settings.check_fits(image_size, schedule["num_timesteps"])
    if opset < 18:
        raise ConfigError(f"opset must be >= 18, got {opset}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise EgsdeError(f"{out_dir} exists; pass overwrite=True (--overwrite) to replace it")
    score_model, dse = score_model.eval().float().cpu(), dse.eval().float().cpu()

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        graphs, onnx_version = {}, None
        if "onnx" in formats:
            import onnx

            onnx_version = onnx.__version__
            graphs = _export_graphs(staging, score_model, dse, image_size, settings, opset, log)
        weights = _save_torch_weights(staging, score_model, dse) if "torch" in formats else {}
        manifest = Manifest(
            format_version=FORMAT_VERSION, egsde_rt_version=__version__, image_size=image_size,
            settings=settings.to_dict(), schedule=schedule, graphs=graphs, torch_weights=weights,
            export={"torch": torch.__version__, "onnx": onnx_version, "opset": opset if "onnx" in formats else None,
                    "formats": list(formats),
                    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
            preset=preset,
        )
        manifest.write(staging)
        load_engine_dir(staging)  # what we wrote must read back
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"engine written to {out_dir}")
    return out_dir


def check_formats(formats) -> tuple:
    """``formats`` as a tuple in ``EXPORT_FORMATS`` order; a ``ConfigError`` unless it names one or both."""
    if isinstance(formats, str):
        formats = (formats,)
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown or not formats:
        raise ConfigError(f"export formats must be one or both of {EXPORT_FORMATS}, got {list(formats)}")
    return tuple(name for name in EXPORT_FORMATS if name in formats)


def _export_graphs(staging: Path, score_model, dse, image_size: int, settings: EGSDESettings, opset: int,
                   log: Callable[[str], None]) -> dict:
    """score.onnx and dse_grad.onnx, each validated against PyTorch; their manifest entries."""
    graphs = {}
    score_graph = ScoreGraph(score_model, settings.score_kind)
    log(f"exporting {SCORE.file} ...")
    export_onnx(score_graph, SCORE, SCORE.sample_inputs(2, image_size), staging / SCORE.file, opset)
    with torch.no_grad():
        score_errors = validate_onnx(staging / SCORE.file, SCORE, score_graph, image_size)
    graphs["score"] = _graph_entry(staging, SCORE, image_size, score_errors)
    log(f"  validated: {score_errors}")

    log(f"tracing the DSE input gradient ({settings.s1}) ...")
    traced = trace_dse_gradient(dse, settings.s1, DSE_GRAD.sample_inputs(2, image_size))
    log(f"exporting {DSE_GRAD.file} ...")
    export_onnx(traced, DSE_GRAD, DSE_GRAD.sample_inputs(2, image_size), staging / DSE_GRAD.file, opset)
    grad_errors = validate_onnx(staging / DSE_GRAD.file, DSE_GRAD, DSEGradient(dse, settings.s1), image_size)
    graphs["dse_grad"] = _graph_entry(staging, DSE_GRAD, image_size, grad_errors)
    log(f"  validated: {grad_errors}")
    return graphs


def _graph_entry(root: Path, contract, image_size: int, errors: dict) -> GraphEntry:
    return GraphEntry(file=contract.file, sha256=sha256_file(root / contract.file), inputs=list(contract.inputs),
                      outputs=list(contract.outputs), shapes=contract.shapes(image_size), validation=errors)


def _save_torch_weights(root: Path, score_model, dse) -> dict:
    (root / "torch").mkdir()
    entries = {}
    for name, model in (("score", score_model), ("dse", dse)):
        class_name = type(model).__name__
        if class_name not in MODEL_CLASSES or not hasattr(model, "config"):
            raise EgsdeError(f"{name}: only egsde_rt.models networks can be saved for the torch backend "
                             f"(got {class_name}); export the ONNX graphs only: formats=('onnx',)")
        file = f"torch/{name}.pt"
        torch.save(model.state_dict(), root / file)
        entries[name] = TorchWeightsEntry(file=file, sha256=sha256_file(root / file), model_class=class_name,
                                          config=model.config)
    return entries


def export_preset(preset_name: str, score_ckpt, dse_ckpt, out_dir, *, settings: EGSDESettings | None = None,
                  **options) -> Path:
    """Build a preset's networks, load the two checkpoints, and export them with ``settings``
    (the preset's by default); ``options`` as ``export_engine``'s."""
    preset = get_preset(preset_name)
    for path in (score_ckpt, dse_ckpt):  # before building networks of 100M+ parameters
        if not Path(path).is_file():
            raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    score, dse = build_preset_models(preset)
    load_checkpoint(score, score_ckpt)
    load_checkpoint(dse, dse_ckpt)
    return export_engine(score, dse, out_dir, image_size=preset.image_size, settings=settings or preset.settings,
                         preset=preset.name, **options)


__all__ = ["export_engine", "export_preset", "check_formats", "ExportValidationError", "DEFAULT_OPSET"]
