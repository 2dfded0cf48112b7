"""The native core's counts are 64-bit end to end (CPU): repeats, the step counter, the updates of
a run and the noise draw indices. Within the settings' bounds (MAX_REPEATS, MAX_M) every draw of
a run is distinct; past 2^32 a draw is the contract's 64-bit draw (noise.py), never wrapped."""

import numpy as np
import pytest
import torch

from egsde_rt import _core
from egsde_rt.errors import NativeError
from egsde_rt.method.noise import STREAM_PERTURB, STREAM_SAMPLING, philox_normal
from egsde_rt.runtime.native_sampler import build_sampler, step_table
from egsde_rt.method.schedule import Schedule, StepCoefficients
from egsde_rt.method.settings import MAX_M, MAX_REPEATS, EGSDESettings
from helpers.native import step_draws

KERNELS = _core.kernels
SHAPE = (2, 3, 8, 8)
SEEDS = np.array([11, 2**40 + 12], np.uint64)


def _x0():
    x = torch.rand(*SHAPE, generator=torch.Generator().manual_seed(4)) * 2 - 1
    return np.ascontiguousarray(x.numpy())


class ZeroRunner(_core.Runner):
    """eps = 0 and a zero DSE gradient; keeps the x_t each DSE call received."""

    def __init__(self):
        super().__init__()
        self.x_t = []

    def score(self, y, t, eps_out):
        np.asarray(eps_out)[...] = 0.0

    def dse_grad(self, y, x_t, t, grad_out):
        self.x_t.append(np.array(x_t))
        np.asarray(grad_out)[...] = 0.0


def _contract_draws(g, K):
    """The draws of update g = r * K + k: stream 0 (its fresh z), stream 1 (its perturbation)."""
    r, k = divmod(g, K)
    return [r * (K + 1) + k + 1, r * K + k]


def test_every_draw_of_the_largest_allowed_run_is_distinct():
    """repeats = MAX_REPEATS and K = MAX_M updates: the step op's draws at every update (the native
    arithmetic, read from the step scalars) are the contract's, and with each repeat's e
    (r * (K + 1)) they are R * (K + 1) distinct stream-0 and R * K distinct stream-1 draws."""
    R, K = MAX_REPEATS, MAX_M
    settings = EGSDESettings(M=MAX_M, repeats=MAX_REPEATS, ls=0.0, li=0.0, down_N=8)
    assert settings.num_updates == K
    rows = KERNELS.step_rows(step_table(StepCoefficients.from_schedule(Schedule.create(), K)), 0.0, 0.0, False)
    state, scalars = np.zeros(1, np.int64), np.zeros(KERNELS.STEP_SCALARS_WORDS, np.float32)
    t_now = np.zeros(1, np.float32)
    sampling, perturb = [r * (K + 1) for r in range(R)], []
    for g in range(R * K):
        assert state[0] == g
        KERNELS.step_begin(rows, state, scalars, t_now, 1, updates=R * K)  # advances the counter
        z, fresh = step_draws(scalars)
        assert [z, fresh] == _contract_draws(g, K)
        sampling.append(z)
        perturb.append(fresh)
    assert sorted(sampling) == list(range(R * (K + 1)))
    assert sorted(perturb) == list(range(R * K))

    sampler = build_sampler(settings, SHAPE, "cpu")
    assert sampler.total_updates == R * K
    sampler.begin(_x0(), seed=SEEDS)
    sampler.seek(R * K - 1)  # the last update of the run: row K - 1 of repeat R - 1
    sampler.step(ZeroRunner())
    assert sampler.step_counter == R * K
    with pytest.raises(NativeError, match="below total_updates"):
        sampler.seek(R * K)  # past the run (injected noise would be read past its end)


def _huge_sampler(repeats, **settings):
    """A CPU sampler for small settings with `repeats` (beyond what the settings allow: the core
    itself takes 64-bit counts)."""
    settings = EGSDESettings(**{**dict(M=5, ls=1.0, li=0.0, down_N=8, perturb="fresh"), **settings})
    config = build_sampler(settings, SHAPE, "cpu").config
    config.repeats = repeats
    return _core.Sampler(config), settings


