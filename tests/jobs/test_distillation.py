"""Distillation, stage 1 (jobs.distillation, models.student): the student starts as the unguided
teacher, the teacher's guided eps is its update exactly, and a short run trains, deterministically,
resumed or not."""

import json

import pytest
import torch

from conftest import tiny_models
from egsde_rt.errors import ConfigError
from egsde_rt.jobs.distillation import DistillConfig, distill_guidance
from egsde_rt.method.settings import EGSDESettings
from egsde_rt.models.student import GuidedStudent, student_from_teacher
from egsde_rt.reference import translate


def _x0(batch=2, seed=3):
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_the_untrained_student_is_the_unguided_teacher():
    unet, _ = tiny_models()
    student = student_from_teacher(unet).eval()
    y, x_t = _x0(seed=1), _x0(seed=2)
    t = torch.tensor([700.0, 20.0])
    with torch.no_grad():
        expected = unet(y, t)[:, :3]
        assert torch.equal(student(y, t, x_t), expected)
        assert torch.equal(student(y, t, torch.zeros_like(x_t)), expected)  # x_t enters through zeros only
    assert isinstance(student, GuidedStudent) and student.config["in_channels"] == 3
    with pytest.raises(ConfigError, match="ADM score UNet"):
        student_from_teacher(torch.nn.Linear(2, 2))


class Replay(torch.nn.Module):
    """A score model that answers each call with the next recorded guided eps: a perfect student."""

    def __init__(self, answers):
        super().__init__()
        self.answers = list(answers)

    def forward(self, y, t):
        return self.answers.pop(0)


@pytest.mark.parametrize("solver", ["ddpm", "dpmpp-2m-sde"])
def test_the_guided_eps_is_the_teachers_update(solver):
    """An update with the hook's eps_hat and no guidance is the guided update: replaying the recorded
    eps_hat through an unguided run gives the teacher's result (the student's target is exact)."""
    unet, dse = tiny_models()
    settings = EGSDESettings(M=100, ls=5e4, li=50.0, down_N=8, solver=solver,
                             **({"steps": 10} if solver != "ddpm" else {"steps": 25}))
    x0 = _x0()
    recorded = []
    teacher = translate(x0, unet, dse, settings, seed=[5, 6],
                        guided=lambda g, y, t, x_t, eps_hat: recorded.append((g, eps_hat)))
    assert [g for g, _ in recorded] == list(range(settings.num_updates))
    unguided = translate(x0, Replay(e for _, e in recorded), dse, settings.with_overrides(ls=0.0, li=0.0),
                         seed=[5, 6])
    replay_error = (unguided - teacher).abs().max()
    assert replay_error <= 1e-5
    plain = translate(x0, unet, dse, settings.with_overrides(ls=0.0, li=0.0), seed=[5, 6])
    assert (plain - teacher).abs().max() > 100 * max(replay_error, 1e-7)  # the guidance is in the target


def _distill(engine, out, steps, **kwargs):
    cfg = DistillConfig(steps=steps, batch_size=8, lr=2e-3, seed=11, ema=0.9, checkpoint_every=3, teacher_batch=2,
                        refresh_every=100, **kwargs)
    return distill_guidance(engine, "procedural:source", out, cfg, log=lambda m: None, progress=False)


@pytest.mark.slow
def test_a_short_distillation_trains_deterministically_and_resumes(tiny_engine, tmp_path):
    """Six steps on one teacher run: the loss falls; the same seed gives the same weights; a run
    stopped at its checkpoint (step 3) and resumed gives the weights of the uninterrupted one."""
    engine = tiny_engine[0]
    record = _distill(engine, tmp_path / "a" / "student.pt", 6)
    losses = record["losses"]
    assert len(losses) == 6 and sum(losses[-2:]) < sum(losses[:2])
    assert json.loads((tmp_path / "a" / "student.json").read_text())["losses"] == losses
    again = _distill(engine, tmp_path / "b" / "student.pt", 6)
    assert again["losses"] == losses
    _distill(engine, tmp_path / "c" / "student.pt", 3)
    resumed = _distill(engine, tmp_path / "c" / "student.pt", 6)
    assert resumed["losses"] == losses
    weights = [torch.load(tmp_path / d / "student.pt", weights_only=True) for d in "abc"]
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]) and torch.equal(weights[0][name], weights[2][name])
    student = GuidedStudent(**tiny_models()[0].config)
    student.load_state_dict(weights[0])
    with pytest.raises(ConfigError, match="teacher_batch"):
        distill_guidance(engine, "procedural:source", tmp_path / "d" / "s.pt", DistillConfig(steps=1, teacher_batch=0),
                         progress=False)


