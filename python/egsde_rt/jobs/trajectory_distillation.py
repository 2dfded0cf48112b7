"""Distilling EGSDE, stage 2: the updates cut to a handful.

The teacher is the engine's own official sampler (its settings as exported: for the paper's
presets and the demo, ``ddpm`` with 100 updates, the DSE and the low-pass expert at its ``ls`` and
``li``). It is stochastic: each update adds fresh noise. The student runs ``ddim`` at ``eta = 1``
(ancestral: each update adds noise too) with ``updates`` (K, a handful) updates and no expert, and
is trained so that its run and the teacher's share their noise:

* both start from the same perturbed source ``x_M = sqrt(abar_M) x0 + sqrt(1 - abar_M) e``;
* the teacher's updates are grouped by the student's: group k holds the teacher's updates from
  the student's time ``t_k`` down to ``t_{k+1}``. The teacher's draws in group k are made from the
  student's draw ``z_k`` and fresh draws ``w_j`` as a Brownian bridge: ``z_j = a_j z_k + w_j -
  a_j sum_i a_i w_i`` with ``a_j`` proportional to the teacher's noise scale ``sigma_j`` and
  ``sum a_j^2 = 1``. Each ``z_j`` is still a standard normal draw, independent of the others, so
  the teacher's run is an official run exactly; and ``sum_j a_j z_j = z_k``: the student's noise is
  the teacher's, coarse-grained. (The last group, below the student's last noisy update, keeps
  independent draws.)

The student's draws are the native loop's (Philox stream 0, draw ``k + 1`` for update k), so a
seed means the same noise in training and in a run. At every update of the student's own run (what
it is trained on is what it runs; the state between updates carries no gradient), its data prediction
``x0_hat = (y - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` is regressed on the teacher's result
``x0_T``: the best it can do is the teacher's expected result given the coarse noise, so what is
averaged out is the teacher's finest noise only.

Teacher results are made in batches of ``teacher_batch`` images (``TeacherEndpoints``: batch ``j``
depends only on the seed and ``j``) and kept on disk beside the weights, so a resumed run pays for
none twice; the pool grows by one batch every ``refresh_every`` steps up to ``teacher_images``, and
each training batch is drawn from the whole pool.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..engine import load_engine_dir
from ..engine.format import teacher_identity
from ..errors import ConfigError
from ..method.noise import STREAM_SAMPLING, PhiloxNoise, derive_seed
from ..method.schedule import Schedule, StepCoefficients, run_input
from ..method.settings import EGSDESettings, check_positive_int
from ..models.student import GuidedStudent, few_step_settings
from ..runtime.translator import Translator
from ..user_cache import write_atomically
from .distillation import load_student_start
from .training import ImageData, TrainConfig, _train

MAX_STUDENT_UPDATES = 8  # stage 2 is for a handful of updates; more is stage 1's ground
class Rollout:
    """A run's updates in plain PyTorch (the step table's single-step rows: ``y = inv_sqrt_alpha
    (y - eps_coef eps) + sigma z``), for the student (``run``) and to group the teacher's
    updates by the student's (``times``, ``sigma``)."""

    def __init__(self, settings: EGSDESettings, schedule: Schedule):
        updates = run_input(schedule, settings)
        self.coefs = StepCoefficients.from_input(updates, settings.solver)
        self.abar_t = [float(a) for a in updates.abar_t]
        self.updates = self.coefs.num_updates
        self.times = [float(t) for t in self.coefs.t]
        self.sigma = [float(s) for s in self.coefs.sigma]

    def perturbed(self, x0: torch.Tensor, e: torch.Tensor, k: int) -> torch.Tensor:
        return float(self.coefs.sqrt_abar[k]) * x0 + float(self.coefs.sqrt_one_minus_abar[k]) * e

    def t(self, k: int, like: torch.Tensor) -> torch.Tensor:
        return torch.full((len(like),), self.times[k], device=like.device)

    def update(self, y: torch.Tensor, eps: torch.Tensor, k: int, z: torch.Tensor) -> torch.Tensor:
        mean = float(self.coefs.inv_sqrt_alpha[k]) * (y - float(self.coefs.eps_coef[k]) * eps)
        return mean + self.sigma[k] * z if self.sigma[k] else mean

    def x0_hat(self, y: torch.Tensor, eps: torch.Tensor, k: int) -> torch.Tensor:
        abar = self.abar_t[k]
        return (y - (1 - abar) ** 0.5 * eps) / abar ** 0.5

    def run(self, student: GuidedStudent, x0: torch.Tensor, draws: torch.Tensor,
            on_update: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None) -> torch.Tensor:
        """The student's run, its result (``draws``: [K+1, B, ...], the start noise then each
        update's). ``on_update(k, y, eps)`` sees each update's state and eps, the network's call
        with its gradient (training); the state between updates carries none. Without it the run
        takes no gradient."""
        y = self.perturbed(x0, draws[0], 0)
        with torch.set_grad_enabled(on_update is not None and torch.is_grad_enabled()):
            for k in range(self.updates):
                eps = student(y, self.t(k, y), self.perturbed(x0, draws[0], k))
                if on_update is not None:
                    on_update(k, y, eps)
                y = self.update(y, eps.detach(), k, draws[k + 1])
        return y


