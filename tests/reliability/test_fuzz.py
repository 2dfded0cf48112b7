"""Fuzzing (hypothesis, a bounded number of examples) of what reads untrusted bytes: the image
loader and the engine manifest (its parser and every reader of it, at any depth, and its text
itself: tokens Python's json module reads beyond JSON or not at all, invalid UTF-8, cut short).
Whatever the bytes, the result is an image, an engine, or an EgsdeError, never another
exception; image headers may claim huge sizes and other formats' signatures (Ghostscript is
never run)."""

import contextlib
import copy
import io
import json
import os
import shutil
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import EpsImagePlugin, Image

from egsde_rt.cli import main
from helpers.engines import with_stand_in_plans
from egsde_rt.engine import load_engine_dir
from egsde_rt.engine.plans import compiled_identity, matching_plans, stale_plans
from egsde_rt.errors import EgsdeError, EngineDirError
from egsde_rt.images import decode_image_bytes, image_to_tensor
from egsde_rt.runtime.backends import select_backend
from egsde_rt.runtime.translator import engine_settings

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


# Names a manifest may list that must never be read: outside the directory, or not plain names
FILE_NAMES = st.sampled_from(["../outside.bin", "/etc/hostname", "weights\\score.safetensors", "C:score.onnx", "", ".",
                              "weights/../score.onnx", "score.onnx\x00", "outside-link", "plans", "weights/",
                              "plans/score.pt2", "weights/dse.safetensors"])
DROP = object()  # a mutation that removes the field


def _places(node, place=()):
    """Every place in a JSON document (a tuple of keys), and in each object a key it lacks."""
    yield place
    if isinstance(node, dict):
        yield (*place, "unexpected")
        for key, value in node.items():
            yield from _places(value, (*place, key))


def _mutated(document, mutations):
    document = copy.deepcopy(document)
    for place, value in mutations:
        if not place:
            document = {} if value is DROP else value
            continue
        node = document
        for key in place[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            if value is DROP:
                node.pop(place[-1], None)
            else:
                node[place[-1]] = value
    return document


@pytest.fixture(scope="module")
def fuzz_engine(tiny_engine, tmp_path_factory):
    """(engine dir, its manifest): the tiny engine's files (hard links; the manifest a copy), stand-in compiled plans of
    both graphs for this CPU on record (never loaded), and a link to a file outside the directory."""
    path = tmp_path_factory.mktemp("fuzz") / "engine"
    shutil.copytree(tiny_engine[0], path, copy_function=os.link)
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").unlink()  # a file of its own, rewritten by every example (not the tiny engine's)
    (path / "manifest.json").write_text(json.dumps(manifest))
    manifest = with_stand_in_plans(path, manifest)
    (path.parent / "outside.bin").write_bytes(b"outside")
    (path / "outside-link").symlink_to(path.parent / "outside.bin")
    return path, manifest


@pytest.fixture(scope="module", autouse=True)
def own_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EGSDE_RT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def _read_everything(path) -> None:
    """What reads a manifest: loading, the settings and schedule, the plans (verified), backend
    selection and ``egsde-rt info``."""
    engine = load_engine_dir(path)
    identity = compiled_identity("cpu")
    for kind in ("compiled", "tensorrt"):
        matching_plans(engine, identity, kind=kind)
        stale_plans(engine, identity, kind=kind)
    engine_settings(engine)
    engine.manifest.schedule.create()
    select_backend(engine, "auto", "cpu")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["info", str(path)]) in (0, 2)


def test_the_fuzzer_starts_from_a_manifest_that_reads(fuzz_engine):
    _read_everything(fuzz_engine[0])


@FUZZ
@given(data=st.data())
def test_manifest_readers_give_an_engine_or_an_egsde_error(fuzz_engine, data):
    """Any field at any depth (graph, weights and plan entries, the schedule, the settings)
    replaced by any JSON value or a hostile file name, or removed, or a field added: loading and
    every reader of the manifest give a result or an EgsdeError, never another exception."""
    path, manifest = fuzz_engine
    places = sorted(_places(manifest))
    mutations = data.draw(st.lists(st.tuples(st.sampled_from(places), JSON_VALUES | FILE_NAMES | st.just(DROP)),
                                   min_size=1, max_size=3))
    (path / "manifest.json").write_text(json.dumps(_mutated(manifest, mutations)))
    try:
        _read_everything(path)
    except EgsdeError:
        pass


