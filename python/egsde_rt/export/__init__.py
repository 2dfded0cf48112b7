"""Export: checkpoints -> a self-describing engine directory (weights, ONNX graphs, manifest, plans).

The public names, re-exported: ``export_engine`` and ``export_preset`` (the stages, ``pipeline``),
``export_student`` (a distilled engine, ``student_engine``), ``check_formats`` and
``DEFAULT_OPSET`` (``engine_writer``), ``ExportValidationError`` (``onnx_graphs``). Plans are
added by ``tensorrt_plans.build_plans`` and ``compiled_plans.build_compiled_plans``.
"""

from __future__ import annotations

from .engine_writer import DEFAULT_OPSET, check_formats
from .onnx_graphs import ExportValidationError
from .pipeline import export_engine, export_preset
from .student_engine import export_student

__all__ = ["export_engine", "export_preset", "export_student", "check_formats", "ExportValidationError",
           "DEFAULT_OPSET"]
