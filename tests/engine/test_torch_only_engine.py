"""Engines without ONNX graphs (``--formats torch``): exported in seconds, run by the torch and
compiled backends (the compiled ones in test_compiled.py, whose plans are built from such an
engine), refused by ONNX Runtime and TensorRT with the command that exports the graphs."""

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import TINY_M, tiny_models
from egsde_rt.cli import main
from egsde_rt.engine import EXPORT_FORMATS, MissingGraphsError, load_engine_dir
from egsde_rt.errors import ConfigError, EgsdeError, EngineDirError
from egsde_rt.export import check_formats, export_engine
from egsde_rt.runtime.backends import BackendChoice, make_runner, probe
from egsde_rt.runtime.runners import OrtRunner
from egsde_rt.runtime.translator import Translator
from egsde_rt.method.settings import EGSDESettings
from helpers.sampling import reference_translate

SETTINGS = dict(M=TINY_M, ls=500.0, li=2.0, down_N=8)


def _x0(batch=2, seed=3):
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_a_torch_only_export_writes_the_manifest_and_the_weights_only(tiny_torch_engine):
    path = tiny_torch_engine[0]
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    assert files == ["manifest.json", "weights/dse.safetensors", "weights/score.safetensors"]
    engine = load_engine_dir(path)
    assert engine.formats == ("torch",) and engine.manifest.graphs == {}
    export = engine.manifest.export
    assert export.formats == ["torch"] and export.onnx is None and export.opset is None


def test_the_torch_backend_translates_a_torch_only_engine(tiny_torch_engine):
    path, unet, dse = tiny_torch_engine
    translator = Translator(path)  # auto: no compiled plans, no graphs: torch
    assert translator.backend == "torch"
    x0 = _x0()
    got = translator.run_tensor(x0, seed=4)
    assert np.abs(got - reference_translate(x0, unet, dse, seed=4, **SETTINGS).numpy()).max() <= 1e-4


def test_onnx_runtime_refuses_a_torch_only_engine_saying_how_to_export_the_graphs(tiny_torch_engine):
    with pytest.raises(ConfigError, match=r"onnxruntime-cpu on cpu: .*only torch weights.*--formats onnx torch"):
        Translator(tiny_torch_engine[0], backend="onnxruntime-cpu")


@pytest.mark.parametrize("backend,device", [("onnxruntime-cpu", "cpu"), ("onnxruntime-cuda", "cuda"),
                                            ("tensorrt", "cuda")])
def test_graph_runners_refuse_a_torch_only_engine(tiny_torch_engine, backend, device):
    """The runners refuse it too (on a GPU machine as here: before any provider is asked)."""
    engine = load_engine_dir(tiny_torch_engine[0])
    with pytest.raises(MissingGraphsError, match=rf"{backend} backend runs the ONNX graphs.*--formats onnx torch"):
        make_runner(BackendChoice(backend, device, "test"), engine)


def test_the_probe_and_the_runner_refuse_it_with_the_reason(tiny_torch_engine):
    pytest.importorskip("onnxruntime")
    engine = load_engine_dir(tiny_torch_engine[0])
    usable, why = probe(engine, "cpu")["onnxruntime-cpu"]
    assert not usable and "torch weights" in why and "--formats onnx torch" in why
    with pytest.raises(MissingGraphsError, match=r"only torch weights .*--formats onnx torch.*torch or compiled"):
        OrtRunner(engine)
    assert issubclass(MissingGraphsError, EgsdeError)


def test_tensorrt_plans_are_refused_for_it(tiny_torch_engine):
    from egsde_rt.export.tensorrt_plans import build_plans

    with pytest.raises(MissingGraphsError, match="tensorrt"):
        build_plans(tiny_torch_engine[0], compile_fn=lambda *a, **k: pytest.fail("compiled a missing graph"))


def test_the_command_line_passes_the_formats(monkeypatch):
    import egsde_rt.export

    seen = []
    monkeypatch.setattr(egsde_rt.export, "export_preset", lambda *a, **k: seen.append(k["formats"]))
    base = ["export", "--score-ckpt", "s.pt", "--dse-ckpt", "d.pt", "--out", "e"]
    assert main([*base, "--formats", "torch"]) == 0
    assert main(base) == 0
    assert main([*base, "--no-torch-weights"]) == 0
    assert seen == [["torch"], ["onnx", "torch"], ["onnx"]]
    with pytest.raises(SystemExit):
        main([*base, "--formats", "tensorrt"])


def test_formats_are_checked():
    assert check_formats(["torch", "onnx"]) == EXPORT_FORMATS and check_formats("torch") == ("torch",)
    for bad in ([], ["onnx", "pt"]):
        with pytest.raises(ConfigError, match="one or both"):
            check_formats(bad)
    unet, dse = tiny_models()
    with pytest.raises(ConfigError, match="one or both"):
        export_engine(unet, dse, "never", image_size=32, settings=EGSDESettings(M=4, down_N=8), formats=())


def test_a_manifest_listing_neither_graphs_nor_weights_or_half_of_them_is_refused(tiny_torch_engine, tmp_path):
    path = tmp_path / "engine"
    shutil.copytree(tiny_torch_engine[0], path)
    manifest = json.loads((path / "manifest.json").read_text())
    half = {**manifest, "torch_weights": {"score": manifest["torch_weights"]["score"]}}
    (path / "manifest.json").write_text(json.dumps(half))
    with pytest.raises(EngineDirError, match="no 'dse' torch weights"):
        load_engine_dir(path)
    (path / "manifest.json").write_text(json.dumps({**manifest, "torch_weights": {}}))
    with pytest.raises(EngineDirError, match="neither ONNX graphs nor torch weights"):
        load_engine_dir(path)
