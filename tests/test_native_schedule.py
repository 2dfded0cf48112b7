"""The C++ schedule twin equals schedule.py."""

import numpy as np
import pytest

from egsde_rt import _core
from egsde_rt.schedule import Schedule, StepCoefficients, beta_schedule

FIELDS = ("t", "inv_sqrt_alpha", "eps_coef", "guidance_w", "sigma", "sqrt_abar", "sqrt_one_minus_abar")


@pytest.mark.parametrize("kind", ["linear", "quad", "const", "jsd", "sigmoid"])
def test_betas_equal(kind):
    assert np.array_equal(np.array(_core.beta_schedule(kind, 1e-4, 0.02, 1000)),
                          beta_schedule(kind, beta_start=1e-4, beta_end=0.02, num_timesteps=1000))


@pytest.mark.parametrize("kind,var_type,M,steps", [
    ("linear", "fixedsmall", 500, None), ("linear", "fixedlarge", 500, None), ("linear", "fixedsmall", 600, 50),
    ("quad", "fixedsmall", 300, 7), ("sigmoid", "fixedlarge", 1000, 1000), ("linear", "fixedsmall", 30, 1),
])
def test_step_tables_equal(kind, var_type, M, steps):
    py = StepCoefficients.from_schedule(Schedule.create(kind, var_type=var_type), M, steps)
    cpp = _core.make_step_table(kind, 1e-4, 0.02, 1000, var_type, M, steps or 0)
    assert len(cpp) == py.num_updates
    for name in FIELDS:
        assert np.allclose(np.array(getattr(cpp, name), np.float32), getattr(py, name), rtol=2e-6, atol=0), name


def test_bad_schedules_raise():
    with pytest.raises(RuntimeError, match="unknown beta schedule"):
        _core.make_step_table("cosine", 1e-4, 0.02, 1000, "fixedsmall", 10, 0)
    with pytest.raises(RuntimeError, match="M must"):
        _core.make_step_table("linear", 1e-4, 0.02, 1000, "fixedsmall", 1001, 0)