def run_draws(seeds: list[int], updates: int, shape) -> torch.Tensor:
    """A run's draws as the native loop makes them: [updates + 1, B, ...] (Philox stream 0; draw 0
    the start noise ``e``, draw k + 1 update k's)."""
    source = PhiloxNoise(seeds)
    return torch.stack([source.draw(STREAM_SAMPLING, k, shape) for k in range(updates + 1)])


def bridged_teacher_draws(student: Rollout, teacher: Rollout, draws: torch.Tensor,
                          generator: torch.Generator) -> torch.Tensor:
    """The teacher's draws [teacher updates + 1, B, ...] from the student's ``draws`` (the module
    docstring): the same start noise, and in each group of teacher updates a Brownian bridge
    whose ``sigma``-weighted sum is the student's draw of that group."""
    shape = draws.shape[1:]
    out = torch.randn((teacher.updates + 1, *shape), generator=generator)
    out[0] = draws[0]
    bounds = student.times + [-1.0]
    for k in range(student.updates):
        group = [j for j, t in enumerate(teacher.times) if bounds[k + 1] < t <= bounds[k]]
        weights = torch.tensor([teacher.sigma[j] for j in group], dtype=torch.float64)
        if not student.sigma[k] or not group or float(weights.norm()) == 0.0:
            continue  # no noise of the student's in this group: the teacher's draws stay independent
        a = (weights / weights.norm()).float()
        w = out[[j + 1 for j in group]]  # fresh draws
        shared = torch.einsum("j,j...->...", a, w)
        out[[j + 1 for j in group]] = a.view(-1, *[1] * len(shape)) * (draws[k + 1] - shared) + w
    return out


class TeacherEndpoints:
    """Batches of (x0, the student's draws, the teacher's result): ``batch(j)`` runs the teacher
    (``translate(x0, noise)``, the engine's Translator with injected draws) on ``teacher_batch``
    fresh source images, once: it is kept as ``<cache>/<j>.pt``."""

    def __init__(self, data, translate: Callable, cache: Path, seed: int, teacher_batch: int,
                 student: Rollout, teacher: Rollout):
        self.data, self.translate, self.cache, self.seed = data, translate, Path(cache), seed
        self.teacher_batch, self.student, self.teacher = teacher_batch, student, teacher
        self.loaded: dict[int, tuple] = {}

    def batch(self, j: int) -> tuple:
        if j in self.loaded:
            return self.loaded[j]
        path = self.cache / f"{j}.pt"
        if path.is_file():
            x0, draws, x0_t = torch.load(path, map_location="cpu", weights_only=True)
        else:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, f"distill2/teacher/{j}"))
            x0 = self.data.batch(j, self.teacher_batch, generator).float()
            seeds = [derive_seed(self.seed, f"distill2/noise/{j}/{i}") for i in range(len(x0))]
            draws = run_draws(seeds, self.student.updates, x0.shape)
            noise = bridged_teacher_draws(self.student, self.teacher, draws, generator)
            x0_t = torch.as_tensor(self.translate(x0, noise)).float()
            self.cache.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            torch.save((x0, draws, x0_t), buffer)
            write_atomically(path, buffer.getvalue())
        self.loaded[j] = (x0, draws, x0_t)
        return self.loaded[j]


