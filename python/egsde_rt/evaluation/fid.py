"""FID (as pytorch-fid and the official EGSDE code) and KID from Inception pool3 features.

Statistics (pytorch-fid ``calculate_activation_statistics``): the 2048 pool3 features of each image
(float32 from the network, stored as float64), ``mu = mean(axis=0)``, ``sigma = np.cov(rowvar=
False)`` (unbiased, N - 1). Images go through the network in batches of ``batch_size``; each image is
first loaded as the official code does (``preprocessing.load_for_fid``) and resized to 299x299 on
its own, on ``device``, with the network's bilinear resize, so folders of mixed sizes batch (the
official DataLoader cannot stack them). Batching changes nothing but float rounding.

Fréchet distance (pytorch-fid ``calculate_frechet_distance``): ``|mu1 - mu2|^2 + tr(sigma1) +
tr(sigma2) - 2 tr(sqrtm(sigma1 sigma2))`` with ``scipy.linalg.sqrtm`` (called without ``disp``,
deprecated since SciPy 1.16; the root is the same); when the square root is not finite, ``eps``
(1e-6) is added to both diagonals and it is taken again; an imaginary part is dropped when the
diagonal's is within 1e-3 of zero, and an error otherwise. The official code passes the translated
statistics first and the target's second; so does ``evaluate_folders``. The 2048x2048 square root
takes seconds to a minute or more on a small CPU.

Statistics files (``load_statistics``/``save_statistics``): an ``.npz`` with ``mu`` and ``sigma``, as
``pytorch-fid --save-stats`` writes and the official code reads.

KID (not in the official EGSDE evaluation; Bińkowski et al. 2018, as torch-fidelity and clean-fid
compute it): the unbiased MMD^2 with the cubic polynomial kernel ``k(a, b) = (a.b / d + 1)^3``,
averaged over ``num_subsets`` random subsets of ``min(subset_size, n1, n2)`` features drawn without
replacement from each side; returns the mean and standard deviation over subsets.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, EgsdeError, ImageError
from .inception import FID_FEATURE_DIM, FID_INPUT_SIZE, FIDInceptionV3, load_fid_inception
from .preprocessing import check_fid_preprocessing, load_for_fid

PathLike = Union[str, os.PathLike]
Images = Union[Sequence[PathLike], Sequence[torch.Tensor], torch.Tensor]

__all__ = [
    "FIDInceptionV3", "load_fid_inception", "inception_features", "statistics_from_features",
    "activation_statistics", "frechet_distance", "kernel_inception_distance", "load_statistics",
    "save_statistics", "FrechetDistanceError",
]


class FrechetDistanceError(EgsdeError, ValueError):
    """The matrix square root in the Fréchet distance has a large imaginary part."""


def _image_tensor(item, preprocessing: str) -> torch.Tensor:
    if isinstance(item, torch.Tensor):
        tensor = item
    else:
        tensor = load_for_fid(item, preprocessing)
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ImageError(f"FID images must be [3, H, W] tensors, got shape {list(tensor.shape)}")
    return tensor.to(torch.float32)


def _to_input_size(tensor: torch.Tensor) -> torch.Tensor:
    batch = tensor.unsqueeze(0)
    if tuple(batch.shape[-2:]) != (FID_INPUT_SIZE, FID_INPUT_SIZE):
        batch = F.interpolate(batch, size=(FID_INPUT_SIZE, FID_INPUT_SIZE), mode="bilinear", align_corners=False)
    return batch[0]


def inception_features(images: Images, model: FIDInceptionV3, batch_size: int = 50,
                       device: Union[str, torch.device] = "cpu", preprocessing: str = "pytorch-fid",
                       progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
    """Pool3 features [N, 2048] (float64) of image files, or of [3, H, W] / [N, 3, H, W] tensors.

    Files are loaded with ``load_for_fid(path, preprocessing)``; tensors are taken as that loader's
    output (for ``"pytorch-fid"``: RGB in [0, 1]). ``progress(done, total)`` is called per batch.
    """
    check_fid_preprocessing(preprocessing)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    items = list(images.unbind(0)) if isinstance(images, torch.Tensor) and images.ndim == 4 else list(images)
    if not items:
        raise ImageError("no images to compute Inception features of")
    features = np.empty((len(items), FID_FEATURE_DIM), dtype=np.float64)
    model = model.eval().to(device)
    with torch.inference_mode():
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            batch = torch.stack([_to_input_size(_image_tensor(item, preprocessing).to(device)) for item in chunk])
            out = model(batch)
            features[start:start + len(chunk)] = out.reshape(len(chunk), -1).double().cpu().numpy()
            if progress is not None:
                progress(start + len(chunk), len(items))
    return features


def statistics_from_features(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)``: the mean and the unbiased covariance (rows are samples); needs 2+ rows."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ImageError(
            f"FID statistics need the features of at least 2 images, got {features.shape[0] if features.ndim else 0}"
        )
    return np.mean(features, axis=0), np.cov(features, rowvar=False)


def activation_statistics(images: Images, model: FIDInceptionV3, batch_size: int = 50,
                          device: Union[str, torch.device] = "cpu",
                          preprocessing: str = "pytorch-fid") -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of the pool3 features of ``images`` (see ``inception_features``)."""
    return statistics_from_features(inception_features(images, model, batch_size, device, preprocessing))


