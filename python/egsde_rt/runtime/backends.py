"""Backend selection, in one place: which runner runs an engine, on which device, in which
precision, and why.

``backend="auto"`` takes the first usable backend in the order of ``AUTO_ORDER`` for the device
(CUDA first when ``device="auto"`` and a GPU is usable): compiled plans built for this machine
(AOTInductor), then TensorRT, then ONNX Runtime, then eager PyTorch. The order is the measured
one (``egsde-rt bench``, README "Performance"). A named backend that cannot run is refused with
the reason (for compiled and TensorRT plans built for another machine or version: which, and the
command that rebuilds them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .. import _core
from ..engine import EngineDir
from ..engine.plans import compiled_identity, matching_plans, stale_plans, tensorrt_identity
from ..errors import ConfigError
from ..network_fns import network_dtype

BACKENDS = ("compiled", "tensorrt", "onnxruntime-cuda", "onnxruntime-cpu", "torch")
AUTO_ORDER = {"cuda": ("compiled", "tensorrt", "onnxruntime-cuda", "torch"),
              "cpu": ("compiled", "onnxruntime-cpu", "torch")}
# Runners whose whole step can be captured into one CUDA graph (their work is PyTorch's on the
# sampler's stream; ONNX Runtime and TensorRT runners are not captured).
CAPTURABLE_BACKENDS = ("compiled", "torch")
log = logging.getLogger("egsde_rt")


@dataclass(frozen=True)
class BackendChoice:
    name: str
    device: str  # "cpu" or "cuda": where the sampler's buffers live
    reason: str
    precision: str = "fp32"


def _native_cuda() -> tuple[bool, str]:
    if not _core.built_with_cuda:
        return False, "egsde_rt was built without CUDA kernels"
    if _core.cuda_device_count() == 0:
        return False, _core.cuda_status()
    import torch

    if not torch.cuda.is_available():
        return False, "PyTorch sees no CUDA device"
    return True, "CUDA device present"


def resolve_device(device: str) -> str:
    """``"auto"`` as the device it means here: ``"cuda"`` where the native core and PyTorch can
    both run on a GPU, else ``"cpu"``; other names unchanged."""
    return device if device != "auto" else ("cuda" if _native_cuda()[0] else "cpu")


def _onnxruntime_providers() -> tuple[list, str]:
    try:
        import onnxruntime
    except ImportError:
        return [], "onnxruntime is not installed (pip install 'egsde-rt[onnx]')"
    return onnxruntime.get_available_providers(), ""


def _plans_state(engine: EngineDir, kind: str, identity, precision: str, build_hint: str) -> tuple[bool, str]:
    if matching_plans(engine, identity, kind=kind, precision=precision):
        return True, f"{precision} {kind} plans built for this machine ({identity.describe()})"
    stale = stale_plans(engine, identity, kind=kind, precision=precision)
    if stale:
        return False, f"the {kind} plans on record do not fit this machine ({'; '.join(stale[:2])}): {build_hint}"
    return False, f"no {precision} {kind} plans for this machine ({identity.describe()}): {build_hint}"


def probe(engine: EngineDir, device: str, precision: str = "fp32") -> dict[str, tuple[bool, str]]:
    """Each backend on ``device`` ("cpu" or "cuda"): (usable, why) for this engine here."""
    found = {}
    if device == "cuda":
        cuda_ok, cuda_why = _native_cuda()
        if not cuda_ok:
            return {name: (False, cuda_why) for name in AUTO_ORDER["cuda"]}
    hint = f"run `egsde-rt build {engine.path} --backend compiled --device {device} --precision {precision}`"
    found["compiled"] = _plans_state(engine, "compiled", compiled_identity(device), precision, hint)
    if device == "cuda":
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            found["tensorrt"] = (False, "tensorrt is not installed")
        else:
            hint = f"run `egsde-rt build {engine.path} --backend tensorrt --precision {precision}`"
            found["tensorrt"] = _plans_state(engine, "tensorrt", tensorrt_identity(), precision, hint)
    providers, ort_why = _onnxruntime_providers()
    ort = "onnxruntime-cuda" if device == "cuda" else "onnxruntime-cpu"
    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    no_graphs = ("the engine holds only torch weights (exported with --formats torch): export it again with "
                 "--formats onnx torch for {}")
    if "onnx" not in engine.formats:
        found[ort] = (False, no_graphs.format("ONNX Runtime"))
        if "tensorrt" in found:
            found["tensorrt"] = (False, no_graphs.format("TensorRT"))
    elif provider not in providers:
        found[ort] = (False, ort_why or f"onnxruntime has no {provider} (install onnxruntime-gpu)")
    elif precision != "fp32":
        found[ort] = (False, f"the ONNX graphs are float32; {precision} needs the compiled or torch backend")
    else:
        found[ort] = (True, f"ONNX Runtime {provider}")
    found["torch"] = ((True, f"eager PyTorch ({precision}) from the engine's torch/ weights")
                      if "torch" in engine.formats
                      else (False, "the engine has no torch/ weights (exported with --formats onnx)"))
    return found


def select_backend(engine: EngineDir, backend: str = "auto", device: str = "auto",
                   precision: str = "fp32") -> BackendChoice:
    if backend != "auto" and backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose auto or one of {BACKENDS}")
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {device!r}")
    network_dtype(precision)  # a known precision
    devices = [device] if device != "auto" else (["cuda", "cpu"] if _native_cuda()[0] else ["cpu"])
    refusals = []
    for dev in devices:
        found = probe(engine, dev, precision)
        names = AUTO_ORDER[dev] if backend == "auto" else (backend,)
        for name in names:
            if name not in found:
                refusals.append(f"{name}: does not run on {dev}")
                continue
            usable, why = found[name]
            if usable:
                log.info("egsde-rt: backend %s on %s (%s)", name, dev, why)
                return BackendChoice(name, dev, why, precision)
            refusals.append(f"{name} on {dev}: {why}")
    raise ConfigError("no usable backend: " + "; ".join(refusals))


def make_runner(choice: BackendChoice, engine: EngineDir, stream: int = 0):
    """The runner of a chosen backend (and the models it keeps alive); ``stream``: the CUDA stream
    (a handle) its samplers will order their work on."""
    if choice.name in ("onnxruntime-cpu", "onnxruntime-cuda"):
        from .runners import OrtRunner

        return OrtRunner(engine, device=choice.device, stream=stream)
    if choice.name == "tensorrt":
        from .runners import TensorRTRunner

        engine.require_graphs("tensorrt")
        return TensorRTRunner(matching_plans(engine, tensorrt_identity(), kind="tensorrt",
                                             precision=choice.precision))
    if choice.name == "compiled":
        from .runners import CompiledRunner

        return CompiledRunner(matching_plans(engine, compiled_identity(choice.device), kind="compiled",
                                             precision=choice.precision), precision=choice.precision)
    from ..engine.torch_weights import load_engine_models
    from ..network_fns import gradient_scale, in_precision
    from .runners import TorchRunner

    score, dse = (in_precision(model, choice.precision) for model in load_engine_models(engine, choice.device))
    settings = engine.manifest.method
    return TorchRunner(score, dse, s1=settings.s1, score_kind=settings.score_kind,
                       grad_scale=gradient_scale(choice.precision), precision=choice.precision)
