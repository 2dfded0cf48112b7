"""The low-pass expert in its stable forms (settings.lowpass = implicit | exact): the pull against
independent dense linear algebra, first-order agreement with the official gradient step as the
step shrinks, no divergence at any weight, and the one declaration. (The native loop against the
oracle with these forms, for every solver: tests/method/test_solvers.py.)"""

import numpy as np
import pytest
import scipy.linalg
import torch

from helpers.sampling import GaussianScore, native_translate, reference_translate
from egsde_rt import _core
from egsde_rt.errors import ConfigError
from egsde_rt.method.lowpass import LOWPASS_FORMS, LowPassFilter, lowpass_eigen, lowpass_factors
from egsde_rt.method.settings import DECLARATIONS, RUNTIME_OVERRIDABLE, EGSDESettings, overrides_from_text
from egsde_rt.method.solvers import SOLVERS


def _dense_energy_matrix(height, width, down_N):
    """A = L^T L of the whole image as a dense (H W)^2 matrix, from the resize matrices."""
    dh, uh = lowpass_factors(height, down_N)
    dw, uw = lowpass_factors(width, down_N)
    filt = np.kron(uh @ dh, uw @ dw)
    return filt.T @ filt


def _float64_case(H, W, N, batch, seed):
    """(y, x, the float64 filter) of a random H x W case."""
    gen = torch.Generator().manual_seed(seed)
    y, x = (torch.randn(batch, 3, H, W, generator=gen, dtype=torch.float64) for _ in range(2))
    return y, x, LowPassFilter(H, W, N, dtype=torch.float64)


@pytest.mark.parametrize("form", ["implicit", "exact"])
@pytest.mark.parametrize("c", [1e-3, 0.7, 30.0, 1e4])
def test_the_pull_is_the_dense_solve_or_exponential(form, c):
    """x + (I + cA)^-1 (y - x) (implicit) and x + expm(-cA) (y - x) (exact), computed densely."""
    H, W, N = 8, 12, 4
    y, x, lp = _float64_case(H, W, N, batch=2, seed=3)
    A = _dense_energy_matrix(H, W, N)
    op = np.linalg.inv(np.eye(H * W) + c * A) if form == "implicit" else scipy.linalg.expm(-c * A)
    v = (y - x).reshape(6, H * W).numpy()
    expected = x.reshape(6, H * W).numpy() + v @ op.T
    got = lp.pull(y, x, c, form).reshape(6, H * W).numpy()
    assert np.abs(got - expected).max() < 1e-9


