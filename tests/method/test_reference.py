"""The eager reference sampler against the goldens, the noise contract and independent math."""

import json

import pytest
import torch

from conftest import load_golden
from helpers.sampling import reference_translate as translate
from egsde_rt.errors import ConfigError
from egsde_rt.method.lowpass import LowPassFilter
from egsde_rt.method.noise import philox_normal
from egsde_rt.models.network_fns import score_function
from egsde_rt.method.schedule import Schedule, StepCoefficients


def _golden_run(name, small_unet, small_dse, **overrides):
    g = load_golden(name)
    s = json.loads(str(g["settings"]))
    kwargs = dict(M=s["M"], ls=s["ls"], li=s["li"], s1=s["s1"], s2=s["s2"], down_N=s["down_N"],
                  var_type=s["var_type"], noise=torch.from_numpy(g["noise"]))
    kwargs.update(overrides)
    return translate(torch.from_numpy(g["x0"]), small_unet, small_dse, **kwargs), torch.from_numpy(g["y0"])


@pytest.mark.parametrize("name", ["golden_egsde_small", "golden_egsde_strong"])
def test_goldens_with_injected_noise(name, small_unet, small_dse):
    y, expected = _golden_run(name, small_unet, small_dse)
    assert (y - expected).abs().max() <= 1e-4


def test_guidance_matters_in_the_strong_golden(small_unet, small_dse):
    """SDEdit (no guidance) must land far from the EGSDE golden: the parity test can fail."""
    y, expected = _golden_run("golden_egsde_strong", small_unet, small_dse, ls=0.0, li=0.0)
    assert (y - expected).abs().mean() > 0.1


def _x0(batch=2, size=32, seed=1):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_philox_path_equals_the_same_draws_injected(small_unet, small_dse):
    x0, M, seed = _x0(), 6, 77
    noise = torch.stack([torch.from_numpy(philox_normal(seed, 0, d, x0.shape)) for d in range(M + 1)])
    common = dict(M=M, ls=500.0, li=2.0, down_N=8)
    a = translate(x0, small_unet, small_dse, seed=seed, **common)
    b = translate(x0, small_unet, small_dse, noise=noise, **common)
    c = translate(x0, small_unet, small_dse, seed=seed + 1, **common)
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 1e-3


def test_fresh_perturbation_with_e_repeated_equals_shared(small_unet, small_dse):
    x0, M = _x0(), 5  # 5 updates respaced over 300 timesteps: the perturbed sources are noisy
    noise = torch.randn(M + 1, *x0.shape, generator=torch.Generator().manual_seed(3))
    common = dict(M=300, steps=M, ls=500.0, li=2.0, down_N=8, noise=noise)
    shared = translate(x0, small_unet, small_dse, **common)
    same = translate(x0, small_unet, small_dse, perturb="fresh",
                     perturb_noise=noise[0].expand(M, *x0.shape).clone(), **common)
    other = translate(x0, small_unet, small_dse, perturb="fresh",
                      perturb_noise=torch.randn(M, *x0.shape), **common)
    assert torch.equal(shared, same)
    assert (shared - other).abs().max() > 1e-4
    with pytest.raises(ConfigError, match="perturb_noise"):
        translate(x0, small_unet, small_dse, perturb="fresh", **common)


def test_repeats_restart_from_the_previous_result(small_unet, small_dse):
    x0, M = _x0(batch=1), 4
    noise = torch.randn(2 * (M + 1), *x0.shape, generator=torch.Generator().manual_seed(5))
    seen = {}
    twice = translate(x0, small_unet, small_dse, M=M, ls=100.0, li=1.0, down_N=8, noise=noise,
                      repeats=2, callback=lambda k, K, y: seen.setdefault(k, y.clone()))
    once = translate(x0, small_unet, small_dse, M=M, ls=100.0, li=1.0, down_N=8, noise=noise[: M + 1])
    assert sorted(seen) == list(range(2 * M))
    assert torch.equal(seen[M - 1], once)
    assert not torch.equal(twice, once)


