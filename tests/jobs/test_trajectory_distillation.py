"""Distillation, stage 2 (jobs.trajectory_distillation) and the distill command (jobs.student_engines):
the teacher's draws are a Brownian bridge of the student's (exact official runs, the student's noise
their coarse sum), the training rollout is the native loop's run, and a tiny distillation trains,
deterministically, resumes, and ends in an engine the Translator runs."""

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import tiny_models
from egsde_rt.errors import ConfigError
from egsde_rt.jobs.trajectory_distillation import Rollout, bridged_teacher_draws, run_draws
from egsde_rt.method.schedule import Schedule
from egsde_rt.method.settings import EGSDESettings
from egsde_rt.models.student import few_step_settings, student_from_teacher
from egsde_rt.reference import translate

TEACHER = EGSDESettings(M=100, ls=500.0, li=200.0, down_N=8)


def _rollouts(updates=5):
    schedule = Schedule.create()
    return Rollout(few_step_settings(TEACHER, updates), schedule), Rollout(TEACHER, schedule)


def _groups(student, teacher):
    bounds = student.times + [-1.0]
    return [[j for j, t in enumerate(teacher.times) if bounds[k + 1] < t <= bounds[k]] for k in range(student.updates)]


def test_the_teachers_draws_are_a_bridge_of_the_students():
    """Each group's sigma-weighted sum of the teacher's draws is the student's draw of that group,
    the start noise is shared, every teacher update is in one group, and the draws are still
    independent standard normals (mean 0, variance 1, no correlation between two updates)."""
    student, teacher = _rollouts()
    draws = run_draws(list(range(256)), student.updates, (256, 3, 8, 8))
    noise = bridged_teacher_draws(student, teacher, draws, torch.Generator().manual_seed(0))
    assert noise.shape == (teacher.updates + 1, 256, 3, 8, 8)
    assert torch.equal(noise[0], draws[0])
    groups = _groups(student, teacher)
    assert sorted(j for g in groups for j in g) == list(range(teacher.updates))
    for k, group in enumerate(groups):
        weights = torch.tensor([teacher.sigma[j] for j in group], dtype=torch.float64)
        if student.sigma[k] and float(weights.norm()):
            a = (weights / weights.norm()).float()
            coarse = torch.einsum("j,j...->...", a, noise[[j + 1 for j in group]])
            assert (coarse - draws[k + 1]).abs().max() < 1e-5
    fine = noise[1:].flatten(1)
    assert abs(float(fine.mean())) < 0.01 and abs(float(fine.var()) - 1) < 0.01
    first, second = groups[0][0] + 1, groups[0][1] + 1  # two updates of one group
    assert abs(float((noise[first] * noise[second]).mean())) < 0.02


def test_the_rollout_is_the_samplers_run():
    """Rollout.run (what training runs) equals the eager oracle running the student with the same
    seeds: ddim at eta 1, its draws the native loop's."""
    student = student_from_teacher(tiny_models()[0]).eval()
    with torch.no_grad():
        student.unet.input_blocks[0][0].weight[:, 3:].normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    settings = few_step_settings(TEACHER.with_overrides(M=40), 3)
    rollout = Rollout(settings, Schedule.create())
    x0 = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    got = rollout.run(student, x0, run_draws([5, 6], 3, x0.shape))
    expected = translate(x0, None, None, settings, seed=[5, 6], student=student)
    assert (got - expected).abs().max() <= 1e-5
    assert settings.ls == 0 and settings.li == 0 and settings.solver == "ddim" and settings.eta == 1.0


def _plan(engine, tmp_path, name, steps, **changes):
    from egsde_rt.jobs.student_engines import DistillPlan

    train = {"steps": steps, "batch_size": 4, "lr": 2e-3, "seed": 11, "ema": 0.9, "checkpoint_every": 2,
             "teacher_batch": 2, "refresh_every": 2, "teacher_images": 2}
    return DistillPlan(engine=engine, source="procedural:source", out=tmp_path / name, stage=2, updates=2,
                       train=train, eval_images=0, formats=("torch",), **changes)


