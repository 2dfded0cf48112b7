"""The reduced-precision variants of an exported graph: the same graph with explicit casts, so
that a strongly typed runtime (TensorRT 11 builds no other kind; ONNX Runtime) computes where the
graph says.

``reduced_precision_graph(model, precision)`` rewrites a float32 ONNX graph (an ``onnx``
``ModelProto``) for ``precision`` ("fp16" or "bf16"): every convolution, transposed convolution,
matmul and Gemm that reads the image inputs (``HALF_OPS``; attention's two matmuls among them)
gets its inputs cast to the half type and its output cast back to float32; everything else stays
float32: normalisations, softmax, the activations and residual sums between the casts, the
DSE gradient's reductions, and the time embedding (the ops that read only ``t``: ``TIME_INPUTS``).
The graph's inputs and outputs stay float32, so the sampler's contract is unchanged. Weights are
not copied: a weight reaches its op through a ``Cast`` of the same initializer, which still points
at the engine's weights file (ONNX external data), and runtimes fold the cast when they load the
graph. In float16 the DSE gradient does not underflow because the graph is traced with the
similarity scaled by ``network_fns.FP16_GRAD_SCALE`` (a power of two: exact in float32).

ONNX gives Conv and ConvTranspose a bfloat16 type from opset 22 (``BF16_OPSET``): the bf16
variant declares opset 22 for the standard domain (and its local functions); the float32 and
fp16 graphs keep the export's opset. ``write_variant`` writes a variant beside its graph and
checks it with ONNX's strict shape and type inference.
"""

from __future__ import annotations

from pathlib import Path

# the ops computed in the half type; every other op computes in float32
HALF_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
# graph inputs whose ops alone stay float32 (the time embedding), whatever op they are
TIME_INPUTS = ("t",)
BF16_OPSET = 22
# What a variant is held to (tests/engine/test_reduced_precision_graphs.py, README "Backends and precision"):
# max |variant - the torch runner in the same precision| <= TOLERANCE x max |float32 output|, and a
# PSNR of at least MIN_PSNR_DB against the float32 graph (peak: the float32 output's range).
TOLERANCE = {"fp16": 1e-2, "bf16": 5e-2}
MIN_PSNR_DB = 40.0


def _half_type(precision: str) -> int:
    from onnx import TensorProto

    types = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
    if precision not in types:
        raise ValueError(f"no reduced-precision graph for {precision!r}; one of {sorted(types)}")
    return types[precision]


def _element_types(graph) -> dict:
    """{tensor name: ONNX element type} of the graph's tensors whose type it records (inputs,
    outputs, initializers, value_info)."""
    found = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info, *graph.output)}
    return {**found, **{t.name: t.data_type for t in graph.initializer}}


def reduced_precision_graph(model, precision: str) -> dict:
    """Rewrite ``model`` (an ``onnx.ModelProto``, changed in place) for ``precision`` (see the
    module docstring); returns {"half_ops": how many ops now compute in the half type,
    "time_ops": how many of ``HALF_OPS`` stay float32 on the time path}."""
    from onnx import TensorProto, helper

    half = _half_type(precision)
    graph = model.graph
    types = _element_types(graph)
    image_dependent = {v.name for v in graph.input if v.name not in TIME_INPUTS}
    cast_of: dict[str, str] = {}
    nodes, half_ops, time_ops = [], 0, 0
    for node in graph.node:
        reads_image = any(name in image_dependent for name in node.input)
        if reads_image:
            image_dependent.update(node.output)
        eligible = node.domain in ("", "ai.onnx") and node.op_type in HALF_OPS
        if eligible and not reads_image:
            time_ops += 1
        all_float = all(types.get(name, TensorProto.FLOAT) == TensorProto.FLOAT for name in node.input if name)
        if not (eligible and reads_image and all_float):
            nodes.append(node)
            continue
        half_ops += 1
        inputs = []
        for name in node.input:
            if name and name not in cast_of:  # each tensor cast once, before its first reader
                cast_of[name] = f"{name}__{precision}"
                nodes.append(helper.make_node("Cast", [name], [cast_of[name]], to=half, name=f"{name}__to_{precision}"))
            inputs.append(cast_of[name] if name else name)
        outputs = list(node.output)
        node.ClearField("input")
        node.input.extend(inputs)
        node.ClearField("output")
        node.output.extend(f"{name}__{precision}_out" for name in outputs)
        nodes.append(node)
        nodes.extend(helper.make_node("Cast", [f"{name}__{precision}_out"], [name], to=TensorProto.FLOAT,
                                      name=f"{name}__from_{precision}") for name in outputs)
    graph.ClearField("node")
    graph.node.extend(nodes)
    if precision == "bf16":
        for opset in (*model.opset_import, *(o for f in model.functions for o in f.opset_import)):
            if opset.domain in ("", "ai.onnx") and opset.version < BF16_OPSET:
                opset.version = BF16_OPSET
    return {"half_ops": half_ops, "time_ops": time_ops}


def write_variant(graph_path: Path, precision: str, out_path: Path) -> dict:
    """Write the ``precision`` variant of the graph at ``graph_path`` to ``out_path`` (in the same
    folder: its weights' external-data locations are relative to it), checked by ONNX's strict
    shape and type inference; ``reduced_precision_graph``'s report."""
    import onnx

    if out_path.parent.resolve() != graph_path.parent.resolve():
        raise ValueError("a variant is written beside its graph (external data paths are relative)")
    model = onnx.load(str(graph_path), load_external_data=False)  # the weights stay where they are
    report = reduced_precision_graph(model, precision)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.save(model, str(out_path))
    return report