def _trained_looking_student(seed=4):
    """A student whose x_t weights are not zero (as after training), so x_t matters."""
    student = student_from_teacher(tiny_models()[0])
    first = student.unet.input_blocks[0][0].weight
    with torch.no_grad():
        first[:, 3:] = torch.randn(first[:, 3:].shape, generator=torch.Generator().manual_seed(seed)) * 0.05
    return student.eval()


@pytest.mark.parametrize("settings", [
    EGSDESettings(M=12, ls=0.0, li=0.0, down_N=8),
    EGSDESettings(M=40, steps=6, solver="dpmpp-2m-sde", ls=0.0, li=50.0, lowpass="implicit", down_N=8),
    EGSDESettings(M=12, ls=0.0, li=0.0, down_N=8, perturb="fresh", repeats=2),
], ids=["ddpm", "dpmpp-implicit-lowpass", "fresh-repeats"])
def test_the_native_loop_runs_a_student_as_the_eager_sampler_does(settings):
    """A sampler built with student=True calls runner.student (y, x_t, t) once per update and
    nothing else; its result is the eager oracle's with the same student, seeds and settings."""
    import numpy as np

    from egsde_rt.runtime.native_sampler import build_sampler, run_sampler
    from egsde_rt.runtime.runners import StudentRunner

    student = _trained_looking_student()
    x0 = _x0(batch=2)
    expected = translate(x0, None, None, settings, seed=[7, 8], student=student)
    calls = []

    class Counting(StudentRunner):
        def student(self, y, x_t, t, eps_out):
            calls.append(float(np.asarray(t)[0]))
            super().student(y, x_t, t, eps_out)

    sampler = build_sampler(settings, tuple(x0.shape), "cpu", student=True)
    got = run_sampler(sampler, x0, Counting(student), settings, seed=[7, 8])
    assert len(calls) == settings.num_updates * settings.repeats
    assert np.abs(got - expected.numpy()).max() <= 1e-5
    other = translate(x0, None, None, settings, seed=[7, 8], student=_trained_looking_student(seed=9))
    assert (other - expected).abs().max() > 1e-3  # x_t is an input of the student's run


def test_a_student_run_refuses_guidance_it_has_folded_in():
    from egsde_rt.errors import NativeError
    from egsde_rt.runtime.native_sampler import build_sampler
    from egsde_rt.runtime.runners import StudentRunner, TorchRunner

    student = _trained_looking_student()
    with pytest.raises(NativeError, match="ls = 0"):
        build_sampler(EGSDESettings(M=12, ls=500.0, li=0.0, down_N=8), (1, 3, 32, 32), "cpu", student=True)
    with pytest.raises(NativeError, match="li = 0 unless"):
        build_sampler(EGSDESettings(M=12, ls=0.0, li=2.0, down_N=8), (1, 3, 32, 32), "cpu", student=True)
    with pytest.raises(ConfigError, match="ls=0"):
        translate(_x0(batch=1), None, None, EGSDESettings(M=12, ls=500.0, down_N=8), student=student)
    unet, dse = tiny_models()
    plain = build_sampler(EGSDESettings(M=12, ls=0.0, li=0.0, down_N=8), (1, 3, 32, 32), "cpu", student=True)
    with pytest.raises(NativeError, match="no student network"):
        plain.run(_x0(batch=1).numpy(), TorchRunner(unet, dse, s1="cosine", score_kind="adm"))
    with pytest.raises(Exception, match="no score network"):
        build_sampler(EGSDESettings(M=12, ls=0.0, li=0.0, down_N=8), (1, 3, 32, 32), "cpu").run(
            _x0(batch=1).numpy(), StudentRunner(student))
