"""The one sampling path on a GPU (marker ``gpu``; skipped without CUDA; run by the GPU
protocol): the Translator captures with a progress callback, reads and writes CUDA tensors in
place, and runs on ``cuda:N`` (the last device here) end to end (ONNX Runtime's device id:
tests/test_sampling_path.py)."""

import numpy as np
import pytest
import torch

from egsde_rt.errors import ConfigError, SamplingCancelled
from egsde_rt.runtime.native_sampler import captured_step, run_sampler
from egsde_rt.runtime.translator import Translator
from helpers.native import requires_cuda

pytestmark = [pytest.mark.gpu, requires_cuda]


@pytest.fixture
def deterministic_cudnn():
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def _x0(batch=2, device="cpu"):
    return (torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(device)


def test_the_translator_captures_with_progress_and_keeps_tensors_on_the_device(tiny_torch_engine,
                                                                               deterministic_cudnn):
    tr = Translator(tiny_torch_engine[0], backend="torch", device="cuda")
    x0 = _x0(device=tr.device)
    seen = []
    got = tr.run_tensor(x0, seed=[5, 6], M=8, callback=lambda done, total: seen.append((done, total)))
    settings = tr.settings_with(M=8)
    total = settings.num_updates * settings.repeats
    assert seen == [(k, total) for k in range(1, total + 1)]
    sampler = tr.sampler_for(settings, tuple(x0.shape))
    assert tr.captures and captured_step(sampler).runner is tr.runner, "the callback turned capture off"
    assert isinstance(got, torch.Tensor) and got.device == x0.device
    with torch.cuda.stream(tr.stream):
        uncaptured = run_sampler(sampler, x0, tr.runner, settings, seed=[5, 6])
    assert np.array_equal(got.cpu().numpy(), uncaptured)
    assert np.array_equal(tr.run_tensor(x0.cpu().numpy(), seed=[5, 6], M=8), uncaptured)  # numpy in, numpy out
    with pytest.raises(SamplingCancelled):
        tr.run_tensor(x0, seed=[5, 6], M=8, callback=lambda done, total: done < 3)
    assert sampler.step_counter == 3 and tr.captures


def test_cuda_n_runs_end_to_end(tiny_torch_engine, deterministic_cudnn):
    """The last CUDA device by its index (cuda:1 on a two-GPU machine): the sampler, the runner
    and the result live there, whichever device is current; an index past the devices is
    refused."""
    last = torch.cuda.device_count() - 1
    on_last = Translator(tiny_torch_engine[0], backend="torch", device=f"cuda:{last}")
    assert on_last.choice.index == last and on_last.device == torch.device("cuda", last)
    with torch.cuda.device(0):
        got = on_last.run_tensor(_x0(device=f"cuda:{last}"), seed=3, M=6)
    sampler = on_last.sampler_for(on_last.settings_with(M=6), (2, 3, 32, 32))
    assert sampler.config.device_index == last and got.device == torch.device("cuda", last)
    on_first = Translator(tiny_torch_engine[0], backend="torch", device="cuda:0")
    assert np.abs(got.cpu().numpy() - on_first.run_tensor(_x0().numpy(), seed=3, M=6)).max() <= 1e-4
    with pytest.raises(ConfigError, match=f"cuda:{last + 1}"):
        Translator(tiny_torch_engine[0], backend="torch", device=f"cuda:{last + 1}")
