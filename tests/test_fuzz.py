"""Fuzzing (hypothesis, a bounded number of examples) of what reads untrusted bytes: the image
loader and the engine manifest parser. Whatever the bytes, the result is an image or an
EgsdeError, never another exception."""

import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from egsde_rt.engine import load_engine_dir
from egsde_rt.errors import EgsdeError
from egsde_rt.io import image_to_tensor

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
