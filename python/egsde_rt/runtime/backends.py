"""Backend selection, in one place: the registry of backends (``REGISTRY``: one ``Backend`` per
backend, with the devices and precisions it runs, whether its step can be captured into a CUDA
graph, its probe and its runner factory), and the choice of one for an engine, a device and a
precision, with the reason.

``backend="auto"`` takes the first usable backend, in the registry's order, that runs on the
device (CUDA first when ``device="auto"`` and a GPU is usable): compiled plans built for this
machine (AOTInductor), then TensorRT, then ONNX Runtime, then eager PyTorch. The order is the
measured one (``egsde-rt bench``, docs/performance.md). A named backend that cannot run is
refused with the reason (for compiled and TensorRT plans built for another machine or version:
which, and the command that rebuilds them). Adding a backend is one more ``Backend`` in
``REGISTRY``: the CLI's choices, ``auto``'s order and the bench's list come from it.

Devices are ``"auto"``, ``"cpu"``, ``"cuda"`` (the current CUDA device) or ``"cuda:N"``, as a
``devices.Device`` (parsed once at the edge) or its text.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

from ..engine import EngineDir
from ..engine.plans import (TENSORRT_PRECISIONS, build_command, compiled_identity, import_tensorrt, matching_plans,
                            plans_batch_limit, stale_plans, tensorrt_identity)
from ..errors import ConfigError, EgsdeError
from .devices import Device, cuda_usable, resolve
from ..models.network_fns import PRECISIONS, network_dtype
from ..method.settings import MAX_BATCH_SIZE

log = logging.getLogger("egsde_rt")


@dataclass(frozen=True)
class BackendChoice:
    name: str
    device: str  # "cpu" or "cuda": where the sampler's buffers live
    reason: str
    precision: str = "fp32"
    index: int = 0  # the CUDA device's ordinal (cuda:N)
    # the device as ``select_backend`` resolved it (``devices.resolve``: checked there, passed inward as it is)
    target: Device | None = field(default=None, compare=False)

    @property
    def torch_device(self) -> str:
        """The device as PyTorch names it: ``"cpu"`` or ``"cuda:N"``."""
        return "cpu" if self.device == "cpu" else f"cuda:{self.index}"


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


_NO_GRAPHS = ("the engine holds only torch weights (exported with --formats torch): export it again with "
              "--formats onnx torch for {}")


def _build_hint(engine: EngineDir, backend: str, device: str, precision: str) -> str:
    return "run " + build_command(engine, backend, device, precision)


def _probe_compiled(engine: EngineDir, device: str, precision: str) -> tuple[bool, str]:
    return _plans_state(engine, "compiled", compiled_identity(device), precision,
                        _build_hint(engine, "compiled", device, precision))


def _graphs_missing(engine: EngineDir, backend: str, precision: str) -> str:
    """Why the engine cannot give ``backend`` its graphs in ``precision`` ("" when it can)."""
    if "onnx" not in engine.formats:
        return _NO_GRAPHS.format(backend)
    try:
        for contract in engine.contracts:
            engine.graph_variant(contract.name, precision)
    except EgsdeError as err:
        return str(err)
    return ""


def _probe_tensorrt(engine: EngineDir, device: str, precision: str) -> tuple[bool, str]:
    try:
        import_tensorrt("the tensorrt backend")
    except EgsdeError as err:
        return False, str(err)
    missing = _graphs_missing(engine, "TensorRT", precision)
    if missing:
        return False, missing
    return _plans_state(engine, "tensorrt", tensorrt_identity(), precision,
                        _build_hint(engine, "tensorrt", device, precision))


def _probe_onnxruntime(engine: EngineDir, device: str, precision: str) -> tuple[bool, str]:
    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    missing = _graphs_missing(engine, "ONNX Runtime", precision)
    if missing:
        return False, missing
    providers, why = _onnxruntime_providers()
    if provider not in providers:
        return False, why or f"onnxruntime has no {provider} (install onnxruntime-gpu)"
    return True, f"ONNX Runtime {provider} ({precision} graphs)"


def _probe_torch(engine: EngineDir, device: str, precision: str) -> tuple[bool, str]:
    if "torch" not in engine.formats:
        return False, "the engine's networks cannot be rebuilt for PyTorch (exported with --formats onnx)"
    return True, f"eager PyTorch ({precision}) from the engine's weights"


def _onnxruntime_runner(choice: BackendChoice, engine: EngineDir, stream: int, threads: int):
    from .runners import OrtRunner

    return OrtRunner(engine, device=choice.device, device_id=choice.index, stream=stream, precision=choice.precision,
                     threads=threads)


def _tensorrt_runner(choice: BackendChoice, engine: EngineDir, stream: int, threads: int):
    from .runners import TensorRTRunner

    engine.require_graphs("tensorrt")
    return TensorRTRunner(matching_plans(engine, tensorrt_identity(), kind="tensorrt", precision=choice.precision))


def _compiled_runner(choice: BackendChoice, engine: EngineDir, stream: int, threads: int):
    from .runners import CompiledRunner

    return CompiledRunner(matching_plans(engine, compiled_identity(choice.device), kind="compiled",
                                         precision=choice.precision), precision=choice.precision)


def _torch_runner(choice: BackendChoice, engine: EngineDir, stream: int, threads: int):
    from ..engine.torch_weights import load_engine_networks
    from ..models.network_fns import gradient_scale, in_precision
    from .runners import StudentRunner, TorchRunner

    networks = {name: in_precision(model, choice.precision)
                for name, model in load_engine_networks(engine, choice.torch_device).items()}
    if "student" in networks:  # a distilled engine
        return StudentRunner(networks["student"], precision=choice.precision)
    settings = engine.manifest.method
    return TorchRunner(networks["score"], networks["dse"], s1=settings.s1, score_kind=settings.score_kind,
                       grad_scale=gradient_scale(choice.precision), precision=choice.precision)


@dataclass(frozen=True)
class Backend:
    """One backend: where and in which precisions it runs, whether its whole step can be captured
    into one CUDA graph (its work is PyTorch's on the sampler's stream), ``probe(engine, device,
    precision)`` -> (usable, why) for a device and precision it supports, and
    ``runner(choice, engine, stream)``: its runner (``stream``: the CUDA stream handle its
    sampler orders its work on)."""

    name: str
    devices: tuple[str, ...]
    precisions: tuple[str, ...]
    capturable: bool
    probe: Callable[[EngineDir, str, str], tuple[bool, str]]
    runner: Callable[[BackendChoice, EngineDir, int, int], object]
    # the largest batch its runner takes for a choice (plans are built for a batch range)
    batch_limit: Callable[[BackendChoice, EngineDir], int] = lambda choice, engine: MAX_BATCH_SIZE


def _plans_batch_limit(kind: str, identity: Callable[[BackendChoice], object]):
    """The ``batch_limit`` of a backend that runs plans of ``kind`` built for ``identity(choice)``."""
    def batch_limit(choice: BackendChoice, engine: EngineDir) -> int:
        found = plans_batch_limit(engine, identity(choice), kind=kind, precision=choice.precision)
        return min(MAX_BATCH_SIZE, found or MAX_BATCH_SIZE)
    return batch_limit


# In auto's order of preference (measured: docs/performance.md).
REGISTRY = (
    Backend("compiled", ("cpu", "cuda"), PRECISIONS, True, _probe_compiled, _compiled_runner,
            _plans_batch_limit("compiled", lambda choice: compiled_identity(choice.device))),
    Backend("tensorrt", ("cuda",), TENSORRT_PRECISIONS, True, _probe_tensorrt, _tensorrt_runner,
            _plans_batch_limit("tensorrt", lambda choice: tensorrt_identity())),
    # CUDA: the float32 graphs (TF32 off, or on for tf32) and their fp16/bf16 variants
    Backend("onnxruntime-cuda", ("cuda",), PRECISIONS, False, _probe_onnxruntime, _onnxruntime_runner),
    Backend("onnxruntime-cpu", ("cpu",), ("fp32",), False, _probe_onnxruntime, _onnxruntime_runner),
    Backend("torch", ("cpu", "cuda"), PRECISIONS, True, _probe_torch, _torch_runner),
)


def backend_names() -> tuple[str, ...]:
    """Every backend's name, in auto's order."""
    return tuple(b.name for b in REGISTRY)


def get_backend(name: str) -> Backend:
    for backend in REGISTRY:
        if backend.name == name:
            return backend
    raise ConfigError(f"unknown backend {name!r}; choose auto or one of {backend_names()}")


def auto_order(device: str) -> tuple[str, ...]:
    """The backends that run on ``device`` ("cpu" or "cuda"), in auto's order."""
    return tuple(b.name for b in REGISTRY if device in b.devices)


