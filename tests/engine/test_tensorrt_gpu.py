"""TensorRT on a GPU (marker ``gpu``; skipped without CUDA or without tensorrt; the GPU protocol runs
it where tensorrt is installed and records "not installed" where it is not): plans of the tiny
engine in every TensorRT precision, the Translator's captured run (one CUDA graph per step,
replayed) against an uncaptured run of the same sampler and runner, bit for bit, and the result
against the torch backend in float32."""

import shutil

import numpy as np
import pytest
import torch

from egsde_rt.engine.plans import TENSORRT_PRECISIONS
from egsde_rt.export.reduced_precision import MIN_PSNR_DB
from egsde_rt.export.tensorrt_plans import build_plans
from egsde_rt.runtime.native_sampler import captured_step, run_sampler
from egsde_rt.runtime.translator import Translator
from helpers.native import requires_cuda

pytestmark = [pytest.mark.gpu, requires_cuda]


@pytest.fixture(scope="module")
def tensorrt_engine(tiny_engine, tmp_path_factory):
    pytest.importorskip("tensorrt")
    path = tmp_path_factory.mktemp("tensorrt") / "engine"
    shutil.copytree(tiny_engine[0], path)
    return path


def _x0():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.mark.parametrize("precision", TENSORRT_PRECISIONS)
def test_tensorrt_plans_run_captured_as_uncaptured_and_near_fp32(tensorrt_engine, precision):
    build_plans(tensorrt_engine, precision=precision, max_batch=2, log=lambda m: None)
    tr = Translator(tensorrt_engine, backend="tensorrt", device="cuda", precision=precision)
    assert tr.captures
    x0 = _x0()
    captured = tr.run_tensor(x0.numpy(), seed=5, M=8)  # numpy in, numpy out
    assert tr.captures, "the capture failed and the Translator fell back to uncaptured runs"
    settings = tr.settings_with(M=8)
    sampler = tr.sampler_for(settings, tuple(x0.shape))
    assert captured_step(sampler).runner is tr.runner
    uncaptured = run_sampler(sampler, x0, tr.runner, settings, seed=5)
    assert np.array_equal(captured, np.asarray(uncaptured))
    reference = Translator(tensorrt_engine, backend="torch", device="cuda").run_tensor(x0.numpy(), seed=5, M=8)
    if precision == "fp32":
        assert np.abs(captured - reference).max() <= 1e-3
    else:
        mse = np.mean((captured.astype(np.float64) - reference) ** 2)
        assert 10 * np.log10(4.0 / mse) >= MIN_PSNR_DB  # images in [-1, 1]
