"""egsde_rt.evaluation against independent implementations of the official EGSDE evaluation.

References used here, none of them egsde-rt code: float64 numpy formulas of MSE, PSNR, L2 and the
Gaussian-window SSIM / MS-SSIM (Wang et al.; the official parameters: 11 taps, sigma 1.5, K = (0.01,
0.03), valid filtering, data range 1), scikit-image's SSIM, PIL resizing, the Fréchet distance through
an eigen-decomposition, a double-loop MMD for KID, and the state-dict layout of pytorch-fid's weight
file recorded in tests/data/fid_inception_state_dict.json (transcribed from pytorch-fid's and
torchvision's sources). FID runs on random Inception weights: nothing is downloaded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from conftest import TEST_DATA
from egsde_rt.errors import (CheckpointMismatchError, CheckpointNotFoundError, ConfigError, EgsdeError,
                             ImageError)
from egsde_rt.evaluation import evaluate_folders, folder_statistics, format_table
from egsde_rt.evaluation import fid as fid_module
from egsde_rt.evaluation import protocol
from egsde_rt.evaluation.fid import (frechet_distance, inception_features, kernel_inception_distance,
                                     load_statistics, save_statistics, statistics_from_features)
from egsde_rt.evaluation.image_pairs import list_images, pair_by_stem
from egsde_rt.evaluation.inception import FID_WEIGHTS_FILE, FIDInceptionV3, load_fid_inception
from egsde_rt.evaluation.metrics import l2, ms_ssim, mse, psnr, ssim
from egsde_rt.evaluation.preprocessing import load_for_fid, load_for_pair_metrics

DATA = TEST_DATA


# ---------------------------------------------------------------- independent references

def gaussian_taps(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    k = np.arange(size) - size // 2
    g = np.exp(-(k ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def gaussian_valid(x: np.ndarray) -> np.ndarray:
    """Separable 11x11 Gaussian filtering of [C, H, W] without padding (valid region only)."""
    g = gaussian_taps()
    rows = np.lib.stride_tricks.sliding_window_view(x, 11, axis=-1) @ g
    return np.lib.stride_tricks.sliding_window_view(rows, 11, axis=-2) @ g


def ssim_reference(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean SSIM and contrast-structure terms of [C, H, W] float64 images in [0, 1]."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_a, mu_b = gaussian_valid(a), gaussian_valid(b)
    var_a = gaussian_valid(a * a) - mu_a ** 2
    var_b = gaussian_valid(b * b) - mu_b ** 2
    cov = gaussian_valid(a * b) - mu_a * mu_b
    cs = (2 * cov + c2) / (var_a + var_b + c2)
    s = (2 * mu_a * mu_b + c1) / (mu_a ** 2 + mu_b ** 2 + c1) * cs
    return s.mean(axis=(1, 2)), cs.mean(axis=(1, 2))


def ms_ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Five-scale MS-SSIM of [C, H, W] images whose sides are divisible by 16."""
    weights = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]
    terms = []
    for level in range(5):
        s, cs = ssim_reference(a, b)
        if level < 4:
            terms.append(np.maximum(cs, 0))
            c, h, w = a.shape
            a = a.reshape(c, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
            b = b.reshape(c, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
    terms.append(np.maximum(s, 0))
    per_channel = np.prod([t ** w for t, w in zip(terms, weights)], axis=0)
    return float(per_channel.mean())


def official_pair_image(path: Path) -> np.ndarray:
    """[3, H, W] float64: RGB, shorter side to 256 with PIL bicubic (torchvision Resize(256)), / 255."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    if min(w, h) != 256:
        if w <= h:
            img = img.resize((256, int(256 * h / w)), Image.BICUBIC)
        else:
            img = img.resize((int(256 * w / h), 256), Image.BICUBIC)
    return np.asarray(img, dtype=np.float64).transpose(2, 0, 1) / 255.0


def frechet_reference(mu1, sigma1, mu2, sigma2) -> float:
    """d^2 = |mu1 - mu2|^2 + tr(s1) + tr(s2) - 2 tr((s1^1/2 s2 s1^1/2)^1/2), by eigen-decompositions."""
    values, vectors = np.linalg.eigh(sigma1)
    root1 = vectors @ np.diag(np.sqrt(np.clip(values, 0, None))) @ vectors.T
    inner = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2)
                 - 2 * np.sum(np.sqrt(np.clip(inner, 0, None))))


def mmd_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, by explicit sums over pairs."""
    d, m, n = x.shape[1], len(x), len(y)

    def k(a, b):
        return (a @ b / d + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return float(xx + yy - 2 * xy)


def image_pairs(seed: int, n: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """8-bit-valued float32 image batches in [0, 1]: a smooth image and a noisy copy of it."""
    rng = np.random.default_rng(seed)
    base = rng.random((n, 3, h // 8, w // 8))
    base = np.kron(base, np.ones((1, 1, 8, 8)))[:, :, :h, :w]
    noisy = np.clip(base + rng.normal(0, 0.15, base.shape), 0, 1)
    return to_8bit_tensor(noisy), to_8bit_tensor(base)


def to_8bit_tensor(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.round(values * 255).astype(np.float32) / 255)


def save_rgb(path: Path, rng: np.random.Generator, h: int, w: int, **save_args) -> None:
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, **save_args)


# ---------------------------------------------------------------- per-image metrics

def test_mse_psnr_l2_match_direct_formulas():
    x, y = image_pairs(0, 3, 40, 48)
    a, b = x.double().numpy(), y.double().numpy()
    expected_mse = ((a - b) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(mse(x, y).numpy(), expected_mse, rtol=1e-12)
    np.testing.assert_allclose(psnr(x, y).numpy(), 10 * np.log10(1.0 / (expected_mse + 1e-10)), rtol=1e-12)
    np.testing.assert_allclose(l2(x, y).numpy(), np.sqrt(((a - b) ** 2).sum(axis=(1, 2, 3))), rtol=1e-12)
    assert float(l2(x[0], y[0])) == pytest.approx(float(np.sqrt(((a[0] - b[0]) ** 2).sum())), rel=1e-12)
    assert float(psnr(x[0], x[0])) == pytest.approx(100.0)  # 10 log10(1 / 1e-10)


def test_ssim_matches_gaussian_window_formula():
    x, y = image_pairs(1, 3, 48, 40)
    expected = [ssim_reference(a, b)[0].mean() for a, b in zip(x.double().numpy(), y.double().numpy())]
    assert 0.05 < min(expected) and max(expected) < 0.95  # a meaningful range, not ~0 or ~1
    np.testing.assert_allclose(ssim(x, y).numpy(), expected, atol=2e-6)


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    x, y = image_pairs(2, 2, 64, 56)
    for a, b, ours in zip(x.double().numpy(), y.double().numpy(), ssim(x, y).numpy()):
        theirs = metrics.structural_similarity(a, b, channel_axis=0, data_range=1.0, gaussian_weights=True,
                                               sigma=1.5, use_sample_covariance=False)
        assert ours == pytest.approx(theirs, abs=2e-6)


def test_ms_ssim_matches_five_scale_formula():
    x, y = image_pairs(3, 2, 176, 192)
    expected = [ms_ssim_reference(a, b) for a, b in zip(x.double().numpy(), y.double().numpy())]
    np.testing.assert_allclose(ms_ssim(x, y).numpy(), expected, atol=2e-6)


def test_metric_inputs_are_checked():
    x, y = image_pairs(4, 1, 32, 32)
    with pytest.raises(ConfigError, match="same shape"):
        mse(x, y[:, :, :16])
    with pytest.raises(ConfigError, match="at least 161"):
        ms_ssim(x, y)


# ---------------------------------------------------------------- loading as the official code

def test_pair_metric_images_resize_shorter_side_to_256_bicubic(tmp_path):
    rng = np.random.default_rng(5)
    save_rgb(tmp_path / "wide.png", rng, 64, 96)
    Image.fromarray(rng.integers(0, 256, (256, 256), dtype=np.uint8)).save(tmp_path / "grey.png")
    wide = load_for_pair_metrics(tmp_path / "wide.png")
    assert wide.dtype == torch.float32 and tuple(wide.shape) == (3, 256, 384)  # int(256 * 96 / 64)
    np.testing.assert_allclose(wide.numpy(), official_pair_image(tmp_path / "wide.png"), atol=1e-7)
    grey = load_for_pair_metrics(tmp_path / "grey.png")  # already 256: not resampled; grey -> RGB
    raw = np.asarray(Image.open(tmp_path / "grey.png"), dtype=np.float64) / 255
    np.testing.assert_allclose(grey.numpy(), np.stack([raw] * 3), atol=1e-7)


def test_fid_images_load_as_the_official_transforms(tmp_path):
    rng = np.random.default_rng(6)
    save_rgb(tmp_path / "x.png", rng, 70, 90)
    pixels = np.asarray(Image.open(tmp_path / "x.png"), dtype=np.float32)
    plain = load_for_fid(tmp_path / "x.png", "pytorch-fid")
    np.testing.assert_array_equal(plain.numpy(), pixels.transpose(2, 0, 1) / np.float32(255))
    resized = Image.open(tmp_path / "x.png").resize((256, 256), Image.BILINEAR).resize((299, 299), Image.BILINEAR)
    unit = np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / np.float32(255)
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    np.testing.assert_allclose(load_for_fid(tmp_path / "x.png", "male2female").numpy(), (unit - mean) / std,
                               atol=1e-6)
    with pytest.raises(ConfigError, match="fid_preprocessing"):
        load_for_fid(tmp_path / "x.png", "cat2dog")


# ---------------------------------------------------------------- folders

def test_pairs_by_stem_across_extensions(tmp_path):
    rng = np.random.default_rng(7)
    (tmp_path / "t").mkdir(), (tmp_path / "s").mkdir()
    for name in ("b.png", "a.png"):
        save_rgb(tmp_path / "t" / name, rng, 8, 8)
    for name in ("a.jpg", "b.JPG", "aa.jpeg"):  # sorted: a, aa, b: pairing by position would be wrong
        save_rgb(tmp_path / "s" / name, rng, 8, 8, format="JPEG")
    (tmp_path / "s" / "notes.txt").write_text("not an image")
    pairing = pair_by_stem(tmp_path / "t", tmp_path / "s")
    assert [(p.stem, p.translated.name, p.source.name) for p in pairing.pairs] == [
        ("a", "a.png", "a.jpg"), ("b", "b.png", "b.JPG")]
    assert [p.name for p in pairing.untranslated_sources] == ["aa.jpeg"]


def test_folder_errors_name_the_problem(tmp_path):
    rng = np.random.default_rng(8)
    for folder in ("t", "s", "empty"):
        (tmp_path / folder).mkdir()
    save_rgb(tmp_path / "t" / "a.png", rng, 8, 8)
    save_rgb(tmp_path / "t" / "lonely.png", rng, 8, 8)
    save_rgb(tmp_path / "s" / "a.jpg", rng, 8, 8)
    with pytest.raises(ImageError, match="lonely.png"):
        pair_by_stem(tmp_path / "t", tmp_path / "s")
    with pytest.raises(ConfigError, match="not found"):
        pair_by_stem(tmp_path / "missing", tmp_path / "s")
    with pytest.raises(ImageError, match="no images"):
        list_images(tmp_path / "empty")
    save_rgb(tmp_path / "s" / "a.png", rng, 8, 8)
    (tmp_path / "t" / "lonely.png").unlink()
    with pytest.raises(ImageError, match="same stem"):
        pair_by_stem(tmp_path / "t", tmp_path / "s")


# ---------------------------------------------------------------- FID and KID arithmetic

def random_covariance(rng, d):
    a = rng.normal(size=(d, d + 3))
    return a @ a.T / (d + 3)


def test_frechet_distance_matches_eigen_formula():
    rng = np.random.default_rng(9)
    for d in (1, 6, 40):
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        s1, s2 = random_covariance(rng, d), random_covariance(rng, d)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_reference(mu1, s1, mu2, s2), rel=1e-8)
    # one dimension: (m1 - m2)^2 + (sd1 - sd2)^2
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]])) == \
        pytest.approx(9.0 + 1.0)
    s = random_covariance(rng, 5)
    assert frechet_distance(np.zeros(5), s, np.zeros(5), s) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_adds_eps_when_the_root_is_not_finite():
    nilpotent, identity = np.array([[0.0, 1.0], [0.0, 0.0]]), np.eye(2)  # sqrtm(nilpotent) is infinite
    with pytest.warns(RuntimeWarning, match="singular"):
        value = frechet_distance(np.zeros(2), nilpotent, np.zeros(2), identity, eps=1e-6)
    assert math.isfinite(value)
    from scipy.linalg import sqrtm
    offset = np.eye(2) * 1e-6
    expected = np.trace(nilpotent) + 2 - 2 * np.trace(sqrtm((nilpotent + offset) @ (identity + offset))).real
    assert value == pytest.approx(expected)
    with pytest.raises(ConfigError):
        frechet_distance(np.zeros(2), identity, np.zeros(3), np.eye(3))


def test_statistics_are_mean_and_unbiased_covariance():
    x = np.random.default_rng(10).normal(size=(7, 4))
    mu, sigma = statistics_from_features(x)
    centred = x - x.sum(axis=0) / 7
    np.testing.assert_allclose(mu, x.sum(axis=0) / 7, rtol=1e-12)
    np.testing.assert_allclose(sigma, centred.T @ centred / 6, rtol=1e-12)
    with pytest.raises(ImageError, match="at least 2"):
        statistics_from_features(x[:1])


def test_kid_matches_explicit_mmd():
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(6, 5)), rng.normal(0.5, 1.0, size=(6, 5))
    mean, std = kernel_inception_distance(x, y, num_subsets=3)  # subsets of 6 of 6: the whole sets
    assert mean == pytest.approx(mmd_reference(x, y), rel=1e-10) and std == pytest.approx(0.0, abs=1e-12)
    big_x, big_y = rng.normal(size=(40, 5)), rng.normal(size=(30, 5))
    mean, std = kernel_inception_distance(big_x, big_y, num_subsets=20, subset_size=10, seed=1)
    assert std > 0 and kernel_inception_distance(big_x, big_y, num_subsets=20, subset_size=10, seed=1)[0] == mean
    with pytest.raises(ImageError):
        kernel_inception_distance(x[:1], y)


