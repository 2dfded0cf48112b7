import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from egsde_rt.errors import ConfigError
from egsde_rt.method.schedule import SPACINGS, Schedule, StepCoefficients, beta_schedule, kept_timesteps


def test_linear_betas_match_formula():
    betas = beta_schedule("linear", beta_start=1e-4, beta_end=0.02, num_timesteps=1000)
    assert betas.dtype == np.float64 and betas.shape == (1000,)
    assert betas[0] == 1e-4 and abs(betas[-1] - 0.02) < 1e-15
    assert np.allclose(np.diff(betas), (0.02 - 1e-4) / 999)


@pytest.mark.parametrize("kind", ["quad", "const", "jsd", "sigmoid"])
def test_other_schedules_follow_their_definitions(kind):
    n = 50
    betas = beta_schedule(kind, beta_start=1e-4, beta_end=0.02, num_timesteps=n)
    i = np.arange(n)
    expected = {
        "quad": (math.sqrt(1e-4) + i * (math.sqrt(0.02) - math.sqrt(1e-4)) / (n - 1)) ** 2,
        "const": np.full(n, 0.02),
        "jsd": 1.0 / (n - i),
        "sigmoid": 1e-4 + (0.02 - 1e-4) / (1 + np.exp(-(-6 + 12 * i / (n - 1)))),
    }[kind]
    assert np.allclose(betas, expected, rtol=1e-12, atol=0)


def test_unknown_schedule_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown beta schedule"):
        beta_schedule("cosine-ish")


def test_tables_match_the_reference_formulas_in_float64():
    s = Schedule.create("linear")
    betas = np.linspace(1e-4, 0.02, 1000)
    abar = np.cumprod(1 - betas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    logvar = np.log(np.maximum(betas * (1 - abar_prev) / (1 - abar), 1e-20))
    assert s.betas.dtype == torch.float32
    assert np.allclose(s.abar.numpy(), abar, rtol=2e-5)
    assert np.allclose(s.abar_prev.numpy(), abar_prev, rtol=2e-5)
    # ddpm's noise (sampling order; none on the last update): the posterior's variance, or beta
    small = StepCoefficients.from_schedule(s, 1000)
    assert np.allclose(2 * np.log(small.sigma[:-1]), logvar[1:][::-1], rtol=1e-4)
    large = StepCoefficients.from_schedule(s, 1000, var_type="fixedlarge")
    assert np.allclose(large.sigma[:-1] ** 2, betas[1:][::-1], rtol=1e-6)
    assert small.sigma[-1] == large.sigma[-1] == 0
    with pytest.raises(ConfigError, match="var_type"):
        StepCoefficients.from_schedule(s, 10, var_type="learned")


def test_respace_full_is_identity_and_partial_keeps_endpoints():
    s = Schedule.create("linear")
    same = s.respace(300, None)
    assert torch.equal(same.abar, s.abar[:300]) and torch.equal(same.abar_prev, s.abar_prev[:300])
    assert torch.equal(s.respace(300, 300).abar, same.abar)
    r = s.respace(300, 7)
    kept = r.timesteps.numpy().astype(int)
    assert kept[0] == 0 and kept[-1] == 299 and len(kept) == 7 and np.all(np.diff(kept) > 0)
    # the respaced cumulative products equal the full ones at the kept timesteps
    assert np.allclose(r.abar.numpy(), s.abar.numpy()[kept], rtol=1e-5)
    with pytest.raises(ConfigError):
        s.respace(300, 301)
    with pytest.raises(ConfigError):
        s.respace(1001, None)


def test_step_coefficients_follow_the_update_formulas():
    s = Schedule.create("linear")
    c = StepCoefficients.from_schedule(s, 40)
    assert c.num_updates == 40 and c.t[0] == 39 and c.t[-1] == 0
    betas = np.linspace(1e-4, 0.02, 1000)[:40][::-1]
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[:40][::-1]
    assert np.allclose(c.inv_sqrt_alpha, 1 / np.sqrt(1 - betas), rtol=1e-6)
    assert np.allclose(c.eps_coef, betas / np.sqrt(1 - abar), rtol=1e-4)
    assert np.allclose(c.guidance_w, betas / np.sqrt(1 - betas), rtol=1e-6)
    assert np.allclose(c.sqrt_abar, np.sqrt(abar), rtol=1e-6)
    assert c.sigma[-1] == 0 and np.all(c.sigma[:-1] > 0)
    assert np.allclose(c.sigma, StepCoefficients.from_schedule(s, 1000).sigma[-40:], rtol=1e-6)


LINEAR_ABAR = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))


