import numpy as np
import pytest
import torch

from conftest import load_golden
from egsde_rt.errors import ConfigError
from egsde_rt.method.lowpass import LowPassFilter, lowpass_factors, resize_matrix


@pytest.mark.parametrize("case", ["a", "b", "c"])
def test_lowpass_goldens(case):
    g = load_golden("golden_lowpass")
    y, x = torch.from_numpy(g[f"{case}/y"]), torch.from_numpy(g[f"{case}/x"])
    f = LowPassFilter(y.shape[-2], y.shape[-1], int(g[f"{case}/down_N"]))
    assert (f.apply(y) - torch.from_numpy(g[f"{case}/lowpass_y"])).abs().max() <= 1e-6
    assert (f.energy_grad(y, x, "neg_l2") - torch.from_numpy(g[f"{case}/grad"])).abs().max() <= 1e-6


@pytest.mark.parametrize("kind", ["neg_l2", "cosine"])
@pytest.mark.parametrize("size,down_N", [(32, 4), (64, 8), (48, 4)])
def test_closed_form_gradient_equals_autograd(kind, size, down_N, rng):
    f = LowPassFilter(size, size, down_N)
    y = torch.randn(2, 3, size, size, generator=rng)
    x = torch.randn(2, 3, size, size, generator=rng)
    y_ = y.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(f.energy(y_, x, kind).sum(), y_)
    closed = f.energy_grad(y, x, kind)
    assert (closed - auto).abs().max() <= 1e-6 * max(1.0, auto.abs().max().item())
    assert auto.abs().max() > 0


def test_matrices_are_normalised_low_rank_and_adjoint_is_the_transpose(rng):
    down, up = lowpass_factors(64, 8)
    assert down.shape == (8, 64) and up.shape == (64, 8)
    assert np.allclose(down.sum(1), 1) and np.allclose(up.sum(1), 1)
    assert np.linalg.matrix_rank(up @ down) == 8
    f = LowPassFilter(64, 32, 8)
    a = torch.randn(1, 3, 64, 32, generator=rng, dtype=torch.float32)
    b = torch.randn(1, 3, 64, 32, generator=rng, dtype=torch.float32)
    assert torch.allclose((f.apply(a) * b).sum(), (a * f.adjoint(b)).sum(), rtol=1e-5)


def test_constant_image_passes_unchanged():
    f = LowPassFilter(32, 32, 4)
    ones = torch.full((1, 3, 32, 32), 0.7)
    assert torch.allclose(f.apply(ones), ones, atol=1e-6)


def test_resize_matrix_identity_scale_and_bad_factor():
    assert np.allclose(resize_matrix(10, 1.0), np.eye(10))
    with pytest.raises(ConfigError, match="divisor"):
        LowPassFilter(30, 30, 8)
    with pytest.raises(ConfigError, match="built for"):
        LowPassFilter(32, 32, 4).apply(torch.zeros(1, 3, 16, 16))
