"""Fuzzing (hypothesis, a bounded number of examples) of what reads untrusted bytes: the image
loader and the engine manifest parser. Whatever the bytes, the result is an image or an
EgsdeError, never another exception; headers may claim huge sizes and other formats' signatures
(Ghostscript is never run)."""

import io
import json
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import EpsImagePlugin, Image

from egsde_rt.engine import load_engine_dir
from egsde_rt.errors import EgsdeError
from egsde_rt.io import decode_image_bytes, image_to_tensor

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _png_bytes(size=(8, 6), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 128).save(buffer, format="PNG")
    return buffer.getvalue()


@FUZZ
@given(data=st.one_of(
    st.binary(max_size=512),
    st.builds(lambda cut, flips: _mutate(_png_bytes(), cut, flips),
              st.integers(0, 200), st.lists(st.tuples(st.integers(0, 199), st.integers(1, 255)), max_size=8)),
))
def test_image_loader_gives_an_image_or_an_egsde_error(tmp_path, data):
    path = tmp_path / "fuzz.png"
    path.write_bytes(data)
    try:
        tensor = image_to_tensor(path, 16)
    except EgsdeError:
        return
    assert tuple(tensor.shape) == (3, 16, 16)
    assert float(tensor.min()) >= -1.0 and float(tensor.max()) <= 1.0


def _mutate(data: bytes, cut: int, flips) -> bytes:
    data = bytearray(data[: len(data) - cut] if cut < len(data) else data[:1])
    for position, value in flips:
        if position < len(data):
            data[position] ^= value
    return bytes(data)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming(width, height, depth, color, tail) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(tail))


def _bmp_claiming(width, height, bits, tail) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + len(tail), 0, 0, 14 + len(info)) + info + tail


SIZES = st.integers(1, 2**31 - 1) | st.integers(1, 5000)
# Headers of the accepted formats claiming any size, with little or no pixel data.
CLAIMED_SIZES = st.one_of(
    st.builds(_png_claiming, SIZES, SIZES, st.sampled_from([1, 8, 16]), st.sampled_from([0, 2, 3, 4, 6]),
              st.binary(max_size=64)),
    st.builds(_bmp_claiming, st.integers(-2**31, 2**31 - 1), st.integers(-2**31, 2**31 - 1),
              st.sampled_from([1, 8, 24, 32]), st.binary(max_size=64)),
    st.builds(lambda w, h, tail: b"P6\n%d %d\n255\n" % (w, h) + tail, SIZES, SIZES, st.binary(max_size=64)),
    st.builds(lambda w, h, tail: b"P5\n%d %d\n65535\n" % (w, h) + tail, SIZES, SIZES, st.binary(max_size=64)),
)
# The signatures of formats that are not accepted (and of accepted ones), followed by anything.
SIGNATURES = [b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 4000 4000\n", b"\xc5\xd0\xd3\xc6", b"GIF89a",
              b"8BPS\x00\x01", b"\x00\x00\x01\x00\x01\x00", b"\x00\x00\x02\x00", b"\xffO\xffQ",
              b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"DDS |\x00\x00\x00", b"qoif", b"%PDF-1.4", b"icns",
              b"II*\x00", b"MM\x00*", b"RIFF\x00\x01\x00\x00WEBPVP8 ", b"BM", b"P6\n", b"\xff\xd8\xff\xe0",
              b"\x89PNG\r\n\x1a\n", b"\n\x05\x01\x08", b"\x01\xda", b"FORM", b"SIMPLE  =", b"\xd7\xcd\xc6\x9a"]
OTHER_SIGNATURES = st.builds(lambda magic, tail: magic + tail, st.sampled_from(SIGNATURES), st.binary(max_size=256))


@pytest.fixture()
def no_ghostscript(monkeypatch):
    def ghostscript(*args, **kwargs):
        raise AssertionError("Ghostscript was run on fuzzed bytes")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", "gs")  # as where it is installed


@FUZZ
@given(data=st.one_of(CLAIMED_SIZES, OTHER_SIGNATURES))
def test_headers_claiming_any_size_or_another_format_give_an_image_or_an_egsde_error(tmp_path, no_ghostscript,
                                                                                     data):
    path = tmp_path / "fuzz.png"
    path.write_bytes(data)
    for decode in (lambda: image_to_tensor(path, 16), lambda: image_to_tensor(decode_image_bytes(data), 16)):
        try:
            tensor = decode()
        except EgsdeError:
            continue
        assert tuple(tensor.shape) == (3, 16, 16)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-5, 2**40) | st.floats(allow_nan=True)
                           | st.text(max_size=8),
                           lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8),
                                                                                               children, max_size=3),
                           max_leaves=10)


@pytest.fixture(scope="module")
def manifest(tiny_engine):
    return json.loads((tiny_engine[0] / "manifest.json").read_text())


@FUZZ
@given(field=st.sampled_from(["format_version", "egsde_rt_version", "image_size", "settings", "schedule", "graphs",
                              "export", "torch_weights", "plans", "preset", "extra"]),
       value=JSON_VALUES, drop=st.booleans())
def test_manifest_parser_gives_an_engine_or_an_egsde_error(tmp_path_factory, tiny_engine, manifest, field, value,
                                                            drop):
    path = tmp_path_factory.mktemp("fuzz")
    for name in ("score.onnx", "dse_grad.onnx"):
        (path / name).symlink_to(tiny_engine[0] / name)
    (path / "torch").symlink_to(tiny_engine[0] / "torch")
    data = dict(manifest)
    if drop:
        data.pop(field, None)
    else:
        data[field] = value
    (path / "manifest.json").write_text(json.dumps(data))
    try:
        engine = load_engine_dir(path, check_hashes=False)
    except EgsdeError:
        return
    assert engine.image_size >= 1 and engine.manifest.method.M >= 1