def test_draws_past_2_to_the_32_are_the_contracts_64_bit_draws():
    """A counter whose draws r * (K + 1) + k + 1 and r * K + k pass 2^32: the step draws the
    noise the contract gives those 64-bit draws (noise.py), not a wrapped draw (repeats below
    2^31, so the counter is reachable with 32-bit repeats too)."""
    repeats = 2**31 - 1
    sampler, settings = _huge_sampler(repeats)
    K = settings.num_updates
    coefs = StepCoefficients.from_schedule(Schedule.create(), settings.M)
    x0 = _x0()
    sampler.begin(x0, seed=SEEDS)
    sampler.start_repeat(0)
    start = sampler.finish()
    r, k = repeats - 2, 2  # sigma != 0 at row k, so z is visible in y
    g = r * K + k
    z_draw, fresh_draw = _contract_draws(g, K)
    assert z_draw >= 2**33 and fresh_draw >= 2**33
    runner = ZeroRunner()
    sampler.seek(g)
    sampler.step(runner)
    assert sampler.step_counter == g + 1
    e_fresh = philox_normal(SEEDS, STREAM_PERTURB, fresh_draw, SHAPE)
    expected_x_t = np.float32(coefs.sqrt_abar[k]) * x0 + np.float32(coefs.sqrt_one_minus_abar[k]) * e_fresh
    assert np.array_equal(runner.x_t[0], expected_x_t)
    z = philox_normal(SEEDS, STREAM_SAMPLING, z_draw, SHAPE)
    expected_y = np.float32(coefs.inv_sqrt_alpha[k]) * start + np.float32(coefs.sigma[k]) * z
    assert np.array_equal(sampler.finish(), expected_y)


def test_a_repeat_past_2_to_the_32_draws_its_64_bit_e():
    """start_repeat(r) with r * (K + 1) >= 2^32 (and r >= 2^32: a 64-bit repeat index): e is the
    contract's draw r * (K + 1) of stream 0."""
    repeats = 2**33
    sampler, settings = _huge_sampler(repeats)
    K = settings.num_updates
    coefs = StepCoefficients.from_schedule(Schedule.create(), settings.M)
    sampler.begin(_x0(), seed=SEEDS)
    sampler.start_repeat(0)
    y0 = sampler.finish()
    r = repeats - 1
    sampler.start_repeat(r)  # a later repeat starts from y
    assert sampler.step_counter == r * K
    e = philox_normal(SEEDS, STREAM_SAMPLING, r * (K + 1), SHAPE)
    expected = np.float32(coefs.sqrt_abar[0]) * y0 + np.float32(coefs.sqrt_one_minus_abar[0]) * e
    assert np.array_equal(sampler.finish(), expected)


def test_repeats_are_64_bit_in_the_binding():
    """SamplerConfig.repeats takes any integer in [0, 2^63); the sampler takes it while its counts
    fit in 64 bits; everything else is a NativeError naming the problem, never a TypeError."""
    sampler, settings = _huge_sampler(2**31)
    K = settings.num_updates
    assert sampler.config.repeats == 2**31 and sampler.total_updates == K * 2**31
    config = sampler.config
    for bad in (2**63, 2**64, -1, 1.5, "2", True):
        with pytest.raises(NativeError, match="repeats"):
            config.repeats = bad
    assert config.repeats == 2**31  # unchanged by the refused values
    config.repeats = np.int64(3)  # any integer type
    assert config.repeats == 3
    config.repeats = 2**62
    with pytest.raises(NativeError, match="too large"):
        _core.Sampler(config)
    config.repeats = 0
    with pytest.raises(NativeError, match="repeats must be >= 1"):
        _core.Sampler(config)
    for field in ("batch", "height"):
        with pytest.raises(NativeError, match=field):
            setattr(config, field, 2**64)


def test_injected_noise_of_a_huge_run_is_refused_not_wrapped():
    """R * (K + 1) * numel past 2^63: the run's injected noise size is refused (it would wrap)."""
    sampler, _ = _huge_sampler(2**60)
    with pytest.raises(NativeError, match="too large"):
        sampler.begin(_x0(), seed=SEEDS, noise=np.zeros(16, np.float32))
