"""The native loop with PyTorch models: ``translate(x0, score_model, dse, settings)``.

The same method as ``egsde_rt.reference.translate`` (same arguments), run by the C++ loop
(``egsde_rt._core.Sampler``): the start point, the perturbed sources, the Philox noise, the
low-pass energy gradient and the fused update are native kernels (CPU, or CUDA for CUDA inputs);
the score network and the DSE gradient are eager PyTorch, called back through a ``TorchRunner``.
It needs no exported engine: the way to run checkpoints natively, and the bridge that proves the
loop.
"""

from __future__ import annotations

import torch

from ..images import check_source
from ..method.noise import Seeds
from .native_sampler import ProgressCallback, build_sampler, run_sampler
from .runners import TorchRunner
from ..method.schedule import Schedule
from ..method.settings import EGSDESettings


def translate(x0: torch.Tensor, score_model: torch.nn.Module, dse: torch.nn.Module, settings: EGSDESettings, *,
              seed: Seeds = 0, noise: torch.Tensor | None = None, perturb_noise: torch.Tensor | None = None,
              schedule: Schedule | None = None, class_label: int | None = None,
              callback: ProgressCallback | None = None) -> torch.Tensor:
    """Translate ``x0`` ([B, 3, H, W] in [-1, 1], on the CPU or a CUDA device) natively; the
    unclamped result on x0's device. ``callback(done, total)`` may return False to cancel
    (``SamplingCancelled`` is raised); the other arguments are ``reference.translate``'s."""
    check_source(x0)
    sampler = build_sampler(settings, tuple(x0.shape), x0.device, schedule)
    runner = TorchRunner(score_model, dse, s1=settings.s1, score_kind=settings.score_kind, class_label=class_label)
    out = torch.empty(x0.shape, dtype=torch.float32, device=x0.device)
    return run_sampler(sampler, x0, runner, settings, seed=seed, noise=noise, perturb_noise=perturb_noise,
                       callback=callback, out=out)
