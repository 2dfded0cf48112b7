"""The bridge to the native loop: build an ``egsde_rt._core.Sampler`` for settings and a batch
shape, and run it with a runner.

The step table comes from ``schedule.StepCoefficients.from_settings`` (the one source of the
schedule; its columns are the core's ``_core.STEP_TABLE_COLUMNS``); the low-pass matrices from
``lowpass.lowpass_factors``. On CUDA the sampler orders its kernels and
copies on the caller's current PyTorch stream (or the stream given to ``build_sampler``), and
hands that stream to the runners.

Every update is the same counter-driven step (``Sampler.step``: its per-step values are read on
the device from the step table through a device-side step counter), so on CUDA
``run_captured`` captures one step as a CUDA graph and replays it for every update, calling the
progress callback on the host between replays.

x0 may be a host array or a tensor on the sampler's device (read in place: no host round trip),
and the result is written into ``out`` (host, or on the sampler's device) when one is given. The
native calls release the GIL; the runners' and the callback's Python calls take it back.
"""

from __future__ import annotations

import weakref
from typing import Callable

import numpy as np
import torch

from .. import _core
from ..errors import CaptureFailed, ConfigError, NativeError, SamplingCancelled
from ..method.lowpass import lowpass_eigen, lowpass_factors
from ..method.noise import Seeds, check_noise, seed_array
from ..method.schedule import Schedule, StepCoefficients
from ..method.settings import EGSDESettings
from ..method.solvers import get_solver
from .devices import Device, resolve

ProgressCallback = Callable[[int, int], "bool | None"]


def step_table(coefs: StepCoefficients) -> "_core.StepTable":
    """The per-update coefficients as the sampler's table (the same float32 values), column by
    column as the core declares them (``_core.STEP_TABLE_COLUMNS``)."""
    table = _core.StepTable()
    for name in _core.STEP_TABLE_COLUMNS:
        setattr(table, name, getattr(coefs, name).tolist())
    return table


def native_device(device: "Device | str | torch.device") -> "tuple[_core.Device, int]":
    """The sampler device and CUDA ordinal of ``device`` (``devices.resolve``: checked against the
    build and the devices present, once)."""
    device = resolve(device)
    return (_core.Device.CUDA, device.index) if device.kind == "cuda" else (_core.Device.CPU, 0)


def sampler_device(sampler: "_core.Sampler") -> torch.device:
    """The torch device of a sampler's buffers."""
    config = sampler.config
    return torch.device("cuda", config.device_index) if config.device == _core.Device.CUDA else torch.device("cpu")


