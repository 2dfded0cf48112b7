"""The table of docs/reliability.md, *Reliability: what bad input gets*, row by row: each kind of bad input
either works sensibly (converted, as documented) or raises an EgsdeError naming the problem.
Rows also covered in depth elsewhere say where."""

import dataclasses
import json
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_M
from egsde_rt.engine import load_engine_dir
from egsde_rt.errors import ConfigError, EgsdeError, EngineDirError, ImageError
from egsde_rt.jobs.folders import FileTask, JobReport, translate_batch
from egsde_rt.images import CenterCropWarning, image_to_tensor, load_image
from egsde_rt.runtime.translator import Translator

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def translator(tiny_engine):
    return Translator(tiny_engine[0], backend="onnxruntime-cpu")


def _pattern(h=32, w=32):
    return (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)


def _x0(batch=1):
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1


# --- image files -------------------------------------------------------------------------------

def test_row_missing_file_or_a_directory(tmp_path):
    for path in (tmp_path / "missing.png", tmp_path):
        with pytest.raises(ImageError, match="image not found"):
            load_image(path)


@pytest.mark.parametrize("content,match", [
    (b"", "not an image file"), (b"hello, not an image", "not an image file"), ("truncated", "corrupt or truncated"),
])
def test_row_empty_truncated_or_non_image_file(tmp_path, content, match):
    if content == "truncated":
        Image.fromarray(_pattern(128, 128)).save(tmp_path / "full.png")
        data = (tmp_path / "full.png").read_bytes()
        content = data[: len(data) // 2]
    (tmp_path / "bad.png").write_bytes(content)
    with pytest.raises(ImageError, match=match):
        load_image(tmp_path / "bad.png")


def test_row_decompression_bomb(tmp_path, monkeypatch):
    Image.new("RGB", (64, 64)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 > 2 x the limit: PIL's error
    with pytest.raises(ImageError, match="decompression bomb.*MAX_IMAGE_PIXELS"):
        load_image(tmp_path / "bomb.png")


def test_row_wide_and_paletted_modes_are_converted(tmp_path):
    # 16-bit grayscale is scaled (PIL's convert would clip everything above 255 to white).
    values = np.array([[0, 257, 32896, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "gray16.png")
    assert Image.open(tmp_path / "gray16.png").mode.startswith("I")
    assert np.asarray(load_image(tmp_path / "gray16.png"))[0, :, 0].tolist() == [0, 1, 128, 255]
    # 8-bit modes as the official convert("RGB"): grayscale, palette, RGBA (alpha dropped), CMYK.
    rgb = Image.fromarray(_pattern())
    for mode in ("L", "P", "RGBA", "CMYK", "LA", "1"):
        path = tmp_path / f"{mode}.{'jpg' if mode == 'CMYK' else 'png'}" if mode != "LA" else tmp_path / "la.png"
        rgb.convert(mode).save(path)
        expected = Image.open(path).convert("RGB")
        got = load_image(path)
        assert got.mode == "RGB" and np.array_equal(np.asarray(got), np.asarray(expected)), mode
    # 32-bit float images must lie in [0, 1]; 32-bit integers in 0..65535.
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "f.tif")
    assert np.asarray(load_image(tmp_path / "f.tif"))[0, 0].tolist() == [128] * 3
    Image.fromarray(np.full((4, 4), 7.0, np.float32)).save(tmp_path / "f7.tif")
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        load_image(tmp_path / "f7.tif")
    with pytest.raises(ImageError, match="0..65535"):
        load_image(Image.fromarray(np.full((4, 4), 70000, np.int32)))


@pytest.mark.parametrize("size", [(4, 4), (20, 48), (300, 40)])
def test_row_tiny_or_non_square_images_are_resized_and_cropped(size):
    array = _pattern(*size)
    if size[0] == size[1]:
        assert image_to_tensor(array, 32).shape == (3, 32, 32)
    else:
        with pytest.warns(CenterCropWarning, match=r"center-cropped to \d+x\d+ and resized to 32x32"):
            assert image_to_tensor(array, 32).shape == (3, 32, 32)


@pytest.mark.parametrize("bad,match", [
    (np.zeros((4, 4, 2), np.uint8), "HxW"), (np.zeros((2, 4, 4, 3), np.uint8), "HxW"),
    (np.zeros((4, 4, 3), np.int32), "dtype"), (np.full((4, 4, 3), 2.0, np.float32), r"\[0, 1\]"),
    (np.full((4, 4, 3), np.nan, np.float32), "NaN"), (np.full((4, 4, 3), np.inf, np.float32), "NaN or infinite"),
])
def test_row_bad_arrays(bad, match):
    with pytest.raises(ImageError, match=match):
        image_to_tensor(bad, 32)


# --- tensors, noise, seeds, batch sizes, settings ----------------------------------------------

@pytest.mark.parametrize("x0,match", [
    (torch.zeros(3, 32, 32), r"\[B, 3, H, W\]"), (torch.zeros(1, 3, 32, 32, dtype=torch.int64), "float"),
    (torch.full((1, 3, 32, 32), float("nan")), "NaN"), (torch.zeros(1, 3, 16, 16), r"\[B, 3, 32, 32\]"),
])
def test_row_bad_source_tensors_and_image_size_mismatch(translator, x0, match):
    with pytest.raises(ConfigError, match=match):
        translator.run_tensor(x0, M=2)


def test_row_bad_injected_noise(translator):
    with pytest.raises(ConfigError, match="torch.Tensor or a numpy array"):
        translator.run_tensor(_x0(), noise=[[0.0]], M=2)
    with pytest.raises(ConfigError, match="shape"):
        translator.run_tensor(_x0(), noise=torch.zeros(2, 1, 3, 32, 32), M=2)
    bad = torch.zeros(3, 1, 3, 32, 32)
    bad[1, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ConfigError, match="NaN"):
        translator.run_tensor(_x0(), noise=bad, M=2)


@pytest.mark.parametrize("seed", ["abc", 1.5, True, None, -1, 2**64, 2**70, [1, 2, 3]])
def test_row_bad_seeds(translator, seed):
    with pytest.raises(ConfigError, match="seed"):
        translator.run_tensor(_x0(batch=2), seed=seed, M=2)


def test_numpy_seeds_and_noise_are_taken(translator):
    x0 = _x0()
    noise = np.random.default_rng(0).standard_normal((TINY_M + 1, 1, 3, 32, 32)).astype(np.float32)
    from_numpy = translator.run_tensor(x0, noise=noise)
    assert np.array_equal(from_numpy, translator.run_tensor(x0, noise=torch.from_numpy(noise)))
    assert np.array_equal(translator.run_tensor(x0, seed=np.int64(5), M=3), translator.run_tensor(x0, seed=5, M=3))
    with pytest.raises(ConfigError, match="noise must be a torch.Tensor or a numpy array"):
        translator.run_tensor(x0, noise=[[0.0]])


@pytest.mark.parametrize("batch_size", [0, -1, -2, 1.5, "2", True, 65, 2**40])
def test_row_bad_batch_sizes(translator, batch_size):
    with pytest.raises(ConfigError, match="batch_size must be a positive integer|batch_size must be at most 64"):
        translator.run(_pattern(), batch_size=batch_size)


def test_a_batch_over_the_bound_is_refused(translator):
    with pytest.raises(ConfigError, match="at most 64"):
        translator.run_tensor(np.zeros((65, 3, 32, 32), np.float32), batch_size=65, M=2)


@pytest.mark.parametrize("overrides,match", [
    (dict(M=5000), "M must be at most 1000"), (dict(ls=-1.0), "ls"), (dict(steps=0), "steps"),
    (dict(s1="l1"), "setting 's1' is fixed in this engine"),
    (dict(down_N=5), "down_N"), (dict(repeats=10**9), "repeats must be at most 16"),
    (dict(repeats=2**31), "repeats must be at most 16"), (dict(down_N=2**70), "down_N must be at most 1024"),
])
def test_row_bad_settings(translator, overrides, match, monkeypatch):
    from egsde_rt.runtime import translator as module

    monkeypatch.setattr(module, "fit_batch", lambda *a: pytest.fail("decoded before the settings were checked"))
    with pytest.raises(ConfigError, match=match):
        translator.run([_pattern()], **overrides)


@pytest.mark.parametrize("overrides,match", [
    (dict(ls=1e39), r"ls must be a finite number >= 0 and at most 3\.4028234663852886e\+38 \(the largest float32"),
    (dict(li=-1e39), "li must be a finite number >= 0 and at most"), (dict(ls=float("inf")), "ls must be"),
])
def test_row_an_energy_weight_beyond_float32(translator, overrides, match, monkeypatch):
    """An energy weight float32 cannot hold (1e39: inf, then NaN, then an ImageError) is refused
    before any image is decoded."""
    from egsde_rt.runtime import translator as module

    monkeypatch.setattr(module, "fit_batch", lambda *a: pytest.fail("decoded before the settings were checked"))
    with pytest.raises(ConfigError, match=match):
        translator.run([_pattern()], **overrides)


def _asgi_post(app, query: str) -> tuple[int, dict]:
    """(status, JSON body) of ``POST /translate?query`` (no body) sent to an ASGI app."""
    import asyncio

    messages = []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/translate", "raw_path": b"/translate", "query_string": query.encode(), "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"image/png")],
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000)}

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        messages.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in messages if m["type"] == "http.response.start")
    return status, json.loads(b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body"))


@pytest.mark.parametrize("query,setting", [("ls=1e39", "ls"), ("li=1e39", "li"), ("M=4&ls=-1e39", "ls"),
                                           ("li=3.5e38", "li")])
def test_row_an_energy_weight_beyond_float32_over_http(query, setting):
    """The service's query, typed and parsed by the settings' declarations (``service.http_app``),
    answers 400 naming the setting and its float32 range (was: a translation, inf, NaN, 422); the
    OpenAPI schema states the range."""
    pytest.importorskip("fastapi")
    from typing import Annotated

    from fastapi import Query

    from egsde_rt.method.settings import FLOAT32_MAX
    from egsde_rt.service import http_app

    app = http_app.create_app()
    TranslateQuery = http_app.query_model()

    @app.post("/translate")
    async def translate(query: Annotated[TranslateQuery, Query()]):
        return {"translated": True}

    status, body = _asgi_post(app, query)
    assert status == 400 and body["error"].startswith(f"{setting} must be a finite number >= 0 and at most "
                                                      "3.4028234663852886e+38 (the largest float32"), body
    assert _asgi_post(app, "ls=3e38&li=0") == (200, {"translated": True})  # in range: taken
    schema = TranslateQuery.model_json_schema()["properties"]
    assert all((schema[name]["minimum"], schema[name]["maximum"]) == (0, FLOAT32_MAX) for name in ("ls", "li"))


# --- engine directories ------------------------------------------------------------------------

def _engine_copy(tiny_engine, tmp_path):
    path = tmp_path / "engine"
    shutil.copytree(tiny_engine[0], path)
    return path, json.loads((path / "manifest.json").read_text())


@pytest.mark.parametrize("damage,match", [
    ("missing_dir", "not found"), ("no_manifest", "no manifest.json"), ("not_json", "corrupt manifest"),
    ("format_99", "format version 99"), ("incomplete", "manifest lacks"),
    ("wrong_type", "image_size must be an integer"),
])
def test_row_bad_engine_dirs(tiny_engine, tmp_path, damage, match):
    path, manifest = _engine_copy(tiny_engine, tmp_path)
    write = (path / "manifest.json").write_text
    if damage == "missing_dir":
        path = tmp_path / "nowhere"
    elif damage == "no_manifest":
        (path / "manifest.json").unlink()
    elif damage == "not_json":
        write("{not json")
    elif damage == "format_99":
        write(json.dumps({**manifest, "format_version": 99}))
    elif damage == "incomplete":
        write(json.dumps({k: v for k, v in manifest.items() if k != "graphs"}))
    elif damage == "wrong_type":
        write(json.dumps({**manifest, "image_size": "32"}))
    with pytest.raises(EngineDirError, match=match):
        load_engine_dir(path)


@pytest.mark.parametrize("field,value,match", [
    ("image_size", "32", "image_size must be an integer"), ("image_size", 0, "image_size must be positive"),
    ("settings", [], "settings must be an object"), ("format_version", "1", "format_version must be an integer"),
    ("graphs", {"score": 3, "dse_grad": 4}, "malformed manifest"),
])
def test_manifest_fields_of_the_wrong_type_are_named(tiny_engine, tmp_path, field, value, match):
    path, manifest = _engine_copy(tiny_engine, tmp_path)
    (path / "manifest.json").write_text(json.dumps({**manifest, field: value}))
    with pytest.raises(EngineDirError, match=match):
        load_engine_dir(path)


def test_row_engine_files_missing_or_changed(tiny_engine, tmp_path):
    path, _ = _engine_copy(tiny_engine, tmp_path)
    data = bytearray((path / "dse_grad.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / "dse_grad.onnx").write_bytes(bytes(data))
    with pytest.raises(EngineDirError, match="dse_grad.onnx does not match its sha256"):
        load_engine_dir(path)
    (path / "dse_grad.onnx").unlink()
    with pytest.raises(EngineDirError, match="missing file dse_grad.onnx"):
        Translator(path)


@pytest.mark.parametrize("field,value", [("runtime", "torch 2.0.0"), ("capability", "no-such-isa"),
                                         ("source_sha256", "0" * 64)])
def test_row_plans_for_another_machine_or_export(tiny_engine, tmp_path, field, value):
    """A compiled plan on record for another torch, another CPU or another export of its graph is
    never loaded: `compiled` refuses with the command to rebuild, `auto` falls back. (A real
    AOTInductor build: tests/engine/test_compiled.py; TensorRT plans: tests/engine/test_runtime.py.)"""
    from egsde_rt.engine.plans import compiled_identity, graph_source, plan_entry

    path, manifest = _engine_copy(tiny_engine, tmp_path)
    engine = load_engine_dir(path)
    manifest["plans"] = {}
    for graph in ("score", "dse_grad"):
        (path / "plans").mkdir(exist_ok=True)
        (path / "plans" / f"{graph}.pt2").write_bytes(b"not loaded")
        entry = plan_entry("compiled", graph, f"plans/{graph}.pt2", "0" * 64, 10,
                           graph_source(engine, graph, "compiled"), "fp32", (1, 8), compiled_identity("cpu"),
                           "2026-11-22T00:00:00")
        manifest["plans"][graph] = {**dataclasses.asdict(entry), field: value}
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="egsde-rt build"):
        Translator(path, backend="compiled")
    assert Translator(path).backend == "onnxruntime-cpu"


# --- optional packages, diverged results ------------------------------------------------------

@pytest.mark.parametrize("module,call,extra", [
    ("matplotlib", "bench_plot", "egsde-rt[plot]"), ("scipy", "fid", "egsde-rt[eval]"),
    ("ray", "ray", "egsde-rt[ray]"),
])
def test_row_a_missing_optional_package_names_its_extra(monkeypatch, tmp_path, module, call, extra):
    for name in list(sys.modules):
        if name == module or name.startswith(module + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if it were not installed
    with pytest.raises(EgsdeError, match=extra.replace("[", r"\[").replace("]", r"\]")):
        if call == "bench_plot":
            from egsde_rt.bench.report import plot

            plot({"runs": []}, tmp_path / "x.png")
        elif call == "fid":
            from egsde_rt.evaluation.fid import frechet_distance

            frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2))
        else:
            from egsde_rt.jobs.ray_data import require_ray

            require_ray()


def test_row_a_diverged_result_fails_its_files_and_never_reaches_an_output(tmp_path):
    class Diverging:
        def run_tensor(self, x0, **kwargs):
            return np.full(tuple(x0.shape), np.nan, np.float32)

    batch = [FileTask(tmp_path / f"{i}.png", None, tmp_path / "out" / f"{i}.png", i) for i in range(2)]
    report = translate_batch(Diverging(), batch, torch.zeros(2, 3, 8, 8), {})
    assert isinstance(report, JobReport) and not report.written and len(report.failed) == 2
    assert "NaN" in report.failed[0][1] and not (tmp_path / "out").exists()
