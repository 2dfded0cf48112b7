"""Images in and out: decode safely, validate, convert to RGB, crop and resize, to [-1, 1] and back.

Loading follows the official data pipeline (``Image.open(path).convert("RGB")``, bicubic resize to
``image_size``, to [0, 1], then ``2x - 1``), with the decoding of untrusted files bounded:

- Only the formats that ``IMAGE_EXTENSIONS`` names are decoded (JPEG, PNG, PPM, BMP, TIFF, WebP;
  ``IMAGE_FORMATS`` maps each extension to its PIL format): PIL's other plugins are never tried,
  so an EPS file never reaches Ghostscript, and GIF, PSD, ICO, JPEG 2000, ... are an
  ``ImageError`` naming the format found. The content decides, not the extension. (Phone JPEGs
  that PIL reads as MPO come through the JPEG plugin and are accepted.)
- A file whose header declares more than ``max_pixels`` pixels is refused before its pixels are
  decoded (``max_pixels_for``: 4096 x 4096 for a 256-px engine). PIL's own guard
  (``PIL.Image.MAX_IMAGE_PIXELS``) still applies and is left as it is.
- The EXIF orientation is applied (``ImageOps.exif_transpose``), so a phone photo is translated
  upright. The official code ignores EXIF: it differs only for images with an orientation tag.
- Wide modes are scaled to 8 bits in bounded chunks (16-bit integers in exact integer
  arithmetic), never as a whole-image float64 copy.

A non-square image is center-cropped to a square **in source coordinates** (the shorter side's
length, offset ``(long - short) // 2``), and that square alone is resized to ``image_size`` x
``image_size`` with PIL's bicubic filter (``center_square``); a ``CenterCropWarning`` says so. So
no resize ever makes more than ``image_size`` x ``image_size`` pixels (a 1 x 65535 strip costs a
1 x 1 square, not a 256 x 16776960 intermediate). Square images give bit for bit what the
official pipeline (and the earlier resize-then-crop) gives. Non-square ones, which the official
code cannot batch, differ slightly from the earlier resize-then-crop: its crop fell on whole
resized pixels, this one falls on whole source pixels (on photos, a mean of 2 to 5 of 255 levels,
up to 70 at edges; where both fall on the same pixels, e.g. 96 x 48 to 32, only the 8-bit
rounding between PIL's two resize passes differs, at most a few levels).
With ``fit="pad"`` (``FITS``) nothing is cut: the image is resized whole, its longer side to
``image_size`` and its shorter side in proportion (``padded_square``), then padded to the square with
its edge pixels; ``Translator.run`` cuts the padding from the result, which keeps the input's aspect ratio.
Grayscale images are resized in one channel and converted to RGB after, which gives the same
bytes as converting first. Results go back with ``clamp((y + 1) / 2, 0, 1)`` and 8-bit rounding
``floor(255 v + 0.5)``.
"""

from __future__ import annotations

import os
import struct
import sys
import warnings
from functools import partial
from io import BytesIO
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from .errors import ConfigError, ImageError, ImageTooLargeError
from .method.settings import check_positive_int

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, bytes]

# The image files egsde-rt reads: extension -> PIL format. Only these formats are decoded.
IMAGE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".ppm": "PPM", ".bmp": "BMP",
                 ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}
IMAGE_EXTENSIONS = tuple(IMAGE_FORMATS)
DECODED_FORMATS = tuple(dict.fromkeys(IMAGE_FORMATS.values()))

# The pixel limit of decoding: a source may have up to 16 times the engine's side (256 times its
# pixels), and at least 2**20 pixels (1024 x 1024) for small engines.
MAX_PIXELS_PER_ENGINE_PIXEL = 256
MIN_MAX_PIXELS = 2**20
# The size of every preset's engine: the limit of calls that know no engine (``load_image``,
# ``decode_image_bytes``) is that of a 256-px engine.
DEFAULT_ENGINE_IMAGE_SIZE = 256

