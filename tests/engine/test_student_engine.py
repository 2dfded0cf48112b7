"""A distilled student as an engine (export.student_engine, kind "distilled"): its graph is its
module, every backend runs it as the eager oracle runs the student (seeds, callback, cancel, the
captured path), its teacher is named and checked, a manifest that breaks the kind's rules is a
clear EngineDirError, run-time overrides it was not distilled for are refused, and `egsde-rt
info` and `egsde-rt build` take it. A 16-pixel teacher keeps the file fast (the compiled plan is
its slowest part, ~20 s on 2 cores)."""

import json
import shutil

import numpy as np
import pytest
import torch

from egsde_rt.cli import main
from egsde_rt.engine import STUDENT, check_teacher, load_engine_dir, teacher_identity
from egsde_rt.errors import ConfigError, EngineDirError, SamplingCancelled
from egsde_rt.export import export_engine, export_student
from egsde_rt.method.settings import EGSDESettings
from egsde_rt.models import ADMUNet, DSE, MODEL_CLASSES, build_model, nonzero_random_weights
from egsde_rt.models.student import GuidedStudent, student_from_teacher
from egsde_rt.reference import translate
from egsde_rt.runtime.native_sampler import captured_step
from egsde_rt.runtime.translator import Translator
from helpers.native import HostStepGraph, requires_cuda

SIZE = 16
TEACHER = EGSDESettings(M=12, ls=500.0, li=2.0, down_N=8)
STAGE1 = TEACHER.with_overrides(ls=0.0, li=0.0)  # the run of a stage-1 student of TEACHER (both experts folded in)
STAGE2 = STAGE1.with_overrides(solver="ddim", steps=3, eta=1.0)
QUIET = {"log": lambda message: None}


def _teacher_models(seed=0):
    torch.manual_seed(seed)
    unet = ADMUNet(image_size=SIZE, num_channels=32, num_res_blocks=1, channel_mult="1", attention_resolutions="",
                   num_head_channels=32, learn_sigma=True)
    dse = DSE(image_size=SIZE, num_class=2, classifier_width=32, classifier_depth=1, channel_mult="1",
              classifier_attention_resolutions="", num_head_channels=32)
    return nonzero_random_weights(unet, seed).eval(), nonzero_random_weights(dse, seed).eval()


def _student(unet) -> GuidedStudent:
    """A student of ``unet`` whose x_t weights are not zero (as after training): x_t matters."""
    student = student_from_teacher(unet)
    first = student.unet.input_blocks[0][0].weight
    with torch.no_grad():
        first[:, 3:] = torch.randn(first[:, 3:].shape, generator=torch.Generator().manual_seed(4)) * 0.05
    return student.eval()


def _x0(batch=2, seed=1):
    return torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """(the teacher engine, torch-only: seconds; its score UNet)."""
    unet, dse = _teacher_models()
    path = export_engine(unet, dse, tmp_path_factory.mktemp("teacher") / "teacher", image_size=SIZE,
                         settings=TEACHER, formats=("torch",), preset="cat2dog", **QUIET)
    return load_engine_dir(path), unet


@pytest.fixture(scope="module")
def student(teacher):
    return _student(teacher[1])


@pytest.fixture(scope="module")
def stage1(teacher, student, tmp_path_factory):
    """A stage-1 student engine with its ONNX graphs and torch weights."""
    return export_student(student, teacher[0], tmp_path_factory.mktemp("stage1") / "student", stage=1,
                          settings=STAGE1, **QUIET)


@pytest.fixture(scope="module")
def stage2(teacher, student, tmp_path_factory):
    """A stage-2 student engine (torch weights only: its manifest's rules are what is tested)."""
    return export_student(student, teacher[0], tmp_path_factory.mktemp("stage2") / "student", stage=2,
                          settings=STAGE2, formats=("torch",), **QUIET)


def _oracle(student, settings, seed=(3, 4), x0=None):
    return translate(_x0() if x0 is None else x0, None, None, settings, seed=list(seed), student=student).numpy()


