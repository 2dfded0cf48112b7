"""The bridge to the native loop: build an ``egsde_rt._core.Sampler`` for settings and a batch
shape, and run it with a runner.

The step table comes from ``schedule.StepCoefficients`` (the one source of the schedule); the
low-pass matrices from ``lowpass.lowpass_factors``. On CUDA the sampler orders its kernels and
copies on the caller's current PyTorch stream (or the stream given to ``build_sampler``), and
hands that stream to the runners.

Every update is the same counter-driven step (``Sampler.step``: its per-step values are read on
the device from the step table through a device-side step counter), so on CUDA
``run_captured`` captures one step as a CUDA graph and replays it for every update.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .. import _core
from ..errors import ConfigError, SamplingCancelled
from ..lowpass import lowpass_factors
from ..noise import Seeds, check_noise, check_seeds
from ..schedule import Schedule, StepCoefficients
from ..settings import EGSDESettings

ProgressCallback = Callable[[int, int], "bool | None"]
STEP_TABLE_COLUMNS = ("t", "inv_sqrt_alpha", "eps_coef", "guidance_w", "sigma", "sqrt_abar", "sqrt_one_minus_abar",
                      "prev_coef", "x0_y", "x0_eps", "x0_guidance")


def step_table(coefs: StepCoefficients) -> "_core.StepTable":
    """The per-update coefficients as the sampler's table (the same float32 values)."""
    table = _core.StepTable()
    for name in STEP_TABLE_COLUMNS:
        setattr(table, name, getattr(coefs, name).tolist())
    return table


def native_device(device: str | torch.device) -> "_core.Device":
    """The sampler device of a torch device ("cpu" or "cuda"), checked against the build."""
    kind = torch.device(device).type
    if kind == "cpu":
        return _core.Device.CPU
    if kind == "cuda":
        if not _core.built_with_cuda:
            raise ConfigError("egsde_rt was built without CUDA kernels; run on the CPU or rebuild with nvcc")
        if _core.cuda_device_count() == 0:
            raise ConfigError(f"no CUDA device for the native sampler: {_core.cuda_status()}")
        return _core.Device.CUDA
    raise ConfigError(f"unsupported device {device}")


def build_sampler(settings: EGSDESettings, shape, device: str | torch.device,
                  schedule: Schedule | None = None, *, stream: "torch.cuda.Stream | None" = None) -> "_core.Sampler":
    """A sampler for ``settings`` and a batch ``shape`` [B, 3, H, W] on ``device``.

    On CUDA the sampler orders all its work on ``stream`` (a ``torch.cuda.Stream``; default: the
    current PyTorch stream). ``run_captured`` needs a non-default stream, e.g.
    ``build_sampler(..., "cuda", stream=torch.cuda.Stream())``: the legacy default stream cannot
    be captured into a CUDA graph. The caller keeps the stream alive as long as the sampler.
    """
    schedule = schedule or Schedule.create("linear", var_type=settings.var_type)
    config = _core.SamplerConfig()
    config.device = native_device(device)
    if config.device == _core.Device.CUDA:
        config.stream = (stream if stream is not None else torch.cuda.current_stream()).cuda_stream
    elif stream is not None:
        raise ConfigError("a CUDA stream was given for a CPU sampler")
    config.batch, config.channels, config.height, config.width = (int(s) for s in shape)
    config.steps = step_table(StepCoefficients.from_schedule(schedule, settings.M, settings.steps,
                                                             solver=settings.solver, eta=settings.eta))
    config.ls, config.li = float(settings.ls), float(settings.li)
    config.s2 = _core.EnergyKind.COSINE if settings.s2 == "cosine" else _core.EnergyKind.NEG_L2
    config.repeats, config.fresh_perturb, config.ilvr = settings.repeats, settings.perturb == "fresh", settings.ilvr
    height_factors = lowpass_factors(config.height, settings.down_N)
    width_factors = lowpass_factors(config.width, settings.down_N)
    config.set_lowpass(*(np.ascontiguousarray(m, dtype=np.float32) for m in (*height_factors, *width_factors)))
    return _core.Sampler(config)


def _host_noise(noise, name: str, count: int, shape) -> np.ndarray:
    if isinstance(noise, np.ndarray):
        noise = torch.from_numpy(noise)
    check_noise(noise, name, count, shape)
    return np.ascontiguousarray(noise.detach().cpu().numpy(), dtype=np.float32)


def host_seeds(seed: Seeds, batch: int) -> np.ndarray:
    """The per-image seeds of a run as the sampler takes them: uint64 [batch] (checked)."""
    return np.array(check_seeds(seed, batch), dtype=np.uint64)


