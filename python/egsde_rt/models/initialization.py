"""Random weights in which every layer is non-zero, for benchmarks and tests without checkpoints.

guided-diffusion zero-initialises the output layers of its blocks and of the UNet
(``zero_module``), so a freshly built ADM UNet returns eps = 0 and a DSE's residual branches
are identities: every comparison or timing of such a network is vacuous (and compilers may fold
it away). ``nonzero_random_weights`` re-draws each all-zero weight tensor from a seeded
``N(0, 1 / fan_in)`` (the scale of a default layer); the other parameters keep their
initialisation.
"""

from __future__ import annotations

import math

import torch


def nonzero_random_weights(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Re-draw the all-zero weight tensors of ``model`` in place (seeded); returns the model."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim < 2 or torch.count_nonzero(param) > 0:
                continue
            fan_in = param[0].numel()
            values = torch.randn(param.shape, generator=generator) / math.sqrt(fan_in)
            param.copy_(values.to(param.device, param.dtype))
    return model
