"""Bad input gets a clear EgsdeError: images, seeds, batch sizes, injected noise, manifests; and a
Translator shared by threads gives the results of sequential calls."""

import json
import shutil
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_M
from helpers.native import requires_cuda
from egsde_rt.engine import load_engine_dir
from egsde_rt.errors import ConfigError, EgsdeError, EngineDirError, ImageError
from egsde_rt.images import load_image
from egsde_rt.runtime.translator import Translator

pytest.importorskip("onnxruntime")


def test_a_decompression_bomb_is_an_image_error(tmp_path, monkeypatch):
    Image.new("RGB", (64, 64)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 > 2 x the limit: PIL's error
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(tmp_path / "bomb.png")


@pytest.fixture(scope="module")
def translator(tiny_engine):
    return Translator(tiny_engine[0], backend="onnxruntime-cpu")


def _x0(batch=1, seed=1):
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("seed", ["abc", 1.5, 2**70, -1, True, None])
def test_bad_seeds_are_config_errors(translator, seed):
    with pytest.raises(ConfigError, match="seed"):
        translator.run_tensor(_x0(), seed=seed, M=2)


def test_numpy_seeds_and_noise_are_taken(translator):
    x0 = _x0()
    noise = np.random.default_rng(0).standard_normal((TINY_M + 1, 1, 3, 32, 32)).astype(np.float32)
    from_numpy = translator.run_tensor(x0, noise=noise)
    assert np.array_equal(from_numpy, translator.run_tensor(x0, noise=torch.from_numpy(noise)))
    assert np.array_equal(translator.run_tensor(x0, seed=np.int64(5), M=3), translator.run_tensor(x0, seed=5, M=3))
    with pytest.raises(ConfigError, match="noise must be a torch.Tensor or a numpy array"):
        translator.run_tensor(x0, noise=[[0.0]])


@pytest.mark.parametrize("batch_size", [0, -2, 1.5, "2"])
def test_bad_batch_sizes_are_config_errors(translator, batch_size):
    with pytest.raises(ConfigError, match="batch_size"):
        translator.run(np.zeros((32, 32, 3), np.uint8), batch_size=batch_size)


@pytest.mark.parametrize("field,value,match", [
    ("image_size", "32", "image_size must be an integer"), ("image_size", 0, "image_size must be positive"),
    ("settings", [], "settings must be an object"), ("format_version", "1", "format_version must be an integer"),
    ("graphs", {"score": 3, "dse_grad": 4}, "malformed manifest"),
])
def test_manifest_fields_of_the_wrong_type_are_named(tiny_engine, tmp_path, field, value, match):
    path = tmp_path / "engine"
    shutil.copytree(tiny_engine[0], path)
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, field: value}))
    with pytest.raises(EngineDirError, match=match):
        load_engine_dir(path)


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

    decoded, real = [], module.images_to_batch

    def recording(sources, image_size, max_pixels=None):
        decoded.append(len(sources))
        return real(sources, image_size, max_pixels)

    monkeypatch.setattr(module, "images_to_batch", recording)
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
