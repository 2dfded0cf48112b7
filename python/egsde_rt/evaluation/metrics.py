"""Per-image similarity between a translated image and its source, as the official EGSDE code.

Inputs are float tensors in [0, 1] (the official ``ToTensor()`` range, see ``preprocessing``),
shaped [N, C, H, W] (one value per image, shape [N]) or [C, H, W] (a 0-d tensor). The official
scripts average the per-image values over the images of a folder.

- ``l2``: ``torch.norm(x - y, p=2)`` of one image: the square root of the sum over C, H, W of the
  squared differences, on the [0, 1] scale (official ``calculate_l2_given_paths``). Summed in float64:
  the official float32 sum of ~200k terms carries a rounding error of up to ~1e-4 relative that
  depends on the torch version's reduction kernel; float64 gives the exact norm of the same tensors.
- ``mse``: the mean over C, H, W of the squared difference, in float64 (official ``mse``).
- ``psnr``: ``10 log10(data_range^2 / (mse + 1e-10))``, float64, ``data_range`` 1 (official ``psnr``).
- ``ssim``: Gaussian-window SSIM (11 taps, sigma 1.5, K = (0.01, 0.03), ``data_range`` 1, valid
  convolution without padding), the mean of the SSIM map per channel, then over channels, float32.
- ``ms_ssim``: five-scale MS-SSIM (weights 0.0448, 0.2856, 0.3001, 0.2363, 0.1333; 2x2 average
  pooling between scales), same window and constants; the shorter side must exceed 160 pixels.

The official SSIM and MS-SSIM are a copy of ``pytorch_msssim`` (``ssim(..., data_range=1,
size_average=False)``); egsde-rt calls that library (a dependency of egsde-rt), which gives the same
float32 numbers (a dependency of egsde-rt: the demo uses it too).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..errors import ConfigError, EgsdeError

PSNR_EPS = 1e-10  # added to the MSE, as the official psnr
MS_SSIM_MIN_SIDE = 161  # pytorch_msssim needs the shorter side > (11 - 1) * 2**4


def _as_batch(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ConfigError(f"images must be torch tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.shape != y.shape:
        raise ConfigError(f"images must have the same shape, got {list(x.shape)} and {list(y.shape)}")
    if x.ndim == 3:
        return x.unsqueeze(0), y.unsqueeze(0), True
    if x.ndim != 4:
        raise ConfigError(f"images must be [C, H, W] or [N, C, H, W] tensors, got shape {list(x.shape)}")
    return x, y, False


def _result(values: torch.Tensor, single: bool) -> torch.Tensor:
    return values[0] if single else values


def _pytorch_msssim():
    try:
        import pytorch_msssim
    except ImportError:
        raise EgsdeError(
            "SSIM and MS-SSIM need the pytorch-msssim package (a dependency of egsde-rt): "
            "pip install pytorch-msssim"
        ) from None
    return pytorch_msssim


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared difference per image, float64."""
    x, y, single = _as_batch(x, y)
    return _result((x.double() - y.double()).pow(2).mean(dim=(1, 2, 3)), single)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, float64 (identical images give 100 dB)."""
    x, y, single = _as_batch(x, y)
    error = (x.double() - y.double()).pow(2).mean(dim=(1, 2, 3))
    return _result(10.0 * torch.log10(data_range ** 2 / (error + PSNR_EPS)), single)


def l2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of the difference per image (all of C, H, W), float64."""
    x, y, single = _as_batch(x, y)
    return _result(torch.linalg.vector_norm((x.double() - y.double()).flatten(1), ord=2, dim=1), single)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity per image (Gaussian window 11, sigma 1.5, no padding)."""
    x, y, single = _as_batch(x, y)
    with torch.no_grad():
        values = _pytorch_msssim().ssim(x, y, data_range=data_range, size_average=False)
    return _result(values, single)


def ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Multi-scale structural similarity per image (5 scales); the shorter side must exceed 160."""
    x, y, single = _as_batch(x, y)
    if min(x.shape[-2:]) < MS_SSIM_MIN_SIDE:
        raise ConfigError(
            f"MS-SSIM needs images whose shorter side is at least {MS_SSIM_MIN_SIDE} pixels "
            f"(4 halvings of an 11-pixel window), got {list(x.shape[-2:])}"
        )
    with torch.no_grad():
        values = _pytorch_msssim().ms_ssim(x, y, data_range=data_range, size_average=False)
    return _result(values, single)


PAIR_METRICS = {"l2": l2, "mse": mse, "psnr": psnr, "ssim": ssim, "ms_ssim": ms_ssim}


def pair_metrics(translated: torch.Tensor, source: torch.Tensor) -> dict[str, Optional[float]]:
    """All five metrics of one [C, H, W] pair (in [0, 1]) as Python floats.

    MS-SSIM is ``None`` when the shorter side is 160 pixels or less.
    """
    values: dict[str, Optional[float]] = {}
    for name, metric in PAIR_METRICS.items():
        if name == "ms_ssim" and min(translated.shape[-2:]) < MS_SSIM_MIN_SIDE:
            values[name] = None
            continue
        values[name] = float(metric(translated, source))
    return values