def test_statistics_files(tmp_path):
    mu, sigma = np.arange(3.0), np.eye(3) * 2
    save_statistics(tmp_path / "stats.npz", mu, sigma)
    loaded = load_statistics(tmp_path / "stats.npz")
    np.testing.assert_array_equal(loaded[0], mu)
    np.testing.assert_array_equal(loaded[1], sigma)
    np.savez(tmp_path / "no_sigma.npz", mu=mu)
    np.save(tmp_path / "array.npy", mu)
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    np.savez(tmp_path / "shapes.npz", mu=mu, sigma=np.eye(2))
    for name, message in [("missing.npz", "not found"), ("no_sigma.npz", "sigma"), ("array.npy", "single array"),
                          ("junk.npz", "not a readable"), ("shapes.npz", r"sigma \[D, D\]")]:
        with pytest.raises(ConfigError, match=message):
            load_statistics(tmp_path / name)


# ---------------------------------------------------------------- the FID Inception network

def he_initialised_inception(seed: int = 0) -> FIDInceptionV3:
    """Random weights that keep activations at a usable scale (BN is the identity in eval mode)."""
    torch.manual_seed(seed)
    model = FIDInceptionV3()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.normal_(0.0, math.sqrt(2.0 / module.weight[0].numel()))
    return model.eval()


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inception") / FID_WEIGHTS_FILE
    torch.save(he_initialised_inception().state_dict(), path)
    return path


