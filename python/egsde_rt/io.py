"""Images in and out: validate, convert to RGB, resize as the original, to [-1, 1] and back.

Loading follows the official data pipeline: ``Image.open(path).convert("RGB")``, the shorter
side resized to ``image_size`` with PIL's bicubic filter (the long side to
``int(image_size * long / short)``, as torchvision's ``Resize``), to [0, 1], then ``2x - 1``.
Non-square inputs are then center-cropped to a square (the original has no crop and cannot
batch them); a ``CenterCropWarning`` says so. Results go back with ``clamp((y + 1) / 2, 0, 1)``
and 8-bit rounding ``floor(255 v + 0.5)``.
"""

from __future__ import annotations

import os
import warnings
from io import BytesIO
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import ConfigError, ImageError

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")


class CenterCropWarning(UserWarning):
    """A non-square image was center-cropped to a square."""


def load_image(src: ImageInput) -> Image.Image:
    """An RGB PIL image from a path, a PIL image, or an HxW / HxWx{1,3,4} uint8 or float array
    (floats in [0, 1]). Alpha is dropped, as ``convert("RGB")`` does."""
    if isinstance(src, (str, os.PathLike)):
        return _open_path(Path(src))
    if isinstance(src, Image.Image):
        return to_rgb(src, "the image")
    if isinstance(src, np.ndarray):
        return _from_array(src)
    raise ImageError(
        f"unsupported image input of type {type(src).__name__}: give a path, a PIL image or an HxWx3 array"
    )


def _open_path(path: Path) -> Image.Image:
    if not path.is_file():
        raise ImageError(f"image not found: {path}")
    return _decode(path, str(path))


