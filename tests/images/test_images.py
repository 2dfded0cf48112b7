import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SAMPLES_DIR
from egsde_rt.errors import ImageError
from egsde_rt.images import (CenterCropWarning, image_to_tensor, images_to_batch, list_images, load_image,
                         tensor_to_images, to_uint8)


def _pattern(w=64, h=64):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 4) % 256, (y * 4) % 256, ((x + y) * 2) % 256], axis=-1).astype(np.uint8)


def test_round_trip_is_exact_at_the_native_size(tmp_path):
    array = _pattern()
    for src in (array, Image.fromarray(array)):
        x = image_to_tensor(src, 64)
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32
        assert x.min() >= -1 and x.max() <= 1
        (back,) = tensor_to_images(x[None])
        assert np.array_equal(np.asarray(back), array)
    Image.fromarray(array).save(tmp_path / "p.png")
    assert torch.equal(image_to_tensor(tmp_path / "p.png", 64), image_to_tensor(array, 64))


def test_rounding_is_floor_255v_plus_half():
    v = np.array([0.0, 0.5 / 255, 0.49 / 255, 1.0, 0.2, 1.5, -0.1])
    assert to_uint8(v).tolist() == [0, 1, 0, 255, 51, 255, 0]
    y = torch.tensor([-1.0, 1.0, 0.0, 3.0]).reshape(1, 1, 2, 2).expand(1, 3, 2, 2)
    (img,) = tensor_to_images(y)
    assert np.asarray(img)[:, :, 0].tolist() == [[0, 255], [128, 255]]


def test_modes_are_converted_to_rgb():
    gray = np.full((32, 32), 100, np.uint8)
    assert torch.allclose(image_to_tensor(gray, 32), torch.full((3, 32, 32), 100 / 255 * 2 - 1))
    rgba = np.dstack([_pattern(32, 32), np.zeros((32, 32), np.uint8)])
    assert torch.equal(image_to_tensor(rgba, 32), image_to_tensor(_pattern(32, 32), 32))
    palette = Image.fromarray(_pattern(32, 32)).convert("P")
    assert load_image(palette).mode == "RGB"
    floats = _pattern(32, 32) / 255.0
    assert torch.allclose(image_to_tensor(floats, 32), image_to_tensor(_pattern(32, 32), 32))


def test_center_crop_then_bicubic_resize():
    # The centre 48 x 48 square (at 24) resized to 32: here the same as resizing to 64 x 32 and
    # cropping at 16 (tests/images/test_safe_decoding.py covers the crop in depth).
    wide = Image.fromarray(_pattern(96, 48))
    with pytest.warns(CenterCropWarning, match="96x48 is not square: center-cropped to 48x48 and resized to 32x32"):
        x = image_to_tensor(wide, 32)
    assert x.shape == (3, 32, 32)
    resized = np.asarray(wide.resize((64, 32), Image.BICUBIC), dtype=np.float32)[:, 16:48] / 255
    assert torch.allclose(x, torch.from_numpy(resized).permute(2, 0, 1) * 2 - 1)


def test_sample_photo_is_resized_like_the_original_pipeline():
    paths = sorted(SAMPLES_DIR.glob("*.jpg")) if SAMPLES_DIR.is_dir() else []
    if not paths:
        pytest.skip(f"sample photos absent at {SAMPLES_DIR}")
    batch = images_to_batch(paths[:2], 256)
    assert batch.shape == (2, 3, 256, 256)
    with Image.open(paths[0]) as img:
        expected = np.asarray(img.convert("RGB").resize((256, 256), Image.BICUBIC), np.float32) / 255
    assert torch.allclose(batch[0], torch.from_numpy(expected).permute(2, 0, 1) * 2 - 1)


@pytest.mark.parametrize("bad,match", [
    (np.zeros((4, 4, 2), np.uint8), "HxW"),
    (np.zeros((4, 4, 3), np.int32), "dtype"),
    (np.full((4, 4, 3), np.nan, np.float32), "NaN"),
    (np.full((4, 4, 3), 2.0, np.float32), r"\[0, 1\]"),
    (np.zeros((0, 4, 3), np.uint8), "empty"),
    (12, "unsupported image input"),
])
def test_bad_arrays_and_types(bad, match):
    with pytest.raises(ImageError, match=match):
        image_to_tensor(bad, 32)


def test_bad_files(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ImageError, match="not an image"):
        load_image(tmp_path / "text.png")
    Image.fromarray(_pattern(128, 128)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(tmp_path / "cut.jpg")


def test_bad_results():
    with pytest.raises(ImageError, match="NaN"):
        tensor_to_images(torch.full((1, 3, 4, 4), float("nan")))
    with pytest.raises(ImageError, match="shape"):
        tensor_to_images(torch.zeros(3, 4, 4))


def test_list_images(tmp_path):
    for name in ("b.PNG", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG"]
    with pytest.raises(ImageError, match="not a folder"):
        list_images(tmp_path / "a.jpg")