def build_sampler(settings: EGSDESettings, shape, device: "Device | str | torch.device",
                  schedule: Schedule | None = None, *, stream: "torch.cuda.Stream | None" = None,
                  threads: int = 0, student: bool = False) -> "_core.Sampler":
    """A sampler for ``settings`` and a batch ``shape`` [B, 3, H, W] on ``device``, over ``schedule``
    (None: the linear 1e-4..0.02 schedule of 1000 timesteps). ``threads``: on the CPU, the OpenMP
    team of its calls (``cpu_threads.resolve_threads``; 0: the OpenMP default). ``student``: a
    distilled engine's sampler, one ``runner.student`` evaluation per update and no expert (its
    settings' ls 0, li 0 unless the low-pass form is stable).

    On CUDA (``"cuda"``: the current device, or ``"cuda:N"``) the sampler orders all its work on
    ``stream`` (a ``torch.cuda.Stream`` of that device; default: its current PyTorch stream).
    ``run_captured`` needs a non-default stream, e.g.
    ``build_sampler(..., "cuda", stream=torch.cuda.Stream())``: the legacy default stream cannot
    be captured into a CUDA graph. The caller keeps the stream alive as long as the sampler.
    """
    config = _core.SamplerConfig()
    config.device, config.device_index = native_device(device)
    config.threads = threads
    config.student = student
    if config.device == _core.Device.CUDA:
        current = torch.cuda.current_stream(config.device_index)
        stream = stream if stream is not None else current
        if stream.device != current.device:
            raise ConfigError(f"the stream is on {stream.device}, the sampler on cuda:{config.device_index}")
        config.stream = stream.cuda_stream
    elif stream is not None:
        raise ConfigError("a CUDA stream was given for a CPU sampler")
    config.batch, config.channels, config.height, config.width = (int(s) for s in shape)
    config.steps = step_table(StepCoefficients.from_settings(schedule, settings))
    config.history = get_solver(settings.solver).history
    config.ls, config.li = float(settings.ls), float(settings.li)
    config.s2 = _core.EnergyKind.COSINE if settings.s2 == "cosine" else _core.EnergyKind.NEG_L2
    config.repeats, config.fresh_perturb, config.ilvr = settings.repeats, settings.perturb == "fresh", settings.ilvr
    height_factors = lowpass_factors(config.height, settings.down_N)
    width_factors = lowpass_factors(config.width, settings.down_N)
    config.set_lowpass(*(np.ascontiguousarray(m, dtype=np.float32) for m in (*height_factors, *width_factors)))
    config.lowpass_form = getattr(_core.LowpassForm, settings.lowpass.upper())
    if settings.lowpass != "gradient":
        config.set_lowpass_eigen(*(np.ascontiguousarray(m, dtype=np.float32) for m in (
            *lowpass_eigen(config.height, settings.down_N), *lowpass_eigen(config.width, settings.down_N))))
    return _core.Sampler(config)


def _host_noise(noise, name: str, count: int, shape) -> np.ndarray:
    if isinstance(noise, np.ndarray):
        noise = torch.from_numpy(noise)
    check_noise(noise, name, count, shape)
    return np.ascontiguousarray(noise.detach().cpu().numpy(), dtype=np.float32)


def host_noise(settings: EGSDESettings, shape, noise=None, perturb_noise=None) -> tuple:
    """The injected draws of a run of ``shape`` ([B, 3, S, S]) as checked float32 host arrays
    ``(noise, perturb_noise)``: ``noise`` [R*(K+1), *shape] (None: Philox noise, and no
    perturb_noise), ``perturb_noise`` [R*K, *shape] where ``settings.perturb`` is "fresh", else None."""
    if noise is None:
        return None, None
    K, R = settings.num_updates, settings.repeats
    sampling = _host_noise(noise, "noise", R * (K + 1), shape)
    fresh = settings.perturb == "fresh"
    return sampling, _host_noise(perturb_noise, "perturb_noise", R * K, shape) if fresh else None


def host_seeds(seed: Seeds, batch: int) -> np.ndarray:
    """The per-image seeds of a run as the sampler takes them: uint64 [batch] (checked)."""
    return seed_array(seed, batch)


def native_input(sampler: "_core.Sampler", x0: torch.Tensor):
    """x0 as the sampler reads it: a tensor on the sampler's CUDA device as it is (contiguous
    float32; the sampler's stream waits for the work queued on the current stream first, and
    the tensor's memory is not reused before the sampler's stream has read it), anything else
    as a host array."""
    if sampler_device(sampler) == x0.device and x0.device.type == "cuda":
        x = x0.detach().to(torch.float32).contiguous()
        stream = torch.cuda.ExternalStream(sampler.config.stream, device=x.device)
        stream.wait_stream(torch.cuda.current_stream(x.device))
        x.record_stream(stream)
        return x
    return np.ascontiguousarray(x0.detach().float().cpu().numpy())


