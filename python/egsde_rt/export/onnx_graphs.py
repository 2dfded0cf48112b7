"""ONNX export of one graph, and its numerical validation against PyTorch.

Validation keeps export's memory low: the PyTorch reference of a batch is computed first and
only its output kept (``reference_outputs``), then the graph runs in an ONNX Runtime session
without a memory arena (freed activations go back to the system) nor weight pre-packing (no
second copy of the weights), one session for both batch sizes, closed before the next graph.
"""

from __future__ import annotations

import gc
import inspect
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import EgsdeError
from ..engine.contracts import MAX_BATCH, GraphContract
from .external_weights import link_initializers


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
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)  # e.g. "torchvision is not installed" notices
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                module, tuple(sample_inputs), dynamo=True, opset_version=opset,
                input_names=list(contract.inputs), output_names=list(contract.outputs),
                dynamic_shapes=dynamic_shapes, optimize=False, verbose=False,
            )
        finally:
            onnx_logger.setLevel(level)
    if program is None:
        raise EgsdeError(f"the ONNX exporter returned nothing for {contract.name}")
    if weights is None:
        program.save(str(path))
        return {}
    import onnx_ir as ir

    index, location = weights
    model = program.model
    del program  # the exported program's graph and its fake tensors
    report = link_initializers(model, index, location, path.parent)
    for node in model.graph.all_nodes():  # the exporter's stack traces: most of the graph file's bytes
        node.metadata_props.clear()
    ir.save(model, path)
    del model
    gc.collect()
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


def reference_outputs(contract: GraphContract, eager, image_size: int, batches, *, per_sample: bool = False) -> dict:
    """{batch: (inputs, eager output as a numpy array)}, computed before any ONNX Runtime session
    exists. ``per_sample``: run the reference one sample at a time and concatenate (for a
    per-sample computation, such as the DSE gradient of a batch sum: the same values with the
    memory of batch 1)."""
    references = {}
    for batch in batches:
        inputs = contract.sample_inputs(batch, image_size, seed=batch)
        if per_sample:
            parts = [eager(*(t[i:i + 1] for t in inputs)).detach() for i in range(batch)]
            expected = torch.cat(parts).numpy()
        else:
            expected = eager(*inputs).detach().numpy()
        references[batch] = (inputs, expected)
        gc.collect()
    return references


def validate_onnx(path: Path, contract: GraphContract, eager, image_size: int, *, batches=(1, 3),
                  rtol: float = 1e-3, atol: float = 1e-5, per_sample: bool = False, on_batch=None) -> dict:
    """Run the graph with ONNX Runtime (CPU) against ``eager`` at each batch size; return the
    errors, or raise ``ExportValidationError`` past ``atol + rtol * max|reference|``.
    ``per_sample``: as ``reference_outputs``; ``on_batch()``: called after each batch (progress)."""
    references = reference_outputs(contract, eager, image_size, batches, per_sample=per_sample)
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
        del session
        gc.collect()
    return errors
