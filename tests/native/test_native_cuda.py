"""CUDA kernels and the CUDA loop against the CPU ones (run only where a GPU is present)."""

import numpy as np
import pytest
import torch

from egsde_rt import _core
from egsde_rt.errors import ConfigError
from egsde_rt.method.lowpass import lowpass_eigen, lowpass_factors
from egsde_rt.runtime.native_sampler import build_sampler, captured_step, run_captured, run_sampler, step_table
from egsde_rt.runtime.runners import TorchRunner
from egsde_rt.method.schedule import Schedule, StepCoefficients
from egsde_rt.method.settings import EGSDESettings
from helpers.native import GUARD, Guarded, requires_cuda
from helpers.sampling import native_translate

pytestmark = [pytest.mark.gpu, requires_cuda]
K = _core.kernels


def _pair(array):
    return array, torch.from_numpy(array).cuda()


def _host(t):
    torch.cuda.synchronize()
    return t.cpu().numpy()


@pytest.mark.parametrize("batch,size", [(1, 32), (3, 64), (1, 256)])
def test_philox_and_update_match_the_cpu(batch, size):
    per_image = 3 * size * size
    n = batch * per_image
    cpu_out, gpu_out = _pair(np.zeros(n, np.float32))
    K.philox_normal(cpu_out, batch, per_image, 123, 0, 9)
    K.philox_normal(gpu_out, batch, per_image, 123, 0, 9)
    assert np.abs(_host(gpu_out) - cpu_out).max() <= 1e-5
    seeds = np.arange(1, batch + 1, dtype=np.uint64) * np.uint64(2**33 + 1)  # one per image
    K.philox_normal(cpu_out, batch, per_image, seeds, 0, 9)
    K.philox_normal(gpu_out, batch, per_image, seeds, 0, 9)
    assert np.abs(_host(gpu_out) - cpu_out).max() <= 1e-5
    rng = np.random.default_rng(0)
    y, eps, gs, gi = (rng.standard_normal(n).astype(np.float32) for _ in range(4))
    c = dict(batch=batch, per_image=per_image, inv_sqrt_alpha=1.0001, eps_coef=0.0123, ls_w=0.51, li_w=0.0021,
             sigma=0.091, draw=3)
    cpu_res = np.zeros(n, np.float32)
    K.egsde_update(K.UpdateParams(y=y, eps=eps, grad_s=gs, grad_i=gi, out=cpu_res, **c), seed=5)
    gpu_res = torch.zeros(n, device="cuda")
    g = [torch.from_numpy(a).cuda() for a in (y, eps, gs, gi)]
    K.egsde_update(K.UpdateParams(y=g[0], eps=g[1], grad_s=g[2], grad_i=g[3], out=gpu_res, **c), seed=5)
    assert np.abs(_host(gpu_res) - cpu_res).max() <= 1e-5


def _lowpass_case(batch, size, down_N, seed):
    """(D, U, workspace floats, y, x, the dims) of a random low-pass kernel call."""
    dh, uh = (np.ascontiguousarray(m, np.float32) for m in lowpass_factors(size, down_N))
    low = size // down_N
    dims = dict(batch=batch, channels=3, height=size, width=size, low_h=low, low_w=low)
    ws_n = K.lowpass_workspace_floats(K.LowpassParams(**dims))
    rng = np.random.default_rng(seed)
    y, x = (rng.standard_normal(batch * 3 * size * size).astype(np.float32) for _ in range(2))
    return dh, uh, ws_n, y, x, dims


