"""The native sampler from Python: the C++ EGSDE loop with runners that evaluate PyTorch models.

``translate`` takes the arguments of ``reference.translate`` and runs the same method in
``egsde_rt._core.Sampler``: the loop, the noise, the low-pass gradient and the fused update are
native (CPU kernels, or CUDA kernels for CUDA inputs); the networks are called back through a
``Runner``. It is the bridge that proves the loop before any exported engine exists.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from . import _core
from .errors import ConfigError, EgsdeError
from .lowpass import lowpass_factors
from .noise import check_noise
from .network_fns import dse_gradient, score_function
from .reference import check_source
from .schedule import Schedule, StepCoefficients
from .settings import EGSDESettings

ProgressCallback = Callable[[int, int], "bool | None"]


class SamplingCancelled(EgsdeError):
    """The progress callback returned False."""


def as_tensor(ref) -> torch.Tensor:
    """A zero-copy torch view of a sampler buffer (host or CUDA)."""
    if ref.device == "cuda":
        return torch.as_tensor(ref, device="cuda")
    return torch.from_numpy(np.asarray(ref))


class TorchRunner(_core.Runner):
    """Runs the score model and the DSE gradient in eager PyTorch on the sampler's buffers."""

    def __init__(self, score_model: torch.nn.Module, dse: torch.nn.Module, *, s1: str, score_kind: str,
                 class_label: int | None = None):
        super().__init__()
        self.eps_fn = score_function(score_model, score_kind, class_label)
        self.dse, self.s1 = dse, s1

    def score(self, y, t, eps_out):
        as_tensor(eps_out).copy_(self.eps_fn(as_tensor(y), as_tensor(t)))

    def dse_grad(self, y, x_t, t, grad_out):
        as_tensor(grad_out).copy_(dse_gradient(self.dse, self.s1, as_tensor(y), as_tensor(x_t), as_tensor(t)))


def step_table(schedule: Schedule, M: int, steps: int | None) -> "_core.StepTable":
    """The per-update table: built natively (the C++ schedule twin) for schedules made by
    ``Schedule.create``, else converted from the Python tables."""
    if schedule.spec is not None:
        s = schedule.spec
        return _core.make_step_table(s["kind"], s["beta_start"], s["beta_end"], s["num_timesteps"],
                                     schedule.var_type, M, steps or 0)
    coefs = StepCoefficients.from_schedule(schedule, M, steps)
    table = _core.StepTable()
    for name in ("t", "inv_sqrt_alpha", "eps_coef", "guidance_w", "sigma", "sqrt_abar", "sqrt_one_minus_abar"):
        setattr(table, name, getattr(coefs, name).tolist())
    return table


def device_of(x: torch.Tensor) -> "_core.Device":
    if x.device.type == "cpu":
        return _core.Device.CPU
    if x.device.type == "cuda":
        if not _core.built_with_cuda:
            raise ConfigError("egsde_rt was built without CUDA kernels; run on the CPU or rebuild with nvcc")
        if _core.cuda_device_count() == 0:
            raise ConfigError(f"no CUDA device for the native sampler: {_core.cuda_status()}")
        return _core.Device.CUDA
    raise ConfigError(f"unsupported device {x.device}")


def build_sampler(settings: EGSDESettings, shape, device: "_core.Device",
                  schedule: Schedule | None = None) -> "_core.Sampler":
    schedule = schedule or Schedule.create("linear", var_type=settings.var_type)
    batch, channels, height, width = shape
    dh, uh = lowpass_factors(height, settings.down_N)
    dw, uw = lowpass_factors(width, settings.down_N)

    def f32(a):
        return np.ascontiguousarray(a, dtype=np.float32)

    return _core.Sampler(
        device=device, batch=batch, channels=channels, height=height, width=width,
        steps=step_table(schedule, settings.M, settings.steps), ls=float(settings.ls), li=float(settings.li),
        s2=_core.EnergyKind.COSINE if settings.s2 == "cosine" else _core.EnergyKind.NEG_L2,
        repeats=settings.repeats, fresh_perturb=settings.perturb == "fresh", ilvr=settings.ilvr,
        down_h=f32(dh), up_h=f32(uh), down_w=f32(dw), up_w=f32(uw),
    )


def translate(x0: torch.Tensor, score_model: torch.nn.Module, dse: torch.nn.Module, *, M: int, ls: float,
              li: float, s1: str = "cosine", s2: str = "neg_l2", down_N: int = 32,
              noise: torch.Tensor | None = None, perturb_noise: torch.Tensor | None = None, seed: int = 0,
              var_type: str = "fixedsmall", score_kind: str = "adm", steps: int | None = None,
              perturb: str = "shared", repeats: int = 1, ilvr: bool = False,
              schedule: Schedule | None = None, class_label: int | None = None,
              callback: ProgressCallback | None = None) -> torch.Tensor:
    """``reference.translate`` run by the native loop; ``callback(done, total)`` may return False
    to cancel (``SamplingCancelled`` is raised)."""
    settings = EGSDESettings(M=M, ls=ls, li=li, s1=s1, s2=s2, down_N=down_N, var_type=var_type,
                             score_kind=score_kind, steps=steps, perturb=perturb, repeats=repeats, ilvr=ilvr)
    return run_native(x0, score_model, dse, settings, noise=noise, perturb_noise=perturb_noise, seed=seed,
                      schedule=schedule, class_label=class_label, callback=callback)


def _host_noise(noise: torch.Tensor, name: str, count: int, shape) -> np.ndarray:
    check_noise(noise, name, count, shape)
    return np.ascontiguousarray(noise.detach().cpu().numpy(), dtype=np.float32)


def run_sampler(sampler: "_core.Sampler", x0: torch.Tensor, runner, settings: EGSDESettings, *, seed: int = 0,
                noise=None, perturb_noise=None, callback: ProgressCallback | None = None) -> np.ndarray:
    """Run a built sampler on x0 (checked by ``check_source``) with a runner; the unclamped
    result as a float32 array."""
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
    result = sampler.run(host_x0, runner, seed=int(seed), progress=progress, noise=sampling,
                         perturb_noise=perturbing)
    if result is None:
        raise SamplingCancelled("sampling cancelled by the progress callback")
    return result


def run_native(x0: torch.Tensor, score_model: torch.nn.Module, dse: torch.nn.Module, settings: EGSDESettings, *,
               noise=None, perturb_noise=None, seed: int = 0, schedule: Schedule | None = None,
               class_label=None, callback: ProgressCallback | None = None) -> torch.Tensor:
    check_source(x0)
    sampler = build_sampler(settings, tuple(x0.shape), device_of(x0), schedule)
    runner = TorchRunner(score_model, dse, s1=settings.s1, score_kind=settings.score_kind, class_label=class_label)
    result = run_sampler(sampler, x0, runner, settings, seed=seed, noise=noise, perturb_noise=perturb_noise,
                         callback=callback)
    return torch.from_numpy(result).to(x0.device)
