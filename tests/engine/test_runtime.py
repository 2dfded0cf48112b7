"""Engine dirs, backends and the Translator, end to end on the CPU."""

import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_M
from egsde_rt.engine import load_engine_dir
from egsde_rt.engine.plans import MachineIdentity, matching_plans, stale_plans
from egsde_rt.errors import ConfigError, MissingGraphsError
from egsde_rt.export.tensorrt_plans import build_plans
from egsde_rt.runtime import backends
from egsde_rt.runtime.runners import OrtRunner
from egsde_rt.runtime.translator import Translator
from helpers.sampling import reference_translate

pytest.importorskip("onnxruntime")


def _x0(batch=2, seed=1):
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _reference(tiny_engine, x0, **kwargs):
    _, unet, dse = tiny_engine
    args = dict(M=TINY_M, ls=500.0, li=2.0, down_N=8)
    args.update(kwargs)
    return reference_translate(x0, unet, dse, **args).numpy()


@pytest.mark.parametrize("backend", ["onnxruntime-cpu", "torch"])
def test_translator_equals_the_reference(backend, tiny_engine):
    translator = Translator(tiny_engine[0], backend=backend)
    x0 = _x0()
    noise = torch.randn(TINY_M + 1, *x0.shape, generator=torch.Generator().manual_seed(2))
    injected = translator.run_tensor(x0, noise=noise)
    assert np.abs(injected - _reference(tiny_engine, x0, noise=noise)).max() <= 1e-4
    seeded = translator.run_tensor(x0, seed=9)
    assert np.abs(seeded - _reference(tiny_engine, x0, seed=9)).max() <= 1e-4
    assert np.abs(seeded - translator.run_tensor(x0, seed=10)).max() > 1e-3


def test_auto_backend_and_overrides(tiny_engine):
    translator = Translator(tiny_engine[0])
    assert translator.backend == "onnxruntime-cpu" and translator.image_size == 32
    x0 = _x0(batch=1)
    got = translator.run_tensor(x0, seed=4, M=20, ls=100.0, li=5.0, steps=5)
    assert np.abs(got - _reference(tiny_engine, x0, seed=4, M=20, ls=100.0, li=5.0, steps=5)).max() <= 1e-4
    with pytest.raises(ConfigError, match="setting 's1' is fixed in this engine"):
        translator.run_tensor(x0, s1="neg_l2")
    with pytest.raises(ConfigError, match=r"unknown setting 'stepz' \(did you mean 'steps'\?\)"):
        translator.run_tensor(x0, stepz=3)
    with pytest.raises(ConfigError, match="at most 1000"):
        translator.run_tensor(x0, M=5000)
    with pytest.raises(ConfigError, match=r"\[B, 3, 32, 32\]"):
        translator.run_tensor(torch.zeros(1, 3, 64, 64))


def test_backend_requests_that_cannot_be_met(tiny_engine):
    with pytest.raises(ConfigError, match="tensorrt"):
        Translator(tiny_engine[0], backend="tensorrt")
    with pytest.raises(ConfigError, match="no usable backend"):
        Translator(tiny_engine[0], device="cuda")
    with pytest.raises(ConfigError, match="unknown backend"):
        Translator(tiny_engine[0], backend="openvino")


def test_run_takes_images_and_lists(tiny_engine, tmp_path):
    translator = Translator(tiny_engine[0])
    array = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(array).save(tmp_path / "a.png")
    one = translator.run(tmp_path / "a.png", seed=1)
    assert isinstance(one, Image.Image) and one.size == (32, 32)
    many = translator.run([array, Image.fromarray(array), tmp_path / "a.png"], seed=1, batch_size=2)
    assert len(many) == 3
    # one seed for every image: the same image gives the same result at any batch position
    assert all(np.array_equal(np.asarray(m), np.asarray(one)) for m in many)
    assert not np.array_equal(np.asarray(translator.run(array, seed=2)), np.asarray(one))
    seen = []
    translator.run(array, callback=lambda done, total: seen.append(done))
    assert seen == list(range(1, TINY_M + 1))