@pytest.mark.parametrize("kind", [_core.EnergyKind.NEG_L2, _core.EnergyKind.COSINE])
@pytest.mark.parametrize("batch,size,down_N", [(1, 32, 4), (3, 64, 8), (1, 256, 32)])
def test_lowpass_matches_the_cpu(kind, batch, size, down_N):
    dh, uh, ws_n, y, x, dims = _lowpass_case(batch, size, down_N, seed=1)
    cpu_grad = np.zeros_like(y)
    cpu = K.LowpassParams(down_h=dh, up_h=uh, down_w=dh, up_w=uh, workspace=np.zeros(ws_n, np.float32), **dims)
    K.lowpass_energy_grad(cpu, y, x, cpu_grad, kind)
    mats = [torch.from_numpy(m).cuda() for m in (dh, uh)]
    gpu_grad = torch.zeros(y.size, device="cuda")
    gpu = K.LowpassParams(down_h=mats[0], up_h=mats[1], down_w=mats[0], up_w=mats[1],
                          workspace=torch.zeros(ws_n, device="cuda"), **dims)
    K.lowpass_energy_grad(gpu, torch.from_numpy(y).cuda(), torch.from_numpy(x).cuda(), gpu_grad, kind)
    assert np.abs(_host(gpu_grad) - cpu_grad).max() <= 1e-5


@pytest.mark.parametrize("form", [_core.LowpassForm.IMPLICIT, _core.LowpassForm.EXACT])
@pytest.mark.parametrize("batch,size,down_N", [(1, 32, 4), (3, 64, 8), (1, 256, 32)])
def test_lowpass_pull_matches_the_cpu(form, batch, size, down_N):
    """The stable pull (plane GEMMs and pull_scale) on CUDA against its CPU twin."""
    dh, uh, ws_n, y, x, dims = _lowpass_case(batch, size, down_N, seed=2)
    q, lam = (np.ascontiguousarray(m, np.float32) for m in lowpass_eigen(size, down_N))
    cpu = y.copy()
    params = K.LowpassParams(eig_h=q, lambda_h=lam, eig_w=q, lambda_w=lam, down_h=dh, up_h=uh, down_w=dh, up_w=uh,
                             workspace=np.zeros(ws_n, np.float32), **dims)
    K.lowpass_pull(params, cpu, x, form, 7.0)
    d = [torch.from_numpy(m).cuda() for m in (q, lam, dh, uh)]
    gpu = torch.from_numpy(y).cuda()
    params = K.LowpassParams(eig_h=d[0], lambda_h=d[1], eig_w=d[0], lambda_w=d[1], down_h=d[2], up_h=d[3],
                             down_w=d[2], up_w=d[3], workspace=torch.zeros(ws_n, device="cuda"), **dims)
    K.lowpass_pull(params, gpu, torch.from_numpy(x).cuda(), form, 7.0)
    assert np.abs(cpu - y).max() > 1e-2 and np.abs(_host(gpu) - cpu).max() <= 1e-5


def test_native_translate_cuda_matches_cpu(small_unet, small_dse):
    x0 = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    kwargs = dict(M=20, ls=500.0, li=2.0, down_N=8, seed=11)
    cpu = native_translate(x0, small_unet, small_dse, **kwargs)
    gpu = native_translate(x0.cuda(), small_unet.cuda(), small_dse.cuda(), **kwargs)
    small_unet.cpu(), small_dse.cpu()
    assert (gpu.cpu() - cpu).abs().max() <= 1e-3


# The counter-driven step: the CUDA twins of step_begin and of the kernels' step-pointer paths
# against the CPU twins, with guards on the device; then one captured CUDA graph per step.

class DeviceGuarded:
    """A Guarded buffer's storage on the device; `view` is the guarded middle, `host()` all of it."""

    def __init__(self, guarded: Guarded):
        self.storage = torch.from_numpy(guarded.storage.copy()).cuda()
        self.view = self.storage[GUARD:GUARD + guarded.view.size]
        self.guarded = guarded

    def host(self) -> Guarded:
        torch.cuda.synchronize()
        self.guarded.storage[:] = self.storage.cpu().numpy()
        return self.guarded


def _rows(M=6):
    return K.step_rows(step_table(StepCoefficients.from_schedule(Schedule.create(), M)), 500.0, 2.0, True)


