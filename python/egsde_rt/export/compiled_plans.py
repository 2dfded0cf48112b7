"""Building compiled plans: the engine's graphs compiled ahead of time by PyTorch's AOTInductor.

``build_compiled_plans(engine_dir, device=..., precision=...)`` rebuilds the networks from the
engine's weights (``weights/*.safetensors``), runs their torsos in the precision's dtype (``network_fns.in_precision``:
inputs, outputs and normalisations stay float32, as the sampler's state), exports the engine's graphs
(``EngineDir.contracts``: the score graph and the DSE input gradient, the forward-only graph of
``gradient_graph``; or a distilled engine's student graph) with a dynamic batch through
``torch.export``, compiles each with ``torch._inductor.aoti_compile_and_package`` into a
``.pt2`` package under ``plans/`` (under a temporary name, renamed once checked: ``plan_cache``),
and checks it against the float32 eager networks at batch 1 and 3 (float32 plans must match
within the ONNX graphs' tolerance; reduced-precision plans must be finite and their DSE gradient
must not underflow). Building takes about a minute per graph
for the demo networks on 2 CPU cores; loading a plan never recompiles.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..engine import DSE_GRAD, SCORE, STUDENT, load_engine_dir
from ..engine.plans import compiled_identity
from ..engine.torch_weights import load_engine_networks
from ..errors import ConfigError, EgsdeError
from ..models.network_fns import gradient_scale, in_precision, network_dtype, tf32_mode
from ..method.settings import check_batch_size
from .gradient_graph import DSEGradient, trace_dse_gradient
from .onnx_graphs import ExportValidationError
from .plan_cache import build_cached_plans
from .score_graph import ScoreGraph, StudentGraph

CUDA_ONLY = ("tf32", "fp16")
UNDERFLOW_LIMIT = 0.01  # fraction of non-zero float32 gradient entries a plan may flush to zero


def _graph_modules(engine, device: str, precision: str) -> dict:
    """{graph name: (module to compile, float32 eager reference)} on ``device``."""
    networks = load_engine_networks(engine, device)
    low = load_engine_networks(engine, device) if precision != "fp32" else networks
    low = {name: in_precision(network, precision) for name, network in low.items()}
    if "student" in networks:  # a distilled engine
        return {STUDENT.name: (StudentGraph(low["student"]), StudentGraph(networks["student"]))}
    (score, dse), (low_score, low_dse) = ((n["score"], n["dse"]) for n in (networks, low))
    settings = engine.manifest.method
    sample = tuple(t.to(device) for t in DSE_GRAD.sample_inputs(2, engine.image_size))
    traced = trace_dse_gradient(low_dse, settings.s1, sample, scale=gradient_scale(precision))
    return {SCORE.name: (ScoreGraph(low_score, settings.score_kind), ScoreGraph(score, settings.score_kind)),
            DSE_GRAD.name: (traced, DSEGradient(dse, settings.s1))}


@torch.no_grad()
def _validate(package: Path, contract, reference, image_size: int, device: str, precision: str) -> dict:
    compiled = torch._inductor.aoti_load_package(str(package))
    errors = {}
    for batch in (1, 3):
        inputs = tuple(t.to(device) for t in contract.sample_inputs(batch, image_size, seed=batch))
        with tf32_mode("fp32"):  # the reference in IEEE float32
            expected = reference(*inputs).detach().float().cpu().numpy()
        with tf32_mode(precision):
            got = compiled(*inputs).detach().float().cpu().numpy()
        scale = float(np.abs(expected).max())
        max_abs = float(np.abs(got - expected).max())
        nonzero = np.abs(expected) > 1e-30
        flushed = float(np.mean(got[nonzero] == 0)) if nonzero.any() else 0.0
        errors[str(batch)] = {"max_abs": max_abs, "max_rel": max_abs / scale if scale else 0.0, "flushed": flushed}
        if not np.isfinite(got).all():
            raise ExportValidationError(f"the {precision} compiled {contract.name} plan gives non-finite values")
        if precision in ("fp32", "tf32") and max_abs > 1e-5 + (1e-3 if precision == "fp32" else 2e-2) * scale:
            raise ExportValidationError(f"the compiled {contract.name} plan differs from PyTorch at batch {batch}: "
                                        f"max abs error {max_abs:.3g} (reference scale {scale:.3g})")
        if flushed > UNDERFLOW_LIMIT:
            raise ExportValidationError(f"the {precision} compiled {contract.name} plan flushes {flushed:.1%} of the "
                                        "float32 values to zero (underflow); build it in bf16 or fp32")
    return errors


def build_compiled_plans(engine_dir, *, device: str = "cpu", precision: str = "fp32", max_batch: int = 16,
                         log: Callable[[str], None] = print) -> dict:
    """Build (or reuse) the AOTInductor plans of the engine's graphs; returns {graph name: plan path}."""
    network_dtype(precision)  # validates the name
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"device must be cpu or cuda, got {device!r}")
    if device == "cpu" and precision in CUDA_ONLY:
        raise ConfigError(f"precision {precision} needs a CUDA device; on the CPU choose fp32 or bf16")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("no CUDA device for a cuda plan (this PyTorch sees none)")
    check_batch_size(max_batch, "max_batch")
    engine = load_engine_dir(engine_dir)
    modules = {}

    def build_one(contract, path: Path) -> dict:
        if not modules:
            log(f"loading the engine's torch weights ({precision} on {device}) ...")
            modules.update(_graph_modules(engine, device, precision))
        module, reference = modules[contract.name]
        batch = torch.export.Dim("batch", min=1, max=max_batch)
        sample = tuple(t.to(device) for t in contract.sample_inputs(2, engine.image_size))
        with torch.no_grad(), tf32_mode(precision), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # PyTorch's own deprecation notices
            try:
                program = torch.export.export(module, sample,
                                              dynamic_shapes={name: {0: batch} for name in contract.inputs})
                torch._inductor.aoti_compile_and_package(program, package_path=str(path))
            except Exception as err:  # noqa: BLE001 - the compiler's errors are many and internal
                raise EgsdeError(f"AOTInductor could not compile the {contract.name} graph: "
                                 f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from err
            return {"validation": _validate(path, contract, reference, engine.image_size, device, precision)}

    return build_cached_plans(engine, kind="compiled", identity=compiled_identity(device), precision=precision,
                              profile=(1, max_batch), suffix=".pt2", build_one=build_one, log=log)


__all__ = ["build_compiled_plans"]