def test_the_student_is_a_model_class_that_round_trips():
    student = _student(_teacher_models()[0])
    assert MODEL_CLASSES["GuidedStudent"] is GuidedStudent
    rebuilt = build_model("GuidedStudent", json.loads(json.dumps(student.config)))
    assert rebuilt.config == student.config
    rebuilt.load_state_dict(student.state_dict())  # the same architecture, tensor for tensor


def test_the_student_engine_holds_one_graph_equal_to_its_module(stage1, teacher, student):
    from egsde_rt.export.onnx_graphs import ort_session
    from egsde_rt.export.score_graph import StudentGraph

    engine = load_engine_dir(stage1)
    m = engine.manifest
    assert m.kind == "distilled" and engine.contracts == (STUDENT,) and set(m.graphs) == {"student"}
    assert set(m.torch_weights) == {"student"} and m.torch_weights["student"].model_class == "GuidedStudent"
    assert m.graphs["student"].inputs == ["y", "x_t", "t"] and m.graphs["student"].weights == "student"
    assert m.graphs["student"].external_bytes > 0 and set(m.graphs["student"].variants) == {"fp16", "bf16"}
    assert (m.image_size, m.schedule, m.preset) == (teacher[0].image_size, teacher[0].manifest.schedule, "cat2dog")
    assert m.method == STAGE1 and m.distilled.stage == 1 and m.distilled.teacher_preset == "cat2dog"
    assert m.distilled.teacher == teacher_identity(teacher[0].manifest)
    assert EGSDESettings(**m.distilled.teacher_settings) == TEACHER
    assert not (stage1 / "dse_grad.onnx").exists() and not (stage1 / "weights" / "dse.safetensors").exists()
    session = ort_session(engine.graph_file("student"))
    for batch in (1, 3):
        y, x_t, t = STUDENT.sample_inputs(batch, SIZE, seed=batch)
        (got,) = session.run(None, {"y": y.numpy(), "x_t": x_t.numpy(), "t": t.numpy()})
        with torch.no_grad():
            expected = StudentGraph(student)(y, x_t, t).numpy()
        assert np.abs(expected).max() > 0.1 and np.abs(got - expected).max() <= 1e-5


@pytest.mark.parametrize("backend", ["torch", "onnxruntime-cpu"])
def test_every_backend_runs_a_student_engine_as_the_oracle(stage1, student, backend):
    """Seeds per image, the callback (its total: the updates), a stage-1 override of the
    updates and solver, images in a list, and cancelling."""
    translator = Translator(stage1, backend=backend)
    seen = []
    got = translator.run_tensor(_x0(), seed=[3, 4], callback=lambda done, total: seen.append((done, total)))
    assert np.abs(got.numpy() - _oracle(student, STAGE1)).max() <= 1e-5
    assert seen == [(k, STAGE1.num_updates) for k in range(1, STAGE1.num_updates + 1)]
    fewer = STAGE1.with_overrides(steps=4, solver="dpmpp-2m-sde", eta=0.5, spacing="logsnr")
    got = translator.run_tensor(_x0(), seed=[5, 6], steps=4, solver="dpmpp-2m-sde", eta=0.5, spacing="logsnr")
    assert np.abs(got.numpy() - _oracle(student, fewer, seed=(5, 6))).max() <= 1e-5
    images = [np.full((SIZE, SIZE, 3), 60 * i, np.uint8) for i in (1, 2)]
    listed = translator.run(images, seed=[1, 2])  # an image's noise is its seed's, whatever its batch
    alone = translator.run(images[1], seed=2)
    assert np.abs(np.asarray(listed[1], np.int16) - np.asarray(alone, np.int16)).max() <= 1
    with pytest.raises(SamplingCancelled):
        translator.run_tensor(_x0(), seed=1, callback=lambda done, total: done < 2)


