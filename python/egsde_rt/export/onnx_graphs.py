"""ONNX export of one graph, and its numerical validation against PyTorch.

``export_onnx`` exports a module through ``torch.onnx.export``; ``export_translated_onnx`` a
graph already traced for ONNX (``fx_translation``). Both store the weights as external data in
the engine's weights file (``save_linked``).

Validation runs each graph at batch 1 and 2 (``VALIDATION_BATCHES``; graphs are traced at batch
3, so a batch baked into a graph fails) and keeps export's memory low: the PyTorch reference is
computed first, one sample at a time, and only its output kept (``reference_outputs``); then the
graph runs in an ONNX Runtime session without a memory arena (freed activations go back to the
system) nor weight pre-packing (no second copy of the weights), one session for both batch
sizes, closed before the next graph; freed heap memory is returned between steps.
"""

from __future__ import annotations

import ctypes
import gc
import inspect
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import EgsdeError
from ..engine.contracts import MAX_BATCH, GraphContract
from .external_weights import link_initializers
from .fx_translation import quiet_exporter_logs


# batch 1 and a batch of several, both unlike the batch graphs are traced with (``TRACE_BATCH``):
# a batch baked into a graph fails one of them
VALIDATION_BATCHES = (1, 2)
TRACE_BATCH = 3


class ExportValidationError(EgsdeError):
    """An exported graph does not reproduce PyTorch within tolerance."""


def export_onnx(module: torch.nn.Module, contract: GraphContract, sample_inputs, path: Path, opset: int,
                weights=None) -> dict:
    """Export ``module`` with a dynamic batch through the dynamo exporter to ``path``.

    ``weights``: ``(WeightIndex, location)``: initializers that are weights become ONNX external
    data in the weights file at ``location`` (relative to ``path``'s folder) instead of being
    copied into the graph; returns ``external_weights.link_initializers``'s report (empty without)."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    arg_names = list(inspect.signature(module.forward).parameters)
    dynamic_shapes = {name: {0: batch} for name in arg_names}
    with warnings.catch_warnings(), quiet_exporter_logs():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, tuple(sample_inputs), dynamo=True, opset_version=opset,
            input_names=list(contract.inputs), output_names=list(contract.outputs),
            dynamic_shapes=dynamic_shapes, optimize=False, verbose=False,
        )
    if program is None:
        raise EgsdeError(f"the ONNX exporter returned nothing for {contract.name}")
    model = program.model
    del program  # the exported program's graph and its fake tensors
    return save_linked(model, path, weights)


def export_translated_onnx(graph_module: torch.fx.GraphModule, contract: GraphContract, path: Path, opset: int,
                           weights=None) -> dict:
    """``export_onnx`` of a graph traced for ``fx_translation`` (functional, with its
    ``onnx_decompositions``): translated without re-tracing; raises
    ``fx_translation.TranslationUnavailable`` where this torch cannot, and whatever its internals
    raise where they fail (``egsde_rt.export`` then takes ``export_onnx``)."""
    from .fx_translation import translate_graph  # its internals of torch.onnx are imported on use

    model = translate_graph(graph_module, contract.inputs, contract.outputs, opset, dynamic_axes={0: "batch"})
    return save_linked(model, path, weights)


def save_linked(model, path: Path, weights) -> dict:
    """Save ``model`` (an ``onnx_ir.Model``) to ``path`` with its weights as external data
    (``weights``: ``(WeightIndex, location)``; None: every initializer inside the graph), without
    the exporter's per-node stack traces (most of a graph file's bytes); ``link_initializers``'s
    report (empty without ``weights``)."""
    import onnx_ir as ir

    report = {}
    if weights is not None:
        index, location = weights
        report = link_initializers(model, index, location, path.parent)
    for node in model.graph.all_nodes():
        node.metadata_props.clear()
    ir.save(model, path)
    return report


def ort_session(path: Path, providers=("CPUExecutionProvider",), *, lean: bool = False):
    """An ONNX Runtime session of the graph at ``path``; ``lean``: without a memory arena and
    weight pre-packing (export's validation: less memory, a little slower)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if lean:
        options.enable_cpu_mem_arena = False
        options.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(str(path), options, providers=list(providers))


def reference_outputs(contract: GraphContract, eager, image_size: int, batches) -> dict:
    """{batch: (inputs, eager output as a numpy array)}, computed before any ONNX Runtime session
    exists: the inputs of the largest batch (seeded), each smaller batch their leading samples.
    The reference runs one sample at a time (the networks and the DSE gradient of a batch sum
    are per-sample computations: the same values with the memory of batch 1), so each sample is
    computed once for every batch size."""
    largest = max(batches)
    inputs = contract.sample_inputs(largest, image_size, seed=largest)
    expected = torch.cat([eager(*(t[i:i + 1] for t in inputs)).detach() for i in range(largest)]).numpy()
    return {batch: (tuple(t[:batch] for t in inputs), expected[:batch]) for batch in batches}


def check_onnx(path: Path, contract: GraphContract, references: dict, *, rtol: float = 1e-3, atol: float = 1e-5,
               on_batch=None) -> dict:
    """Run the graph with ONNX Runtime (CPU) on ``references``' inputs (``reference_outputs``);
    return the errors at each batch size, or raise ``ExportValidationError`` past
    ``atol + rtol * max|reference|``. ``on_batch()``: called after each batch (progress)."""
    return_freed_memory()
    session = ort_session(path, lean=True)
    errors = {}
    try:
        for batch, (inputs, expected) in references.items():
            (got,) = session.run(None, {name: t.numpy() for name, t in zip(contract.inputs, inputs)})
            max_abs = float(np.abs(got - expected).max())
            scale = float(np.abs(expected).max())
            errors[str(batch)] = {"max_abs": max_abs, "max_rel": max_abs / scale if scale else 0.0}
            if not np.isfinite(got).all() or max_abs > atol + rtol * scale:
                raise ExportValidationError(
                    f"{contract.file} differs from PyTorch at batch {batch}: max abs error {max_abs:.3g} "
                    f"(reference scale {scale:.3g}, tolerance {atol:g} + {rtol:g} x scale)"
                )
            if on_batch is not None:
                on_batch()
    finally:
        del session  # its memory returns to the system by the next check's return_freed_memory
    return errors


def return_freed_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the system (glibc's
    ``malloc_trim``; a no-op elsewhere), so what one step freed is not still resident, fragmented,
    when the next allocates."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
