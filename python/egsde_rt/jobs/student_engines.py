"""``egsde-rt distill``'s job: a student engine from a teacher engine, in one resumable run.

``distill(plan)`` trains stage 1 (``jobs.distillation``: the guidance folded in) or stage 2
(``jobs.trajectory_distillation``: also the updates cut) in ``plan.work`` (default
``<out>.training``: the weights, the resume state, the teacher's kept results, the JSON log),
exports the student as an engine (``export.student_engine``: kind distilled, its teacher named by
sha256) to ``plan.out``, and, for the demo's domains, measures it on held-out images against the
teacher's official sampler (``held_out_comparison``), adding that to the JSON log.

A run that stops (a closed laptop, a lost lease) goes on with ``resume=True`` (``--resume``) from
its last checkpoint; a new run refuses a work directory that holds another one's state, and a
resumed one must be the same run (teacher, source, stage, updates: ``plan.json`` in the work
directory).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


from ..engine import EXPORT_FORMATS, load_engine_dir
from ..engine.format import teacher_identity
from ..errors import ConfigError
from ..method.settings import EGSDESettings
from .distillation import DistillConfig, distill_guidance, load_student_start
from .trajectory_distillation import UpdatesConfig, distill_updates

DEMO_SOURCE = "procedural:source"  # the demo's domain: held-out images and their true targets exist


@dataclass
class DistillPlan:
    """What ``egsde-rt distill`` was asked: ``train`` holds the trainer's settings
    (``DistillConfig`` / ``UpdatesConfig`` fields); ``eval_images``: held-out images measured
    after training (the demo's domains only; 0: none); ``formats``: the student engine's (the
    ONNX graph and the torch weights, or one of them)."""

    engine: Path
    source: str
    out: Path
    stage: int = 2
    updates: int = 5
    init: str | None = None
    work: Path | None = None
    resume: bool = False
    overwrite: bool = False
    train: dict = field(default_factory=dict)
    eval_images: int = 64
    formats: tuple = EXPORT_FORMATS  # what the student engine holds (``export.check_formats``)

    @property
    def work_dir(self) -> Path:
        return Path(self.work) if self.work else Path(self.out).with_name(Path(self.out).name + ".training")


def _check_run(plan: DistillPlan, identity: str) -> Path:
    """The work directory, checked: a new run needs a fresh one, a resumed run its own."""
    work = plan.work_dir
    state = work / "student.pt.train"
    run = {"teacher": identity, "source": plan.source, "stage": plan.stage,
           "updates": plan.updates if plan.stage == 2 else None}
    recorded = work / "plan.json"
    if plan.resume:
        if not state.is_file():
            raise ConfigError(f"--resume: {work} holds no training state (student.pt.train) to go on from")
        if recorded.is_file() and json.loads(recorded.read_text()) != run:
            raise ConfigError(f"--resume: {work} holds another run ({recorded.read_text().strip()}); resume it with "
                              "its own arguments, or give this run another --work")
    elif state.is_file():
        raise ConfigError(f"{work} already holds a training run: pass --resume to go on with it, or give another "
                          "--work (or --out)")
    work.mkdir(parents=True, exist_ok=True)
    recorded.write_text(json.dumps(run) + "\n")
    return work


def distill(plan: DistillPlan, *, log: Callable[[str], None] = print, progress: bool = True) -> dict:
    """Train, export and measure a student (the module docstring); its record (``<work>/student.json``),
    with ``engine``: the student engine's path."""
    teacher = load_engine_dir(plan.engine)
    if teacher.manifest.kind == "distilled":
        raise ConfigError(f"{teacher.path} is a distilled engine itself: distill from its teacher")
    out = Path(plan.out)
    if out.exists() and not plan.overwrite:
        raise ConfigError(f"{out} exists: pass --overwrite to replace it, or choose another --out")
    work = _check_run(plan, teacher_identity(teacher.manifest))
    weights = work / "student.pt"
    if plan.stage == 1:
        if plan.init:
            raise ConfigError("--init is for stage 2 (it starts from a stage-1 student)")
        record = distill_guidance(teacher.path, plan.source, weights, DistillConfig(**plan.train), log=log,
                                  progress=progress)
    else:
        record = distill_updates(teacher.path, plan.source, weights, UpdatesConfig(updates=plan.updates, **plan.train),
                                 init=plan.init, log=log, progress=progress)
    student = load_student_start(teacher, weights)
    from ..export.student_engine import export_student

    export_student(student, teacher, out, stage=plan.stage, settings=EGSDESettings(**record["settings"]),
                   formats=plan.formats, overwrite=plan.overwrite, log=log)
    record["engine"] = str(out)
    if plan.eval_images and plan.source == DEMO_SOURCE:
        record["held_out"] = held_out_comparison(out, teacher.path, plan.eval_images, log=log)
    weights.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def held_out_comparison(student_dir, teacher_dir, count: int, *, backend: str = "auto", batch_size: int = 16,
                        log: Callable[[str], None] | None = print) -> dict:
    """The student engine and its teacher's official sampler on the first ``count`` images of the
    demo's held-out split (``demo.scoring``: realism, FD, PSNR to the source and to the true
    target, seconds per image), each image with the same seed for both."""
    from ..demo import SplitEvaluator
    from ..runtime.translator import Translator

    teacher = Translator(teacher_dir, backend=backend)
    evaluate = SplitEvaluator(teacher, counts={"held_out": count, "tuning": 0}, batch_size=batch_size, log=log)
    rows = {}
    for name, translator in (("official", teacher), ("student", Translator(student_dir, backend=backend))):
        evaluate.translate("held_out", {}, translator)  # warm-up: first-run latency stays out of the timings
        rows[name] = evaluate("held_out", {}, translator)
    return rows


__all__ = ["DistillPlan", "distill", "held_out_comparison", "DEMO_SOURCE"]
