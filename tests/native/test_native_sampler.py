"""The C++ loop (egsde_rt.runtime.model_loop) against the goldens and the eager reference sampler."""

import json
from dataclasses import fields

import numpy as np
import pytest
import torch

from conftest import golden_model, load_golden
from helpers.sampling import native_translate, reference_translate
from egsde_rt import _core
from egsde_rt.errors import ConfigError, NativeError, SamplingCancelled
from egsde_rt.runtime.native_sampler import build_sampler, step_table
from egsde_rt.method.schedule import Schedule, StepCoefficients, kept_timesteps
from egsde_rt.method.settings import EGSDESettings
from egsde_rt.method.lowpass import lowpass_factors


@pytest.mark.parametrize("name", ["golden_egsde_small", "golden_egsde_strong"])
def test_goldens_with_injected_noise(name, small_unet, small_dse):
    g = load_golden(name)
    s = json.loads(str(g["settings"]))
    y = native_translate(torch.from_numpy(g["x0"]), small_unet, small_dse, M=s["M"], ls=s["ls"], li=s["li"],
                         s1=s["s1"], s2=s["s2"], down_N=s["down_N"], var_type=s["var_type"],
                         noise=torch.from_numpy(g["noise"]))
    assert (y - torch.from_numpy(g["y0"])).abs().max() <= 1e-4


def _x0(batch=2, seed=1):
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_philox_path_agrees_with_the_reference(small_unet, small_dse):
    x0 = _x0()
    common = dict(M=20, ls=500.0, li=2.0, down_N=8)
    a = native_translate(x0, small_unet, small_dse, seed=2024, **common)
    b = reference_translate(x0, small_unet, small_dse, seed=2024, **common)
    c = reference_translate(x0, small_unet, small_dse, seed=2025, **common)
    assert (a - b).abs().max() <= 1e-4
    assert (a - c).abs().max() > 1e-2


MODES = {
    "fresh": dict(perturb="fresh"),
    "repeats": dict(repeats=2),
    "ilvr": dict(ilvr=True, ls=0.0, li=0.0),
    "respaced": dict(M=200, steps=6),
    "logsnr": dict(M=200, steps=6, spacing="logsnr"),
    "karras": dict(M=200, steps=6, spacing="karras"),
    "cosine_s2": dict(s2="cosine", li=30.0),
    "neg_l2_s1": dict(s1="neg_l2", ls=0.05),
    "fixedlarge": dict(var_type="fixedlarge"),
    "sdedit": dict(ls=0.0, li=0.0),
}


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("noise_source", ["philox", "injected"])
def test_modes_agree_with_the_reference(mode, noise_source, small_unet, small_dse):
    x0 = _x0()
    kwargs = dict(M=8, ls=500.0, li=2.0, down_N=8)
    kwargs.update(MODES[mode])
    if noise_source == "injected":
        K, R = kwargs.get("steps") or kwargs["M"], kwargs.get("repeats", 1)
        gen = torch.Generator().manual_seed(7)
        kwargs["noise"] = torch.randn(R * (K + 1), *x0.shape, generator=gen)
        if kwargs.get("perturb") == "fresh":
            kwargs["perturb_noise"] = torch.randn(R * K, *x0.shape, generator=gen)
    else:
        kwargs["seed"] = 31
    a = native_translate(x0, small_unet, small_dse, **kwargs)
    b = reference_translate(x0, small_unet, small_dse, **kwargs)
    assert (a - b).abs().max() <= 1e-4


@pytest.mark.parametrize("solver", ["ddpm", "dpmpp-2m-sde"])
@pytest.mark.parametrize("spacing", ["logsnr", "karras"])
def test_both_loops_run_at_the_spacings_timesteps(spacing, solver, small_unet, small_dse):
    abar = np.cumprod(1 - Schedule.create().betas_f64)
    kept = kept_timesteps(abar, 200, 6, spacing)
    assert not np.array_equal(kept, kept_timesteps(abar, 200, 6, "uniform"))
    for translate in (native_translate, reference_translate):
        calls = []

        def recording(y, t):
            calls.append(float(t[0]))
            return small_unet(y, t)

        translate(_x0(batch=1), recording, small_dse, M=200, steps=6, spacing=spacing, solver=solver, ls=1.0,
                  li=1.0, down_N=8, seed=5)
        assert calls == kept.tolist(), translate.__name__


def test_ddpm_score_model(small_dse):
    ddpm, _ = golden_model("golden_ddpm_small")
    x0 = _x0(batch=1)
    kwargs = dict(M=6, ls=300.0, li=2.0, down_N=4, score_kind="ddpm", seed=3)
    a = native_translate(x0, ddpm, small_dse, **kwargs)
    b = reference_translate(x0, ddpm, small_dse, **kwargs)
    assert (a - b).abs().max() <= 1e-4


