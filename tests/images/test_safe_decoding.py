"""Uploads are data (DESIGN.md, Trust): only the formats IMAGE_EXTENSIONS names are decoded, a file
over the pixel limit is refused from its header, the centre square is cropped before any resize,
wide (16-bit, float) images are scaled in bounded memory, and the EXIF orientation is applied."""

import io
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import EpsImagePlugin, Image, PngImagePlugin, features

import egsde_rt
from egsde_rt.errors import ConfigError, ImageError
from egsde_rt.jobs.folders import plan_job, run_job
from egsde_rt.images import (DECODED_FORMATS, IMAGE_EXTENSIONS, IMAGE_FORMATS, CenterCropWarning, decode_image_bytes,
                         image_to_tensor, load_image, max_pixels_for, sixteen_bit_to_uint8, to_8bit, to_uint8)

ACCEPTED = "JPEG, PNG, PPM, BMP, TIFF, WEBP"


def _random(h, w, channels=3, seed=0):
    shape = (h, w, channels) if channels > 1 else (h, w)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _bytes(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int, bit_depth: int = 8, color_type: int = 2) -> bytes:
    """A PNG declaring ``width`` x ``height`` (its IHDR chunk) with almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))


# --- the allow-list of formats ---------------------------------------------------------------

def test_the_decoded_formats_are_those_the_extensions_name():
    assert IMAGE_EXTENSIONS == (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")
    assert DECODED_FORMATS == ("JPEG", "PNG", "PPM", "BMP", "TIFF", "WEBP")
    assert set(IMAGE_FORMATS.values()) == set(DECODED_FORMATS)
    image = Image.fromarray(_random(24, 24))
    for fmt in DECODED_FORMATS:
        params = {"lossless": True} if fmt == "WEBP" else {}
        if fmt == "WEBP" and not features.check("webp"):
            continue
        decoded = decode_image_bytes(_bytes(image, fmt, **params), f"a {fmt} file")
        assert decoded.size == (24, 24) and decoded.mode == "RGB", fmt
        if fmt != "JPEG":
            assert np.array_equal(np.asarray(decoded), np.asarray(image)), fmt


def test_a_phone_jpeg_that_pil_reads_as_mpo_is_accepted():
    first, second = Image.fromarray(_random(16, 16)), Image.fromarray(_random(16, 16, seed=1))
    data = _bytes(first, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    expected = Image.open(io.BytesIO(data)).convert("RGB")
    assert np.array_equal(np.asarray(decode_image_bytes(data)), np.asarray(expected))


OTHER_FORMATS = ["GIF", "ICO", "PCX", "SGI", "IM", "TGA", "DDS", "QOI", "MSP", "XBM"] + (
    ["JPEG2000"] if features.check("jpg_2000") else [])


@pytest.mark.parametrize("fmt", OTHER_FORMATS)
def test_other_formats_are_refused_naming_the_format(fmt, tmp_path):
    image = Image.fromarray(_random(16, 16)).convert("1" if fmt in ("MSP", "XBM") else "RGB")
    data = _bytes(image, fmt)
    assert Image.open(io.BytesIO(data)).format == fmt  # PIL reads it: only the allow-list refuses it
    for decode in (lambda: decode_image_bytes(data), lambda: load_image(tmp_path / "image.png")):
        (tmp_path / "image.png").write_bytes(data)  # the content decides, not the extension
        with pytest.raises(ImageError) as error:
            decode()
        message = str(error.value)
        assert ACCEPTED in message
    # A format is named where PIL's signature check knows it (a TGA file has none, and its first
    # bytes are a CUR file's).
    if fmt not in ("TGA", "IM", "XBM"):
        assert f"the format {fmt} (by its first bytes) is not accepted" in message


EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\n"
       b"newpath 0 0 moveto 16 16 lineto stroke showpage\n%%EOF\n")


def test_an_eps_upload_never_reaches_the_eps_plugin_or_ghostscript(monkeypatch, tmp_path):
    calls = []
    real_open = EpsImagePlugin.EpsImageFile._open

    def spied_open(self):
        calls.append("EpsImageFile._open")
        return real_open(self)

    def spied_ghostscript(*args, **kwargs):
        calls.append("Ghostscript")
        raise OSError("Ghostscript was run")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", spied_open)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", spied_ghostscript)
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", "gs")  # as where Ghostscript is installed
    (tmp_path / "upload.png").write_bytes(EPS)
    for decode in (lambda: decode_image_bytes(EPS), lambda: image_to_tensor(tmp_path / "upload.png", 16)):
        with pytest.raises(ImageError, match=f"the format EPS .* is not accepted; accepted formats: {ACCEPTED}"):
            decode()
    assert calls == []


# --- the pixel limit -------------------------------------------------------------------------

def test_the_default_pixel_limit_is_derived_from_the_engine():
    assert max_pixels_for(256) == 4096 * 4096
    assert max_pixels_for(512) == 8192 * 8192
    assert max_pixels_for(32) == max_pixels_for(16) == 1024 * 1024
    assert Image.MAX_IMAGE_PIXELS == int(1024 * 1024 * 1024 // 4 // 3)  # PIL's own guard is left as it is


def test_a_file_over_the_limit_is_refused_from_its_header(tmp_path, monkeypatch):
    loads = []
    real_load = PngImagePlugin.PngImageFile.load
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self: loads.append(self.size) or real_load(self))
    Image.fromarray(_random(1000, 1100, channels=1)).save(tmp_path / "big.png")  # 1.1 Mpx > 2**20
    with pytest.raises(ImageError, match=r"1100x1000 is 1.1 Mpx, over the limit of 1048576 pixels .*"
                                         r"give a smaller image or raise max_pixels"):
        image_to_tensor(tmp_path / "big.png", 32)
    (tmp_path / "header.png").write_bytes(png_header(20000, 1000))  # 20 Mpx declared, no pixel data
    with pytest.raises(ImageError, match="20000x1000 is 20.0 Mpx, over the limit of 16777216 pixels"):
        decode_image_bytes((tmp_path / "header.png").read_bytes())
    with pytest.raises(ImageError, match="over the limit of 1000 pixels"):
        load_image(tmp_path / "big.png", max_pixels=1000)
    assert loads == []  # refused before any pixel was decoded
    with pytest.warns(CenterCropWarning):
        assert image_to_tensor(tmp_path / "big.png", 32, max_pixels=1100 * 1000).shape == (3, 32, 32)
    # Images already in memory are not decoded: no limit (the crop comes before the resize).
    assert image_to_tensor(_random(1100, 1100), 32, max_pixels=10).shape == (3, 32, 32)


@pytest.mark.parametrize("bad", [0, -5, 1.5, "1000", True])
def test_a_bad_max_pixels_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="max_pixels must be a positive integer"):
        image_to_tensor(_random(8, 8), 8, max_pixels=bad)


class _RecordingTranslator:
    """What ``run_job`` needs of a Translator; returns x0 as the translation."""

    image_size = 32

    def __init__(self, max_pixels):
        self.max_pixels = max_pixels

    def settings_with(self, **overrides):
        return None

    def run_tensor(self, x0, seed=0, callback=None, **overrides):
        return x0


def test_folder_jobs_use_the_translators_pixel_limit(tmp_path):
    (tmp_path / "in").mkdir()
    Image.fromarray(_random(40, 40)).save(tmp_path / "in" / "big.png")
    Image.fromarray(_random(30, 30)).save(tmp_path / "in" / "small.png")
    tasks, _ = plan_job(tmp_path / "in", tmp_path / "out")
    report = run_job(_RecordingTranslator(max_pixels=1000), tasks, batch_size=2)
    assert [p.name for p in report.written] == ["small.png"]
    assert [(p.name, "over the limit of 1000 pixels" in why) for p, why in report.failed] == [("big.png", True)]


def test_the_translator_takes_and_checks_max_pixels(tiny_engine, tmp_path):
    pytest.importorskip("onnxruntime")
    from egsde_rt.runtime.translator import Translator

    for bad in (0, "many", 2.5):
        with pytest.raises(ConfigError, match="max_pixels must be a positive integer"):
            Translator(tiny_engine[0], backend="onnxruntime-cpu", max_pixels=bad)
    assert Translator(tiny_engine[0], backend="onnxruntime-cpu").max_pixels == max_pixels_for(32)
    translator = Translator(tiny_engine[0], backend="onnxruntime-cpu", max_pixels=1000)
    assert translator.max_pixels == 1000
    Image.fromarray(_random(40, 40)).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match="40x40 .* over the limit of 1000 pixels"):
        translator.run(tmp_path / "big.png", M=2)


# --- the centre square is cropped before the resize ---------------------------------------------

def _old_image_to_tensor(img: Image.Image, image_size: int) -> torch.Tensor:
    """The resize-then-crop of egsde-rt before issue 28 (the oracle for square images)."""
    img = img.convert("RGB")
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    if short != image_size:
        new_long = int(image_size * long / short)
        img = img.resize((image_size, new_long) if w <= h else (new_long, image_size), Image.BICUBIC)
    w, h = img.size
    left, top = (w - image_size) // 2, (h - image_size) // 2
    img = img.crop((left, top, left + image_size, top + image_size))
    array = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous() * 2.0 - 1.0


@pytest.mark.parametrize("side", [5, 31, 32, 33, 64, 100, 257])
@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA"])
def test_square_images_give_what_they_gave_before_bit_for_bit(side, mode, tmp_path):
    image = Image.fromarray(_random(side, side, channels=4)).convert(mode)
    image.save(tmp_path / "square.png")
    expected = _old_image_to_tensor(Image.open(tmp_path / "square.png"), 32)
    assert torch.equal(image_to_tensor(tmp_path / "square.png", 32), expected)
    assert torch.equal(image_to_tensor(image, 32), expected)


@pytest.mark.parametrize("size", [(96, 48), (48, 96), (160, 64), (24, 16), (3, 1), (40, 32), (700, 512)])
def test_a_non_square_image_gives_about_the_old_result_where_the_old_crop_fell_on_whole_pixels(size):
    """Where resize-then-crop cropped at a whole source pixel (96 x 48 to 32: resized to 64 x 32,
    cropped at 16, that is at 24 in the source), the two differ only by the 8-bit rounding between
    PIL's two resize passes (which PIL may run in the other order for a square box)."""
    array = _random(size[1], size[0])
    image_size = 256 if size == (700, 512) else 32
    with pytest.warns(CenterCropWarning, match=f"{size[0]}x{size[1]} is not square"):
        x = image_to_tensor(array, image_size)
    difference = (x - _old_image_to_tensor(Image.fromarray(array), image_size)).abs() * 255 / 2
    assert float(difference.mean()) < 1.0 and float(difference.max()) < 8.5


