"""A distilled student as an engine directory of its own (kind "distilled", ``engine.format``).

``export_student(student, teacher, out_dir, stage=..., settings=...)`` writes for the student
what ``export_engine`` writes for a teacher's two networks, through the same pieces
(``engine_writer``): its weights once (``weights/student.safetensors``: the torch backend
rebuilds a ``models.student.GuidedStudent`` from the teacher's ADM config), ``student.onnx``
(``score_graph.StudentGraph``: (y, x_t, t) -> the guided eps, the ``STUDENT`` contract) reading
them as ONNX external data, validated against PyTorch at batch 1 and 2, and its fp16 and bf16
variants; then the manifest, written in a staging directory that is read back and renamed into
place. The manifest has kind "distilled", the teacher's image size, schedule and preset, the
student's run as its ``settings`` (the experts folded in: ls 0, and li 0 unless the teacher's
low-pass expert was a stable form, which stays native; a stage-2 student's: the one run it was
distilled for), and a ``distilled`` entry naming the teacher (``teacher_identity``), the stage,
and the teacher's settings and preset. The runtime runs it through the native loop's student
path, on every backend; ``egsde-rt build`` builds its plans.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import torch

from ..engine import EXPORT_FORMATS, STUDENT, EngineDir, load_engine_dir, teacher_identity
from ..engine.format import DISTILLATION_STAGES, DistilledInfo, GraphEntry
from ..errors import ConfigError
from ..method.settings import EGSDESettings
from ..models.student import GuidedStudent
from .engine_writer import (DEFAULT_OPSET, check_formats, check_opset, new_manifest, save_weights_stage,
                            validated_graph, weights_file, write_engine, write_variants)
from .external_weights import WeightIndex
from .onnx_graphs import TRACE_BATCH, VALIDATION_BATCHES, export_onnx, reference_outputs
from .progress import StageObserver, stage as progress_stage
from .score_graph import StudentGraph


def export_student(student: GuidedStudent, teacher: EngineDir | str | os.PathLike, out_dir, *, stage: int,
                   settings: EGSDESettings, formats=EXPORT_FORMATS, opset: int = DEFAULT_OPSET,
                   overwrite: bool = False, log: Callable[[str], None] = print,
                   on_stage: StageObserver | None = None) -> Path:
    """Export ``student`` (distilled from the egsde engine ``teacher``, an ``EngineDir`` or its
    path) as a distilled engine at ``out_dir`` and return its path (see the module docstring).

    ``stage``: 1 (the guided eps: a run of any updates and solver) or 2 (one run of few updates);
    ``settings``: the student's run (``ls`` 0; ``li`` 0, or the teacher's where its low-pass form
    is implicit or exact; for stage 2 the solver, updates, eta and M it was distilled for).
    ``formats``, ``opset``, ``overwrite``, ``log`` and ``on_stage`` as ``export_engine``'s."""
    formats = check_formats(formats)
    check_opset(opset)
    if not isinstance(teacher, EngineDir):
        teacher = load_engine_dir(teacher)
    _check_student(student, teacher, stage, settings)
    student = student.eval().float().cpu()
    distilled = DistilledInfo(teacher=teacher_identity(teacher.manifest), stage=stage,
                              teacher_settings=teacher.manifest.method.to_dict(),
                              teacher_preset=teacher.manifest.preset)

    def fill(staging: Path):
        weights, states = save_weights_stage(staging, {STUDENT.weights: student}, "torch" in formats, on_stage)
        graphs = {}
        if "onnx" in formats:
            graphs[STUDENT.name] = _export_graph(staging, student, states.pop(STUDENT.weights), teacher.image_size,
                                                 opset, log, on_stage)
        return new_manifest(image_size=teacher.image_size, settings=settings, schedule=teacher.manifest.schedule,
                            graphs=graphs, weights=weights, formats=formats, opset=opset,
                            preset=teacher.manifest.preset, kind="distilled", distilled=distilled)

    return write_engine(out_dir, fill, overwrite=overwrite, log=log)


def _check_student(student, teacher: EngineDir, stage: int, settings: EGSDESettings) -> None:
    """A ``ConfigError`` unless ``student`` can be exported as a student of ``teacher`` at ``stage``
    with run ``settings``."""
    if stage not in DISTILLATION_STAGES:
        raise ConfigError(f"stage must be one of {DISTILLATION_STAGES}, got {stage!r}")
    if teacher.manifest.kind != "egsde":
        raise ConfigError(f"{teacher.path} is a {teacher.manifest.kind} engine: a student's teacher is the egsde "
                          "engine it was distilled from")
    if not isinstance(student, GuidedStudent):
        raise ConfigError(f"a student engine holds a models.student.GuidedStudent, got {type(student).__name__}")
    score = teacher.manifest.torch_weights.get("score")
    if score is not None and score.model_class and json.loads(json.dumps(student.config)) != score.config:
        raise ConfigError(f"the student's network is not the architecture of {teacher.path}'s score UNet (its "
                          "config differs): was it distilled from another engine?")
    if settings.ls or (settings.li and settings.lowpass == "gradient"):
        raise ConfigError("a student folds the domain-specific expert (and the low-pass expert's gradient form) "
                          "into its eps: its run settings need ls=0, and li=0 unless lowpass is implicit or exact")
    taught = teacher.manifest.method
    if settings.li and (taught.lowpass == "gradient" or settings.li != taught.li):
        raise ConfigError(f"the student's run has li={settings.li}, its teacher li={taught.li} "
                          f"(lowpass={taught.lowpass}): a student is tied to its teacher's li (folded in where the "
                          "teacher's low-pass form is gradient, its li run natively otherwise)")
    settings.check_fits(teacher.image_size, teacher.manifest.schedule.num_timesteps)


def _export_graph(staging: Path, student: GuidedStudent, state: dict, image_size: int, opset: int,
                  log: Callable[[str], None], on_stage: StageObserver | None) -> GraphEntry:
    """student.onnx with its weights as external data, validated against PyTorch, and its
    variants: its manifest entry."""
    eager = StudentGraph(student)
    with progress_stage("graphs", 1, on_stage) as bar:
        links = (WeightIndex(state, staging / weights_file(STUDENT.weights)), weights_file(STUDENT.weights))
        report = export_onnx(eager, STUDENT, STUDENT.sample_inputs(TRACE_BATCH, image_size), staging / STUDENT.file,
                             opset, links)
        if report["inline_large"]:
            log(f"  {STUDENT.file}: large constants not among the weights, stored in the graph: "
                f"{report['inline_large'][:4]}")
        del links, state
        bar.update()
    with progress_stage("validation", 1 + len(VALIDATION_BATCHES), on_stage) as bar:
        with torch.no_grad():
            references = reference_outputs(STUDENT, eager, image_size, VALIDATION_BATCHES)
        bar.update()
        entry = validated_graph(staging, STUDENT, references, image_size, report["external_bytes"], log,
                                on_batch=bar.update)
    entry.variants = write_variants(staging, STUDENT, log)
    return entry
