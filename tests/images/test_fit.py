"""fit="pad": the whole image in the engine's square, its padding and the box that cuts it off."""

import numpy as np
import pytest
import torch
from PIL import Image

from egsde_rt.errors import EgsdeError
from egsde_rt.images import FITS, check_fit, fit_square, padded_square


def _photo(w, h, seed=0):
    return Image.fromarray((np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8))


@pytest.mark.parametrize("size,box", [
    ((300, 200), (0, 5, 32, 26)),  # 200 * 32 / 300 = 21.33 -> 21 rows, 5 above and 6 below
    ((200, 300), (5, 0, 26, 32)),
    ((96, 48), (0, 8, 32, 24)),  # exactly 16 rows
    ((33, 32), (0, 0, 32, 31)),  # 32 * 32 / 33 = 31.03 -> 31, the odd row below
    ((64, 47), (0, 4, 32, 28)),  # 23.5 -> 24: halves round up
    ((1, 65535), (15, 0, 16, 32)),  # at least one pixel
])
def test_the_long_side_becomes_s_and_the_short_one_rounds_to_the_nearest_pixel(size, box):
    square, got = padded_square(_photo(*size), 32)
    assert square.size == (32, 32) and square.mode == "RGB" and got == box


def test_the_image_is_resized_whole_and_padded_with_its_edge_pixels():
    img = _photo(300, 200, seed=3)
    square, (left, top, right, bottom) = padded_square(img, 32)
    pixels = np.asarray(square)
    inside = np.asarray(img.resize((right - left, bottom - top), Image.BICUBIC))
    assert np.array_equal(pixels[top:bottom, left:right], inside)
    assert (pixels[:top] == inside[0]).all() and (pixels[bottom:] == inside[-1]).all()


def test_a_square_image_fits_the_same_either_way():
    img = _photo(40, 40)
    (crop, crop_box), (pad, pad_box) = (fit_square(img, 32, fit=fit) for fit in FITS)
    assert torch.equal(crop, pad) and crop_box == pad_box == (0, 0, 32, 32)


@pytest.mark.parametrize("fit", ["squash", "", None, "PAD", 1])
def test_an_unknown_fit_names_the_choices(fit):
    with pytest.raises(EgsdeError, match=r"fit must be one of 'crop', 'pad'"):
        check_fit(fit)
    with pytest.raises(EgsdeError, match=r"fit must be one of 'crop', 'pad'"):
        fit_square(_photo(8, 8), 32, fit=fit)