def _copy(tiny_engine, tmp_path):
    path = tmp_path / "engine"
    shutil.copytree(tiny_engine[0], path)
    return path


def test_tensorrt_plans_are_cached_by_what_they_depend_on(tiny_engine, tmp_path):
    """The plan cache, with a stand-in for the TensorRT compiler (TensorRT is not installable here)."""
    path = _copy(tiny_engine, tmp_path)
    compiled = []

    def fake_compile(onnx_path, contract, image_size, precision, profile, workspace, cache_path):
        compiled.append((contract.name, precision, tuple(profile)))
        return f"{contract.name}-{precision}-{profile}".encode()

    h100 = MachineIdentity("cuda", "9.0", "tensorrt 11.4.0")
    plans = build_plans(path, precision="fp32", compile_fn=fake_compile, identity=h100, log=lambda m: None)
    assert sorted(plans) == ["dse_grad", "score"] and len(compiled) == 2
    build_plans(path, precision="fp32", compile_fn=fake_compile, identity=h100, log=lambda m: None)
    assert len(compiled) == 2  # reused
    build_plans(path, precision="fp32", max_batch=4, compile_fn=fake_compile, identity=h100, log=lambda m: None)
    assert len(compiled) == 4 and compiled[-1][2] == (1, 1, 4)  # another batch profile, another plan
    engine = load_engine_dir(path)
    assert matching_plans(engine, h100, precision="fp32") is not None
    a100 = MachineIdentity("cuda", "8.0", "tensorrt 11.4.0")
    assert matching_plans(engine, a100) is None  # another GPU
    assert "built for cuda 9.0, tensorrt 11.4.0" in stale_plans(engine, a100, kind="tensorrt")[0]
    assert matching_plans(engine, MachineIdentity("cuda", "9.0", "tensorrt 10.0.0")) is None  # another TensorRT
    with pytest.raises(ConfigError, match="precision"):
        build_plans(path, precision="int4", compile_fn=fake_compile, identity=h100)


def test_every_plan_a_runner_gets_takes_batch_1(tiny_engine, tmp_path):
    """The batch range a backend reports is 1..max (``plans_batch_limit``; the Translator splits a
    job into batches up to it, the last one smaller): TensorRT plans are built with a minimum
    batch of 1 (another min_batch is refused), and a plan on record whose profile starts above 1
    is not used, stale_plans saying why (was: built, picked, and a smaller batch run against it)."""
    from egsde_rt.engine.plans import plans_batch_limit

    path = _copy(tiny_engine, tmp_path)
    h100 = MachineIdentity("cuda", "9.0", "tensorrt 11.4.0")

    def fake_compile(onnx_path, contract, image_size, precision, profile, workspace, cache_path):
        return f"{contract.name}-{profile}".encode()

    with pytest.raises(ConfigError, match=r"min_batch must be 1, got 2: a plan must take every batch up to max_batch"):
        build_plans(path, min_batch=2, opt_batch=4, max_batch=8, compile_fn=fake_compile, identity=h100)
    with pytest.raises(ConfigError, match="opt_batch must be at most max_batch"):
        build_plans(path, opt_batch=9, max_batch=8, compile_fn=fake_compile, identity=h100)
    build_plans(path, opt_batch=4, max_batch=8, compile_fn=fake_compile, identity=h100, log=lambda m: None)
    engine = load_engine_dir(path)
    assert {tuple(e.profile) for e in engine.manifest.plans.values()} == {(1, 4, 8)}
    assert plans_batch_limit(engine, h100, kind="tensorrt", precision="fp32") == 8
    manifest = json.loads((path / "manifest.json").read_text())
    for entry in manifest["plans"].values():  # as an older build with min_batch=2 recorded them
        entry["profile"] = [2, 4, 8]
    (path / "manifest.json").write_text(json.dumps(manifest))
    engine = load_engine_dir(path)
    assert matching_plans(engine, h100, precision="fp32") is None
    assert plans_batch_limit(engine, h100, kind="tensorrt", precision="fp32") is None
    assert "takes batches 2..8, not batch 1" in stale_plans(engine, h100, kind="tensorrt")[0]


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_tensorrt_plans_are_built_from_the_graph_variants(tiny_engine, tmp_path, precision):
    """A strongly typed TensorRT build computes in its graph's precision: fp16/bf16 plans are built
    from the engine's variant graphs, keyed by their hashes, beside the fp32 plans."""
    path = _copy(tiny_engine, tmp_path)
    compiled = {}

    def fake_compile(onnx_path, contract, image_size, precision, profile, workspace, cache_path):
        compiled[(contract.name, precision)] = onnx_path
        return f"{contract.name}-{precision}".encode()

    h100 = MachineIdentity("cuda", "9.0", "tensorrt 11.4.0")
    for p in ("fp32", precision):
        build_plans(path, precision=p, compile_fn=fake_compile, identity=h100, log=lambda m: None)
    engine = load_engine_dir(path)
    for name in ("score", "dse_grad"):
        variant = engine.manifest.graphs[name].variants[precision]
        assert compiled[(name, precision)] == engine.path / variant.file == engine.graph_file(name, precision)
        assert compiled[(name, "fp32")] == engine.path / engine.manifest.graphs[name].file
    for p in ("fp32", precision):
        plans = matching_plans(engine, h100, precision=p)
        assert {name: plans[name].read() for name in plans} == {n: f"{n}-{p}".encode() for n in plans}
    sources = {(e.graph, e.precision): e.source_sha256 for e in engine.manifest.plans.values()}
    assert sources[("score", precision)] == engine.manifest.graphs["score"].variants[precision].sha256