# JSON text that Python's json module reads beyond JSON (NaN, Infinity, a number that overflows to
# inf, a key twice, a lone surrogate) or refuses with something else than a JSONDecodeError (an
# integer of more than 4300 digits: a ValueError; nesting thousands deep: a RecursionError).
RAW_JSON = st.one_of(
    st.integers(4290, 4400).map(lambda digits: "7" * digits),
    st.integers(4290, 4400).map(lambda digits: "-" + "1" * digits),
    st.sampled_from(["NaN", "-NaN", "Infinity", "-Infinity", "1e400", "-1e309", "1e-400", "2" * 40, "0.1e99999",
                     '"\\ud800"', '"\\udc80x"', '"a\\u0000b"', '{"k": 1, "k": 2}', '{"file": "a", "file": "b"}',
                     "[]", "{}", "null", "true"]),
    st.integers(1, 3000).map(lambda depth: "[" * depth + "]" * depth),
    st.integers(1, 3000).map(lambda depth: '{"a": ' * depth + "0" + "}" * depth),
)
# Damage to the manifest's bytes: inserted (invalid UTF-8, a NUL, a byte-order mark), or cut short.
BYTE_DAMAGE = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 2**16), st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00",
                                                                          b"\xef\xbb\xbf", b"\xc0\xaf"])),
    st.tuples(st.just("cut"), st.integers(0, 2**16), st.just(b"")),
)


def _damaged(blob: bytes, damage) -> bytes:
    kind, at, data = damage
    at %= len(blob) + 1
    return blob[:at] + data + blob[at:] if kind == "insert" else blob[:at]


def _with_raw_tokens(manifest, placements) -> bytes:
    """The manifest's text with each (place, raw JSON text) put at its place, as it is (``_places``)."""
    holders = [f"\0raw{i}\0" for i in range(len(placements))]
    text = json.dumps(_mutated(manifest, [(place, holder) for (place, _), holder in zip(placements, holders)]))
    for (_, raw), holder in zip(placements, holders):
        text = text.replace(json.dumps(holder), raw)
    return text.encode("utf-8", "surrogatepass")


@FUZZ
@given(data=st.data())
def test_manifest_text_of_any_form_gives_an_engine_or_an_egsde_error(fuzz_engine, data):
    """The manifest's text itself: any field (or the whole) replaced by JSON text the json module
    reads beyond JSON or refuses with another exception, the bytes damaged (invalid UTF-8, a BOM,
    cut short): loading and every reader of the manifest give a result or an EgsdeError naming the
    manifest (found: an integer of 4301 digits escaped as a bare ValueError)."""
    path, manifest = fuzz_engine
    places = sorted(_places(manifest))
    placements = data.draw(st.lists(st.tuples(st.sampled_from(places), RAW_JSON), min_size=1, max_size=2))
    blob = _with_raw_tokens(manifest, placements)
    for damage in data.draw(st.lists(BYTE_DAMAGE, max_size=1)):
        blob = _damaged(blob, damage)
    (path / "manifest.json").write_bytes(blob)
    try:
        _read_everything(path)
    except EgsdeError:
        pass


@pytest.mark.parametrize("place,raw,why", [
    (("image_size",), "9" * 4301, "an integer of 4301 digits"),
    (("schedule", "num_timesteps"), "-" + "1" * 5000, "an integer of 5000 digits"),
    (("schedule", "beta_end"), "NaN", "NaN is not a JSON number"),
    (("schedule", "beta_start"), "Infinity", "Infinity is not a JSON number"),
    (("settings", "ls"), "1e400", "the number '1e400' overflows a double"),
    (("torch_weights", "score", "config"), "[" * 100 + "]" * 100, "nested deeper than 32 levels"),
    (("export",), "[" * 100000 + "]" * 100000, "nested deeper than 32 levels"),
    (("graphs", "score"), '{"file": "score.onnx", "file": "../x.onnx"}', "the key 'file' appears twice"),
    (("torch_weights", "score", "file"), '"\\ud800"', "the string '\\ud800' is not Unicode text"),
    (("torch_weights", "score", "config"), '{"\\udfff": 1}', "the string '\\udfff' is not Unicode text"),
])
def test_each_kind_of_bad_manifest_text_is_an_engine_dir_error_naming_the_file(fuzz_engine, place, raw, why):
    path, manifest = fuzz_engine
    (path / "manifest.json").write_bytes(_with_raw_tokens(manifest, [(place, raw)]))
    with pytest.raises(EngineDirError) as refused:
        load_engine_dir(path)
    assert str(refused.value).startswith(f"{path / 'manifest.json'}: corrupt manifest: {why}"), refused.value


@pytest.mark.parametrize("damage,why", [
    (lambda blob: blob[:40] + b"\xff" + blob[40:], "not UTF-8 text"),
    (lambda blob: b"\xef\xbb\xbf" + blob, "not JSON"),
    (lambda blob: blob[: len(blob) // 2], "not JSON"),
    (lambda blob: b" " * (16 << 20) + blob, "larger than 16 MiB"),
])
def test_manifest_bytes_that_are_not_json_text_are_an_engine_dir_error_naming_the_file(fuzz_engine, damage, why):
    path, manifest = fuzz_engine
    (path / "manifest.json").write_bytes(damage(json.dumps(manifest).encode()))
    with pytest.raises(EngineDirError) as refused:
        load_engine_dir(path)
    assert str(refused.value).startswith(f"{path / 'manifest.json'}: corrupt manifest: {why}"), refused.value
