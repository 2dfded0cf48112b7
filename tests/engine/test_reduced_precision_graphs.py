"""The fp16 and bf16 variants of the exported graphs (``export.reduced_precision``): where they
compute in half precision, that they read the same weights, and their values on the CPU, by an
evaluator independent of the exporter and of the runtimes: the ``onnx`` package's reference
evaluator, which computes each op in its declared type (numpy float16; ``ml_dtypes`` bfloat16).
ONNX Runtime cannot check them here: its CPU provider has no bfloat16 convolution, and it runs
float16 convolutions in float32 (it inserts casts and then removes the cast pairs), so a float16
graph gives it float32 values."""

import copy
import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from conftest import tiny_models
from egsde_rt.engine import load_engine_dir
from egsde_rt.export.gradient_graph import DSEGradient
from egsde_rt.export.reduced_precision import BF16_OPSET, HALF_OPS, MIN_PSNR_DB, TOLERANCE, reduced_precision_graph
from egsde_rt.export.score_graph import ScoreGraph
from egsde_rt.models.network_fns import gradient_scale, in_precision

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def engine(tiny_engine, tmp_path_factory):
    """The tiny engine, copied: ``onnx.load`` refuses external data in a file with several hard
    links (tests/reliability/test_fuzz.py links the session's engine files)."""
    path = tmp_path_factory.mktemp("variants") / "engine"
    shutil.copytree(tiny_engine[0], path)
    return load_engine_dir(path)
HALF = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
GRAPHS = ("score", "dse_grad")


def _graph(engine, name, precision="fp32", external=False):
    return onnx.load(str(engine.graph_file(name, precision)), load_external_data=external)


