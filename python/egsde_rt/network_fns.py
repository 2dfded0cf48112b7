"""Evaluating the networks the way the sampler needs them (shared by every sampler backend).

``score_function``: eps(y, t) of a score network (ADM outputs [eps, variance] and is sliced).
``dse_gradient``: d/dy sum_batch S1(F(y, t), F(x_t, t)) by autograd through the DSE.
"""

from __future__ import annotations

import torch

from .similarity import dse_similarity


def score_function(score_model: torch.nn.Module, score_kind: str, class_label=None):
    def eps(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if class_label is None:
                out = score_model(y, t)
            else:
                labels = torch.full((y.shape[0],), int(class_label), dtype=torch.long, device=y.device)
                out = score_model(y, t, labels)
        return out[:, :3] if score_kind == "adm" else out

    return eps


def input_gradient(energy_fn, y: torch.Tensor) -> torch.Tensor:
    """d/dy of energy_fn(y).sum() by autograd, with y detached from any outer graph."""
    with torch.enable_grad():
        y_ = y.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(energy_fn(y_).sum(), y_)
    return grad.detach()


def dse_gradient(dse: torch.nn.Module, s1: str, y: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        feat_x = dse(x_t, t)
    return input_gradient(lambda v: dse_similarity(s1, dse(v, t), feat_x), y)
