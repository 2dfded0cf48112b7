"""Distilling EGSDE, stage 1: the energy guidance folded into one network.

``distill_guidance(engine_dir, source, out, cfg)`` trains a ``models.student.GuidedStudent``,
initialised from the engine's score UNet (``student_from_teacher``: the unguided teacher at step
0), to predict the teacher's guided eps at the states the teacher's own run visits: every
``refresh_every`` training steps the teacher (the eager oracle, ``reference.translate``, with the
engine's settings: its ls, li, updates and solver) translates ``teacher_batch`` fresh source
images, and each of its updates gives one example (y, t, x_t) -> eps_hat through the oracle's
``guided`` hook. The low-pass term is folded in where the engine uses its gradient form (the
official one); its stable forms (``lowpass=implicit|exact``) stay native in a run of the student.

A run of the trained student then needs no DSE and no input gradient: one network evaluation
per update. The student is tied to the teacher's ``ls`` (and ``li`` in gradient form): another
setting needs another student. Training reuses ``training._train``: EMA weights, periodic
checkpoints and ``<out>.train`` (resumed from), a tqdm bar; a teacher batch depends only on the
seed and its index, so a run resumed from a checkpoint gives the weights of one that was not.

This is stage 1 of the distilled-EGSDE issue; the student as an engine (export, the native loop's
student runner) and stage 2 (fewer updates) build on it (docs/distillation.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..engine import load_engine_dir
from ..engine.format import teacher_identity
from ..engine.torch_weights import load_engine_models
from ..errors import ConfigError
from ..method.noise import derive_seed
from ..method.settings import check_positive_int
from ..models.student import GuidedStudent, guided_student_settings, student_from_teacher
from ..reference import translate as teacher_translate
from .training import ImageData, TrainConfig, _train


@dataclass
class DistillConfig(TrainConfig):
    """``TrainConfig`` and: ``teacher_batch`` source images per teacher run, a new run every
    ``refresh_every`` training steps."""

    teacher_batch: int = 16
    refresh_every: int = 50


def load_student_start(engine, init=None) -> GuidedStudent:
    """The student a distillation starts from: ``init`` (a student's weights file, e.g. stage 1's)
    or, without it, the engine's score UNet (``student_from_teacher``)."""
    score, _ = load_engine_models(engine, "cpu")
    student = student_from_teacher(score)
    if init is not None:
        init = Path(init)
        if not init.is_file():
            raise ConfigError(f"--init {init}: no such file (a student's weights, as `egsde-rt distill` writes)")
        try:
            state = torch.load(init, map_location="cpu", weights_only=True)
            student.load_state_dict(state)
        except (RuntimeError, OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"--init {init}: not the weights of a student of this engine "
                              f"({str(err).splitlines()[0][:200]})") from None
    return student


class TeacherStates:
    """The examples of the teacher's runs: ``examples(j)`` is run ``j``'s (y, t, x_t, eps_hat),
    one per image and update, made once and kept while it is the current run."""

    def __init__(self, score, dse, settings, schedule, data: ImageData, cfg: DistillConfig):
        self.score, self.dse, self.settings, self.schedule, self.data, self.cfg = score, dse, settings, schedule, \
            data, cfg
        self.index, self.current = None, None

    def examples(self, j: int) -> tuple:
        if self.index != j:
            generator = torch.Generator().manual_seed(derive_seed(self.cfg.seed, f"distill/teacher/{j}"))
            x0 = self.data.batch(j, self.cfg.teacher_batch, generator)
            seeds = [derive_seed(self.cfg.seed, f"distill/noise/{j}/{i}") for i in range(len(x0))]
            found: list = []
            teacher_translate(x0, self.score, self.dse, self.settings, seed=seeds, schedule=self.schedule,
                              guided=lambda g, y, t, x_t, eps_hat: found.append((y, t, x_t, eps_hat)))
            self.current = tuple(torch.cat([f[i] for f in found]) for i in range(4))
            self.index = j
        return self.current


def guidance_loss(teacher: TeacherStates, cfg: DistillConfig):
    """The stage-1 loss: the student's eps against the teacher's guided eps, on a random batch of
    the current teacher run's examples."""

    def loss(student: GuidedStudent, step: int, generator: torch.Generator) -> torch.Tensor:
        y, t, x_t, eps_hat = teacher.examples(step // cfg.refresh_every)
        pick = torch.randint(len(y), (cfg.batch_size,), generator=generator)
        device = next(student.parameters()).device
        y, t, x_t, eps_hat = (v[pick].to(device) for v in (y, t, x_t, eps_hat))
        return F.mse_loss(student(y, t, x_t), eps_hat)

    return loss


def distill_guidance(engine_dir, source: str, out, cfg: DistillConfig, *, log: Callable[[str], None] = print,
                     progress: bool = True) -> dict:
    """Stage 1 on the CPU: train the student of ``engine_dir`` on ``source`` images (a folder, or
    ``procedural:source`` for the demo); writes ``out`` (its EMA weights), ``out.train`` (the
    state resumed from) and ``out.json`` (the losses and the run's settings); returns that record."""
    for name in ("teacher_batch", "refresh_every", "steps", "batch_size", "checkpoint_every"):
        check_positive_int(getattr(cfg, name), name)
    engine = load_engine_dir(engine_dir)
    settings = engine.manifest.method
    if settings.score_kind != "adm":
        raise ConfigError(f"distillation starts from an ADM score UNet; {engine.path} holds a {settings.score_kind} "
                          "one")
    score, dse = load_engine_models(engine, "cpu")
    student = student_from_teacher(score)
    data = ImageData(source, engine.image_size, seed=cfg.seed, fixed=cfg.fixed_batch)
    teacher = TeacherStates(score.eval(), dse.eval(), settings, engine.schedule(), data, cfg)
    losses = _train("distill", student, guidance_loss(teacher, cfg), Path(out), cfg, use_ema=True, log=log,
                    progress=progress)
    record = {"stage": 1, "teacher": teacher_identity(engine.manifest), "source": source,
              "settings": guided_student_settings(settings).to_dict(), "teacher_settings": settings.to_dict(),
              "config": asdict(cfg), "losses": losses}
    Path(out).with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    return record
