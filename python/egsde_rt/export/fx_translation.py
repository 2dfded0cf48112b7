"""A traced aten graph straight to ONNX, through the ONNX exporter's own translator.

``torch.onnx.export`` re-traces a module twice before it translates a single node: once by
``torch.export`` and once more to decompose the result into the ops ONNX has translations for.
For cat2dog's DSE gradient (some 4,600 nodes) those re-traces took 40 s of the 71 s its graph
cost (2 cores), repeating what the gradient's own trace (``gradient_graph``) had done. So the
gradient is traced once, functional and with the exporter's decompositions
(``onnx_decompositions``), and that graph goes to the exporter's translator
(``translate_graph``): every node becomes the ONNX nodes ``torch.onnx.export`` would have made
(trace 13 s, translation 6 s).

The translator and the exporter's decomposition table are internals of ``torch.onnx``. The
direct path is taken only on the torch versions it is tested with (``TESTED_TORCH``: CI runs
the 2.13 we pin; the GPU machine has 2.11) and where its entry points exist (``available()``);
anything else, and any failure on the way (the trace with the exporter's decompositions, the
type-promotion pass, the translation), makes export take the public path
(``onnx_graphs.export_onnx``, see ``egsde_rt.export``): slower, the same graph. Either way
export validates the graph against PyTorch afterwards.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Sequence

import torch


# The torch minor versions the direct path is used with, inclusive (others take the public path).
TESTED_TORCH = ((2, 6), (2, 13))


class TranslationUnavailable(Exception):
    """This torch's ONNX exporter has no translator entry point we can use; take the public path."""


def torch_minor(version: str) -> tuple[int, int] | None:
    """(major, minor) of a torch version string ("2.13.0+cpu"), or None when it cannot be read."""
    try:
        major, minor = version.split("+")[0].split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def _internals():
    minor = torch_minor(torch.__version__)
    if minor is None or not TESTED_TORCH[0] <= minor <= TESTED_TORCH[1]:
        raise TranslationUnavailable(f"torch {torch.__version__} is outside the versions the direct path is tested "
                                     f"with ({'.'.join(map(str, TESTED_TORCH[0]))} to "
                                     f"{'.'.join(map(str, TESTED_TORCH[1]))})")
    try:
        from torch.onnx._internal.exporter import _core, _decomp, _fx_passes, _ir_passes, _registration
    except ImportError as error:
        raise TranslationUnavailable(f"torch {torch.__version__}: {error}") from None
    needed = [(_core, "_translate_fx_graph"), (_core, "TorchTensor"), (_decomp, "get_onnx_implemented_overloads"),
              (_decomp, "create_onnx_friendly_decomposition_table"), (_fx_passes, "insert_type_promotion_nodes"),
              (_fx_passes, "remove_assertion_nodes"), (_ir_passes, "add_opset_imports"),
              (_registration.ONNXRegistry, "from_torchlib")]
    missing = [f"{owner.__name__}.{name}" for owner, name in needed if not hasattr(owner, name)]
    if missing:
        raise TranslationUnavailable(f"torch {torch.__version__} lacks {missing}")
    return _core, _decomp, _fx_passes, _ir_passes, _registration


def available() -> bool:
    try:
        _internals()
    except TranslationUnavailable:
        return False
    return True


@contextlib.contextmanager
def quiet_exporter_logs():
    """The ONNX exporter's notices below errors silenced for the block (e.g. "torchvision is not
    installed", or one per node of a traced graph, which has no nn.Module stack)."""
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        onnx_logger.setLevel(level)


@functools.lru_cache(maxsize=None)
def _registry(opset: int):
    _, _, _, _, _registration = _internals()
    with quiet_exporter_logs():
        return _registration.ONNXRegistry.from_torchlib(opset_version=opset)


def onnx_decompositions(opset: int) -> dict:
    """The exporter's decomposition table for ``opset``: each aten op without an ONNX translation
    -> aten ops with one (``torch.onnx.export`` applies it in its second re-trace)."""
    _, _decomp, _, _, _ = _internals()
    implemented = set(_decomp.get_onnx_implemented_overloads(_registry(opset)))
    return _decomp.create_onnx_friendly_decomposition_table(implemented)


