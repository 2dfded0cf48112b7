"""How the official evaluation code turns an image file into a tensor, per metric.

L2, MSE, PSNR, SSIM, MS-SSIM (official ``tool/mse_psnr_ssim_mssim.py`` and ``eval_score.py``):
``Image.open(path).convert("RGB")``, torchvision ``Resize(256, interpolation=BICUBIC)`` (the
shorter side to 256 with PIL's bicubic filter, the longer to ``int(256 * long / short)``; an image
whose shorter side is already 256 is left untouched), then ``ToTensor()``: float32 in [0, 1] as
``uint8 / 255``. Both images of a pair are loaded this way. (The official L2 skips
``convert("RGB")``; it is the same for RGB files, and egsde-rt converts so grey or RGBA files work.)

FID (official ``tool/fid.py``, a copy of pytorch-fid with a per-task transform), two variants:

- ``"pytorch-fid"`` (the official cat2dog and wild2dog, and plain pytorch-fid): ``ToTensor()`` at
  the file's own size; the Inception network then resizes to 299x299 with
  ``F.interpolate(bilinear, align_corners=False)`` (no antialiasing) and maps [0, 1] to [-1, 1].
- ``"male2female"`` (the official male2female): PIL bilinear resize to 256x256, then to 299x299,
  ``ToTensor()``, then ImageNet ``Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224,
  0.225))``; the Inception network's own 2x - 1 is still applied on top (the official code
  normalises twice; reproduced as is, so its numbers can be compared).

``resize_shorter_side`` and ``load_image`` are those of ``egsde_rt.images``, which implement the same
torchvision ``Resize`` and ``convert("RGB")``.
"""

from __future__ import annotations

import os
from typing import Union

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError
from ..images import load_image, resize_shorter_side

PathLike = Union[str, os.PathLike]

METRIC_SHORT_SIDE = 256
FID_PREPROCESSINGS = ("pytorch-fid", "male2female")
MALE2FEMALE_SIZES = (256, 299)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_unit_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as torchvision's ``ToTensor()`` gives it: float32 [3, H, W], ``uint8 / 255``."""
    array = np.array(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8, copy=True)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous().to(torch.float32).div(255)


def load_for_pair_metrics(path: PathLike, short_side: int = METRIC_SHORT_SIDE) -> torch.Tensor:
    """One image for L2 / MSE / PSNR / SSIM / MS-SSIM: RGB, shorter side to 256 (bicubic), [0, 1]."""
    return to_unit_tensor(resize_shorter_side(load_image(path), short_side))


def check_fid_preprocessing(name: str) -> str:
    if name not in FID_PREPROCESSINGS:
        raise ConfigError(
            f"fid_preprocessing must be one of {FID_PREPROCESSINGS} ('pytorch-fid' as the official "
            f"cat2dog / wild2dog, 'male2female' as the official male2female), got {name!r}"
        )
    return name


def load_for_fid(path: PathLike, preprocessing: str = "pytorch-fid") -> torch.Tensor:
    """One image as the official FID code feeds it to the Inception network (float32 [3, H, W])."""
    check_fid_preprocessing(preprocessing)
    image = load_image(path)
    if preprocessing == "pytorch-fid":
        return to_unit_tensor(image)
    for size in MALE2FEMALE_SIZES:
        image = image.resize((size, size), Image.BILINEAR)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    return (to_unit_tensor(image) - mean) / std
