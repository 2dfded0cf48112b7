"""Trace a function of batched tensors into an aten graph whose batch stays symbolic.

``trace_batched(fn, sample_inputs)`` runs ``fn`` on fake tensors whose first size is symbolic and
every other size fixed (``symbolic_batch``), recording every aten op (``make_fx``): no real
computation, and none of the cost of reasoning about symbolic image sizes, which made a trace
three times slower. ``decompositions`` rewrite ops on the way (e.g. backward ops into forward
ops, or into the ops ONNX translates, see ``fx_translation``); ``functional`` removes in-place
ops. Tensors ``fn`` reads that are not its inputs (the weights) become the graph's constants,
one per tensor (``share_constants``).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv, StatelessSymbolicContext


def symbolic_batch(sample_inputs) -> tuple[FakeTensorMode, list]:
    """A fake-tensor mode and fakes of ``sample_inputs`` whose first size (the batch) is symbolic
    and every other size fixed."""
    mode = FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=True)
    fakes = [mode.from_tensor(t, symbolic_context=StatelessSymbolicContext(
        dynamic_sizes=[DimDynamic.DYNAMIC] + [DimDynamic.STATIC] * (t.dim() - 1))) for t in sample_inputs]
    return mode, fakes


def share_constants(graph: torch.fx.GraphModule) -> None:
    """One constant per tensor: a weight the trace met several times (e.g. in two forward passes
    and a backward) becomes one attribute, so a graph made from it holds each weight once."""
    first = {}
    for node in list(graph.graph.nodes):
        value = getattr(graph, node.target, None) if node.op == "get_attr" else None
        if not isinstance(value, torch.Tensor):
            continue
        key = (value.data_ptr(), value.storage_offset(), value.dtype, tuple(value.shape), tuple(value.stride()))
        if key in first and value.numel():
            node.replace_all_uses_with(first[key])
            graph.graph.erase_node(node)
        else:
            first.setdefault(key, node)
    used = {node.target for node in graph.graph.nodes if node.op == "get_attr"}
    for name in [name for name, value in vars(graph).items() if isinstance(value, torch.Tensor) and name not in used]:
        delattr(graph, name)
    graph.graph.lint()
    graph.recompile()


def trace_batched(fn: Callable, sample_inputs, *, decompositions: dict | None = None,
                  functional: bool = False) -> torch.fx.GraphModule:
    """The aten graph of ``fn(*inputs)`` for any batch (see the module docstring)."""
    def call(*inputs):  # make_fx takes plain functions
        return fn(*inputs)

    target = torch.func.functionalize(call, remove="mutations") if functional else call
    mode, fakes = symbolic_batch(sample_inputs)
    with torch.no_grad(), mode:
        graph = make_fx(target, decomposition_table=decompositions or {}, tracing_mode="fake",
                        _allow_non_fake_inputs=True)(*fakes)
    share_constants(graph)
    return graph
