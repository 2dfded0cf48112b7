"""The Translator's public surface on the tiny engine: any number of images in batches the backend
takes (one split for run and run_tensor), fit="crop"/"pad" and the output size, the centre-crop
warning at the caller's line, the repr, and the CUDA probe said once and plainly."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from egsde_rt import _core
from egsde_rt.errors import ConfigError, EgsdeError
from egsde_rt.images import FITS, CenterCropWarning, load_image, padded_square
from egsde_rt.runtime import backends, devices
from egsde_rt.runtime.translator import Translator

pytest.importorskip("onnxruntime")

FAST = dict(M=2)  # two updates: the tests check shapes and equalities, not the method


@pytest.fixture(scope="module")
def translator(tiny_engine):
    return Translator(tiny_engine[0], backend="onnxruntime-cpu")


def _x0(batch, seed=1):
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _photo(w, h, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def test_run_tensor_takes_more_images_than_max_batch_and_equals_its_batches(translator, monkeypatch):
    """5 images on a backend that takes 2 a batch: batches of 2, 2 and 1, each image's result
    what its batch alone gives (seeds and injected noise split with it), from numpy as from torch."""
    monkeypatch.setattr(translator, "max_batch", 2)
    x0, seeds = _x0(5), [11, 12, 13, 14, 15]
    assert translator.batches(5) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    y = translator.run_tensor(x0, seed=seeds, **FAST)
    assert isinstance(y, torch.Tensor) and y.shape == x0.shape
    chunks = [translator.run_tensor(x0[s], seed=seeds[s], **FAST) for s in translator.batches(5)]
    assert torch.equal(y, torch.cat(chunks))
    assert np.array_equal(translator.run_tensor(x0.numpy(), seed=seeds, **FAST), y.numpy())
    # another split (batch_size=1): the same images, up to the kernels' batch-size rounding (docs/api.md)
    assert (translator.run_tensor(x0, seed=seeds, batch_size=1, **FAST) - y).abs().max() <= 1e-6
    noise = torch.randn(3, 5, 3, 32, 32, generator=torch.Generator().manual_seed(2))  # [K+1, B, 3, S, S]
    injected = translator.run_tensor(x0, noise=noise, **FAST)
    assert torch.equal(injected, torch.cat([translator.run_tensor(x0[s], noise=noise[:, s], **FAST)
                                            for s in translator.batches(5)]))
    with pytest.raises(ConfigError, match=r"noise must have shape \[3, 5, 3, 32, 32\]"):  # the whole call's shape
        translator.run_tensor(x0, noise=noise[:, :4], **FAST)


def test_the_one_split_is_bounded_by_the_backend(translator, monkeypatch):
    monkeypatch.setattr(translator, "max_batch", 4)
    assert translator.batches(9) == [slice(0, 4), slice(4, 8), slice(8, 9)]
    assert translator.batches(9, batch_size=3) == [slice(0, 3), slice(3, 6), slice(6, 9)]
    assert translator.batches(5, batch_size=64) == [slice(0, 4), slice(4, 5)]  # at most the plans' range
    with pytest.raises(ConfigError, match="batch_size must be at most 64"):
        translator.batches(100, batch_size=65)
    images = [_photo(32, 32, seed=i) for i in range(5)]
    assert len(translator.run(images, seed=list(range(5)), **FAST)) == 5


def test_fit_crop_gives_s_by_s_and_fit_pad_keeps_the_aspect_ratio(translator):
    photo = _photo(300, 200)
    with pytest.warns(CenterCropWarning, match="300x200 is not square"):
        assert translator.run(photo, seed=3, **FAST).size == (32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CenterCropWarning)  # nothing is cropped: no warning
        padded = translator.run(photo, seed=3, fit="pad", **FAST)
        tall = translator.run([_photo(20, 64)], seed=3, fit="pad", **FAST)[0]
    assert padded.size == (32, 21) and tall.size == (10, 32)  # 200 * 32 / 300 = 21.3 -> 21; 20 * 32 / 64 = 10
    assert FITS == ("crop", "pad")
    with pytest.raises(EgsdeError, match=r"fit must be one of 'crop', 'pad'.*got 'squash'"):
        translator.run(photo, fit="squash")


def test_fit_pad_is_the_translation_of_the_padded_square_cut_to_the_image(translator):
    photo = _photo(300, 200, seed=4)
    square, box = padded_square(load_image(photo), 32)
    assert square.size == (32, 32) and box == (0, 5, 32, 26)
    expected = translator.run(square, seed=7, **FAST).crop(box)
    assert np.array_equal(np.asarray(translator.run(photo, seed=7, fit="pad", **FAST)), np.asarray(expected))
    # a square image: both fits are the same translation
    assert np.array_equal(np.asarray(translator.run(square, seed=7, fit="pad", **FAST)),
                          np.asarray(translator.run(square, seed=7, **FAST)))


def test_the_centre_crop_warning_points_at_the_callers_line(translator):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        translator.run(Image.fromarray(_photo(48, 32)), seed=1, **FAST)
        translator.run([_photo(32, 40)], seed=1, **FAST)
    crops = [w for w in caught if issubclass(w.category, CenterCropWarning)]
    assert len(crops) == 2 and {w.filename for w in crops} == {__file__}, [(w.filename, w.lineno) for w in crops]


def test_the_repr_says_what_runs(translator, tiny_engine):
    text = repr(translator)
    for part in (str(tiny_engine[0]), "kind='official'", "backend='onnxruntime-cpu'", "device='cpu'",
                 "precision='fp32'", "image_size=32", f"max_batch={translator.max_batch}",
                 f"threads={translator.threads}"):
        assert part in text, (part, text)


def test_no_cuda_is_said_once_and_plainly(tiny_engine, monkeypatch):
    """Without a driver the CUDA runtime says "driver version is insufficient": egsde-rt says there
    is no driver; with an old driver, that it is old. Probed once a process; a refused CUDA request
    names the reason once, not once per CUDA backend."""
    monkeypatch.setattr(_core, "built_with_cuda", True)
    monkeypatch.setattr(_core, "cuda_device_count", lambda: 0)
    monkeypatch.setattr(_core, "cuda_status",
                        lambda: "CUDA unavailable: CUDA driver version is insufficient for CUDA runtime version")
    monkeypatch.setattr(devices, "_driver_present", lambda: False)
    assert devices._cuda_reason() == "no NVIDIA driver is installed (libcuda not found)"
    monkeypatch.setattr(devices, "_driver_present", lambda: True)
    assert "older than the CUDA runtime" in devices._cuda_reason()
    monkeypatch.setattr(_core, "cuda_status", lambda: "CUDA unavailable: no CUDA-capable device is detected")
    assert devices._cuda_reason() == "no CUDA-capable device is detected"
    usable, why = devices.cuda_usable()
    assert devices.cuda_usable() is devices.cuda_usable()  # probed once
    if usable:
        return  # a machine with a GPU: nothing to refuse
    assert why.startswith("no usable CUDA device: ") and "insufficient" not in why
    monkeypatch.setattr(backends, "cuda_usable", lambda: (False, "no usable CUDA device: stand-in"))
    with pytest.raises(ConfigError) as refused:
        Translator(tiny_engine[0], device="cuda")
    assert str(refused.value) == "no usable backend: no usable CUDA device: stand-in"