@pytest.mark.parametrize("size", [(96, 48), (37, 300), (301, 257), (7, 40), (1, 300), (5000, 3)])
def test_a_non_square_image_depends_only_on_its_centre_square(size):
    """Pixels farther from the centre square than the bicubic filter reaches (2 source pixels, or
    2 resized ones when shrinking) do not change the result."""
    w, h = size
    array = _random(h, w)
    short = min(w, h)
    left, top = (w - short) // 2, (h - short) // 2
    reach = 2 * int(np.ceil(max(1.0, short / 32))) + 1
    changed = _random(h, w, seed=9)
    keep = (slice(max(0, top - reach), top + short + reach), slice(max(0, left - reach), left + short + reach))
    changed[keep] = array[keep]
    with pytest.warns(CenterCropWarning):
        x = image_to_tensor(array, 32)
    with pytest.warns(CenterCropWarning):
        assert torch.equal(x, image_to_tensor(changed, 32))
    with pytest.warns(CenterCropWarning):
        assert not torch.equal(x, image_to_tensor(np.ascontiguousarray(array[::-1, ::-1]), 32))


# Peak memory of one decode, measured in a child process (VmHWM after resetting it); the address
# space is limited so that a decode asking for many GiB fails there rather than on the machine.
_MEASURE = textwrap.dedent("""
    import resource, sys, warnings
    warnings.simplefilter("ignore")
    from egsde_rt.images import image_to_tensor

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

    warm_up, path, image_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    image_to_tensor(warm_up, image_size)  # plugins imported, lazy initialisations done
    resource.setrlimit(resource.RLIMIT_AS, (status("VmSize") + 2**31, resource.RLIM_INFINITY))
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        print("no-clear-refs")
        sys.exit(0)
    before = status("VmRSS")
    image_to_tensor(path, image_size)
    print(status("VmHWM") - before)
""")