def _insert_type_promotion(graph_module: torch.fx.GraphModule, _fx_passes) -> None:
    """The exporter's type-promotion pass (explicit casts where PyTorch promotes implicitly and
    ONNX does not), re-running only the nodes it may change: every other node keeps the value its
    trace recorded, where the exporter re-runs all of them on fake tensors (8.7 of 9 s of the
    cat2dog gradient's translation). Falls back to the exporter's own pass where its parts moved."""
    try:
        from torch.onnx._internal.fx.passes import type_promotion
        base, rule_of = type_promotion._TypePromotionInterpreter, type_promotion.get_type_promotion_rule
        table, promotion = type_promotion.TypePromotionTable, type_promotion.InsertTypePromotion
    except (ImportError, AttributeError):
        _fx_passes.insert_type_promotion_nodes(graph_module)
        return

    class RecordedValues(base):
        def run_node(self, node):
            if node.op == "call_function" and "val" in node.meta and rule_of(node, self.type_promotion_table) is None:
                return node.meta["val"]
            return super().run_node(node)

    insertion = promotion(graph_module)
    insertion.interpreter = RecordedValues(graph_module, table())
    insertion.run()


def translate_graph(graph_module: torch.fx.GraphModule, input_names: Sequence[str], output_names: Sequence[str],
                    opset: int, dynamic_axes: dict[int, str] | None = None):
    """``graph_module`` (a functional aten graph traced with ``onnx_decompositions``, its tensor
    constants as attributes) as an ``onnx_ir.Model``: the placeholders become the inputs
    ``input_names``, the outputs ``output_names``, each tensor constant an initializer holding the
    very tensor (so ``external_weights`` can point it at the weights file). ``dynamic_axes``:
    {axis: name} for the inputs' and outputs' symbolic sizes (e.g. {0: "batch"})."""
    import onnx_ir as ir

    _core, _, _fx_passes, _ir_passes, _ = _internals()
    _insert_type_promotion(graph_module, _fx_passes)
    graph_module = _fx_passes.remove_assertion_nodes(graph_module)
    graph = graph_module.graph
    model = ir.Model(ir.Graph([], [], nodes=[], name="main_graph"), ir_version=10, producer_name="pytorch",
                     producer_version=torch.__version__)
    registry = _registry(opset)
    with quiet_exporter_logs():
        values = _core._translate_fx_graph(graph, model, graph_like=model.graph, owned_graphs={},
                                           lower="at_conversion", registry=registry)
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    (output_node,) = [node for node in graph.nodes if node.op == "output"]
    outputs = output_node.args[0]
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    if len(placeholders) != len(input_names) or len(outputs) != len(output_names):
        raise ValueError(f"the graph has {len(placeholders)} inputs and {len(outputs)} outputs, "
                         f"named {list(input_names)} and {list(output_names)}")
    reserved = set(input_names) | set(output_names)
    for node in model.graph:  # free the names the graph's interface takes (e.g. aten.t's node "t")
        for value in node.outputs:
            if value.name in reserved:
                value.name = f"{value.name}_inner"
    for node in graph.nodes:  # the translator's initializers hold fake tensors: give them the real ones
        if node.op == "get_attr":
            initializer = model.graph.initializers[node.name]
            initializer.const_value = _core.TorchTensor(getattr(graph_module, node.target), name=node.name)
    model.graph.inputs.clear()
    model.graph.outputs.clear()
    for fx_nodes, names, interface in ((placeholders, input_names, model.graph.inputs),
                                       (outputs, output_names, model.graph.outputs)):
        for fx_node, name in zip(fx_nodes, names):
            value = values[fx_node.name]
            value.name = name
            if dynamic_axes and value.shape is not None:
                value.shape = ir.Shape([dynamic_axes.get(axis, dim) if not isinstance(dim, int) else dim
                                        for axis, dim in enumerate(value.shape)])
            interface.append(value)
    _ir_passes.add_opset_imports(model)
    return model