def test_ilvr_replaces_the_low_band_with_the_perturbed_source(small_unet, small_dse):
    """Update 0 (t = 1 > 0) of an ILVR run is the plain update y, then y - L(y) + L(x_t)."""
    x0, M = _x0(batch=1), 2
    noise = torch.randn(M + 1, *x0.shape, generator=torch.Generator().manual_seed(9))
    runs = {}
    for ilvr in (False, True):
        seen = runs.setdefault(ilvr, {})
        translate(x0, small_unet, small_dse, M=M, ls=0.0, li=0.0, down_N=8, noise=noise, ilvr=ilvr,
                  callback=lambda k, K, y, seen=seen: seen.setdefault(k, y.clone()))
    c = StepCoefficients.from_schedule(Schedule.create(), M)
    f = LowPassFilter(32, 32, 8)
    x_t = c.sqrt_abar[0] * x0 + c.sqrt_one_minus_abar[0] * noise[0]
    plain = runs[False][0]
    expected = plain - f.apply(plain) + f.apply(x_t)
    assert (runs[True][0] - expected).abs().max() < 1e-5
    assert (runs[True][0] - plain).abs().max() > 1e-3


def test_domain_independent_expert_pulls_towards_the_source(small_unet, small_dse):
    x0, M = _x0(batch=1), 20
    f = LowPassFilter(32, 32, 8)
    common = dict(M=M, ls=0.0, down_N=8, seed=4)
    free = translate(x0, small_unet, small_dse, li=0.0, **common)
    pulled = translate(x0, small_unet, small_dse, li=300.0, **common)
    assert (f.apply(pulled) - f.apply(x0)).norm() < 0.8 * (f.apply(free) - f.apply(x0)).norm()


def test_respaced_steps_visit_the_kept_timesteps(small_unet, small_dse):
    calls = []

    def recording(y, t):
        calls.append(float(t[0]))
        return small_unet(y, t)

    out = translate(_x0(batch=1), recording, small_dse, M=30, ls=10.0, li=1.0, down_N=8, steps=4)
    assert calls == [29.0, 19.0, 10.0, 0.0]
    assert torch.isfinite(out).all()


def test_score_kinds_slice_adm_outputs_only(small_unet):
    from conftest import golden_model

    ddpm, _ = golden_model("golden_ddpm_small")
    y, t = _x0(batch=1), torch.tensor([3.0])
    with torch.no_grad():
        assert torch.equal(score_function(small_unet, "adm")(y, t), small_unet(y, t)[:, :3])
        assert torch.equal(score_function(ddpm, "ddpm")(y, t), ddpm(y, t))


@pytest.mark.parametrize("bad,match", [
    (torch.zeros(3, 32, 32), r"\[B, 3, H, W\]"),
    (torch.zeros(1, 4, 32, 32), r"\[B, 3, H, W\]"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.int64), "float"),
    (torch.full((1, 3, 32, 32), float("nan")), "NaN"),
])
def test_bad_sources_are_clear_errors(bad, match, small_unet, small_dse):
    with pytest.raises(ConfigError, match=match):
        translate(bad, small_unet, small_dse, M=2, ls=1.0, li=1.0, down_N=8)


@pytest.mark.parametrize("kwargs,match", [
    (dict(M=0), "M must"), (dict(M=2, steps=3), "steps"), (dict(M=2, s1="dot"), "s1"),
    (dict(M=2, down_N=5), "down_N"), (dict(M=2, ls=float("nan")), "ls"),
    (dict(M=2, noise=torch.zeros(2, 1, 3, 32, 32)), "noise must have shape"),
])
def test_bad_settings_are_clear_errors(kwargs, match, small_unet, small_dse):
    args = dict(ls=1.0, li=1.0, down_N=8)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        translate(_x0(batch=1), small_unet, small_dse, **args)