@pytest.fixture(scope="session")
def fid_model(inception_weights) -> FIDInceptionV3:
    return load_fid_inception(inception_weights)


def test_state_dict_has_the_layout_of_the_pytorch_fid_weight_file():
    facts = json.loads((DATA / "fid_inception_state_dict.json").read_text())
    state = FIDInceptionV3().state_dict()
    assert [[k, list(v.shape)] for k, v in state.items()] == facts["entries"]
    assert sum(v.numel() for k, v in state.items() if not k.endswith(("running_mean", "running_var",
                                                                       "num_batches_tracked"))) \
        == facts["num_parameters"] == sum(p.numel() for p in FIDInceptionV3().parameters())
    assert facts["file_name"] == FID_WEIGHTS_FILE


def test_weights_reload_strictly(inception_weights, fid_model, tmp_path):
    saved = torch.load(inception_weights, map_location="cpu", weights_only=True)
    loaded = fid_model.state_dict()
    assert list(loaded) == list(saved) and all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert not fid_model.training and not any(p.requires_grad for p in fid_model.parameters())
    without_counters = {k: v for k, v in saved.items() if not k.endswith("num_batches_tracked")}
    torch.save(without_counters, tmp_path / "no_counters.pth")
    reloaded = load_fid_inception(tmp_path / "no_counters.pth")
    assert torch.equal(reloaded.Mixed_7c.branch_pool.conv.weight, saved["Mixed_7c.branch_pool.conv.weight"])
    broken = dict(saved)
    broken.pop("fc.bias")
    broken["Mixed_5b.branch_pool.conv.weight"] = torch.zeros(31, 192, 1, 1)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(CheckpointMismatchError, match="fc.bias"):
        load_fid_inception(tmp_path / "broken.pth")


