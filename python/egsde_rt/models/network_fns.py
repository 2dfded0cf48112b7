"""Evaluating the networks the way the sampler needs them (shared by every sampler backend).

``score_function``: eps(y, t) of a score network (ADM outputs [eps, variance] and is sliced).
``dse_gradient``: d/dy sum_batch S1(F(y, t), F(x_t, t)) by autograd through the DSE.

Precision: the networks may run in bfloat16 or float16 (``in_precision``) while the sampler's
state stays float32: as guided-diffusion's ``use_fp16``, the torso of each network (its
convolutions and linear layers) runs in the low dtype, while inputs, outputs, the time
embedding, the normalisations and softmax stay float32. In float16 the DSE similarity is scaled
by ``FP16_GRAD_SCALE`` before differentiation (and the gradient scaled back), so that small
gradients do not underflow; bfloat16 keeps float32's range.

TF32: on GPUs of compute capability 8.0 and later, cuDNN runs float32 convolutions in TF32 unless
``torch.backends.cudnn.allow_tf32`` is False (PyTorch's default is True), and cuBLAS float32
matmuls in TF32 when ``torch.backends.cuda.matmul.allow_tf32`` is True. ``tf32_mode(precision)``
sets both from the precision (``tf32``: on; ``fp32`` and the float32 parts of ``bf16``/``fp16``:
off), so that "fp32" means IEEE float32; every runner and the benchmark's eager reference run
their networks inside it.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ..errors import ConfigError
from ..method.similarity import dse_similarity

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
FP16_GRAD_SCALE = 2.0**12


def network_dtype(precision: str) -> torch.dtype:
    """The dtype the networks run in for a precision (tf32 is float32 with TF32 matmuls on GPUs)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


@contextmanager
def tf32_mode(precision: str):
    """Run the body with TF32 convolutions and matmuls on for ``tf32`` and off for every other
    precision (see the module docstring); the flags are restored on exit. The flags are
    process-wide: runners of different precisions must not run at the same time in two threads."""
    network_dtype(precision)  # a known precision
    enabled = precision == "tf32"
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def gradient_scale(precision: str) -> float:
    return FP16_GRAD_SCALE if precision == "fp16" else 1.0


def in_precision(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """``model`` (converted in place) with its torso in the precision's dtype."""
    dtype = network_dtype(precision)
    if dtype == torch.float32:
        return model
    if not hasattr(model, "convert_torso"):
        raise ConfigError(f"{type(model).__name__} runs only in float32 (precision {precision} needs an ADM score "
                          "model and a DSE)")
    model.convert_torso(dtype)
    return model


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


def dse_gradient(dse: torch.nn.Module, s1: str, y: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                 scale: float = 1.0) -> torch.Tensor:
    """The domain-specific gradient (``scale``: the float16 gradient scaling, see above)."""
    with torch.no_grad():
        feat_x = dse(x_t, t)
    if scale == 1.0:
        return input_gradient(lambda v: dse_similarity(s1, dse(v, t), feat_x), y)
    return input_gradient(lambda v: scale * dse_similarity(s1, dse(v, t), feat_x), y) / scale
