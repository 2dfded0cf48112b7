"""Export: the graphs against PyTorch, the gradient graph against autograd, the manifest."""

import json

import numpy as np
import pytest
import torch

from conftest import tiny_models
from egsde_rt.errors import EgsdeError
from egsde_rt.export import ExportValidationError, export_engine
from egsde_rt.engine import DSE_GRAD, FORMAT_VERSION, SCORE, load_engine_dir, sha256_file
from egsde_rt.export.gradient_graph import DSEGradient, trace_dse_gradient
from egsde_rt.export.onnx_graphs import VALIDATION_BATCHES, export_onnx, ort_session
from egsde_rt.method.settings import EGSDESettings

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def neg_l2_grad(tmp_path_factory):
    """dse_grad.onnx of the tiny DSE for s1 = neg_l2 (the engine fixture covers cosine)."""
    _, dse = tiny_models()
    path = tmp_path_factory.mktemp("neg_l2") / DSE_GRAD.file
    traced = trace_dse_gradient(dse, "neg_l2", DSE_GRAD.sample_inputs(2, 32))
    export_onnx(traced, DSE_GRAD, DSE_GRAD.sample_inputs(2, 32), path, 18)
    return path, dse


def _grad_graph(kind, tiny_engine, neg_l2_grad):
    if kind == "cosine":
        path, _, dse = tiny_engine
        return ort_session(path / DSE_GRAD.file), dse
    path, dse = neg_l2_grad
    return ort_session(path), dse


def _run(session, y, x_t, t):
    return session.run(None, {"y": y.numpy(), "x_t": x_t.numpy(), "t": t.numpy()})[0]


def _autograd(dse, kind, y, x_t, t):
    return DSEGradient(dse, kind)(y, x_t, t).detach().numpy()