def test_missing_weights_name_the_file_to_get(tmp_path, monkeypatch):
    with pytest.raises(CheckpointNotFoundError, match="pt_inception-2015-12-05") as raised:
        load_fid_inception(tmp_path / "nowhere.pth")
    assert "github.com/mseitzer/pytorch-fid/releases" in str(raised.value)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(EgsdeError, match="pt_inception-2015-12-05"):
        load_fid_inception(None)


def test_every_layer_but_fc_shapes_the_pool3_features():
    model = he_initialised_inception(1)
    model.resize_input = False  # 75x75, the smallest input, keeps this fast
    model.requires_grad_(True)
    features = model(torch.rand(2, 3, 75, 75))
    assert tuple(features.shape) == (2, 2048)
    features.square().sum().backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert unused == ["fc.weight", "fc.bias"]


def test_pooling_branches_follow_tensorflow():
    """Mixed_5b..7b average without counting padding; Mixed_7c takes the max (pytorch-fid patches)."""
    model = he_initialised_inception(2)
    x = torch.rand(1, 2048, 8, 8)
    with torch.no_grad():
        e2 = model.Mixed_7c(x)[:, -192:]
        assert torch.allclose(e2, model.Mixed_7c.branch_pool(F.max_pool2d(x, 3, 1, 1)))
        x7b = x[:, :1280]
        e1 = model.Mixed_7b(x7b)[:, -192:]
        tf_avg = F.avg_pool2d(x7b, 3, 1, 1, count_include_pad=False)
        assert torch.allclose(e1, model.Mixed_7b.branch_pool(tf_avg))
        assert not torch.allclose(e1, model.Mixed_7b.branch_pool(F.avg_pool2d(x7b, 3, 1, 1)))
        ones = torch.ones(1, 192, 6, 6)  # a constant input stays constant when padding is not counted
        pooled = model.Mixed_5b(ones)[:, -32:]
        assert torch.allclose(pooled, pooled[:, :, :1, :1].expand_as(pooled))
        ones = torch.ones(1, 768, 6, 6)
        pooled = model.Mixed_6b(ones)[:, -192:]
        assert torch.allclose(pooled, pooled[:, :, :1, :1].expand_as(pooled))


