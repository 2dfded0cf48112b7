"""Backend selection, in one place: which runner runs an engine, on which device, and why.

Order of preference for ``backend="auto"``: tensorrt > onnxruntime-cuda > onnxruntime-cpu > torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .. import _core
from ..errors import ConfigError
from ..engine import EngineDir

BACKENDS = ("tensorrt", "onnxruntime-cuda", "onnxruntime-cpu", "torch")
DEVICE_OF = {"tensorrt": "cuda", "onnxruntime-cuda": "cuda", "onnxruntime-cpu": "cpu"}
log = logging.getLogger("egsde_rt")


@dataclass(frozen=True)
class BackendChoice:
    name: str
    device: str  # "cpu" or "cuda": where the sampler's buffers live
    reason: str


def _native_cuda() -> tuple[bool, str]:
    if not _core.built_with_cuda:
        return False, "egsde_rt was built without CUDA kernels"
    if _core.cuda_device_count() == 0:
        return False, _core.cuda_status()
    return True, "CUDA device present"


def _onnxruntime_providers() -> tuple[list, str]:
    try:
        import onnxruntime
    except ImportError:
        return [], "onnxruntime is not installed"
    return onnxruntime.get_available_providers(), ""


def probe(engine: EngineDir) -> dict[str, tuple[bool, str]]:
    """Each backend: (usable, why) for this engine on this machine."""
    cuda_ok, cuda_why = _native_cuda()
    providers, ort_why = _onnxruntime_providers()
    found = {}
    try:
        import tensorrt  # noqa: F401

        from ..engine.plans import matching_plans

        plans = matching_plans(engine) if cuda_ok else None
        found["tensorrt"] = ((True, "TensorRT plans built for this GPU and TensorRT version") if plans
                             else (False, cuda_why if not cuda_ok else "no TensorRT plans for this GPU / version "
                                   "(run `egsde-rt build`)"))
    except ImportError:
        found["tensorrt"] = (False, "tensorrt is not installed")
    if "CUDAExecutionProvider" in providers:
        found["onnxruntime-cuda"] = (cuda_ok, "ONNX Runtime CUDA execution provider" if cuda_ok else cuda_why)
    else:
        found["onnxruntime-cuda"] = (False, ort_why or "onnxruntime has no CUDA execution provider "
                                     "(install onnxruntime-gpu)")
    found["onnxruntime-cpu"] = (bool(providers), "ONNX Runtime CPU" if providers else ort_why)
    found["torch"] = ((True, "eager PyTorch from the engine's torch/ weights") if engine.manifest.torch_weights
                      else (False, "the engine has no torch/ weights (exported with include_torch_weights=False)"))
    return found


def select_backend(engine: EngineDir, backend: str = "auto", device: str = "auto") -> BackendChoice:
    if backend != "auto" and backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose auto or one of {BACKENDS}")
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {device!r}")
    found = probe(engine)
    candidates = BACKENDS if backend == "auto" else (backend,)
    refusals = []
    for name in candidates:
        usable, why = found[name]
        natural = DEVICE_OF.get(name)
        if name == "torch":
            cuda_ok = _native_cuda()[0] and _torch_cuda()
            natural = "cuda" if device in ("auto", "cuda") and cuda_ok else "cpu"
        if device != "auto" and natural != device:
            refusals.append(f"{name}: runs on {natural}, not {device}")
            continue
        if usable:
            choice = BackendChoice(name, natural, why)
            log.info("egsde-rt: backend %s on %s (%s)", name, natural, why)
            return choice
        refusals.append(f"{name}: {why}")
    raise ConfigError("no usable backend: " + "; ".join(refusals))


def _torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def make_runner(choice: BackendChoice, engine: EngineDir):
    """The runner of a chosen backend (and the models it keeps alive)."""
    if choice.name in ("onnxruntime-cpu", "onnxruntime-cuda"):
        from .runners import OrtRunner

        return OrtRunner(engine, device=choice.device)
    if choice.name == "tensorrt":
        from ..engine.plans import matching_plans
        from .runners import TensorRTRunner

        return TensorRTRunner(matching_plans(engine))
    from .torch_models import torch_runner

    return torch_runner(engine, choice.device)
