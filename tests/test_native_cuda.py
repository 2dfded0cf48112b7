"""CUDA kernels and the CUDA loop against the CPU ones (run only where a GPU is present)."""

import numpy as np
import pytest
import torch

from egsde_rt import _core
from egsde_rt.lowpass import lowpass_factors
from native_helpers import requires_cuda
from sampling_helpers import native_translate

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
    rng = np.random.default_rng(0)
    y, eps, gs, gi = (rng.standard_normal(n).astype(np.float32) for _ in range(4))
    c = dict(inv_sqrt_alpha=1.0001, eps_coef=0.0123, ls_w=0.51, li_w=0.0021, sigma=0.091, seed=5, draw=3)
    cpu_res = np.zeros(n, np.float32)
    K.egsde_update(y, eps, gs, gi, None, cpu_res, batch, per_image, **c)
    gpu_res = torch.zeros(n, device="cuda")
    g = [torch.from_numpy(a).cuda() for a in (y, eps, gs, gi)]
    K.egsde_update(g[0], g[1], g[2], g[3], None, gpu_res, batch, per_image, **c)
    assert np.abs(_host(gpu_res) - cpu_res).max() <= 1e-5


@pytest.mark.parametrize("kind", [_core.EnergyKind.NEG_L2, _core.EnergyKind.COSINE])
@pytest.mark.parametrize("batch,size,down_N", [(1, 32, 4), (3, 64, 8), (1, 256, 32)])
def test_lowpass_matches_the_cpu(kind, batch, size, down_N):
    dh, uh = (np.ascontiguousarray(m, np.float32) for m in lowpass_factors(size, down_N))
    low = size // down_N
    ws_n = K.lowpass_workspace_floats(batch, 3, size, size, low, low)
    rng = np.random.default_rng(1)
    y, x = (rng.standard_normal(batch * 3 * size * size).astype(np.float32) for _ in range(2))
    dims = dict(batch=batch, channels=3, height=size, width=size, low_h=low, low_w=low)
    cpu_grad = np.zeros_like(y)
    K.lowpass_energy_grad(y, x, cpu_grad, kind, dh, uh, dh, uh, np.zeros(ws_n, np.float32), **dims)
    mats = [torch.from_numpy(m).cuda() for m in (dh, uh)]
    gpu_grad = torch.zeros(y.size, device="cuda")
    K.lowpass_energy_grad(torch.from_numpy(y).cuda(), torch.from_numpy(x).cuda(), gpu_grad, kind, mats[0], mats[1],
                          mats[0], mats[1], torch.zeros(ws_n, device="cuda"), **dims)
    assert np.abs(_host(gpu_grad) - cpu_grad).max() <= 1e-5


def test_native_translate_cuda_matches_cpu(small_unet, small_dse):
    x0 = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    kwargs = dict(M=20, ls=500.0, li=2.0, down_N=8, seed=11)
    cpu = native_translate(x0, small_unet, small_dse, **kwargs)
    gpu = native_translate(x0.cuda(), small_unet.cuda(), small_dse.cuda(), **kwargs)
    small_unet.cpu(), small_dse.cpu()
    assert (gpu.cpu() - cpu).abs().max() <= 1e-3