# ---------------------------------------------------------------- the whole evaluation

@pytest.fixture()
def folders(tmp_path):
    rng = np.random.default_rng(12)
    paths = {name: tmp_path / name for name in ("translated", "source", "target")}
    for path in paths.values():
        path.mkdir()
    for stem in ("cat_1", "cat_2"):
        save_rgb(paths["source"] / f"{stem}.jpg", rng, 48, 48, format="JPEG", quality=95)
        source = np.asarray(Image.open(paths["source"] / f"{stem}.jpg"), dtype=np.float64)
        translated = np.clip(source + rng.normal(0, 40, source.shape), 0, 255).astype(np.uint8)
        Image.fromarray(translated).save(paths["translated"] / f"{stem}.png")
    save_rgb(paths["source"] / "cat_3.jpg", rng, 48, 48, format="JPEG")  # not translated
    for i in range(2):
        save_rgb(paths["target"] / f"dog_{i}.png", rng, 40, 56)
    return paths


def recording_fid(monkeypatch) -> list:
    """Replace evaluate_folders' Fréchet distance (a 2048x2048 sqrtm: minutes on a small CPU; tested on
    small matrices above) by a recorder of its arguments that returns 12.5."""
    calls = []

    def record(*args, **kwargs):
        calls.append(args)
        return 12.5

    monkeypatch.setattr(protocol, "frechet_distance", record)
    return calls


