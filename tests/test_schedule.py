import math

import numpy as np
import pytest
import torch

from egsde_rt.errors import ConfigError
from egsde_rt.schedule import Schedule, StepCoefficients, beta_schedule


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
    assert np.allclose(s.logvar.numpy()[1:], logvar[1:], rtol=1e-4)
    assert s.logvar[0].item() == pytest.approx(math.log(1e-20))
    large = Schedule.create("linear", var_type="fixedlarge")
    assert np.allclose(large.logvar.numpy(), np.log(betas), rtol=1e-6)


def test_respace_full_is_identity_and_partial_keeps_endpoints():
    s = Schedule.create("linear")
    same = s.respace(300, None)
    assert torch.equal(same.abar, s.abar[:300]) and torch.equal(same.logvar, s.logvar[:300])
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
    assert np.allclose(c.sigma[:-1] ** 2, np.exp(s.logvar.numpy()[1:40][::-1]), rtol=1e-5)