def _check_out(sampler: "_core.Sampler", out) -> None:
    config = sampler.config
    shape = (config.batch, config.channels, config.height, config.width)
    if out is None:
        return
    if not isinstance(out, (np.ndarray, torch.Tensor)) or tuple(out.shape) != shape:
        raise ConfigError(f"out must be an array or tensor of shape {list(shape)}")
    if out.dtype not in (np.float32, torch.float32) or not (
            out.flags.c_contiguous if isinstance(out, np.ndarray) else out.is_contiguous()):
        raise ConfigError("out must be C-contiguous float32")
    if isinstance(out, torch.Tensor) and out.device not in (torch.device("cpu"), sampler_device(sampler)):
        raise ConfigError(f"out is on {out.device}, the sampler on {sampler_device(sampler)}")


def _native_out(out):
    """``out`` as the sampler writes it (a host tensor as its numpy view)."""
    if isinstance(out, torch.Tensor) and out.device.type == "cpu":
        return out.numpy()
    return out


def _progress(callback: ProgressCallback | None):
    if callback is None:
        return None

    def progress(done, total):
        return callback(done, total) is not False
    return progress


def run_sampler(sampler: "_core.Sampler", x0: torch.Tensor, runner, settings: EGSDESettings, *, seed: Seeds = 0,
                noise=None, perturb_noise=None, callback: ProgressCallback | None = None, out=None):
    """Run a built sampler on x0 (checked by ``io.check_source``; on the host or the sampler's
    device) with a runner; the unclamped result written into ``out`` (a float32 array or tensor
    of x0's shape, on the host or the sampler's device) and returned, or as a new float32 host
    array. ``seed``: one integer for every image, or one per image (the noise contract,
    ``egsde_rt.method.noise``). ``callback(done, total)`` may return False to cancel
    (``SamplingCancelled`` is raised). The GIL is released while the native loop runs."""
    shape = tuple(x0.shape)
    sampling, perturbing = host_noise(settings, shape, noise, perturb_noise)
    _check_out(sampler, out)
    result = sampler.run(native_input(sampler, x0), runner, seed=host_seeds(seed, shape[0]),
                         progress=_progress(callback), noise=sampling, perturb_noise=perturbing, out=_native_out(out))
    if result is None:
        raise SamplingCancelled("sampling cancelled by the progress callback")
    return out if out is not None else result


# The legacy default stream (0) and cudaStreamLegacy (1) cannot be captured into a CUDA graph.
_UNCAPTURABLE_STREAMS = (0, 1)


class CudaStepGraph:
    """The graph ``run_captured`` replays: one ``sampler.step(runner)`` captured as a CUDA graph on
    the sampler's stream (``ordered()``: make that stream PyTorch's current one, so that replays
    are ordered on it)."""

    def __init__(self, sampler: "_core.Sampler"):
        config = sampler.config
        if config.device != _core.Device.CUDA:
            raise ConfigError("run_captured needs a CUDA sampler (a CUDA graph cannot capture CPU work); "
                              "use run_sampler on the CPU")
        if config.stream in _UNCAPTURABLE_STREAMS:
            raise ConfigError("run_captured needs a sampler built on a non-default CUDA stream: "
                              "build_sampler(..., stream=torch.cuda.Stream()) (the legacy default stream "
                              "cannot be captured)")
        self.stream = torch.cuda.ExternalStream(config.stream, device=sampler_device(sampler))
        self.graph = torch.cuda.CUDAGraph()

    def ordered(self):
        return torch.cuda.stream(self.stream)

    def capture(self, step: Callable[[], None]) -> None:
        with torch.cuda.graph(self.graph, stream=self.stream):
            step()  # recorded, not run: the replays run it

    def replay(self) -> None:
        self.graph.replay()


class _CapturedStep:
    """One ``Sampler.step(runner)`` captured as a graph, kept for its sampler (with the runner it
    called, whose networks the graph replays)."""

    def __init__(self, runner, graph):
        self.runner, self.graph = runner, graph


# The captured step ``run_captured`` keeps for each sampler, beside it (a sampler holds no
# Python attributes) and dropped with it.
_captured_steps: "weakref.WeakKeyDictionary[_core.Sampler, _CapturedStep]" = weakref.WeakKeyDictionary()