# Wide (16-bit, 32-bit) images are scaled to 8 bits this many pixels at a time.
_CHUNK_PIXELS = 2**18
UNSIGNED_16_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def max_pixels_for(image_size: int) -> int:
    """The default pixel limit of the files decoded for an engine of ``image_size``:
    ``max(2**20, 256 * image_size**2)``, 4096 x 4096 (16.8 Mpx) for a 256-px engine.

    Why: the source is cropped to a square and resized to ``image_size``, so pixels beyond a
    16-fold downscale add nothing to the translation, while each costs 4 bytes decoded (RGB):
    at 256 px the limit bounds a decode to 64 MiB and passes every phone photo (12 Mpx is
    4032 x 3024, 48 Mpx ones are refused: give them resized, or raise ``max_pixels``). The floor
    of 1024 x 1024 lets small (test) engines read ordinary images. PIL's default guard (89.5 Mpx,
    ``PIL.Image.MAX_IMAGE_PIXELS``) is 5 times this and acts at ``open`` only."""
    return max(MIN_MAX_PIXELS, MAX_PIXELS_PER_ENGINE_PIXEL * image_size * image_size)


DEFAULT_MAX_PIXELS = max_pixels_for(DEFAULT_ENGINE_IMAGE_SIZE)


def check_max_pixels(value, name: str = "max_pixels") -> int | None:
    """``value`` if it is None (the engine's default, ``max_pixels_for``) or a positive integer,
    else a ``ConfigError``."""
    if value is None:
        return None
    return check_positive_int(value, name, " (the most pixels a decoded image may have; None: the engine's default)")


class CenterCropWarning(UserWarning):
    """A non-square image was center-cropped to a square."""


# How an image becomes the engine's S x S square: "crop" its centre square (the default; the
# result is S x S) or "pad" it whole to the square (the result keeps the image's aspect ratio).
FITS = ("crop", "pad")
# A box (left, top, right, bottom) in the pixels of a result: the part of it that shows the image.
Box = tuple[int, int, int, int]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def check_fit(fit) -> str:
    """``fit`` if it is one of ``FITS``, else a ``ConfigError`` naming the choices."""
    if not isinstance(fit, str) or fit not in FITS:
        raise ConfigError(f"fit must be one of {', '.join(map(repr, FITS))} ('crop': the centre square, an S x S "
                          f"result; 'pad': the whole image, padded to the square, a result of its aspect ratio), "
                          f"got {fit!r}")
    return fit


