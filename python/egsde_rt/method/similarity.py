"""The similarity measures both energy experts are built from, one value per image.

``pixel_cosine(X, Y)``: normalise each pixel's channel vector (L2, eps 1e-10, as
``F.normalize``), multiply, sum over channels, mean over pixels.
``squared_distance(X, Y)``: the sum of squared differences over C, H, W.

The experts use them with the signs of the official code:
  domain-specific   S1 = pixel_cosine(F(y), F(x))      or  -squared_distance(F(y), F(x))
  domain-independent E = squared_distance(L(x), L(y))  or  -pixel_cosine(L(x), L(y))
and the sampler subtracts ``weight * d/dy sum_batch`` of each.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .choices import SIMILARITY_KINDS

COSINE_EPS = 1e-10


def pixel_cosine(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    b, c = X.shape[:2]
    X = F.normalize(X.reshape(b, c, -1), dim=1, eps=COSINE_EPS)
    Y = F.normalize(Y.reshape(b, c, -1), dim=1, eps=COSINE_EPS)
    return (X * Y).sum(dim=1).mean(dim=1)


def squared_distance(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    return (X - Y).square().sum(dim=tuple(range(1, X.ndim)))


def check_kind(kind: str, what: str) -> str:
    if kind not in SIMILARITY_KINDS:
        raise ConfigError(f"{what} must be one of {SIMILARITY_KINDS}, got {kind!r}")
    return kind


def dse_similarity(kind: str, feat_y: torch.Tensor, feat_x: torch.Tensor) -> torch.Tensor:
    """S1 of the domain-specific expert per image (the sampler pushes it down)."""
    if check_kind(kind, "s1") == "cosine":
        return pixel_cosine(feat_y, feat_x)
    return -squared_distance(feat_y, feat_x)


def lowpass_energy(kind: str, low_y: torch.Tensor, low_x: torch.Tensor) -> torch.Tensor:
    """The domain-independent energy per image (the sampler pulls it down)."""
    if check_kind(kind, "s2") == "cosine":
        return -pixel_cosine(low_x, low_y)
    return squared_distance(low_x, low_y)