def test_an_engine_without_graph_variants_is_refused_for_reduced_precision_graphs(tiny_engine, tmp_path):
    """An engine exported before the variants: fp32 still runs; fp16 graphs are a MissingGraphsError
    naming the fix (ONNX Runtime's probe and the TensorRT build)."""
    path = _copy(tiny_engine, tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    for graph in manifest["graphs"].values():
        for variant in graph.pop("variants").values():
            (path / variant["file"]).unlink()
    (path / "manifest.json").write_text(json.dumps(manifest))
    engine = load_engine_dir(path)
    fix = "no fp16 variant of its score graph .* export the engine again"
    with pytest.raises(MissingGraphsError, match=fix):
        build_plans(path, precision="fp16", compile_fn=lambda *a: b"", identity=MachineIdentity("cuda", "9.0", "x"))
    assert re.search(fix, backends._graphs_missing(engine, "ONNX Runtime", "fp16"))
    assert backends._graphs_missing(engine, "ONNX Runtime", "fp32") == ""
    assert OrtRunner(engine).sessions  # fp32 runs


@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16", "bf16"])
def test_onnxruntime_cuda_runs_the_graphs_of_its_precision(tiny_engine, monkeypatch, precision):
    """fp16/bf16: the graphs' variants; fp32/tf32: the float32 graphs, with TF32 only for tf32 (a
    stand-in session records what ONNX Runtime is given)."""
    import onnxruntime

    made = []

    class Session:
        def __init__(self, path, options, providers):
            made.append((path, providers))

        def get_providers(self):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    monkeypatch.setattr(onnxruntime, "InferenceSession", Session)
    engine = load_engine_dir(tiny_engine[0])
    OrtRunner(engine, device="cuda", device_id=1, stream=99, precision=precision)
    graph = "fp32" if precision == "tf32" else precision
    assert [path for path, _ in made] == [str(engine.graph_file(name, graph)) for name in ("score", "dse_grad")]
    assert [p[0][1] for _, p in made] == 2 * [{"device_id": 1, "use_tf32": "1" if precision == "tf32" else "0",
                                               "has_user_compute_stream": "1", "user_compute_stream": "99"}]
    if precision in ("fp16", "bf16"):
        assert made[0][0].endswith(f"score.{precision}.onnx")