def run_sampler(sampler: "_core.Sampler", x0: torch.Tensor, runner, settings: EGSDESettings, *, seed: Seeds = 0,
                noise=None, perturb_noise=None, callback: ProgressCallback | None = None) -> np.ndarray:
    """Run a built sampler on x0 (checked by ``io.check_source``) with a runner; the unclamped
    result as a float32 array. ``seed``: one integer for every image, or one per image (the
    noise contract, ``egsde_rt.noise``). ``callback(done, total)`` may return False to cancel
    (``SamplingCancelled`` is raised)."""
    shape = tuple(x0.shape)
    K, R = settings.num_updates, settings.repeats
    sampling = perturbing = None
    if noise is not None:
        sampling = _host_noise(noise, "noise", R * (K + 1), shape)
        if settings.perturb == "fresh":
            perturbing = _host_noise(perturb_noise, "perturb_noise", R * K, shape)
    progress = None
    if callback is not None:
        def progress(done, total):
            return callback(done, total) is not False
    host_x0 = np.ascontiguousarray(x0.detach().float().cpu().numpy())
    result = sampler.run(host_x0, runner, seed=host_seeds(seed, shape[0]), progress=progress, noise=sampling,
                         perturb_noise=perturbing)
    if result is None:
        raise SamplingCancelled("sampling cancelled by the progress callback")
    return result


# The legacy default stream (0) and cudaStreamLegacy (1) cannot be captured into a CUDA graph.
_UNCAPTURABLE_STREAMS = (0, 1)


class _CapturedStep:
    """One ``Sampler.step(runner)`` captured as a CUDA graph, kept on its sampler (with the runner
    it called, whose networks the graph replays)."""

    def __init__(self, runner, graph):
        self.runner, self.graph = runner, graph


def run_captured(sampler: "_core.Sampler", x0: torch.Tensor, runner, settings: EGSDESettings, *,
                 seed: Seeds = 0) -> np.ndarray:
    """``run_sampler`` for a CUDA sampler with every update but the first replayed from one CUDA
    graph of ``sampler.step(runner)``; the same result, bit for bit.

    The first update of each run runs uncaptured (it warms the runner up: lazy initialisation,
    allocator pools, library handles); the first run also captures one step, on the sampler's
    stream, into a graph kept with the sampler and replayed for every later update, across
    repeats and runs (captured again only for another runner). The runner's PyTorch work is
    captured into the graph's private memory pool. Philox noise only (injected noise is for the
    parity tests, which run uncaptured); no progress callback (nothing returns to the host
    between updates). The sampler must be a CUDA sampler built on a non-default stream
    (``build_sampler(..., stream=torch.cuda.Stream())``), and the runner must be capturable:
    ``TorchRunner`` is; ``OrtRunner`` synchronises the stream before each graph and is not.
    """
    config = sampler.config
    if config.device != _core.Device.CUDA:
        raise ConfigError("run_captured needs a CUDA sampler (a CUDA graph cannot capture CPU work); "
                          "use run_sampler on the CPU")
    if config.stream in _UNCAPTURABLE_STREAMS:
        raise ConfigError("run_captured needs a sampler built on a non-default CUDA stream: "
                          "build_sampler(..., stream=torch.cuda.Stream()) (the legacy default stream "
                          "cannot be captured)")
    shape = (config.batch, config.channels, config.height, config.width)
    if tuple(x0.shape) != shape:
        raise ConfigError(f"x0 has shape {list(x0.shape)}, the sampler was built for {list(shape)}")
    K, R = len(config.steps), config.repeats
    if (K, R) != (settings.num_updates, settings.repeats):
        raise ConfigError("the settings do not match the sampler (updates or repeats differ)")
    stream = torch.cuda.ExternalStream(config.stream)
    host_x0 = np.ascontiguousarray(x0.detach().float().cpu().numpy())
    sampler.begin(host_x0, seed=host_seeds(seed, config.batch))
    captured = getattr(sampler, "_captured_step", None)
    with torch.cuda.stream(stream):  # replays are ordered on the current stream: the sampler's
        for r in range(R):
            sampler.start_repeat(r)
            for k in range(K):
                if r == 0 and k == 0:
                    sampler.step(runner)  # uncaptured: warms the runner up
                    continue
                if captured is None or captured.runner is not runner:
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph, stream=stream):
                        sampler.step(runner)  # recorded, not run: the replay below runs it
                    captured = _CapturedStep(runner, graph)
                    sampler._captured_step = captured
                captured.graph.replay()
    return sampler.finish()