def _state(g):
    return np.array([g], np.int64)


@pytest.mark.parametrize("g", [0, 4, 5, 11, 2**40])  # the last: past the run, clamped as on the CPU
def test_step_begin_matches_the_cpu(g):
    rows, batch = _rows(), 3
    updates = 2 * len(rows)
    cpu_state, cpu_scalars, cpu_t = _state(g), Guarded(K.STEP_SCALARS_WORDS), Guarded(batch)
    K.step_begin(rows, cpu_state, cpu_scalars.view, cpu_t.view, batch, updates=updates)
    gpu_state = torch.from_numpy(_state(g)).cuda()
    gpu_scalars, gpu_t = DeviceGuarded(Guarded(K.STEP_SCALARS_WORDS)), DeviceGuarded(Guarded(batch))
    K.step_begin(torch.from_numpy(rows).cuda(), gpu_state, gpu_scalars.view, gpu_t.view, batch, updates=updates)
    scalars, t_now = gpu_scalars.host(), gpu_t.host()
    assert scalars.intact() and t_now.intact()
    assert np.array_equal(scalars.view.view(np.uint32), cpu_scalars.view.view(np.uint32))
    assert np.array_equal(t_now.view, cpu_t.view)
    assert np.array_equal(_host(gpu_state), cpu_state)


@pytest.mark.parametrize("g", [2, 5])
def test_step_pointer_kernels_match_the_cpu(g):
    rows, batch, per_image, seeds = _rows(), 2, 3 * 64 * 64, np.array([41, 2**50 + 3], np.uint64)
    n = batch * per_image
    cpu_scalars = Guarded(K.STEP_SCALARS_WORDS)
    K.step_begin(rows, _state(g), cpu_scalars.view, np.zeros(batch, np.float32), batch, updates=len(rows))
    gpu_scalars = torch.from_numpy(cpu_scalars.view.copy()).cuda()
    rng = np.random.default_rng(g)
    y, eps, gs, gi = (rng.standard_normal(n).astype(np.float32) for _ in range(4))
    table = rng.standard_normal((2 * 7, n)).astype(np.float32)  # more draws than update g names
    d = {name: torch.from_numpy(a).cuda() for name, a in dict(y=y, eps=eps, gs=gs, gi=gi, table=table).items()}

    for mix in (K.StepMix.PERTURBED_SOURCE, K.StepMix.ILVR_CORRECTION):
        cpu_out, gpu_out = Guarded(n), DeviceGuarded(Guarded(n))
        K.axpby(y, eps, cpu_out.view, 0.0, 0.0, step=cpu_scalars.view, mix=mix)
        K.axpby(d["y"], d["eps"], gpu_out.view, 0.0, 0.0, step=gpu_scalars, mix=mix)
        got = gpu_out.host()
        assert got.intact() and np.abs(got.view - cpu_out.view).max() <= 1e-5

    for stream in (0, 1):
        for injected in (None, "table"):
            cpu_out, gpu_out = Guarded(n), DeviceGuarded(Guarded(n))
            K.philox_normal(cpu_out.view, batch, per_image, seeds, stream, 0, step=cpu_scalars.view,
                            injected=None if injected is None else table)
            K.philox_normal(gpu_out.view, batch, per_image, seeds, stream, 0, step=gpu_scalars,
                            injected=None if injected is None else d["table"])
            got = gpu_out.host()
            assert got.intact() and np.abs(got.view - cpu_out.view).max() <= 1e-5

    zeros = dict(batch=batch, per_image=per_image, inv_sqrt_alpha=0.0, eps_coef=0.0, ls_w=0.0, li_w=0.0, sigma=0.0,
                 stream=0)
    for injected in (False, True):
        cpu_out, gpu_out = Guarded(n), DeviceGuarded(Guarded(n))
        K.egsde_update(K.UpdateParams(y=y, eps=eps, grad_s=gs, grad_i=gi, noise=table if injected else None,
                                      out=cpu_out.view, **zeros), seed=seeds, step=cpu_scalars.view)
        K.egsde_update(K.UpdateParams(y=d["y"], eps=d["eps"], grad_s=d["gs"], grad_i=d["gi"],
                                      noise=d["table"] if injected else None, out=gpu_out.view, **zeros),
                       seed=seeds, step=gpu_scalars)
        got = gpu_out.host()
        assert got.intact() and np.abs(got.view - cpu_out.view).max() <= 1e-5


