"""A Translator under load: shared by threads it gives the results of sequential calls, it decodes
batch by batch, 200 translations do not grow host (or, on a GPU, device) memory, and an image's
result depends on its seed, not on its batch or position. (Bad input: test_bad_inputs.py.)"""

import threading

import numpy as np
import pytest
import torch

from helpers.native import requires_cuda
from egsde_rt.errors import ConfigError, EgsdeError
from egsde_rt.runtime.translator import Translator

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def translator(tiny_engine):
    return Translator(tiny_engine[0], backend="onnxruntime-cpu")


def _x0(batch=1, seed=1):
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_one_translator_serves_several_threads(translator):
    x0s = [_x0(seed=s) for s in range(4)]
    expected = [translator.run_tensor(x, seed=s, M=4) for s, x in enumerate(x0s)]
    results, errors = [None] * 4, []

    def work(i):
        try:
            results[i] = translator.run_tensor(x0s[i], seed=i, M=4)
        except EgsdeError as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(np.array_equal(r, e) for r, e in zip(results, expected))


def test_run_decodes_batch_by_batch(translator, monkeypatch):
    """Images are decoded just before their batch runs, not all up front."""
    from egsde_rt.runtime import translator as module

    decoded, real = [], module.fit_batch

    def recording(sources, image_size, max_pixels=None, fit="crop"):
        decoded.append(len(sources))
        return real(sources, image_size, max_pixels, fit)

    monkeypatch.setattr(module, "fit_batch", recording)
    images = [np.full((32, 32, 3), 40 * i, np.uint8) for i in range(5)]
    out = translator.run(images, batch_size=2, M=2)
    assert len(out) == 5 and decoded == [2, 2, 1]
    with pytest.raises(ConfigError, match="at most 1000"):  # bad settings fail before any decoding
        translator.run(images, M=5000)
    assert decoded == [2, 2, 1]


def _rss_mb() -> float:
    from pathlib import Path

    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status")


def test_200_translations_do_not_grow_host_memory(translator):
    x0 = _x0()
    for seed in range(20):  # warm up: sessions, the sampler, allocator pools
        translator.run_tensor(x0, seed=seed, M=2)
    before = _rss_mb()
    for seed in range(200):
        translator.run_tensor(x0, seed=seed, M=2)
    growth = _rss_mb() - before
    assert growth < 4, f"host memory grew by {growth:.1f} MB over 200 translations"  # a 20 KB per run leak fails


def test_a_translation_depends_on_its_seed_not_on_its_batch(translator):
    """`run([a, b], seed=[1, 2])[1]` is bit-identical to `run(b, seed=2)`, at any batch size."""
    images = [(np.random.default_rng(i).random((32, 32, 3)) * 255).astype(np.uint8) for i in range(3)]
    alone = [np.asarray(translator.run(img, seed=s, M=3)) for img, s in zip(images, (11, 2, 2**64 - 1))]
    for batch_size in (None, 2, 1):
        batched = translator.run(images, seed=[11, 2, 2**64 - 1], batch_size=batch_size, M=3)
        assert all(np.array_equal(np.asarray(b), a) for b, a in zip(batched, alone)), batch_size
    swapped = translator.run([images[1], images[0]], seed=[2, 11], M=3)  # position does not matter either
    assert np.array_equal(np.asarray(swapped[0]), alone[1]) and np.array_equal(np.asarray(swapped[1]), alone[0])
    same = translator.run([images[0], images[0]], seed=7, M=3)  # one integer: every image uses it
    assert np.array_equal(np.asarray(same[0]), np.asarray(same[1]))
    with pytest.raises(ConfigError, match="one integer per image"):
        translator.run(images, seed=[1, 2], M=3)
    with pytest.raises(ConfigError, match="single image"):
        translator.run(images[0], seed=[1], M=3)


def test_per_image_seeds_match_the_reference_sampler(tiny_engine):
    """The native loop with per-image seeds draws what the eager reference draws with them."""
    from egsde_rt.reference import translate as reference_translate

    _, score, dse = tiny_engine
    tr = Translator(tiny_engine[0], backend="torch")
    x0, seeds = _x0(batch=2, seed=3), [5, 2**40 + 1]
    settings = tr.settings_with(M=3)
    expected = reference_translate(x0, score, dse, settings, seed=seeds,
                                   schedule=tr.schedule).numpy()
    got = tr.run_tensor(x0, seed=seeds, M=3)
    assert np.abs(got - expected).max() < 1e-5
    # Exact where the networks are: the same batch size, another position.
    swapped = tr.run_tensor(x0.flip(0), seed=seeds[::-1], M=3)
    assert torch.equal(swapped.flip(0), got)
    # Batch 1 against batch 2: the noise and the sampler are exact; the CPU libraries' network
    # kernels (a GEMV for one row, a GEMM for two) may differ in the last bit.
    assert np.abs(got[1] - tr.run_tensor(x0[1:], seed=seeds[1], M=3)[0]).max() < 1e-6


@pytest.mark.gpu
@requires_cuda
def test_200_translations_do_not_grow_device_memory(tiny_torch_engine):
    """On a GPU: the CUDA Translator (its samplers, captured graph, runner) reaches a steady state;
    200 more translations do not take more device memory (what the driver reports free, so the
    native core's allocations count too, not only PyTorch's)."""
    tr = Translator(tiny_torch_engine[0], backend="torch", device="cuda")
    x0 = _x0()
    for seed in range(20):
        tr.run_tensor(x0, seed=seed, M=2)
    torch.cuda.synchronize()
    free_before, _ = torch.cuda.mem_get_info()
    for seed in range(200):
        tr.run_tensor(x0, seed=seed, M=2)
    torch.cuda.synchronize()
    free_after, _ = torch.cuda.mem_get_info()
    assert free_before - free_after < 4 * 2**20, f"device memory grew by {(free_before - free_after) / 2**20:.1f} MB"
