"""The export pipeline: checkpoints -> a self-describing engine directory (weights, ONNX graphs,
manifest), in stages.

``export_engine(score_model, dse, out_dir, image_size=..., settings=...)`` runs four stages, each
with a progress bar (``progress``): ``weights`` writes each network's weights once, as
``weights/score.safetensors`` and ``weights/dse.safetensors`` (the torch backend's weights);
``trace`` traces the DSE input gradient into a forward graph with a symbolic batch
(``gradient_graph``); ``graphs`` exports ``score.onnx`` (``torch.onnx.export``) and
``dse_grad.onnx`` (the trace translated directly, ``fx_translation``, where this torch allows)
with their weights as ONNX external data in those files (``external_weights``: no weight is
copied into a graph); ``validation`` runs both graphs with ONNX Runtime against PyTorch at batch
1 and 2 (``onnx_graphs``); then each graph's fp16 and bf16 variants are written beside it
(``reduced_precision``: explicit casts, the same weights). Then ``manifest.json`` (the engine
format of ``egsde_rt.engine``, version 2) is written and the directory read back, in a staging
directory renamed into place (``engine_writer``, which ``student_engine.export_student`` shares
for a distilled engine: a student's weights and ``student.onnx``).

Export's memory stays near the weights' size plus one graph's activations at batch 2: weights
are never serialised into a graph, each stage frees what it built, validation computes its
PyTorch references (one sample at a time) before any ONNX Runtime session exists, and with
``release_networks`` the networks' weights are freed before the sessions.
``formats=("torch",)`` writes only the weights and the manifest: seconds instead of minutes, for
the torch and compiled backends, which never read the graphs. ``export_preset`` does the same
from a preset and two checkpoint files (``.pt`` or ``.safetensors``). ``build_plans``
(``tensorrt_plans``) and ``build_compiled_plans`` add plans.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..errors import CheckpointNotFoundError
from ..engine import DSE_GRAD, EXPORT_FORMATS, SCORE
from ..engine.format import ScheduleSpec
from ..models import build_preset_models, load_checkpoint
from ..models.network_fns import FP16_GRAD_SCALE
from ..method.presets import get_preset
from ..method.schedule import DEFAULT_SCHEDULE
from ..method.settings import EGSDESettings
from .engine_writer import (DEFAULT_OPSET, check_formats, check_opset, new_manifest, save_weights_stage,
                            validated_graph, weights_file, write_engine, write_variants)
from .external_weights import WeightIndex
from . import fx_translation
from .gradient_graph import DSEGradient, TracedGradient, trace_dse_gradient
from .onnx_graphs import TRACE_BATCH, VALIDATION_BATCHES, export_onnx, export_translated_onnx, reference_outputs
from .progress import StageObserver, stage
from .score_graph import ScoreGraph

# The DSE gradient is traced with the similarity scaled by this power of two (and the gradient scaled
# back): exact in float32, and what keeps the fp16 variant's gradient from underflowing (network_fns).
GRADIENT_SCALE = FP16_GRAD_SCALE


def export_engine(score_model: torch.nn.Module, dse: torch.nn.Module, out_dir, *, image_size: int,
                  settings: EGSDESettings, schedule: dict | None = None, opset: int = DEFAULT_OPSET,
                  formats=EXPORT_FORMATS, overwrite: bool = False, preset: str | None = None,
                  release_networks: bool = False, log: Callable[[str], None] = print,
                  on_stage: StageObserver | None = None) -> Path:
    """Export an engine directory to ``out_dir`` and return its path (see the module docstring).

    ``settings`` are the engine's defaults; ``s1`` and ``score_kind`` are baked into the graphs.
    ``formats``: what to write, one or both of ``EXPORT_FORMATS`` ("onnx": the graphs, for ONNX
    Runtime and TensorRT; "torch": the torch backend's networks; the weights are always written,
    once). ``release_networks``: free the networks' weights once export no longer needs them
    (before the ONNX Runtime checks: a lower peak), leaving the networks unusable: for callers
    that own them (``export_preset``). ``on_stage``: see ``progress``."""
    formats = check_formats(formats)
    schedule = ScheduleSpec(**(schedule or DEFAULT_SCHEDULE))
    schedule.check()
    settings.check_fits(image_size, schedule.num_timesteps)
    check_opset(opset)
    score_model, dse = score_model.eval().float().cpu(), dse.eval().float().cpu()

    def fill(staging: Path):
        networks = {"score": score_model, "dse": dse}
        weights, states = save_weights_stage(staging, networks, "torch" in formats, on_stage)
        graphs = {}
        if "onnx" in formats:
            graphs = _export_graphs(staging, networks, states, image_size, settings, opset, release_networks, log,
                                    on_stage)
        del states
        return new_manifest(image_size=image_size, settings=settings, schedule=schedule, graphs=graphs,
                            weights=weights, formats=formats, opset=opset, preset=preset)

    return write_engine(out_dir, fill, overwrite=overwrite, log=log)


def _export_graphs(staging: Path, networks: dict, states: dict, image_size: int, settings: EGSDESettings,
                   opset: int, release_networks: bool, log: Callable[[str], None],
                   on_stage: StageObserver | None) -> dict:
    """score.onnx and dse_grad.onnx with their weights as external data, each validated against
    PyTorch; their manifest entries. ``states`` is emptied once the graphs are written."""
    weights_of = {contract: contract.weights for contract in (SCORE, DSE_GRAD)}
    eager = {SCORE: ScoreGraph(networks["score"], settings.score_kind),
             DSE_GRAD: DSEGradient(networks["dse"], settings.s1)}
    with stage("trace", 1, on_stage) as bar:
        gradient, translation = _trace_gradient(networks["dse"], settings, image_size, opset, log)
        bar.update()
    reports = {}
    with stage("graphs", len(weights_of), on_stage) as bar:
        for contract, network in weights_of.items():
            links = (WeightIndex(states[network], staging / weights_file(network)), weights_file(network))
            path = staging / contract.file
            if contract is SCORE:  # a forward network: torch.onnx.export traces it (14 s of cat2dog's)
                reports[contract] = export_onnx(eager[SCORE], SCORE, SCORE.sample_inputs(TRACE_BATCH, image_size),
                                                path, opset, links)
            else:
                reports[contract] = _export_gradient(gradient, path, image_size, opset, links, translation, log)
                del gradient
            if reports[contract]["inline_large"]:
                log(f"  {contract.file}: large constants not among the weights, stored in the graph: "
                    f"{reports[contract]['inline_large'][:4]}")
            del links
            bar.update()
    states.clear()
    graphs = {}
    with stage("validation", len(eager) * (1 + len(VALIDATION_BATCHES)), on_stage) as bar:
        references = {}
        for contract in eager:
            references[contract] = reference_outputs(contract, eager[contract], image_size, VALIDATION_BATCHES)
            bar.update()
        del eager
        if release_networks:
            _release(networks)
        for contract in weights_of:
            graphs[contract.name] = validated_graph(staging, contract, references.pop(contract), image_size,
                                                    reports[contract]["external_bytes"], log, on_batch=bar.update)
    for contract in weights_of:
        graphs[contract.name].variants = write_variants(staging, contract, log)
    return graphs


def _direct_path_failed(step: str, why: BaseException, log: Callable[[str], None]) -> None:
    """The one report of the direct path's failure (any step of it): export goes on through
    ``torch.onnx.export``."""
    reason = str(why).splitlines()[0] if str(why) else ""
    log(f"  {DSE_GRAD.file}: the direct translation failed in its {step} ({type(why).__name__}: {reason}); "
        "exporting through torch.onnx.export")


def _trace_gradient(dse: torch.nn.Module, settings: EGSDESettings, image_size: int, opset: int,
                    log: Callable[[str], None]) -> tuple[torch.fx.GraphModule, bool]:
    """(the traced DSE gradient, whether it is traced for the direct translation): traced with
    the exporter's decompositions where this torch allows (``fx_translation.available``), plainly
    where it does not or where that trace fails (logged)."""
    sample = DSE_GRAD.sample_inputs(TRACE_BATCH, image_size)
    if fx_translation.available():
        try:
            return trace_dse_gradient(dse, settings.s1, sample, GRADIENT_SCALE, functional=True,
                                      extra_decompositions=fx_translation.onnx_decompositions(opset)).graph_module, True
        except Exception as why:  # noqa: BLE001 - internals of torch: any failure takes the public path
            _direct_path_failed("trace", why, log)
    return trace_dse_gradient(dse, settings.s1, sample, GRADIENT_SCALE).graph_module, False


def _export_gradient(gradient: torch.fx.GraphModule, path: Path, image_size: int, opset: int, links,
                     translation: bool, log: Callable[[str], None]) -> dict:
    """dse_grad.onnx from the traced gradient: translated directly where it was traced for it
    (``translation``), through ``torch.onnx.export`` otherwise or when any step of the
    translation fails (its type promotion, the translator, saving); ``save_linked``'s report."""
    if translation:
        try:
            return export_translated_onnx(gradient, DSE_GRAD, path, opset, links)
        except Exception as why:  # noqa: BLE001 - internals of torch: any failure takes the public path
            path.unlink(missing_ok=True)
            _direct_path_failed("translation", why, log)
    return export_onnx(TracedGradient(gradient), DSE_GRAD, DSE_GRAD.sample_inputs(TRACE_BATCH, image_size), path,
                       opset, links)


def _release(networks: dict) -> None:
    """Free the networks' weights (they are written, and the references computed): the ONNX
    Runtime checks then run without a second copy of them (their memory goes back to the system
    as the first check begins, ``check_onnx``). The networks are unusable after."""
    for model in networks.values():
        for tensor in (*model.parameters(), *model.buffers()):
            tensor.data = torch.empty(0, dtype=tensor.dtype)


def export_preset(preset_name: str, score_ckpt, dse_ckpt, out_dir, *, settings: EGSDESettings | None = None,
                  **options) -> Path:
    """Build a preset's networks, load the two checkpoints (``.pt`` or ``.safetensors``), and export
    them with ``settings`` (the preset's by default); ``options`` as ``export_engine``'s."""
    preset = get_preset(preset_name)
    for path in (score_ckpt, dse_ckpt):  # before building networks of 100M+ parameters
        if not Path(path).is_file():
            raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    score, dse = build_preset_models(preset)
    load_checkpoint(score, score_ckpt)
    load_checkpoint(dse, dse_ckpt)
    return export_engine(score, dse, out_dir, image_size=preset.image_size, settings=settings or preset.settings,
                         preset=preset.name, release_networks=True, **options)