CAPTURE_MODES = {
    "plain": dict(),
    "repeats_fresh": dict(repeats=2, perturb="fresh"),
    "ilvr": dict(ilvr=True, ls=0.0, li=0.0),
    "cosine_s2": dict(s2="cosine", li=30.0),
    "dpmpp_2m_sde": dict(solver="dpmpp-2m-sde", steps=5, repeats=2),  # the multistep buffer in the graph
    "ddim": dict(solver="ddim", eta=0.5, steps=5),
    "implicit_lowpass": dict(solver="dpmpp-2m-sde", steps=5, lowpass="implicit", li=500.0),  # the pull in the graph
    "sa_solver_3": dict(solver="sa-solver-3", steps=6, repeats=2),  # three earlier D's in the graph
    "exact_lowpass_ilvr": dict(lowpass="exact", li=500.0, ilvr=True),
}


@pytest.fixture()
def deterministic_cudnn():
    """Bit-identical runs need the same kernels every time (no autotuning, no atomics in cuDNN)."""
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


@pytest.mark.parametrize("mode", sorted(CAPTURE_MODES))
def test_captured_runs_equal_uncaptured_runs(mode, small_unet, small_dse, deterministic_cudnn):
    settings = EGSDESettings(**{**dict(M=8, ls=500.0, li=2.0, down_N=8), **CAPTURE_MODES[mode]})
    x0 = (torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1).cuda()
    unet, dse = small_unet.cuda(), small_dse.cuda()
    try:
        stream = torch.cuda.Stream()
        sampler = build_sampler(settings, x0.shape, "cuda", stream=stream)
        runner = TorchRunner(unet, dse, s1=settings.s1, score_kind=settings.score_kind)
        eager = run_sampler(sampler, x0, runner, settings, seed=5)
        captured = run_captured(sampler, x0, runner, settings, seed=5)
        graph = captured_step(sampler).graph
        replayed = run_captured(sampler, x0, runner, settings, seed=5)  # the kept graph, replayed only
        other_seed = run_captured(sampler, x0, runner, settings, seed=6)  # the seed is read on the device
        assert captured_step(sampler).graph is graph
        eager_other_seed = run_sampler(sampler, x0, runner, settings, seed=6)
        assert sampler.step_counter == settings.repeats * settings.num_updates
    finally:
        small_unet.cpu(), small_dse.cpu()
    assert np.array_equal(captured, eager)
    assert np.array_equal(replayed, eager)
    assert np.array_equal(other_seed, eager_other_seed)
    assert not np.array_equal(other_seed, eager)
    cpu = native_translate(x0.cpu(), small_unet, small_dse, seed=5, **{**dict(M=8, ls=500.0, li=2.0, down_N=8),
                                                                        **CAPTURE_MODES[mode]})
    assert np.abs(captured - cpu.numpy()).max() <= 1e-3


def test_run_captured_refuses_the_default_stream(small_unet, small_dse):
    settings = EGSDESettings(M=3, ls=0.0, li=0.0, down_N=8)
    x0 = torch.zeros(1, 3, 32, 32, device="cuda")
    runner = TorchRunner(small_unet, small_dse, s1=settings.s1, score_kind=settings.score_kind)
    on_default = build_sampler(settings, x0.shape, "cuda", stream=torch.cuda.default_stream())
    with pytest.raises(ConfigError, match="non-default CUDA stream"):
        run_captured(on_default, x0, runner, settings)