def warn_at_caller(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` located at the first frame outside egsde_rt: the user's own line (their
    ``t.run(...)``), whichever path of the package led there (Python 3.12's ``skip_file_prefixes``)."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def load_image(src: ImageInput, max_pixels: int | None = None) -> Image.Image:
    """An RGB PIL image from a path, an image file's bytes, a PIL image, or an HxW / HxWx{1,3,4}
    uint8 or float array (floats in [0, 1]). Alpha is dropped, as ``convert("RGB")`` does; the
    EXIF orientation is applied. A file may have at most ``max_pixels`` pixels (None:
    ``DEFAULT_MAX_PIXELS``)."""
    return _rgb(_load_8bit(src, DEFAULT_MAX_PIXELS if max_pixels is None else check_max_pixels(max_pixels)))


def decode_image_bytes(data: bytes, name: str = "the uploaded image", max_pixels: int | None = None) -> Image.Image:
    """An RGB PIL image from the bytes of an image file (an upload), with the file checks of
    ``load_image``: empty, truncated, non-image data, formats outside ``DECODED_FORMATS``, more
    than ``max_pixels`` pixels (None: ``DEFAULT_MAX_PIXELS``; an engine's own limit is
    ``max_pixels_for(image_size)``) and decompression bombs are ``ImageError``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageError(f"{name}: expected the bytes of an image file, got {type(data).__name__}")
    return _rgb(_decode_bytes(data, name, DEFAULT_MAX_PIXELS if max_pixels is None else check_max_pixels(max_pixels)))


def _decode_bytes(data, name: str, max_pixels: int) -> Image.Image:
    if len(data) == 0:
        raise ImageError(f"{name}: empty (no image data)")
    return _decode(BytesIO(bytes(data)), name, max_pixels)


def _load_8bit(src: ImageInput, max_pixels: int) -> Image.Image:
    """An upright 8-bit image, mode "L" or "RGB" (grayscale stays one channel until the end)."""
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise ImageError(f"image not found: {path}")
        return _decode(path, str(path), max_pixels)
    if isinstance(src, Image.Image):
        if 0 in src.size:
            raise ImageError(f"the image is empty: size {src.size[0]}x{src.size[1]}")
        try:
            return to_8bit(_upright(src), "the image")
        except (OSError, SyntaxError, ValueError, struct.error) as err:
            raise ImageError(f"the image cannot be read: {err}") from None
    if isinstance(src, np.ndarray):
        return _from_array(src)
    if isinstance(src, (bytes, bytearray, memoryview)):  # an image file's bytes (an upload)
        return _decode_bytes(src, "the uploaded image", max_pixels)
    raise ImageError(
        f"unsupported image input of type {type(src).__name__}: give a path, a PIL image, an HxWx3 array or "
        "an image file's bytes"
    )


def _upright(img: Image.Image) -> Image.Image:
    """``img`` turned as its EXIF orientation says (a copy only when it must turn)."""
    if img.getexif().get(ExifTags.Base.Orientation, 1) in (1, None):
        return img
    return ImageOps.exif_transpose(img)


def _decode(source, name: str, max_pixels: int) -> Image.Image:
    try:
        with Image.open(source, formats=DECODED_FORMATS) as img:
            check_pixels(img.size, max_pixels, name)
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            return to_8bit(img, name)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(_unidentified(source, name)) from None
    except Image.DecompressionBombError as err:
        raise ImageError(f"{name}: refused as a possible decompression bomb ({err}); if the image is genuine, "
                         "raise PIL.Image.MAX_IMAGE_PIXELS") from None
    except (OSError, SyntaxError, ValueError, struct.error) as err:
        raise ImageError(f"{name}: corrupt or truncated image: {err}") from None


def check_pixels(size: tuple[int, int], max_pixels: int, name: str) -> None:
    """An ``ImageTooLargeError`` if an image of ``size`` (w, h) has more than ``max_pixels`` pixels."""
    w, h = size
    if w * h > max_pixels:
        raise ImageTooLargeError(name, size, max_pixels)


def _unidentified(source, name: str) -> str:
    """Why PIL's accepted plugins could not open ``source``: the format its first bytes show, if
    any plugin's signature check knows them (no plugin parses the file), and the accepted ones."""
    accepted = ", ".join(DECODED_FORMATS)
    Image.init()  # every plugin's signature check (importing a plugin parses nothing)
    prefix = _prefix(source)
    corrupt = _format_of(prefix, DECODED_FORMATS)
    if corrupt is not None:
        return f"{name}: not an image file PIL can read (its {corrupt} header is corrupt)"
    found = _format_of(prefix, [f for f in Image.OPEN if f not in DECODED_FORMATS])
    if found is None:
        return f"{name}: not an image file egsde-rt reads (accepted formats: {accepted})"
    return (f"{name}: the format {found} (by its first bytes) is not accepted; accepted formats: {accepted} (the "
            f"extensions {' '.join(IMAGE_EXTENSIONS)}): convert it to PNG or JPEG first")


def _prefix(source) -> bytes:
    if isinstance(source, BytesIO):
        return source.getvalue()[:16]
    try:
        with open(source, "rb") as file:
            return file.read(16)
    except OSError:
        return b""


def _format_of(prefix: bytes, formats) -> str | None:
    """The first of ``formats`` whose PIL signature check (``accept``) takes ``prefix``, or None."""
    for name in formats:
        accept = Image.OPEN[name][1]
        if accept is None:  # a plugin without a signature would claim anything
            continue
        try:
            result = accept(prefix)
        except (IndexError, TypeError, ValueError, struct.error):
            continue
        if result and not isinstance(result, str):
            return name
    return None


def sixteen_bit_to_uint8(values: np.ndarray) -> np.ndarray:
    """Integers in 0..65535 to 8 bits as ``floor(255 v / 65535 + 0.5)``, exactly, in integers:
    ``(510 v + 65535) // 131070`` (equal since ``v / 257 + 1/2`` is never an integer)."""
    return ((values.astype(np.uint32) * 510 + 65535) // 131070).astype(np.uint8)


def to_8bit(img: Image.Image, name: str) -> Image.Image:
    """An 8-bit image, "RGB" or "L", as the official ``convert("RGB")`` for 8-bit modes (palette,
    RGBA, CMYK, ... to "RGB"; grayscale stays "L", which converts to the same RGB after resizing).
    Wide modes, which ``convert`` would clip rather than scale, are scaled, ``_CHUNK_PIXELS`` at a
    time: 16-bit integers (``I;16*``, and ``I`` with values in 0..65535) by 255/65535
    (``sixteen_bit_to_uint8``); 32-bit floats (``F``) must lie in [0, 1] (``to_uint8``)."""
    if img.mode in ("RGB", "L"):
        return img
    if img.mode.startswith("I"):
        if img.mode not in UNSIGNED_16_BIT_MODES:
            extremes = [(int(values.min()), int(values.max())) for values in _row_chunks(img)]  # one pass
            low, high = min(e[0] for e in extremes), max(e[1] for e in extremes)
            if low < 0 or high > 65535:
                raise ImageError(f"{name}: integer image values must lie in 0..65535 (16-bit), got [{low}, {high}]; "
                                 "convert it to 8 or 16 bits first")
        return _scaled_to_8bit(img, sixteen_bit_to_uint8)
    if img.mode == "F":
        return _scaled_to_8bit(img, partial(_unit_floats_to_uint8, name=name))
    return img.convert("RGB")


def _unit_floats_to_uint8(values: np.ndarray, name: str) -> np.ndarray:
    if not np.isfinite(values).all() or values.min() < 0.0 or values.max() > 1.0:
        raise ImageError(f"{name}: floating-point images must hold finite values in [0, 1]; convert it to "
                         "8 or 16 bits first")
    return to_uint8(values)


def _row_chunks(img: Image.Image):
    """The pixels of a one-band image as arrays of whole rows, about ``_CHUNK_PIXELS`` each."""
    w, h = img.size
    rows = max(1, _CHUNK_PIXELS // w)
    for top in range(0, h, rows):
        yield np.asarray(img.crop((0, top, w, min(h, top + rows))))


def _scaled_to_8bit(img: Image.Image, scale: Callable[[np.ndarray], np.ndarray]) -> Image.Image:
    """A one-band wide image as "L", ``scale`` applied to one chunk of rows at a time."""
    out = np.empty((img.size[1], img.size[0]), np.uint8)
    top = 0
    for values in _row_chunks(img):
        out[top:top + len(values)] = scale(values)
        top += len(values)
    return Image.fromarray(out)


def _rgb(img: Image.Image) -> Image.Image:
    return img if img.mode == "RGB" else img.convert("RGB")


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
    return Image.fromarray(np.ascontiguousarray(array))


def resize_shorter_side(img: Image.Image, image_size: int) -> Image.Image:
    """Shorter side to ``image_size`` with bicubic, as torchvision ``Resize(image_size)`` (the
    official evaluation's preprocessing; translation inputs are cropped first, ``center_square``)."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    if short == image_size:
        return img
    new_long = int(image_size * long / short)
    size = (image_size, new_long) if w <= h else (new_long, image_size)
    return img.resize(size, Image.BICUBIC)


def center_square(img: Image.Image, image_size: int) -> Image.Image:
    """The centre square of ``img`` (side: the shorter side, offset ``(long - short) // 2``, in
    source coordinates) resized to ``image_size`` x ``image_size`` with bicubic. The resize reads
    the square alone (PIL's ``resize`` with a ``box``): no copy of the image is made, and at the
    square's edges the filter reads the neighbouring pixels as a resize of the whole image would.
    A square image is resized whole, as the official pipeline resizes it."""
    w, h = img.size
    short = min(w, h)
    left, top = (w - short) // 2, (h - short) // 2
    square = (left, top, left + short, top + short)
    if short == image_size:
        return img if w == h else img.crop(square)
    return img.resize((image_size, image_size), Image.BICUBIC, box=square)


def padded_square(img: Image.Image, image_size: int) -> tuple[Image.Image, Box]:
    """``img`` whole in an ``image_size`` square, and the box it fills there. Its longer side becomes
    ``image_size`` and its shorter one ``image_size * short / long`` rounded to the nearest pixel
    (halves up; at least 1), with bicubic, as ``center_square`` resizes; the rest of the square
    repeats the image's edge pixels (``numpy.pad(mode="edge")``), half on each side (the odd pixel
    after). Edge, not reflection: measured on the demo engine, the image's rows next to the padding
    come out closer to those of a translation with the true surroundings (a mirrored copy of the
    image's content is content the networks translate too; docs/api.md#output-size-and-aspect-ratio).
    The pad is made at the engine's size, never at the source's (a 1 x 65535 strip costs an S x S
    square)."""
    w, h = img.size
    long = max(w, h)
    size = tuple(max(1, (2 * side * image_size + long) // (2 * long)) for side in (w, h))
    resized = img if size == (w, h) else img.resize(size, Image.BICUBIC)
    left, top = (image_size - size[0]) // 2, (image_size - size[1]) // 2
    pad = ((top, image_size - size[1] - top), (left, image_size - size[0] - left), (0, 0))
    square = np.pad(np.asarray(_rgb(resized)), pad, mode="edge")
    return Image.fromarray(square), (left, top, left + size[0], top + size[1])


def fit_square(src: ImageInput, image_size: int, max_pixels: int | None = None,
               fit: str = "crop") -> tuple[torch.Tensor, Box]:
    """One image as a float32 [3, image_size, image_size] tensor in [-1, 1] made by ``fit`` (one of
    ``FITS``: ``center_square`` or ``padded_square``), and the box of the result that shows the
    image (the whole square for "crop"). A file may have at most ``max_pixels`` pixels (None:
    ``max_pixels_for(image_size)``). A non-square image cropped is a ``CenterCropWarning``, located
    at the caller's line outside egsde_rt."""
    check_fit(fit)
    limit = max_pixels_for(image_size) if max_pixels is None else check_max_pixels(max_pixels)
    img = _load_8bit(src, limit)
    w, h = img.size
    box = (0, 0, image_size, image_size)
    if fit == "pad":
        square, box = padded_square(img, image_size)
    else:
        if w != h:
            short = min(w, h)
            warn_at_caller(f"image of {w}x{h} is not square: center-cropped to {short}x{short} and resized to "
                           f"{image_size}x{image_size} (fit='pad' keeps the whole image)", CenterCropWarning)
        square = center_square(img, image_size)
    array = np.asarray(_rgb(square), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous() * 2.0 - 1.0, box


def image_to_tensor(src: ImageInput, image_size: int, max_pixels: int | None = None,
                    fit: str = "crop") -> torch.Tensor:
    """One image as a float32 [3, image_size, image_size] tensor in [-1, 1] (``fit_square`` without
    its box)."""
    return fit_square(src, image_size, max_pixels, fit)[0]


def cut_to_boxes(images: Sequence[Image.Image], boxes: Sequence[Box | None] | None) -> list[Image.Image]:
    """Translated squares cut to the boxes ``fit_square`` gave their sources (the image without its
    padding, fit="pad"); a box that is the whole square, or None (or no boxes), keeps the square."""
    boxes = boxes or [None] * len(images)
    return [image if box is None or box == (0, 0, *image.size) else image.crop(box)
            for image, box in zip(images, boxes)]


def fit_batch(sources, image_size: int, max_pixels: int | None = None,
              fit: str = "crop") -> tuple[torch.Tensor, list[Box]]:
    """A list of images (or one) as a float32 [B, 3, S, S] tensor in [-1, 1], each made by ``fit``,
    and each one's box in its result (``fit_square``)."""
    if not isinstance(sources, (list, tuple)):
        sources = [sources]
    if not sources:
        raise ImageError("no images given")
    squares = [fit_square(s, image_size, max_pixels, fit) for s in sources]
    return torch.stack([square for square, _ in squares]), [box for _, box in squares]


def images_to_batch(sources, image_size: int, max_pixels: int | None = None) -> torch.Tensor:
    """A list of images (or one) as a float32 [B, 3, S, S] tensor in [-1, 1], centre-cropped
    (``fit_batch`` with fit="crop"; ``max_pixels``: as ``image_to_tensor``)."""
    return fit_batch(sources, image_size, max_pixels)[0]


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