def _scipy_linalg():
    try:
        from scipy import linalg
    except ImportError:
        raise EgsdeError("FID needs scipy: pip install 'egsde-rt[eval]' (or pip install scipy)") from None
    return linalg


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), as pytorch-fid."""
    linalg = _scipy_linalg()
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape:
        raise ConfigError(f"mean vectors differ in length: {mu1.shape} and {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ConfigError(
            f"covariances must be {mu1.shape[0]}x{mu1.shape[0]}, got {sigma1.shape} and {sigma2.shape}"
        )
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        warnings.warn(f"FID: singular covariance product; adding {eps} to the diagonals", RuntimeWarning,
                      stacklevel=2)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise FrechetDistanceError(
                f"FID: the matrix square root has an imaginary component of {np.max(np.abs(covmean.imag)):.3g} "
                f"(too few images for a 2048-dimensional covariance?)"
            )
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def kernel_inception_distance(features1: np.ndarray, features2: np.ndarray, *, num_subsets: int = 100,
                              subset_size: int = 1000, degree: int = 3, gamma: Optional[float] = None,
                              coef0: float = 1.0, seed: int = 0) -> tuple[float, float]:
    """KID ``(mean, std)`` over subsets: unbiased MMD^2, kernel ``(gamma a.b + coef0)^degree``.

    ``gamma`` defaults to 1 / feature dimension. Each subset draws ``min(subset_size, n1, n2)``
    rows without replacement from each side with ``numpy.random.default_rng(seed)``.
    """
    x = np.asarray(features1, dtype=np.float64)
    y = np.asarray(features2, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ConfigError(f"KID needs two [N, D] feature arrays of one D, got {x.shape} and {y.shape}")
    m = min(subset_size, x.shape[0], y.shape[0])
    if m < 2:
        raise ImageError(f"KID needs at least 2 images on each side, got {x.shape[0]} and {y.shape[0]}")
    if num_subsets < 1:
        raise ConfigError(f"num_subsets must be at least 1, got {num_subsets}")
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    rng = np.random.default_rng(seed)
    estimates = np.empty(num_subsets)
    for i in range(num_subsets):
        xs = x[rng.choice(x.shape[0], m, replace=False)]
        ys = y[rng.choice(y.shape[0], m, replace=False)]
        k_xx = (gamma * xs @ xs.T + coef0) ** degree
        k_yy = (gamma * ys @ ys.T + coef0) ** degree
        k_xy = (gamma * xs @ ys.T + coef0) ** degree
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        estimates[i] = within - 2.0 * k_xy.sum() / (m * m)
    return float(estimates.mean()), float(estimates.std())


def load_statistics(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` from an ``.npz`` with ``mu`` [D] and ``sigma`` [D, D] (pytorch-fid's format)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"FID statistics file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ConfigError(f"{path}: not a readable .npz statistics file: {err}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ConfigError(f"{path}: a single array, not an .npz archive of mu and sigma")
    with data:
        missing = [k for k in ("mu", "sigma") if k not in data.files]
        if missing:
            raise ConfigError(
                f"{path}: FID statistics need arrays 'mu' and 'sigma' (as pytorch-fid --save-stats "
                f"writes); missing {missing}, found {data.files}"
            )
        try:
            mu, sigma = np.asarray(data["mu"], dtype=np.float64), np.asarray(data["sigma"], dtype=np.float64)
        except (OSError, ValueError, EOFError) as err:
            raise ConfigError(f"{path}: unreadable mu or sigma: {err}") from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ConfigError(f"{path}: expected mu [D] and sigma [D, D], got {mu.shape} and {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ConfigError(f"{path}: mu or sigma holds NaN or infinite values")
    return mu, sigma


def save_statistics(path: PathLike, mu: np.ndarray, sigma: np.ndarray) -> None:
    """Write ``mu`` and ``sigma`` to an ``.npz`` (``np.savez_compressed``, as pytorch-fid)."""
    np.savez_compressed(path, mu=np.asarray(mu), sigma=np.asarray(sigma))