def decode_image_bytes(data: bytes, name: str = "the uploaded image") -> Image.Image:
    """An RGB PIL image from the bytes of an image file (an upload), with the file checks of
    ``load_image``: empty, truncated, non-image data and decompression bombs are ``ImageError``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageError(f"{name}: expected the bytes of an image file, got {type(data).__name__}")
    if len(data) == 0:
        raise ImageError(f"{name}: empty (no image data)")
    return _decode(BytesIO(bytes(data)), name)


def _decode(source, name: str) -> Image.Image:
    try:
        with Image.open(source) as img:
            img.load()
            return to_rgb(img, name)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file PIL can read") from None
    except Image.DecompressionBombError as err:
        raise ImageError(f"{name}: refused as a possible decompression bomb ({err}); if the image is genuine, "
                         "raise PIL.Image.MAX_IMAGE_PIXELS") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{name}: corrupt or truncated image: {err}") from None


def to_rgb(img: Image.Image, name: str) -> Image.Image:
    """8-bit RGB, as the official ``convert("RGB")`` for 8-bit modes (grayscale, palette, RGBA,
    CMYK, ...). Wide modes, which ``convert`` would clip rather than scale, are scaled: 16-bit
    integers (``I;16*``, and ``I`` with values in 0..65535) by 255/65535; 32-bit floats (``F``)
    must lie in [0, 1]."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I"):
        values = np.asarray(img, dtype=np.float64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageError(f"{name}: integer image values must lie in 0..65535 (16-bit), got "
                             f"[{values.min():.0f}, {values.max():.0f}]; convert it to 8 or 16 bits first")
        return Image.fromarray(to_uint8(values / 65535.0)).convert("RGB")
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if not np.isfinite(values).all() or (values.size and (values.min() < 0.0 or values.max() > 1.0)):
            raise ImageError(f"{name}: floating-point images must hold finite values in [0, 1]; convert it to "
                             "8 or 16 bits first")
        return Image.fromarray(to_uint8(values)).convert("RGB")
    return img.convert("RGB")


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ImageError(f"image array must be HxW or HxWx3 (or x1, x4), got shape {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageError(f"image array is empty: shape {array.shape}")
    if array.dtype == np.uint8:
        pass
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageError("image array contains NaN or infinite values")
        if array.min() < 0.0 or array.max() > 1.0:
            raise ImageError(
                f"float image arrays must lie in [0, 1], got [{array.min():.4g}, {array.max():.4g}]"
            )
        array = to_uint8(array)
    else:
        raise ImageError(f"image arrays must be uint8 or float in [0, 1], got dtype {array.dtype}")
    img = Image.fromarray(np.ascontiguousarray(array))
    return img.convert("RGB")


def resize_shorter_side(img: Image.Image, image_size: int) -> Image.Image:
    """Shorter side to ``image_size`` with bicubic, as torchvision ``Resize(image_size)``."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    if short == image_size:
        return img
    new_long = int(image_size * long / short)
    size = (image_size, new_long) if w <= h else (new_long, image_size)
    return img.resize(size, Image.BICUBIC)


def center_crop(img: Image.Image, image_size: int) -> Image.Image:
    w, h = img.size
    left, top = (w - image_size) // 2, (h - image_size) // 2
    return img.crop((left, top, left + image_size, top + image_size))


def image_to_tensor(src: ImageInput, image_size: int) -> torch.Tensor:
    """One image as a float32 [3, image_size, image_size] tensor in [-1, 1]."""
    img = load_image(src)
    original = img.size
    img = resize_shorter_side(img, image_size)
    if img.size != (image_size, image_size):
        warnings.warn(
            f"image of {original[0]}x{original[1]} is not square: resized to {img.size[0]}x{img.size[1]} "
            f"and center-cropped to {image_size}x{image_size}", CenterCropWarning, stacklevel=2,
        )
        img = center_crop(img, image_size)
    array = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous() * 2.0 - 1.0


def images_to_batch(sources, image_size: int) -> torch.Tensor:
    """A list of images (or one) as a float32 [B, 3, S, S] tensor in [-1, 1]."""
    if not isinstance(sources, (list, tuple)):
        sources = [sources]
    if not sources:
        raise ImageError("no images given")
    return torch.stack([image_to_tensor(s, image_size) for s in sources])


SOURCE_DTYPES = (np.float16, np.float32, np.float64)


def source_from_numpy(x0: np.ndarray) -> torch.Tensor:
    """A numpy source batch as a tensor: float16, 32 or 64, any strides (a flipped view such as
    ``x[..., ::-1]`` is copied, since torch cannot view negative strides)."""
    if x0.dtype not in SOURCE_DTYPES:
        raise ConfigError(f"x0 must be a float array in [-1, 1] (float16, float32 or float64), got dtype {x0.dtype}")
    return torch.from_numpy(np.ascontiguousarray(x0))


def check_source(x0: torch.Tensor) -> None:
    """A source batch must be a finite float [B, 3, H, W] tensor of at least one image (values
    nominally in [-1, 1])."""
    if not isinstance(x0, torch.Tensor):
        raise ConfigError(f"x0 must be a torch.Tensor or a numpy array, got {type(x0).__name__}")
    if x0.ndim != 4 or x0.shape[1] != 3:
        raise ConfigError(f"x0 must have shape [B, 3, H, W], got {list(x0.shape)}")
    if x0.shape[0] == 0:
        raise ConfigError("x0 holds no images (B = 0): pass at least one")
    if not x0.is_floating_point():
        raise ConfigError(f"x0 must be a float tensor in [-1, 1], got {x0.dtype}")
    if not torch.isfinite(x0).all():
        raise ConfigError("x0 contains NaN or infinite values")


def to_uint8(values01: np.ndarray) -> np.ndarray:
    """[0, 1] floats to 8-bit with rounding: floor(255 v + 0.5), clamped."""
    return np.clip(np.floor(255.0 * np.asarray(values01, dtype=np.float64) + 0.5), 0, 255).astype(np.uint8)


def tensor_to_images(y: torch.Tensor) -> list[Image.Image]:
    """Unclamped results [B, 3, H, W] to PIL images: clamp((y + 1) / 2, 0, 1), 8-bit rounding."""
    if y.ndim != 4 or y.shape[1] != 3:
        raise ImageError(f"results must have shape [B, 3, H, W], got {list(y.shape)}")
    y = y.detach().float().cpu()
    if not torch.isfinite(y).all():
        raise ImageError("the result contains NaN or infinite values (diverged sampling?)")
    values = torch.clamp((y + 1.0) / 2.0, 0.0, 1.0).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(to_uint8(v)) for v in values]


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder``, sorted, by extension (case-insensitive)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"not a folder: {folder}")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