def captured_step(sampler: "_core.Sampler") -> _CapturedStep | None:
    """The captured step ``run_captured`` keeps for ``sampler`` (``.graph``, and ``.runner``, the
    runner it captured), or None before its first capture."""
    return _captured_steps.get(sampler)


def capture_step(sampler: "_core.Sampler", runner, step_graph=CudaStepGraph):
    """``sampler.step(runner)`` captured into a new ``step_graph(sampler)``. Only a failure of the
    capture itself raises ``CaptureFailed`` (a ``RuntimeError`` from the runner's PyTorch work or
    from the capture: work that cannot be captured); an out-of-memory error, a ``NativeError`` or
    any other exception of the runner reaches the caller as it is."""
    graph = step_graph(sampler)
    weak = weakref.ref(sampler)  # a graph may keep the step; kept per sampler, it must not keep the sampler alive
    try:
        with graph.ordered():
            graph.capture(lambda: weak().step(runner))
    except (NativeError, torch.cuda.OutOfMemoryError):
        raise
    except RuntimeError as err:
        raise CaptureFailed(f"capturing a step of the {type(runner).__name__} into a CUDA graph failed: "
                            f"{err}") from err
    return graph


def run_captured(sampler: "_core.Sampler", x0: torch.Tensor, runner, settings: EGSDESettings, *,
                 seed: Seeds = 0, callback: ProgressCallback | None = None, out=None, step_graph=CudaStepGraph):
    """``run_sampler`` for a CUDA sampler with every update but the first replayed from one CUDA
    graph of ``sampler.step(runner)``; the same result, bit for bit.

    The same native loop as ``run_sampler`` (``Sampler.run``, GIL released), with ``replay``:
    the first update of each run runs uncaptured (it warms the runner up: lazy initialisation,
    allocator pools, library handles; an exception of the runner there reaches the caller); the
    first replay captures one step (``capture_step``), on the sampler's stream, into a graph
    kept for the sampler (``captured_step``) and replayed for every later update, across repeats
    and runs (captured again only for another runner). The runner's PyTorch work is captured into the
    graph's private memory pool. ``callback(done, total)`` is called on the host after every
    update, between replays (it waits for nothing on the device); returning False cancels
    (the stream is waited for, then ``SamplingCancelled`` is raised). Philox noise only
    (injected noise is for the parity tests, which run uncaptured). The sampler must be a CUDA
    sampler built on a non-default stream (``build_sampler(..., stream=torch.cuda.Stream())``),
    and the runner must be capturable: ``TorchRunner`` is; ``OrtRunner`` synchronises the stream
    before each graph and is not. ``step_graph``: the graph type (tests replay a CPU sampler's
    step with a stand-in)."""
    config = sampler.config
    shape = (config.batch, config.channels, config.height, config.width)
    if tuple(x0.shape) != shape:
        raise ConfigError(f"x0 has shape {list(x0.shape)}, the sampler was built for {list(shape)}")
    K, R = len(config.steps), config.repeats
    if (K, R) != (settings.num_updates, settings.repeats):
        raise ConfigError("the settings do not match the sampler (updates or repeats differ)")
    _check_out(sampler, out)
    ordering = step_graph(sampler)  # checks the sampler; orders the replays on its stream

    def replay():  # every update but the first: the kept graph (captured by the first replay)
        captured = _captured_steps.get(sampler)
        if captured is None or captured.runner is not runner or not isinstance(captured.graph, step_graph):
            captured = _CapturedStep(runner, capture_step(sampler, runner, step_graph))
            _captured_steps[sampler] = captured
        captured.graph.replay()

    with ordering.ordered():
        result = sampler.run(native_input(sampler, x0), runner, seed=host_seeds(seed, config.batch),
                             progress=_progress(callback), out=_native_out(out), replay=replay)
    if result is None:
        raise SamplingCancelled("sampling cancelled by the progress callback")
    return out if out is not None else result
