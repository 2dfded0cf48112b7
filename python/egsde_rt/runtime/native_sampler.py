"""The bridge to the native loop: build an ``egsde_rt._core.Sampler`` for settings and a batch
shape, and run it with a runner.

The step table comes from ``schedule.StepCoefficients`` (the one source of the schedule); the
low-pass matrices from ``lowpass.lowpass_factors``. On CUDA the sampler orders its kernels and
copies on the caller's current PyTorch stream, and hands that stream to the runners.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .. import _core
from ..errors import ConfigError, SamplingCancelled
from ..lowpass import lowpass_factors
from ..noise import check_noise, check_seed
from ..schedule import Schedule, StepCoefficients
from ..settings import EGSDESettings

ProgressCallback = Callable[[int, int], "bool | None"]
STEP_TABLE_COLUMNS = ("t", "inv_sqrt_alpha", "eps_coef", "guidance_w", "sigma", "sqrt_abar", "sqrt_one_minus_abar")


def step_table(coefs: StepCoefficients) -> "_core.StepTable":
    """The per-update coefficients as the sampler's table (the same float32 values)."""
    table = _core.StepTable()
    for name in STEP_TABLE_COLUMNS:
        setattr(table, name, getattr(coefs, name).tolist())
    return table


def cuda_usable() -> bool:
    """Whether the native core and PyTorch can both run on a CUDA device here (never raises)."""
    return bool(_core.built_with_cuda and _core.cuda_device_count() > 0 and torch.cuda.is_available())


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
                  schedule: Schedule | None = None) -> "_core.Sampler":
    """A sampler for ``settings`` and a batch ``shape`` [B, 3, H, W] on ``device``."""
    schedule = schedule or Schedule.create("linear", var_type=settings.var_type)
    config = _core.SamplerConfig()
    config.device = native_device(device)
    if config.device == _core.Device.CUDA:
        config.stream = torch.cuda.current_stream().cuda_stream
    config.batch, config.channels, config.height, config.width = (int(s) for s in shape)
    config.steps = step_table(StepCoefficients.from_schedule(schedule, settings.M, settings.steps))
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


def run_sampler(sampler: "_core.Sampler", x0: torch.Tensor, runner, settings: EGSDESettings, *, seed: int = 0,
                noise=None, perturb_noise=None, callback: ProgressCallback | None = None) -> np.ndarray:
    """Run a built sampler on x0 (checked by ``io.check_source``) with a runner; the unclamped
    result as a float32 array. ``callback(done, total)`` may return False to cancel
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
    result = sampler.run(host_x0, runner, seed=check_seed(seed), progress=progress, noise=sampling,
                         perturb_noise=perturbing)
    if result is None:
        raise SamplingCancelled("sampling cancelled by the progress callback")
    return result