def test_progress_and_cancellation(small_unet, small_dse):
    seen = []
    native_translate(_x0(batch=1), small_unet, small_dse, M=5, ls=1.0, li=1.0, down_N=8,
                     callback=lambda done, total: seen.append((done, total)))
    assert seen == [(k, 5) for k in range(1, 6)]
    calls = []

    def stop_after_two(done, total):
        calls.append(done)
        return done < 2

    with pytest.raises(SamplingCancelled):
        native_translate(_x0(batch=1), small_unet, small_dse, M=5, ls=1.0, li=1.0, down_N=8,
                         callback=stop_after_two)
    assert calls == [1, 2]


def test_runner_errors_propagate(small_dse):
    def broken(y, t):
        raise ValueError("score network exploded")

    with pytest.raises(ValueError, match="exploded"):
        native_translate(_x0(batch=1), broken, small_dse, M=3, ls=1.0, li=1.0, down_N=8)


def test_bad_noise_and_config(small_unet, small_dse):
    with pytest.raises(ConfigError, match="noise must have shape"):
        native_translate(_x0(batch=1), small_unet, small_dse, M=3, ls=1.0, li=1.0, down_N=8,
                         noise=torch.zeros(3, 1, 3, 32, 32))
    with pytest.raises(ConfigError, match="perturb_noise is needed"):
        native_translate(_x0(batch=1), small_unet, small_dse, M=3, ls=1.0, li=1.0, down_N=8, perturb="fresh",
                         noise=torch.zeros(4, 1, 3, 32, 32))
    config = _core.SamplerConfig()
    config.height = config.width = 64
    config.steps = step_table(StepCoefficients.from_schedule(Schedule.create(), 3))
    config.set_lowpass(*(m.astype(np.float32) for m in (*lowpass_factors(32, 8), *lowpass_factors(32, 8))))
    with pytest.raises(NativeError, match="low-pass matrices"):
        _core.Sampler(config)
    config.steps = _core.StepTable()
    with pytest.raises(NativeError, match="step table is empty"):
        _core.Sampler(config)


def test_the_sampler_uses_the_python_step_table():
    """One source of truth for the schedule: the sampler's table is StepCoefficients, value for value."""
    settings = EGSDESettings(M=200, steps=7, down_N=8)
    sampler = build_sampler(settings, (1, 3, 32, 32), "cpu")
    coefs = StepCoefficients.from_schedule(Schedule.create(), 200, 7)
    for name in _core.STEP_TABLE_COLUMNS:
        assert np.array_equal(np.array(getattr(sampler.config.steps, name), np.float32), getattr(coefs, name)), name


def test_the_step_table_columns_are_declared_once():
    """The core declares the step table's columns (cpp/include/egsde/step_table.h); Python's table
    (StepCoefficients) has exactly those, in that order, and so has the bound StepTable."""
    assert [f.name for f in fields(StepCoefficients)] == list(_core.STEP_TABLE_COLUMNS)
    table = _core.StepTable()
    for name in _core.STEP_TABLE_COLUMNS:
        assert getattr(table, name) == []


HISTORY = {"ddpm": 0, "ddim": 0, "dpmpp-2m-sde": 1, "sa-solver-1": 1, "sa-solver-2": 2, "sa-solver-3": 3}


@pytest.mark.parametrize("solver", sorted(HISTORY))
def test_the_history_is_the_solvers(solver):
    """build_sampler passes the solver's history to the core (which keeps that many earlier data
    predictions), and the solver's table reads exactly that many."""
    settings = EGSDESettings(M=20, steps=5, down_N=8, solver=solver, **({} if solver == "ddpm" else {"eta": 0.5}))
    assert build_sampler(settings, (1, 3, 32, 32), "cpu").config.history == HISTORY[solver]
    table = StepCoefficients.from_settings(None, settings)
    read = [name for name in ("prev_coef", "prev_coef2", "prev_coef3") if getattr(table, name).any()]
    assert read == ["prev_coef", "prev_coef2", "prev_coef3"][:HISTORY[solver]]


def test_a_table_reading_more_than_the_history_is_refused():
    config = _core.SamplerConfig()
    config.height = config.width = 32
    config.steps = step_table(StepCoefficients.from_schedule(Schedule.create(), 20, 5, solver="sa-solver-3"))
    config.set_lowpass(*(m.astype(np.float32) for m in (*lowpass_factors(32, 8), *lowpass_factors(32, 8))))
    for history, beyond in ((0, "prev_coef"), (1, "prev_coef2"), (2, "prev_coef3")):
        config.history = history
        with pytest.raises(NativeError, match=rf"nonzero {beyond}\) beyond the {history} the sampler keeps"):
            _core.Sampler(config)
    config.history = 3
    assert _core.Sampler(config).config.history == 3
    config.history = 4
    with pytest.raises(NativeError, match="history must be in 0..3"):
        _core.Sampler(config)
    config.steps = step_table(StepCoefficients.from_schedule(Schedule.create(), 20, 5, solver="ddim"))
    config.history = 0  # a single-step table needs no earlier D
    _core.Sampler(config)


def test_cuda_status_never_raises():
    assert _core.cuda_device_count() >= 0
    assert isinstance(_core.cuda_status(), str) and _core.cuda_status()