def _peak_bytes_of_decoding(path: Path, warm_up: Path, image_size: int) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(egsde_rt.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.run([sys.executable, "-c", _MEASURE, str(warm_up), str(path), str(image_size)],
                           capture_output=True, text=True, env=env, timeout=300)
    assert child.returncode == 0, f"the decode failed in the child: {child.stderr[-2000:]}"
    if child.stdout.strip() == "no-clear-refs":
        pytest.skip("/proc/self/clear_refs is not writable here: peak memory cannot be measured")
    return int(child.stdout.strip())


@pytest.mark.parametrize("height,bound_mb", [(65535, 64), (1024, 64)])
def test_a_strip_png_costs_little_memory(tmp_path, height, bound_mb):
    """A 1 x 65535 PNG (a few hundred bytes) asked the old resize-then-crop for 16 GiB, a 1 x 1024
    one for 271 MB at 256 px."""
    Image.new("RGB", (1, height), (10, 200, 30)).save(tmp_path / "strip.png")
    Image.new("RGB", (3, 2)).save(tmp_path / "warm.png")
    assert (tmp_path / "strip.png").stat().st_size < 1000
    peak = _peak_bytes_of_decoding(tmp_path / "strip.png", tmp_path / "warm.png", 256)
    assert peak < bound_mb * 2**20, f"decoding a 1 x {height} strip took {peak / 2**20:.0f} MB"


def test_a_16_bit_decode_costs_a_few_bytes_per_pixel(tmp_path):
    """2000 x 2000 16-bit grayscale: under 8 bytes a pixel above the baseline (the old float64
    copies took about 34)."""
    y, x = np.mgrid[0:2000, 0:2000]
    Image.fromarray(((x * 31 + y * 17) % 65536).astype(np.uint16)).save(tmp_path / "gray16.png")
    Image.fromarray(np.zeros((2, 3), np.uint16)).save(tmp_path / "warm.png")
    assert Image.open(tmp_path / "gray16.png").mode.startswith("I")
    peak = _peak_bytes_of_decoding(tmp_path / "gray16.png", tmp_path / "warm.png", 256)
    assert peak < 8 * 2000 * 2000, f"{peak / 2000**2:.1f} bytes per pixel"


# --- wide modes without float64 copies -------------------------------------------------------------

def test_the_16_bit_integer_rounding_is_exactly_the_float_one_for_every_value():
    values = np.arange(65536, dtype=np.uint16)
    assert np.array_equal(sixteen_bit_to_uint8(values), to_uint8(values.astype(np.float64) / 65535.0))
    assert np.array_equal(sixteen_bit_to_uint8(values.astype(np.int32)), sixteen_bit_to_uint8(values))


@pytest.mark.parametrize("mode,suffix", [("I;16", "png"), ("I;16B", "tif"), ("I", "tif")])
def test_16_bit_files_scale_as_before_across_chunks(mode, suffix, tmp_path):
    values = np.random.default_rng(3).integers(0, 65536, (700, 601)).astype(np.uint16)  # > _CHUNK_PIXELS
    values[0, :4] = [0, 128, 65535, 32896]
    image = Image.fromarray(values).convert(mode) if mode != "I;16" else Image.fromarray(values)
    if mode == "I;16B":
        image = Image.frombytes("I;16B", (601, 700), values.astype(">u2").tobytes())
    image.save(tmp_path / f"wide.{suffix}")
    expected = to_uint8(values.astype(np.float64) / 65535.0)
    for src in (tmp_path / f"wide.{suffix}", image):
        got = np.asarray(load_image(src))
        assert np.array_equal(got[:, :, 0], expected) and np.array_equal(got[:, :, 2], expected), (mode, src)


def test_float_images_scale_as_before_across_chunks():
    rng = np.random.default_rng(4)
    values = rng.random((700, 601), dtype=np.float32)
    edges = np.array([0.0, 1.0] + [k / 255 for k in range(256)] + [(k + 0.5) / 255 for k in range(255)], np.float32)
    edges = np.concatenate([edges, np.nextafter(edges, 0, dtype=np.float32), np.nextafter(edges, 1, dtype=np.float32)])
    values.flat[:edges.size] = np.clip(edges, 0, 1)
    got = to_8bit(Image.fromarray(values), "floats")
    assert got.mode == "L" and np.array_equal(np.asarray(got), to_uint8(values))
    values[650, 3] = np.nan  # in a later chunk
    with pytest.raises(ImageError, match=r"finite values in \[0, 1\]"):
        to_8bit(Image.fromarray(values), "floats")


# --- EXIF orientation ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("orientation,turn", [(6, Image.Transpose.ROTATE_270), (8, Image.Transpose.ROTATE_90),
                                              (3, Image.Transpose.ROTATE_180)])
def test_the_exif_orientation_is_applied_before_the_crop(fmt, orientation, turn, tmp_path):
    stored = Image.fromarray(_random(40, 64))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"photo.{fmt.lower()}"
    stored.save(path, format=fmt, exif=exif.tobytes())
    with Image.open(path) as as_stored:  # the pixels as stored (JPEG: decoded), turned by hand
        upright = np.asarray(as_stored.convert("RGB").transpose(turn))
    with pytest.warns(CenterCropWarning):
        expected = image_to_tensor(upright, 32)
    with pytest.warns(CenterCropWarning):
        assert torch.equal(image_to_tensor(path, 32), expected)
    with pytest.warns(CenterCropWarning):
        assert torch.equal(image_to_tensor(Image.open(path), 32), expected)
    assert torch.equal(torch.from_numpy(np.asarray(decode_image_bytes(path.read_bytes()))),
                       torch.from_numpy(upright))