def test_the_eigenpairs_span_the_filter():
    """Q diag(lambda) Q^T rebuilds A of each axis: the n/N kept pairs are all of A's nonzero ones."""
    for n, N in ((32, 8), (12, 4), (16, 1)):
        q, lam = lowpass_eigen(n, N)
        down, up = lowpass_factors(n, N)
        assert q.shape == (n, n // N) and lam.shape == (n // N,)
        assert np.abs(q * lam @ q.T - (up @ down).T @ (up @ down)).max() < 1e-12


@pytest.mark.parametrize("form", ["implicit", "exact"])
def test_the_pull_agrees_with_the_gradient_step_to_first_order(form):
    """Against y - c A (y - x) (the official step of the energy's gradient 2 A (y - x) with weight
    c / 2): the gap is O(c^2), so halving c quarters it."""
    y, x, lp = _float64_case(16, 16, 4, batch=1, seed=5)
    gaps = []
    for c in (0.04, 0.02, 0.01):
        gradient_step = y - 0.5 * c * lp.energy_grad(y, x)
        gaps.append(float((lp.pull(y, x, c, form) - gradient_step).abs().max()))
    assert 3.6 < gaps[0] / gaps[1] < 4.4 and 3.6 < gaps[1] / gaps[2] < 4.4


def _gaussian_translation(lowpass: str, solver: str, K: int, li: float, M: int = 400):
    """A deterministic translation (Gaussian score, ls 0, eta 0 / no noise after the start) of a
    random 16x16 source."""
    gen = torch.Generator().manual_seed(11)
    x0 = torch.rand(1, 3, 16, 16, generator=gen) * 2 - 1
    noise = torch.zeros(K + 1, *x0.shape)
    noise[0] = torch.randn(x0.shape, generator=gen)
    eta = {"eta": 0.0} if solver != "ddpm" else {}
    settings = EGSDESettings(M=M, steps=K, ls=0.0, li=li, down_N=4, score_kind="ddpm", solver=solver,
                             lowpass=lowpass, **eta)
    from egsde_rt import native

    return native.translate(x0, GaussianScore(0.1, 0.5), torch.nn.Identity(), settings, noise=noise).double()


@pytest.mark.parametrize("form", ["implicit", "exact"])
@pytest.mark.parametrize("solver", ["ddim", "dpmpp-2m-sde"])
def test_translations_converge_to_the_gradient_form_as_the_step_shrinks(form, solver):
    """The stable forms split the update (the solver's step, then the pull): a first-order
    splitting, so the gap to the official gradient form halves when the updates double."""
    gaps = [float((_gaussian_translation(form, solver, K, li=20.0)
                   - _gaussian_translation("gradient", solver, K, li=20.0)).abs().max()) for K in (80, 160, 320)]
    assert gaps[0] > 1e-3  # the forms differ at all
    assert 1.6 < gaps[0] / gaps[1] < 2.4 and 1.6 < gaps[1] / gaps[2] < 2.4


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_no_weight_makes_a_stable_form_diverge(solver, small_unet, small_dse):
    """li up to 10^4 with 5 updates: the stable forms stay in the range of the same run without the
    expert (li 0; the small random networks leave sa-solver-3 at about 20 there), the gradient form
    does not."""
    x0 = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1

    def peak(li, form):
        y = native_translate(x0, small_unet, small_dse, M=200, steps=5, ls=500.0, li=li, down_N=8, solver=solver,
                             lowpass=form, seed=4, eta=1.0)
        return float(y.abs().max()) if torch.isfinite(y).all() else float("inf")

    unguided = peak(0.0, "gradient")
    for li in (200.0, 1e4):
        for form in ("implicit", "exact"):
            assert peak(li, form) < 1.5 * unguided + 1, (form, li)
    assert peak(1e4, "gradient") > 100 * unguided  # the official step overshoots


def test_the_oracle_pulls_with_the_first_order_weight(small_unet, small_dse):
    """A multistep solver's pull uses its first-order step's guidance weight: with the full
    (midpoint-corrected) weight instead, the oracle no longer equals the native loop."""
    from egsde_rt import reference

    x0 = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(6)) * 2 - 1
    kwargs = dict(M=60, steps=6, ls=0.0, li=300.0, down_N=8, solver="dpmpp-2m-sde", lowpass="implicit", seed=8)
    native = native_translate(x0, small_unet, small_dse, **kwargs)
    assert (native - reference_translate(x0, small_unet, small_dse, **kwargs)).abs().max() <= 1e-5
    settings = EGSDESettings(**{k: v for k, v in kwargs.items() if k != "seed"})
    pulls = []
    original = LowPassFilter.pull

    def recording(self, y, x, c, form):
        pulls.append(float(c))
        return original(self, y, x, c, form)

    LowPassFilter.pull = recording
    try:
        reference.translate(x0, small_unet, small_dse, settings, seed=8)
    finally:
        LowPassFilter.pull = original
    from egsde_rt.method.schedule import Schedule, StepCoefficients

    table = StepCoefficients.from_schedule(Schedule.create(), 60, 6, solver="dpmpp-2m-sde")
    full = 2 * 300.0 * table.guidance_w
    first_order = 2 * 300.0 * (table.guidance_w + table.prev_coef * table.x0_guidance)
    assert np.allclose(pulls, first_order, rtol=1e-5)
    assert not np.allclose(pulls, full, rtol=1e-2)


def test_lowpass_is_declared_once():
    assert DECLARATIONS["lowpass"].choices == LOWPASS_FORMS and "lowpass" in RUNTIME_OVERRIDABLE
    assert overrides_from_text({"lowpass": "implicit"}) == {"lowpass": "implicit"}
    with pytest.raises(ConfigError, match="lowpass must be one of"):
        EGSDESettings(lowpass="backward")
    with pytest.raises(ConfigError, match="s2='neg_l2'"):
        EGSDESettings(lowpass="exact", s2="cosine")
    from egsde_rt.cli import build_parser

    args = build_parser().parse_args(["translate", "engine", "x.png", "--output-dir", "o", "--lowpass", "exact"])
    assert args.lowpass == "exact"


def test_the_translator_takes_the_lowpass_form_at_run_time(tiny_engine):
    from egsde_rt.runtime.translator import Translator

    path, unet, dse = tiny_engine
    x0 = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
    t = Translator(path, backend="torch")
    y = t.run_tensor(x0, seed=3, steps=4, li=300.0, lowpass="implicit")
    expected = reference_translate(x0, unet, dse, seed=3, **{**t.settings.to_dict(), "steps": 4, "li": 300.0,
                                                             "lowpass": "implicit"})
    assert np.abs(y - expected.numpy()).max() <= 1e-4
    assert np.abs(y - t.run_tensor(x0, seed=3, steps=4, li=300.0)).max() > 1e-3  # the form was used


@pytest.mark.gpu
@pytest.mark.skipif(_core.cuda_device_count() == 0, reason="needs a CUDA device")
@pytest.mark.parametrize("form", ["implicit", "exact"])
@pytest.mark.parametrize("solver", ["ddpm", "dpmpp-2m-sde"])
def test_cuda_pull_equals_the_cpu_pull(form, solver, small_unet, small_dse):
    x0 = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    kwargs = dict(M=12, steps=6, ls=500.0, li=400.0, down_N=8, solver=solver, lowpass=form, seed=[1, 2])
    cpu = native_translate(x0, small_unet, small_dse, **kwargs)
    gpu = native_translate(x0.cuda(), small_unet.cuda(), small_dse.cuda(), **kwargs)
    small_unet.cpu(), small_dse.cpu()
    assert (gpu.cpu() - cpu).abs().max() <= 1e-4