@pytest.mark.slow
def test_a_tiny_distillation_is_an_engine_deterministic_and_resumable(tiny_torch_engine, tmp_path):
    """Four steps, two updates: the loss falls over the run; the student engine it writes runs in
    the Translator (its progress counts its updates) as the eager rollout does; the same seed gives
    the same weights; a run stopped at step 2 and resumed gives the uninterrupted run's weights; a
    second run into the same work directory needs --resume, and --resume needs a state."""
    from egsde_rt.jobs.student_engines import distill
    from egsde_rt.jobs.trajectory_distillation import UpdatesConfig, distill_updates
    from egsde_rt.runtime.translator import Translator

    engine = tiny_torch_engine[0]  # torch weights only (teacher and student): seconds to export
    quiet = {"log": lambda m: None, "progress": False}
    record = distill(_plan(engine, tmp_path, "a", 4), **quiet)
    losses = record["losses"]
    assert len(losses) == 4 and sum(losses[-2:]) < sum(losses[:2])
    log = json.loads((tmp_path / "a.training" / "student.json").read_text())
    assert log["losses"] == losses and log["stage"] == 2 and log["engine"] == str(tmp_path / "a")

    translator = Translator(tmp_path / "a", backend="torch")
    x0 = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    seen = []
    got = translator.run_tensor(x0, seed=[1, 2], callback=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (2, 2)
    student = student_from_teacher(tiny_models()[0])
    student.load_state_dict(torch.load(tmp_path / "a.training" / "student.pt", weights_only=True))
    rollout = Rollout(translator.settings, translator.engine.schedule())
    expected = rollout.run(student.eval(), x0, run_draws([1, 2], 2, x0.shape))
    assert np.abs(np.asarray(got) - expected.numpy()).max() <= 1e-5

    def weights_only(name, steps):  # the trainer alone (no export): the same run into another work directory
        plan = _plan(engine, tmp_path, name, steps)
        teacher = tmp_path / f"{name}.training" / "student.pt.teacher"  # run a's teacher results, kept as a resume
        if not teacher.exists():  # keeps them (they depend only on the seed and the batch)
            shutil.copytree(tmp_path / "a.training" / "student.pt.teacher", teacher)
        return distill_updates(engine, plan.source, tmp_path / f"{name}.training" / "student.pt",
                               UpdatesConfig(updates=plan.updates, **plan.train), **quiet)

    assert weights_only("b", 4)["losses"] == losses
    weights_only("c", 2)
    with pytest.raises(ConfigError, match="--resume"):
        distill(_plan(engine, tmp_path, "c", 4), **quiet)
    resumed = distill(_plan(engine, tmp_path, "c", 4, resume=True), **quiet)
    assert resumed["losses"] == losses
    weights = [torch.load(tmp_path / f"{d}.training" / "student.pt", weights_only=True) for d in "abc"]
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]) and torch.equal(weights[0][name], weights[2][name])
    with pytest.raises(ConfigError, match="no training state"):
        distill(_plan(engine, tmp_path, "d", 2, resume=True), **quiet)
    with pytest.raises(ConfigError, match="exists"):
        distill(_plan(engine, tmp_path, "a", 2, work=tmp_path / "e"), **quiet)
    with pytest.raises(ConfigError, match="distilled engine itself"):
        distill(_plan(tmp_path / "a", tmp_path, "f", 2), **quiet)


def test_the_distill_command_refuses_bad_requests_with_one_line(tiny_torch_engine, tmp_path, capsys):
    from egsde_rt.cli import main

    base = ["--source", "procedural:source", "--steps", "1", "--eval-images", "0"]
    assert main(["distill", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s"), *base]) == 2
    assert "engine directory not found" in capsys.readouterr().err
    assert main(["distill", str(tiny_torch_engine[0]), "--out", str(tmp_path / "s"), "--resume", *base]) == 2
    assert "no training state" in capsys.readouterr().err
    assert main(["distill", str(tiny_torch_engine[0]), "--out", str(tmp_path / "s"), "--updates", "9", *base]) == 2
    assert "at most 8" in capsys.readouterr().err
    assert main(["distill", str(tiny_torch_engine[0]), "--out", str(tmp_path / "s"), "--source", str(tmp_path),
                 "--steps", "1"]) == 2
    assert "no images" in capsys.readouterr().err