@pytest.mark.parametrize("kind", ["cosine", "neg_l2"])
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_dse_grad_matches_eager_autograd(kind, batch, tiny_engine, neg_l2_grad):
    session, dse = _grad_graph(kind, tiny_engine, neg_l2_grad)
    y, x_t, t = DSE_GRAD.sample_inputs(batch, 32, seed=100 + batch)
    expected = _autograd(dse, kind, y, x_t, t)
    got = _run(session, y, x_t, t)
    assert got.shape == (batch, 3, 32, 32)
    assert np.abs(expected).max() > 0
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.parametrize("kind", ["cosine", "neg_l2"])
@pytest.mark.parametrize("changed", ["y", "x_t", "t"])
def test_dse_grad_responds_to_every_input(kind, changed, tiny_engine, neg_l2_grad):
    """No gradient may be constant-folded: changing any input changes the output as autograd says."""
    session, dse = _grad_graph(kind, tiny_engine, neg_l2_grad)
    inputs = dict(zip(("y", "x_t", "t"), DSE_GRAD.sample_inputs(2, 32, seed=7)))
    before = _run(session, **inputs)
    inputs[changed] = inputs[changed] + (300.0 if changed == "t" else 0.5 * torch.randn_like(inputs[changed]))
    after = _run(session, **inputs)
    expected = _autograd(dse, kind, inputs["y"], inputs["x_t"], inputs["t"])
    assert np.abs(after - before).max() > 1e-3 * np.abs(before).max()
    assert np.abs(after - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_score_graph_slices_eps_and_has_a_dynamic_batch(batch, tiny_engine):
    path, unet, _ = tiny_engine
    x, t = SCORE.sample_inputs(batch, 32, seed=batch)
    (got,) = ort_session(path / SCORE.file).run(None, {"x": x.numpy(), "t": t.numpy()})
    with torch.no_grad():
        expected = unet(x, t)[:, :3].numpy()
    assert got.shape == (batch, 3, 32, 32)
    assert np.abs(got - expected).max() <= 1e-4


def test_manifest_describes_the_engine(tiny_engine):
    path, _, _ = tiny_engine
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION and manifest["image_size"] == 32
    assert manifest["settings"]["M"] == 12 and manifest["settings"]["s1"] == "cosine"
    assert manifest["schedule"] == {"kind": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_timesteps": 1000}
    assert manifest["export"]["opset"] >= 18 and manifest["export"]["torch"] == torch.__version__
    for name, graph in manifest["graphs"].items():
        assert graph["sha256"] == sha256_file(path / graph["file"])
        assert set(graph["validation"]) == {str(b) for b in VALIDATION_BATCHES} == {"1", "2"}
        assert all(e["max_rel"] < 1e-3 for e in graph["validation"].values())
    assert manifest["graphs"]["dse_grad"]["inputs"] == ["y", "x_t", "t"]
    assert manifest["graphs"]["score"]["shapes"]["x"] == ["batch", 3, 32, 32]
    assert load_engine_dir(path).manifest.method.ls == 500.0


class _Diverging(torch.nn.Module):
    def forward(self, x, t):
        return x * float("nan")


def test_failed_validation_leaves_nothing_behind(tmp_path):
    _, dse = tiny_models()
    out = tmp_path / "engine"
    with pytest.raises(ExportValidationError, match="score.onnx differs from PyTorch"):
        export_engine(_Diverging(), dse, out, image_size=32,
                      settings=EGSDESettings(M=10, ls=1.0, li=1.0, down_N=8, score_kind="ddpm"),
                      formats=("onnx",), log=lambda m: None)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_to_overwrite_and_checks_settings(tmp_path, tiny_engine):
    unet, dse = tiny_models()
    (tmp_path / "taken").mkdir()
    with pytest.raises(EgsdeError, match="overwrite"):
        export_engine(unet, dse, tmp_path / "taken", image_size=32, settings=EGSDESettings(M=10, down_N=8))
    with pytest.raises(EgsdeError, match="down_N"):
        export_engine(unet, dse, tmp_path / "new", image_size=32, settings=EGSDESettings(M=10, down_N=5))
    with pytest.raises(EgsdeError, match="exceeds the schedule's 500 timesteps"):
        export_engine(unet, dse, tmp_path / "new", image_size=32, settings=EGSDESettings(M=600, down_N=8),
                      schedule={"kind": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_timesteps": 500})


@pytest.mark.parametrize("translator", ["missing", "failing"])
def test_export_falls_back_to_torch_onnx_export(translator, tmp_path, tiny_engine, monkeypatch):
    """Where this torch has no usable ONNX translator (``fx_translation``), the DSE gradient goes
    through ``torch.onnx.export``: the same gradients as the translated graph of ``tiny_engine``.
    ``release_networks`` frees the networks' weights only when asked."""
    import egsde_rt.export.pipeline as export_module
    from egsde_rt.export import fx_translation

    if translator == "missing":
        monkeypatch.setattr(fx_translation, "available", lambda: False)
    else:
        def unavailable(*args, **kwargs):
            raise fx_translation.TranslationUnavailable("a changed signature")

        monkeypatch.setattr(export_module, "export_translated_onnx", unavailable)
    unet, dse = tiny_models()
    before = {name: t.clone() for name, t in dse.state_dict().items()}
    messages = []
    path = export_engine(unet, dse, tmp_path / "engine", image_size=32, formats=("onnx",), log=messages.append,
                         settings=EGSDESettings(M=10, ls=500.0, li=2.0, down_N=8),
                         release_networks=translator == "failing")
    assert any("exporting through torch.onnx.export" in m for m in messages) == (translator == "failing")
    inputs = DSE_GRAD.sample_inputs(2, 32, seed=5)
    translated = _run(ort_session(tiny_engine[0] / DSE_GRAD.file), *inputs)
    public = _run(ort_session(path / DSE_GRAD.file), *inputs)
    assert np.abs(translated).max() > 0
    assert np.abs(public - translated).max() <= 1e-5 * np.abs(translated).max()
    if translator == "failing":  # released: nothing of the weights is left
        assert all(p.numel() == 0 for p in (*unet.parameters(), *dse.parameters()))
    else:
        assert all(torch.equal(before[name], t) for name, t in dse.state_dict().items())


def test_the_direct_path_is_used_only_with_the_tested_torch_versions(monkeypatch):
    from egsde_rt.export import fx_translation

    assert fx_translation.torch_minor("2.13.0+cpu") == (2, 13) and fx_translation.torch_minor("nightly") is None
    for version in ("2.5.1", "2.14.0", "3.0.0", "nightly"):
        monkeypatch.setattr(torch, "__version__", version)
        assert not fx_translation.available(), version


@pytest.mark.parametrize("step", ["trace", "promotion", "translator"])
def test_any_failure_of_the_direct_path_takes_the_public_path(step, tmp_path, monkeypatch):
    """Whatever step of the direct path fails (the trace with the exporter's decompositions, the
    type-promotion pass, the translator), export logs it and takes ``torch.onnx.export`` (here a
    stand-in: ``test_export_falls_back_to_torch_onnx_export`` runs the real one); nothing of
    the failed attempt is left behind."""
    import egsde_rt.export.pipeline as export_module
    from egsde_rt.export import fx_translation

    if not fx_translation.available():
        pytest.skip("this torch has no ONNX translator to use")
    from torch.onnx._internal.exporter import _core

    def boom(*args, **kwargs):
        raise {"trace": RuntimeError, "promotion": AssertionError, "translator": KeyError}[step]("an internal change")

    target = {"trace": (fx_translation, "onnx_decompositions"), "promotion": (fx_translation, "_insert_type_promotion"),
              "translator": (_core, "_translate_fx_graph")}[step]
    monkeypatch.setattr(*target, boom)
    public = []
    monkeypatch.setattr(export_module, "export_onnx", lambda module, *args: public.append(module) or {})
    _, dse = tiny_models()
    messages = []
    settings = EGSDESettings(M=10, down_N=8)
    gradient, translation = export_module._trace_gradient(dse, settings, 32, export_module.DEFAULT_OPSET,
                                                          messages.append)
    assert translation == (step != "trace")
    path = tmp_path / DSE_GRAD.file
    assert export_module._export_gradient(gradient, path, 32, export_module.DEFAULT_OPSET, None, translation,
                                          messages.append) == {}
    assert len(public) == 1 and not path.exists()
    (message,) = messages
    assert f"failed in its {'trace' if step == 'trace' else 'translation'}" in message
    assert "exporting through torch.onnx.export" in message


def test_type_promotion_that_reuses_the_trace_makes_the_exporters_graph():
    """``fx_translation`` re-runs only the nodes the exporter's type-promotion pass may change: the
    same nodes, ops and dtypes as the exporter's own pass, which re-runs every node."""
    from egsde_rt.export import fx_translation
    from torch.onnx._internal.exporter import _fx_passes

    if not fx_translation.available():
        pytest.skip("this torch has no ONNX translator to use")
    _, dse = tiny_models()

    def traced():
        return trace_dse_gradient(dse, "cosine", DSE_GRAD.sample_inputs(3, 32), functional=True,
                                  extra_decompositions=fx_translation.onnx_decompositions(18)).graph_module

    def signature(graph):
        return [(n.op, str(n.target), [str(a) for a in n.args],
                 getattr(n.meta.get("val"), "dtype", None)) for n in graph.graph.nodes]

    def mixed():  # int64 times float32: a cast the pass must insert
        from egsde_rt.export.batch_tracing import trace_batched

        return trace_batched(lambda x, t: x * (t.long() + 1)[:, None, None, None],
                             DSE_GRAD.sample_inputs(3, 8)[1:], functional=True,
                             decompositions=fx_translation.onnx_decompositions(18))

    for make in (traced, mixed):
        exporters, ours = make(), make()
        _fx_passes.insert_type_promotion_nodes(exporters)
        fx_translation._insert_type_promotion(ours, _fx_passes)
        assert signature(ours) == signature(exporters)
    assert any("convert_element_type" in str(n.target) for n in ours.graph.nodes)
