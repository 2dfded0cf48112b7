"""ONNX export of one graph, and its numerical validation against PyTorch."""

from __future__ import annotations

import inspect
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import EgsdeError
from ..engine.contracts import MAX_BATCH, GraphContract


class ExportValidationError(EgsdeError):
    """An exported graph does not reproduce PyTorch within tolerance."""


def export_onnx(module: torch.nn.Module, contract: GraphContract, sample_inputs, path: Path, opset: int) -> None:
    """Export ``module`` with a dynamic batch through the dynamo exporter."""
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
    program.save(str(path))


def ort_session(path: Path, providers=("CPUExecutionProvider",)):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=list(providers))


def validate_onnx(path: Path, contract: GraphContract, eager, image_size: int, *, batches=(1, 3),
                  rtol: float = 1e-3, atol: float = 1e-5) -> dict:
    """Run the graph with ONNX Runtime (CPU) against ``eager`` at each batch size; return the
    errors, or raise ``ExportValidationError`` past ``atol + rtol * max|reference|``."""
    session = ort_session(path)
    errors = {}
    for batch in batches:
        inputs = contract.sample_inputs(batch, image_size, seed=batch)
        expected = eager(*inputs).detach().numpy()
        (got,) = session.run(None, {name: t.numpy() for name, t in zip(contract.inputs, inputs)})
        max_abs = float(np.abs(got - expected).max())
        scale = float(np.abs(expected).max())
        errors[str(batch)] = {"max_abs": max_abs, "max_rel": max_abs / scale if scale else 0.0}
        if not np.isfinite(got).all() or max_abs > atol + rtol * scale:
            raise ExportValidationError(
                f"{contract.file} differs from PyTorch at batch {batch}: max abs error {max_abs:.3g} "
                f"(reference scale {scale:.3g}, tolerance {atol:g} + {rtol:g} x scale)"
            )
    return errors
