"""The eager reference EGSDE sampler: plain PyTorch, the operations of the official code.

Every update does what the official ``egsde_sample`` does: the score network under no_grad,
the DDPM mean, autograd through the DSE for the domain-specific gradient, autograd through the
low-pass filter for the domain-independent gradient, and the masked noise. It is the parity
oracle of the native sampler and the engine, and the baseline they are profiled against.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import torch

from .io import check_source
from .lowpass import LowPassFilter
from .noise import STREAM_PERTURB, STREAM_SAMPLING, InjectedNoise, PhiloxNoise, Seeds, check_seeds
from .schedule import Schedule, StepCoefficients
from .network_fns import dse_gradient, input_gradient, score_function
from .settings import EGSDESettings
from .similarity import lowpass_energy

StepCallback = Callable[[int, int, torch.Tensor], None]


class Untimed:
    """The default ``timer``: ``step()`` at the start of each update and ``phase(name)`` around
    each phase of it (score, dse_grad, lowpass_grad, update_noise); ``egsde-rt bench`` passes a
    timer that records them."""

    def step(self) -> None:
        pass

    def phase(self, name: str):
        return nullcontext()


def translate(x0: torch.Tensor, score_model: torch.nn.Module, dse: torch.nn.Module,
              settings: EGSDESettings, *, seed: Seeds = 0, noise: torch.Tensor | None = None,
              perturb_noise: torch.Tensor | None = None, schedule: Schedule | None = None,
              class_label: int | None = None, callback: StepCallback | None = None,
              timer: Untimed | None = None) -> torch.Tensor:
    """Translate ``x0`` ([B, 3, H, W] in [-1, 1]) with ``settings``; the unclamped result tensor.

    ``noise``: the injected draws [R*(K+1), B, 3, H, W] (K updates, R repeats; ``noise[0]`` is
    e, ``noise[k]`` the fresh noise of update k), as the reference goldens define; when None,
    noise comes from the Philox contract (``egsde_rt.noise``) with ``seed`` (one integer for every
    image, or a list with one per image). ``perturb_noise``
    [R*K, ...] serves ``perturb="fresh"`` with injected noise. ``schedule`` defaults to the
    linear 1e-4..0.02 schedule of 1000 steps with ``settings.var_type``. ``callback(k, K, y)``
    is called after each update; ``timer`` times the phases of each update (see ``Untimed``).
    """
    check_source(x0)
    x0 = x0.float()
    schedule = schedule or Schedule.create("linear", var_type=settings.var_type)
    coefs = StepCoefficients.from_schedule(schedule, settings.M, settings.steps)
    K, R, shape, device = coefs.num_updates, settings.repeats, tuple(x0.shape), x0.device
    if noise is not None:
        source = InjectedNoise(noise, perturb_noise)
        source.check(STREAM_SAMPLING, R * (K + 1), shape)
        if settings.perturb == "fresh":
            source.check(STREAM_PERTURB, R * K, shape)
    else:
        source = PhiloxNoise(check_seeds(seed, shape[0]))
    eps_fn = score_function(score_model, settings.score_kind, class_label)
    lowpass = LowPassFilter(shape[2], shape[3], settings.down_N, device=device)
    timer = timer or Untimed()

    def scalar(table, k):
        return torch.tensor(table[k], dtype=torch.float32, device=device)

    y = x0
    for r in range(R):
        e = source.draw(STREAM_SAMPLING, r * (K + 1), shape, device)
        y = scalar(coefs.sqrt_abar, 0) * y + scalar(coefs.sqrt_one_minus_abar, 0) * e
        for k in range(K):
            timer.step()
            with timer.phase("update_noise"):  # the perturbed source counts with the noise
                t = torch.full((shape[0],), float(coefs.t[k]), device=device)
                e_k = e if settings.perturb == "shared" else source.draw(STREAM_PERTURB, r * K + k, shape, device)
                x_t = scalar(coefs.sqrt_abar, k) * x0 + scalar(coefs.sqrt_one_minus_abar, k) * e_k
            with timer.phase("score"):
                eps = eps_fn(y, t)
            if settings.ls:
                with timer.phase("dse_grad"):
                    grad_s = dse_gradient(dse, settings.s1, y, x_t, t)
            if settings.li:
                with timer.phase("lowpass_grad"):
                    low_x = lowpass.apply(x_t)
                    grad_i = input_gradient(lambda v: lowpass_energy(settings.s2, lowpass.apply(v), low_x), y)
            with timer.phase("update_noise"):
                mean = scalar(coefs.inv_sqrt_alpha, k) * (y - scalar(coefs.eps_coef, k) * eps)
                w = scalar(coefs.guidance_w, k)
                if settings.ls:
                    mean = mean - settings.ls * w * grad_s
                if settings.li:
                    mean = mean - settings.li * w * grad_i
                z = source.draw(STREAM_SAMPLING, r * (K + 1) + k + 1, shape, device)
                y = (mean + scalar(coefs.sigma, k) * z).float()
                if settings.ilvr and coefs.t[k] > 0:
                    y = y - lowpass.apply(y) + lowpass.apply(x_t)
            if callback is not None:
                callback(r * K + k, R * K, y)
    return y.detach()