def probe(engine: EngineDir, device: str, precision: str = "fp32") -> dict[str, tuple[bool, str]]:
    """Each backend on ``device`` ("cpu" or "cuda"): (usable, why) for this engine here. Without a
    usable GPU every CUDA backend has the one reason of ``devices.cuda_usable`` (say it once:
    ``"no usable CUDA device: ..."``)."""
    names = auto_order(device)
    if device == "cuda":
        cuda_ok, cuda_why = cuda_usable()
        if not cuda_ok:
            return {name: (False, cuda_why) for name in names}
    found = {}
    for name in names:
        backend = get_backend(name)
        if precision not in backend.precisions:
            others = [b.name for b in REGISTRY if precision in b.precisions and device in b.devices]
            found[name] = (False, f"{name} runs {'/'.join(backend.precisions)}; {precision} needs one of {others}")
        else:
            found[name] = backend.probe(engine, device, precision)
    return found


def select_backend(engine: EngineDir, backend: str = "auto", device: Device | str = "auto",
                   precision: str = "fp32") -> BackendChoice:
    if backend != "auto":
        get_backend(backend)  # a known backend
    device = Device.parse(device)
    network_dtype(precision)  # a known precision
    refusals = []
    for dev in [device.kind] if device.kind != "auto" else ["cuda", "cpu"]:
        cuda_ok, cuda_why = cuda_usable()
        if dev == "cuda" and not cuda_ok:  # one reason for every CUDA backend, said once
            refusals.append(cuda_why)
            continue
        found = probe(engine, dev, precision)
        names = auto_order(dev) if backend == "auto" else (backend,)
        for name in names:
            if name not in found:
                refusals.append(f"{name}: does not run on {dev}")
                continue
            usable, why = found[name]
            if usable:
                target = resolve(Device(dev, device.index if dev == "cuda" else None))
                log.info("egsde-rt: backend %s on %s (%s)", name, target, why)
                return BackendChoice(name, dev, why, precision, target.index or 0, target)
            refusals.append(f"{name} on {dev}: {why}")
    raise ConfigError("no usable backend: " + "; ".join(refusals))


def make_runner(choice: BackendChoice, engine: EngineDir, stream: int = 0, threads: int = 0):
    """The runner of a chosen backend (and the models it keeps alive), made with the choice's CUDA
    device current; ``stream``: the CUDA stream (a handle) its samplers will order their work on;
    ``threads``: the CPU threads of the runner's own pool (0: its default)."""
    import torch

    backend = get_backend(choice.name)
    on_device = choice.device == "cuda" and torch.cuda.is_available()
    with torch.cuda.device(choice.index) if on_device else nullcontext():
        return backend.runner(choice, engine, stream, threads)