def _types(model) -> dict:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    found = {v.name: v.type.tensor_type.elem_type for v in (*inferred.input, *inferred.value_info, *inferred.output)}
    return {**found, **{t.name: t.data_type for t in inferred.initializer}}


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("name", GRAPHS)
def test_half_precision_only_in_the_convolutions_and_matmuls_off_the_time_path(engine, name, precision):
    """Every convolution and matmul that reads the image computes in the half type; nothing else
    does (normalisations, softmax, reductions, the time embedding stay float32); inputs and
    outputs are float32."""
    model = _graph(engine, name, precision)
    types = _types(model)
    half_ops, time_ops = 0, 0
    for node in model.graph.node:
        floats = [types.get(i) for i in node.input if i and types.get(i) in (TensorProto.FLOAT, HALF[precision])]
        if node.op_type in HALF_OPS:
            if set(floats) == {HALF[precision]}:
                half_ops += 1
            else:
                assert set(floats) == {TensorProto.FLOAT}, node.name
                time_ops += 1
        elif node.op_type != "Cast":
            assert HALF[precision] not in floats, f"{node.op_type} {node.name} reads {precision}"
    fp32 = _graph(engine, name)
    assert half_ops == sum(n.op_type in HALF_OPS for n in fp32.graph.node) - time_ops > 0
    # the tiny networks' linear layers (Gemm) are all on the time path: the time embedding
    assert 0 < time_ops == sum(n.op_type == "Gemm" for n in fp32.graph.node)
    assert {types[v.name] for v in (*model.graph.input, *model.graph.output)} == {TensorProto.FLOAT}
    if precision == "bf16":
        assert {o.version for o in model.opset_import if o.domain == ""} == {BF16_OPSET}


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("name", GRAPHS)
def test_a_variant_reads_the_same_weights_stored_once(engine, name, precision):
    """The variant's initializers are the float32 graph's: the same names, pointing at the same
    bytes of the weights file (external data), none added; each weight reaches its op by a Cast."""

    def initializers(model):
        return {t.name: (t.data_type, tuple(t.dims), tuple((e.key, e.value) for e in t.external_data))
                for t in model.graph.initializer}

    fp32, variant = _graph(engine, name), _graph(engine, name, precision)
    assert initializers(variant) == initializers(fp32)
    external = [t for t in variant.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    assert external and {dict((e.key, e.value) for e in t.external_data)["location"] for t in external} == {
        f"weights/{'score' if name == 'score' else 'dse'}.safetensors"}
    cast_inputs = {n.input[0] for n in variant.graph.node if n.op_type == "Cast"}
    assert {t.name for t in external if len(t.dims) == 4} <= cast_inputs  # every convolution kernel, cast at load
    assert variant.ByteSize() < 2 * fp32.ByteSize() and engine.graph_file(name, precision).stat().st_size < 1 << 20


def _psnr(got: np.ndarray, ref: np.ndarray) -> float:
    peak = float(ref.max() - ref.min())
    return float(10 * np.log10(peak**2 / np.mean((got.astype(np.float64) - ref) ** 2)))


def _evaluate(engine, name: str, precision: str, feeds: dict) -> np.ndarray:
    if precision == "fp32":
        session = ort.InferenceSession(str(engine.graph_file(name, precision)), providers=["CPUExecutionProvider"])
        return session.run(None, feeds)[0]
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(_graph(engine, name, precision, external=True)).run(None, feeds)[0]


def _torch_runner(name: str, precision: str, inputs):
    """What the torch runner computes in ``precision`` (network_fns: the torso in the half type,
    the float16 gradient scaling)."""
    unet, dse = tiny_models()
    if name == "score":
        return ScoreGraph(in_precision(copy.deepcopy(unet), precision), "adm")(*inputs).detach().numpy()
    gradient = DSEGradient(in_precision(copy.deepcopy(dse), precision), "cosine", gradient_scale(precision))
    return gradient(*inputs).numpy()


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("name", GRAPHS)
def test_a_variant_matches_the_torch_runner_in_its_precision_and_stays_near_fp32(engine, name, precision):
    g = torch.Generator().manual_seed(3)
    y = torch.randn(1, 3, 32, 32, generator=g)
    x_t = y + 0.3 * torch.randn(1, 3, 32, 32, generator=g)
    t = torch.tensor([700.0])
    inputs = (y, t) if name == "score" else (y, x_t, t)
    feeds = dict(zip(("x", "t") if name == "score" else ("y", "x_t", "t"), (v.numpy() for v in inputs)))
    fp32 = _evaluate(engine, name, "fp32", feeds)
    got = _evaluate(engine, name, precision, feeds)
    assert got.dtype == np.float32 and got.shape == fp32.shape
    scale = float(np.abs(fp32).max())
    err = float(np.abs(got - _torch_runner(name, precision, inputs)).max())
    assert err <= TOLERANCE[precision] * scale, f"{err / scale:.3g} of the scale from the torch runner"
    assert _psnr(got, fp32) >= MIN_PSNR_DB
    assert err > 0 and _psnr(got, fp32) < 200  # it did compute in the half type


def test_the_fp16_gradient_does_not_underflow(engine):
    """A small DSE gradient (y near x_t) still reaches float16's range: the gradient graph is traced
    with the similarity scaled by FP16_GRAD_SCALE, so the fp16 variant flushes at most 1 % of the
    float32 gradient to zero (unscaled, this input flushes 6 %)."""
    g = torch.Generator().manual_seed(3)
    y = torch.randn(1, 3, 32, 32, generator=g)
    feeds = {"y": y.numpy(), "x_t": (y + 0.01 * torch.randn(1, 3, 32, 32, generator=g)).numpy(),
             "t": np.array([700.0], np.float32)}
    fp32 = _evaluate(engine, "dse_grad", "fp32", feeds)
    fp16 = _evaluate(engine, "dse_grad", "fp16", feeds)
    assert np.abs(fp32).max() < 1e-5  # small enough to underflow unscaled
    assert np.mean((fp16 == 0) & (fp32 != 0)) <= 0.01


def test_the_rewrite_casts_each_tensor_once_and_leaves_other_graphs_alone():
    """A graph without convolutions or matmuls on the image path is left as it was."""
    from onnx import helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    t = helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 4])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], [0.5] * 16)
    nodes = [helper.make_node("MatMul", ["t", "w"], ["temb"]),  # the time path: stays float32
             helper.make_node("MatMul", ["x", "w"], ["h1"]), helper.make_node("MatMul", ["h1", "w"], ["h2"]),
             helper.make_node("Add", ["h2", "temb"], ["out"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x, t], [out], [w]), ir_version=10,
                              opset_imports=[helper.make_opsetid("", 18)])
    report = reduced_precision_graph(model, "fp16")
    assert report == {"half_ops": 2, "time_ops": 1}
    casts = [n for n in model.graph.node if n.op_type == "Cast"]
    assert sorted(n.input[0] for n in casts if n.attribute[0].i == TensorProto.FLOAT16) == ["h1", "w", "x"]
    onnx.checker.check_model(model, full_check=True)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": np.ones((1, 4), np.float32), "t": np.ones((1, 4), np.float32)})[0]
    assert np.allclose(got, 6.0)  # (x @ w) @ w + t @ w with x = t = 1, w = 0.5