def _log_snr(abar):
    return np.log(abar / (1 - abar))


def _nearest_by_brute_force(target_log_snr, abar):
    """For each target, the timestep of least |log-SNR - target| (an independent mapping)."""
    return np.abs(_log_snr(abar)[None, :] - np.asarray(target_log_snr)[:, None]).argmin(axis=1)


@pytest.mark.parametrize("M", [2, 3, 10, 37, 300, 1000])
def test_uniform_spacing_keeps_the_official_timesteps(M):
    s = Schedule.create("linear")
    for steps in sorted({2, 3, 5, M // 3 + 1, M - 1, M} & set(range(2, M + 1))):
        old = np.round(np.arange(steps) * (M - 1) / (steps - 1)).astype(np.int64)
        assert np.array_equal(kept_timesteps(LINEAR_ABAR, M, steps, "uniform"), old[::-1]), (M, steps)
        for respaced in (s.respace(M, steps), s.respace(M, steps, "uniform")):
            assert np.array_equal(respaced.timesteps.numpy(), old), (M, steps)
        assert np.array_equal(StepCoefficients.from_schedule(s, M, steps, spacing="uniform").t, old[::-1])
    assert np.array_equal(s.respace(M, 1).timesteps.numpy(), [M - 1])


def _check_kept(kept, M, steps):
    assert kept.dtype == np.int64 and len(kept) == steps
    assert kept[0] == M - 1 and (steps == 1 or kept[-1] == 0)
    assert np.all(np.diff(kept) < 0) and kept.min() >= 0


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(["linear", "quad", "sigmoid", "const"]), M=st.integers(1, 1000), data=st.data())
def test_every_spacing_keeps_distinct_timesteps_from_m_minus_1_to_0(kind, M, data):
    steps = data.draw(st.integers(1, M) | st.sampled_from([1, min(2, M), M, max(M - 1, 1)]))
    abar = np.cumprod(1 - beta_schedule(kind, num_timesteps=1000))
    for spacing in SPACINGS:
        kept = kept_timesteps(abar, M, steps, spacing)
        _check_kept(kept, M, steps)
        if steps == M:
            assert np.array_equal(kept, np.arange(M - 1, -1, -1))


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("M,steps", [(1000, 10), (1000, 1), (1000, 2), (1000, 1000), (1000, 999), (500, 250),
                                     (12, 5), (12, 11), (2, 2), (1, 1), (30, 29)])
def test_spacing_edge_cases(spacing, M, steps):
    kept = kept_timesteps(LINEAR_ABAR, M, steps, spacing)
    _check_kept(kept, M, steps)
    assert np.array_equal(kept_timesteps(LINEAR_ABAR, M, None, spacing), np.arange(M - 1, -1, -1))
    r = Schedule.create("linear").respace(M, steps, spacing)
    assert np.array_equal(r.timesteps.numpy(), kept[::-1])
    # the respaced cumulative products are the full ones at the kept timesteps
    assert np.allclose(np.cumprod(1 - r.betas_f64), LINEAR_ABAR[kept[::-1]], rtol=1e-12)


@pytest.mark.parametrize("M,steps", [(1000, 10), (1000, 25), (500, 8), (200, 6), (40, 7)])
def test_logsnr_spacing_is_the_nearest_to_an_even_log_snr_grid(M, steps):
    lam = _log_snr(LINEAR_ABAR[:M])
    grid = lam[M - 1] + np.arange(steps) / (steps - 1) * (lam[0] - lam[M - 1])
    expected = _nearest_by_brute_force(grid, LINEAR_ABAR[:M])
    assert len(set(expected)) == steps  # no collision here
    kept = kept_timesteps(LINEAR_ABAR, M, steps, "logsnr")
    assert np.array_equal(kept, expected)
    # and its log-SNR steps are more even than uniform-in-t's
    uniform = kept_timesteps(LINEAR_ABAR, M, steps, "uniform")
    assert np.ptp(np.diff(lam[kept])) < np.ptp(np.diff(lam[uniform]))


@pytest.mark.parametrize("M,steps", [(1000, 10), (1000, 20), (500, 8), (200, 6)])
def test_karras_spacing_follows_the_rho_7_formula(M, steps):
    sigma = np.sqrt((1 - LINEAR_ABAR[:M]) / LINEAR_ABAR[:M])
    s_max, s_min, rho = sigma[M - 1], sigma[0], 7.0
    ramp = np.arange(steps) / (steps - 1)
    sigmas = (s_max ** (1 / rho) + ramp * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    expected = np.abs(np.log(sigma)[None, :] - np.log(sigmas)[:, None]).argmin(axis=1)
    assert len(set(expected)) == steps  # no collision here
    kept = kept_timesteps(LINEAR_ABAR, M, steps, "karras")
    assert np.array_equal(kept, expected)
    assert not np.array_equal(kept, kept_timesteps(LINEAR_ABAR, M, steps, "logsnr"))


def test_crowded_karras_timesteps_stay_distinct_and_near_their_targets():
    """At 60 of 100 timesteps the rho=7 targets crowd near t=0: colliding ones move to free timesteps."""
    M, steps = 100, 60
    kept = kept_timesteps(LINEAR_ABAR, M, steps, "karras")
    _check_kept(kept, M, steps)
    sigma = np.sqrt((1 - LINEAR_ABAR[:M]) / LINEAR_ABAR[:M])
    ramp = np.arange(steps) / (steps - 1)
    sigmas = (sigma[-1] ** (1 / 7) + ramp * (sigma[0] ** (1 / 7) - sigma[-1] ** (1 / 7))) ** 7
    nearest = np.abs(np.log(sigma)[None, :] - np.log(sigmas)[:, None]).argmin(axis=1)
    assert len(set(nearest)) < steps  # the targets do collide
    expected = [M - 1]  # the documented rule, one update at a time: below the previous, room for the rest
    for k in range(1, steps):
        expected.append(max(min(nearest[k], expected[-1] - 1), steps - 1 - k))
    assert np.array_equal(kept, expected)
    assert np.array_equal(kept[:17], nearest[:17])  # where the targets are apart, the nearest timesteps


def test_a_bad_spacing_is_a_clear_error():
    s = Schedule.create("linear")
    for call in (lambda: kept_timesteps(LINEAR_ABAR, 100, 10, "cosine"), lambda: s.respace(100, 10, "cosine"),
                 lambda: StepCoefficients.from_schedule(s, 100, 10, spacing="cosine")):
        with pytest.raises(ConfigError, match=r"spacing must be one of \['uniform', 'logsnr', 'karras'\]"):
            call()
    with pytest.raises(ConfigError, match="steps must be in 1..M"):
        kept_timesteps(LINEAR_ABAR, 100, 101, "karras")
    # the jsd schedule's last abar is 0: its log-SNR is not finite there
    jsd = np.cumprod(1 - beta_schedule("jsd", num_timesteps=50))
    with pytest.raises(ConfigError, match="spacing='logsnr' needs 0 < abar < 1.*t=49.*spacing='uniform'"):
        kept_timesteps(jsd, 50, 10, "logsnr")
    assert len(kept_timesteps(jsd, 49, 10, "karras")) == 10
