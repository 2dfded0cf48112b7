"""No run poisons the next: a cached sampler keeps a multistep solver's previous data prediction
between updates, and a run whose data prediction went non-finite (a diverged run) must leave no
trace in the runs after it (CPU)."""

import numpy as np
import pytest
import torch

from egsde_rt import _core
from egsde_rt.runtime.native_sampler import build_sampler, host_seeds, run_sampler
from egsde_rt.method.schedule import Schedule, StepCoefficients
from egsde_rt.method.settings import EGSDESettings

SETTINGS = EGSDESettings(M=8, steps=4, ls=0.0, li=2.0, down_N=8, solver="dpmpp-2m-sde")
SHAPE = (2, 3, 32, 32)


def _x0(seed=1):
    return torch.rand(*SHAPE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


class SmoothRunner(_core.Runner):
    """A finite toy network: every eps element a smooth function of the same element of y and t."""

    def score(self, y, t, eps_out):
        np.asarray(eps_out)[...] = 0.3 * np.tanh(np.asarray(y)) * (np.asarray(t)[:, None, None, None] / 1000.0)

    def dse_grad(self, y, x_t, t, grad_out):
        np.asarray(grad_out)[...] = 0.0


class DivergedRunner(SmoothRunner):
    """A diverged network: eps is `value` (NaN or inf), so every data prediction D is non-finite."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    def score(self, y, t, eps_out):
        np.asarray(eps_out)[...] = self.value


@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("repeats", [1, 2])
def test_a_diverged_run_does_not_poison_the_next(value, repeats):
    settings = SETTINGS.with_overrides(repeats=repeats)
    coefs = StepCoefficients.from_schedule(Schedule.create(), settings.M, settings.steps, solver=settings.solver)
    assert coefs.prev_coef[-1] == 0 and (coefs.prev_coef != 0).any()  # the last D is kept, unused
    x0 = _x0()
    sampler = build_sampler(settings, SHAPE, "cpu")
    diverged = run_sampler(sampler, x0, DivergedRunner(value), settings, seed=[5, 6])
    assert not np.isfinite(diverged).any()
    after = run_sampler(sampler, x0, SmoothRunner(), settings, seed=[5, 6])
    fresh = run_sampler(build_sampler(settings, SHAPE, "cpu"), x0, SmoothRunner(), settings, seed=[5, 6])
    assert np.isfinite(fresh).all()
    assert np.array_equal(after, fresh)


def _second_order_step(sampler, x0, runner):
    """A staged run entered at update 1, the first whose prev_coef is non-zero: what it reads as
    D_prev is whatever start_repeat left in the multistep buffer."""
    sampler.begin(np.ascontiguousarray(x0.numpy()), seed=host_seeds(9, SHAPE[0]))
    sampler.start_repeat(0)
    sampler.seek(1)
    sampler.step(runner)
    return sampler.finish()


def test_every_repeat_starts_with_an_empty_multistep_buffer():
    """start_repeat clears D_prev: after a diverged run, a step entered at a second-order row
    reads D_prev = 0, as on a fresh sampler (not the diverged run's last D)."""
    coefs = StepCoefficients.from_schedule(Schedule.create(), SETTINGS.M, SETTINGS.steps, solver=SETTINGS.solver)
    assert coefs.prev_coef[1] != 0
    x0 = _x0()
    sampler = build_sampler(SETTINGS, SHAPE, "cpu")
    run_sampler(sampler, x0, DivergedRunner(np.nan), SETTINGS, seed=3)
    after = _second_order_step(sampler, x0, SmoothRunner())
    fresh = _second_order_step(build_sampler(SETTINGS, SHAPE, "cpu"), x0, SmoothRunner())
    assert np.isfinite(fresh).all()
    assert np.array_equal(after, fresh)