def trajectory_loss(teacher: TeacherEndpoints, rollout: Rollout, *, batch_size: int, refresh_every: int,
                    teacher_batches: int):
    """The stage-2 loss: along the student's own run (its own draws; the state between updates
    carries no gradient), each update's data prediction against the teacher's result, averaged
    over the updates, on a batch drawn from the teacher results made so far."""

    def loss(student: GuidedStudent, step: int, generator: torch.Generator) -> torch.Tensor:
        available = min(teacher_batches, 1 + step // refresh_every)
        pool = [teacher.batch(j) for j in range(available)]
        x0, draws, x0_t = (torch.cat([b[i] for b in pool], dim=1 if i == 1 else 0) for i in range(3))
        pick = torch.randint(len(x0), (batch_size,), generator=generator)
        device = next(student.parameters()).device
        x0, draws, x0_t = x0[pick].to(device), draws[:, pick].to(device), x0_t[pick].to(device)
        losses = []
        rollout.run(student, x0, draws, lambda k, y, eps: losses.append(F.mse_loss(rollout.x0_hat(y, eps, k), x0_t)))
        return sum(losses) / rollout.updates

    return loss


@dataclass
class UpdatesConfig(TrainConfig):
    """``TrainConfig`` and: the student's ``updates``; ``teacher_batch`` images per teacher batch,
    a new batch every ``refresh_every`` steps, up to ``teacher_images`` in all;
    ``teacher_backend``: the Translator backend that runs the teacher."""

    updates: int = 5
    teacher_batch: int = 64
    teacher_images: int = 2048
    refresh_every: int = 25
    teacher_backend: str = "auto"


def distill_updates(engine_dir, source: str, out, cfg: UpdatesConfig, *, init=None,
                    log: Callable[[str], None] = print, progress: bool = True) -> dict:
    """Stage 2 on the CPU: train a student of ``engine_dir`` to run in ``cfg.updates`` updates on
    ``source`` images (a folder, or ``procedural:source``), from ``init`` (a stage-1 student's
    weights) or the teacher's score UNet; writes ``out`` (its EMA weights), ``out.train`` (the
    state resumed from), ``out.teacher/`` (the teacher's results) and ``out.json`` (the losses
    and the run's settings); returns that record."""
    for name in ("updates", "teacher_batch", "teacher_images", "refresh_every", "steps", "batch_size",
                 "checkpoint_every"):
        check_positive_int(getattr(cfg, name), name)
    if cfg.updates > MAX_STUDENT_UPDATES:
        raise ConfigError(f"a stage-2 student runs at most {MAX_STUDENT_UPDATES} updates, got {cfg.updates} "
                          "(stage 1 serves any count)")
    engine = load_engine_dir(engine_dir)
    settings = engine.manifest.method
    student = load_student_start(engine, init)
    schedule = engine.schedule()
    rollout = Rollout(few_step_settings(settings, cfg.updates), schedule)
    teacher_run = Rollout(settings, schedule)
    teacher = Translator(engine.path, backend=cfg.teacher_backend)
    data = ImageData(source, engine.image_size, seed=cfg.seed, fixed=cfg.fixed_batch)
    out = Path(out)
    endpoints = TeacherEndpoints(data, lambda x0, noise: teacher.run_tensor(x0, noise=noise),
                                 out.with_name(out.name + ".teacher"), cfg.seed, cfg.teacher_batch, rollout,
                                 teacher_run)
    batches = -(-cfg.teacher_images // cfg.teacher_batch)
    losses = _train("distill-updates", student,
                    trajectory_loss(endpoints, rollout, batch_size=cfg.batch_size, refresh_every=cfg.refresh_every,
                                    teacher_batches=batches), out, cfg, use_ema=True, log=log, progress=progress)
    record = {"stage": 2, "teacher": teacher_identity(engine.manifest), "source": source,
              "init": str(init) if init else None, "settings": few_step_settings(settings, cfg.updates).to_dict(),
              "teacher_settings": settings.to_dict(), "config": asdict(cfg), "losses": losses}
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    return record
