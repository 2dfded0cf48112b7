"""The C++ loop (egsde_rt.native) against the goldens and the eager reference sampler."""

import json

import numpy as np
import pytest
import torch

from conftest import golden_model, load_golden
from egsde_rt import _core, native, reference
from egsde_rt.errors import ConfigError
from egsde_rt.lowpass import lowpass_factors


@pytest.mark.parametrize("name", ["golden_egsde_small", "golden_egsde_strong"])
def test_goldens_with_injected_noise(name, small_unet, small_dse):
    g = load_golden(name)
    s = json.loads(str(g["settings"]))
    y = native.translate(torch.from_numpy(g["x0"]), small_unet, small_dse, M=s["M"], ls=s["ls"], li=s["li"],
                         s1=s["s1"], s2=s["s2"], down_N=s["down_N"], var_type=s["var_type"],
                         noise=torch.from_numpy(g["noise"]))
    assert (y - torch.from_numpy(g["y0"])).abs().max() <= 1e-4


def _x0(batch=2, seed=1):
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_philox_path_agrees_with_the_reference(small_unet, small_dse):
    x0 = _x0()
    common = dict(M=20, ls=500.0, li=2.0, down_N=8)
    a = native.translate(x0, small_unet, small_dse, seed=2024, **common)
    b = reference.translate(x0, small_unet, small_dse, seed=2024, **common)
    c = reference.translate(x0, small_unet, small_dse, seed=2025, **common)
    assert (a - b).abs().max() <= 1e-4
    assert (a - c).abs().max() > 1e-2


MODES = {
    "fresh": dict(perturb="fresh"),
    "repeats": dict(repeats=2),
    "ilvr": dict(ilvr=True, ls=0.0, li=0.0),
    "respaced": dict(M=200, steps=6),
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
    a = native.translate(x0, small_unet, small_dse, **kwargs)
    b = reference.translate(x0, small_unet, small_dse, **kwargs)
    assert (a - b).abs().max() <= 1e-4


def test_ddpm_score_model(small_dse):
    ddpm, _ = golden_model("golden_ddpm_small")
    x0 = _x0(batch=1)
    kwargs = dict(M=6, ls=300.0, li=2.0, down_N=4, score_kind="ddpm", seed=3)
    a = native.translate(x0, ddpm, small_dse, **kwargs)
    b = reference.translate(x0, ddpm, small_dse, **kwargs)
    assert (a - b).abs().max() <= 1e-4


def test_progress_and_cancellation(small_unet, small_dse):
    seen = []
    native.translate(_x0(batch=1), small_unet, small_dse, M=5, ls=1.0, li=1.0, down_N=8,
                     callback=lambda done, total: seen.append((done, total)))
    assert seen == [(k, 5) for k in range(1, 6)]
    calls = []

    def stop_after_two(done, total):
        calls.append(done)
        return done < 2

    with pytest.raises(native.SamplingCancelled):
        native.translate(_x0(batch=1), small_unet, small_dse, M=5, ls=1.0, li=1.0, down_N=8,
                         callback=stop_after_two)
    assert calls == [1, 2]


def test_runner_errors_propagate(small_dse):
    def broken(y, t):
        raise ValueError("score network exploded")

    with pytest.raises(ValueError, match="exploded"):
        native.translate(_x0(batch=1), broken, small_dse, M=3, ls=1.0, li=1.0, down_N=8)


def test_bad_noise_and_config(small_unet, small_dse):
    with pytest.raises(ConfigError, match="noise must have shape"):
        native.translate(_x0(batch=1), small_unet, small_dse, M=3, ls=1.0, li=1.0, down_N=8,
                         noise=torch.zeros(3, 1, 3, 32, 32))
    with pytest.raises(ConfigError, match="perturb_noise is needed"):
        native.translate(_x0(batch=1), small_unet, small_dse, M=3, ls=1.0, li=1.0, down_N=8, perturb="fresh",
                         noise=torch.zeros(4, 1, 3, 32, 32))
    dh, uh = (m.astype(np.float32) for m in lowpass_factors(32, 8))
    with pytest.raises(RuntimeError, match="low-pass matrices"):
        _core.Sampler(device=_core.Device.CPU, batch=1, channels=3, height=64, width=64,
                      steps=_core.make_step_table("linear", 1e-4, 0.02, 1000, "fixedsmall", 3, 0), ls=1.0, li=1.0,
                      s2=_core.EnergyKind.NEG_L2, repeats=1, fresh_perturb=False, ilvr=False,
                      down_h=dh, up_h=uh, down_w=dh, up_w=uh)


def test_cuda_status_never_raises():
    assert _core.cuda_device_count() >= 0
    assert isinstance(_core.cuda_status(), str) and _core.cuda_status()