def test_the_captured_path_runs_a_student(stage1, student):
    """The Translator's captured path (a stand-in graph replaying the CPU sampler's step, as on
    CUDA the captured graph replays it) gives the uncaptured result of a student engine."""
    translator = Translator(stage1, backend="torch")
    expected = translator.run_tensor(_x0(), seed=[3, 4])
    translator.captures, translator.step_graph = True, HostStepGraph
    seen = []
    got = translator.run_tensor(_x0(), seed=[3, 4], callback=lambda done, total: seen.append(total))
    assert isinstance(captured_step(translator.sampler_for(STAGE1, (2, 3, SIZE, SIZE))).graph, HostStepGraph)
    assert torch.equal(got, expected) and seen == [STAGE1.num_updates] * STAGE1.num_updates


@requires_cuda
@pytest.mark.gpu
def test_a_student_engine_on_cuda_equals_the_oracle(stage1, student):
    """On a GPU: the captured path (one CUDA graph of the sampler's step and the student) runs the
    student as the oracle does, within float tolerance, and reports every update."""
    translator = Translator(stage1, backend="torch", device="cuda")
    assert translator.captures
    seen = []
    got = translator.run_tensor(_x0().cuda(), seed=[3, 4], callback=lambda done, total: seen.append(done))
    assert captured_step(translator.sampler_for(STAGE1, (2, 3, SIZE, SIZE))) is not None
    assert np.abs(got.cpu().numpy() - _oracle(student, STAGE1)).max() <= 1e-3
    assert seen == list(range(1, STAGE1.num_updates + 1))


def test_egsde_rt_build_and_the_compiled_backend_take_a_student_engine(stage1, student, tmp_path):
    path = tmp_path / "student"
    shutil.copytree(stage1, path)
    assert main(["build", str(path), "--backend", "compiled", "--device", "cpu", "--max-batch", "2"]) == 0
    plans = load_engine_dir(path).manifest.plans
    assert [plan.graph for plan in plans.values()] == ["student"]
    translator = Translator(path)
    assert translator.backend == "compiled" and translator.max_batch == 2
    got = translator.run_tensor(_x0(), seed=[3, 4])
    assert np.abs(got.numpy() - _oracle(student, STAGE1)).max() <= 1e-5


def test_a_stage_2_student_refuses_another_run_and_every_student_another_expert(stage2, student):
    translator = Translator(stage2, backend="torch")
    seen = []
    got = translator.run_tensor(_x0(), seed=[3, 4], steps=3, callback=lambda done, total: seen.append(total))
    assert np.abs(got.numpy() - _oracle(student, STAGE2)).max() <= 1e-5 and seen == [3, 3, 3]
    for override in ({"steps": 5}, {"solver": "ddpm", "eta": 1.0}, {"eta": 0.5}, {"M": 10}, {"spacing": "karras"}):
        with pytest.raises(ConfigError, match="distilled for its exact run, 3 updates of ddim.*a stage-1 student "
                                              "serves other update counts"):
            translator.run_tensor(_x0(), **override)
    for override in ({"ls": 100.0}, {"li": 1.0}):
        with pytest.raises(ConfigError, match=f"{next(iter(override))}: this student has the experts folded in.*"
                                              "distill another student for another ls/li"):
            translator.settings_with(**override)


def test_a_student_keeps_a_stable_low_pass_expert_native_and_refuses_its_gradient_form(tmp_path):
    """A teacher whose low-pass expert is implicit: its student folds the DSE in and keeps li
    native; switching that expert to its gradient form would run an expert the student cannot."""
    unet, dse = _teacher_models(seed=1)
    implicit = TEACHER.with_overrides(lowpass="implicit")
    teacher = export_engine(unet, dse, tmp_path / "teacher", image_size=SIZE, settings=implicit,
                            formats=("torch",), **QUIET)
    student = _student(unet)
    with pytest.raises(ConfigError, match="tied to its teacher's li"):
        export_student(student, teacher, tmp_path / "x", stage=1, settings=implicit.with_overrides(ls=0.0, li=9.0),
                       **QUIET)
    path = export_student(student, teacher, tmp_path / "student", stage=1, settings=implicit.with_overrides(ls=0.0),
                          formats=("torch",), **QUIET)
    translator = Translator(path, backend="torch")
    assert translator.settings_with(lowpass="exact").lowpass == "exact"
    with pytest.raises(ConfigError, match="lowpass=gradient: this student has the experts folded in"):
        translator.settings_with(lowpass="gradient")
    got = translator.run_tensor(_x0(), seed=[3, 4], steps=6, solver="ddim")
    expected = _oracle(student, implicit.with_overrides(ls=0.0, steps=6, solver="ddim"))
    assert np.abs(got.numpy() - expected).max() <= 1e-5