def test_evaluate_folders_end_to_end(folders, inception_weights, fid_model, monkeypatch):
    features = []

    def recording(*args, **kwargs):
        features.append(inception_features(*args, **kwargs))
        return features[-1]

    monkeypatch.setattr(protocol, "inception_features", recording)
    fid_calls = recording_fid(monkeypatch)
    lines = []
    result = evaluate_folders(folders["translated"], folders["source"], target=folders["target"],
                              inception_weights=inception_weights, batch_size=4, log=lines.append)
    json.dumps(result)
    assert result["num_pairs"] == 2 and result["num_untranslated_sources"] == 1 and result["num_target"] == 2
    assert [row["stem"] for row in result["per_image"]] == ["cat_1", "cat_2"]
    for row in result["per_image"]:
        a, b = official_pair_image(Path(row["translated"])), official_pair_image(Path(row["source"]))
        assert row["mse"] == pytest.approx(((a - b) ** 2).mean(), rel=1e-6)
        assert row["psnr"] == pytest.approx(10 * np.log10(1 / (((a - b) ** 2).mean() + 1e-10)), rel=1e-6)
        assert row["l2"] == pytest.approx(np.sqrt(((a - b) ** 2).sum()), rel=1e-6)
        assert row["ssim"] == pytest.approx(ssim_reference(a, b)[0].mean(), abs=2e-6)
        assert row["ms_ssim"] == pytest.approx(ms_ssim_reference(a, b), abs=2e-6)
    for name in ("l2", "mse", "psnr", "ssim", "ms_ssim"):
        assert result["means"][name] == pytest.approx(np.mean([row[name] for row in result["per_image"]]))

    # Inception features of the files as the official code computes them, then FID of their statistics
    translated_features, target_features = features
    assert translated_features.shape == (2, 2048) and np.isfinite(translated_features).all()
    first = np.asarray(Image.open(folders["translated"] / "cat_1.png"), dtype=np.float32) / 255
    first = F.interpolate(torch.from_numpy(first).permute(2, 0, 1)[None], size=(299, 299), mode="bilinear",
                          align_corners=False)
    bare = FIDInceptionV3(resize_input=False, normalize_input=False).eval()  # the layers alone
    bare.load_state_dict(fid_model.state_dict())
    with torch.no_grad():
        direct = bare(2 * first - 1)[0].double().numpy()
    np.testing.assert_allclose(translated_features[0], direct, rtol=1e-4, atol=1e-6 * np.abs(direct).max())
    [(mu1, s1, mu2, s2)] = fid_calls  # translated first, target second, as the official code
    np.testing.assert_allclose(mu1, translated_features.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(s1, np.cov(translated_features.T), rtol=1e-12)
    np.testing.assert_allclose(mu2, target_features.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(s2, np.cov(target_features.T), rtol=1e-12)
    assert result["fid"] == 12.5
    assert result["kid"] == pytest.approx(mmd_reference(translated_features, target_features), rel=1e-9)
    mu_target, sigma_target = folder_statistics(folders["target"], inception_weights=inception_weights)
    np.testing.assert_allclose(mu_target, mu2, rtol=1e-5, atol=1e-7 * np.abs(mu2).max())
    np.testing.assert_allclose(sigma_target, s2, rtol=1e-4, atol=1e-6 * np.abs(s2).max())

    table = format_table(result)
    for label in ("FID", "KID", "L2", "PSNR", "SSIM", "MS-SSIM", "MSE", "(2 images)", "without a translation"):
        assert label in table
    assert any("Inception features (target): 2/2" in line for line in lines)


def test_evaluate_folders_against_statistics_and_without_target(folders, inception_weights, tmp_path,
                                                                monkeypatch):
    fake = np.random.default_rng(13).normal(size=(2, 2048))
    monkeypatch.setattr(protocol, "inception_features", lambda *args, **kwargs: fake)
    fid_calls = recording_fid(monkeypatch)
    mu, sigma = np.full(2048, 0.5), np.eye(2048)
    save_statistics(tmp_path / "target.npz", mu, sigma)
    result = evaluate_folders(folders["translated"], folders["source"], target_stats=tmp_path / "target.npz",
                              inception_weights=inception_weights)
    [(_, s1, mu2, s2)] = fid_calls
    np.testing.assert_allclose(s1, np.cov(fake.T))
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(s2, sigma)
    assert result["fid"] == 12.5 and result["kid"] is None and result["num_target"] is None
    plain = evaluate_folders(folders["translated"], folders["source"])
    assert plain["fid"] is None and plain["means"] == result["means"]
    assert "give a target folder" in format_table(plain)


def test_evaluate_folders_fails_fast_on_user_errors(folders, tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("reached the slow work")

    monkeypatch.setattr(protocol, "_pair_values", never)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(CheckpointNotFoundError, match="pt_inception-2015-12-05"):
        evaluate_folders(folders["translated"], folders["source"], target=folders["target"])
    with pytest.raises(ConfigError, match="not both"):
        evaluate_folders(folders["translated"], folders["source"], target=folders["target"],
                         target_stats=tmp_path / "x.npz")
    save_statistics(tmp_path / "small.npz", np.zeros(64), np.eye(64))
    with pytest.raises(ConfigError, match="2048"):
        evaluate_folders(folders["translated"], folders["source"], target_stats=tmp_path / "small.npz")
    with pytest.raises(ConfigError, match="not found"):
        evaluate_folders(folders["translated"], folders["source"], target=tmp_path / "no_such_dir")


def test_translated_images_must_keep_the_source_aspect(tmp_path):
    rng = np.random.default_rng(14)
    (tmp_path / "t").mkdir(), (tmp_path / "s").mkdir()
    save_rgb(tmp_path / "t" / "a.png", rng, 32, 32)
    save_rgb(tmp_path / "s" / "a.jpg", rng, 32, 48, format="JPEG")
    with pytest.raises(ImageError, match="aspect ratio"):
        evaluate_folders(tmp_path / "t", tmp_path / "s")


def test_fid_module_reexports_the_network():
    assert fid_module.FIDInceptionV3 is FIDInceptionV3 and fid_module.load_fid_inception is load_fid_inception