def test_export_refuses_what_is_no_student_engine(teacher, student, stage2, tmp_path):
    for kwargs, why in (({"stage": 3, "settings": STAGE1}, "stage must be one of"),
                        ({"stage": 1, "settings": TEACHER}, "ls=0")):
        with pytest.raises(ConfigError, match=why):
            export_student(student, teacher[0], tmp_path / "x", **kwargs, **QUIET)
    with pytest.raises(ConfigError, match="a distilled engine: a student's teacher is the egsde engine"):
        export_student(student, stage2, tmp_path / "x", stage=1, settings=STAGE1, **QUIET)
    with pytest.raises(ConfigError, match="not the architecture"):
        other = ADMUNet(image_size=SIZE, num_channels=64, num_res_blocks=1, channel_mult="1",
                        attention_resolutions="", num_head_channels=32, learn_sigma=True)
        export_student(student_from_teacher(other), teacher[0], tmp_path / "x", stage=1, settings=STAGE1, **QUIET)
    assert not (tmp_path / "x").exists()


def _edited(engine, tmp_path, change):
    """A copy of ``engine`` whose manifest ``change(manifest_dict)`` edited."""
    path = tmp_path / "edited"
    shutil.copytree(engine, path)
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize("change,why", [
    (lambda m: m.pop("distilled"), "a distilled engine that names no teacher.*export the student again"),
    (lambda m: m["distilled"].update(teacher="not-a-sha256"), "distilled.teacher must be a sha256"),
    (lambda m: m["distilled"].update(stage=3), r"distilled.stage must be one of \[1, 2\]"),
    (lambda m: m["settings"].update(ls=500.0), r"settings run an expert \(ls=500.0.*has the experts folded in"),
    (lambda m: m["settings"].update(li=2.0), r"settings run an expert \(ls=0.0, li=2.0, lowpass=gradient\)"),
    (lambda m: m.update(kind="egsde"), "an egsde engine with a 'distilled' entry"),
    (lambda m: m.update(kind="teacher"), r"kind must be one of \['egsde', 'distilled'\]"),
], ids=["no-teacher", "corrupt-teacher", "stage", "ls", "li-gradient", "egsde-with-teacher", "unknown-kind"])
def test_a_manifest_that_breaks_the_distilled_kind_is_an_engine_dir_error(stage2, tmp_path, change, why):
    with pytest.raises(EngineDirError, match=why):
        load_engine_dir(_edited(stage2, tmp_path, change))


def test_an_egsde_engine_without_a_kind_reads_as_one_and_lists_its_own_graphs(teacher, tmp_path):
    path = _edited(teacher[0].path, tmp_path, lambda m: (m.pop("kind"), m.pop("distilled")))
    engine = load_engine_dir(path)
    assert engine.manifest.kind == "egsde" and [c.name for c in engine.contracts] == ["score", "dse_grad"]
    assert teacher_identity(engine.manifest) == teacher_identity(teacher[0].manifest)
    with pytest.raises(EngineDirError, match="the manifest of this egsde engine lists no 'dse' torch weights"):
        load_engine_dir(_edited(path, tmp_path / "again", lambda m: m["torch_weights"].pop("dse")))


def test_check_teacher_accepts_the_teacher_with_plans_and_refuses_a_foreign_one(teacher, stage2, tmp_path):
    """Plans recorded as `egsde-rt build` records them (``plan_cache``, a stand-in compiler) leave
    the teacher's identity as it was; another engine is a foreign teacher, named by both sha256s."""
    from egsde_rt.engine.plans import compiled_identity
    from egsde_rt.export.plan_cache import build_cached_plans

    student = load_engine_dir(stage2)
    check_teacher(student, teacher[0])
    built = tmp_path / "teacher"
    shutil.copytree(teacher[0].path, built)
    def stand_in_compiler(contract, path):
        path.write_bytes(b"plan")

    build_cached_plans(load_engine_dir(built), kind="compiled", identity=compiled_identity("cpu"), precision="fp32",
                       profile=(1, 2), suffix=".pt2", build_one=stand_in_compiler, log=lambda message: None)
    with_plans = load_engine_dir(built)
    assert {plan.graph for plan in with_plans.manifest.plans.values()} == {"score", "dse_grad"}
    check_teacher(student, with_plans)
    unet, dse = _teacher_models()
    other = load_engine_dir(export_engine(unet, dse, tmp_path / "other", image_size=SIZE, formats=("torch",),
                                          settings=TEACHER.with_overrides(ls=100.0), **QUIET))
    theirs, ours = student.manifest.distilled.teacher, teacher_identity(other.manifest)
    with pytest.raises(EngineDirError, match=f"a foreign teacher: the student was distilled from another engine "
                                             f"\\(its teacher is {theirs}, and .* is {ours}\\)"):
        check_teacher(student, other)
    with pytest.raises(EngineDirError, match="not a distilled one: it names no teacher"):
        check_teacher(teacher[0], teacher[0])


def test_info_says_what_a_student_engine_is(stage1, stage2, teacher, capsys):
    assert main(["info", str(stage2)]) == 0
    out = capsys.readouterr().out
    sha = teacher_identity(teacher[0].manifest)
    assert f"kind distilled: stage 2 student of teacher {sha} (preset cat2dog)" in out
    assert "distilled for 3 updates of ddim (its only run)" in out
    assert "needs no expert at run time (folded in: the teacher's ls=500.0, li=2.0)" in out
    assert main(["info", str(stage1)]) == 0
    out = capsys.readouterr().out
    assert "stage 1 student" in out and "runs 12 updates of ddpm by default (any count and solver)" in out
    assert "student.onnx" in out and "yes onnxruntime-cpu" in out and "dse_grad" not in out
    assert main(["info", str(teacher[0].path)]) == 0
    assert "kind egsde (a score network and its expert)" in capsys.readouterr().out


def test_the_bench_times_a_student_beside_its_teacher(teacher, stage2):
    """`egsde-rt bench --student`: the student's runs (all its updates, its default backend) after the
    teacher's, in the same record, and its speed-up over the official sampler per batch size; the
    eager reference runs a student engine too."""
    from egsde_rt.bench.end_to_end import EAGER, BenchConfig, run_benchmark, student_speedups

    runs = run_benchmark(BenchConfig(engine_dir=teacher[0].path, batch_sizes=[1, 2], steps=2, repeats=1, warmup=0,
                                     backends=[EAGER, "torch"], student=stage2), log=lambda m: None)
    students = [r for r in runs if r.get("engine") == "student"]
    assert [r["batch_size"] for r in students] == [1, 2] and all(r["backend"] == "torch" for r in students)
    assert all(r["timed_updates"] == r["total_updates"] == 3 for r in students)  # never a prefix of its run
    speedups = student_speedups(runs)
    assert set(speedups) == {"1", "2"} and all(v["official_backend"] == "torch" for v in speedups.values())
    official = next(r for r in runs if r["name"] == "torch b1")
    assert speedups["1"]["speedup"] == pytest.approx(students[0]["images_per_second"] / official["images_per_second"])
    eager = run_benchmark(BenchConfig(engine_dir=stage2, repeats=1, warmup=0, backends=[EAGER]), log=lambda m: None)
    assert eager[0]["backend"] == EAGER and eager[0]["total_updates"] == 3
