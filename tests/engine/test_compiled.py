"""The compiled backend (AOTInductor plans): parity, the plan cache, stale plans; reduced precision;
capturable loading; on a GPU, the captured run against the uncaptured one."""

import json
import logging
import shutil

import numpy as np
import pytest
import torch

from conftest import TINY_M
from egsde_rt.engine import load_engine_dir
from egsde_rt.engine.plans import compiled_identity, matching_plans
from egsde_rt.errors import ConfigError, EngineDirError
from egsde_rt.export.compiled_plans import build_compiled_plans
from egsde_rt.runtime import runners
from egsde_rt.runtime.backends import probe
from egsde_rt.runtime.native_sampler import captured_step, run_sampler
from egsde_rt.runtime.translator import Translator
from helpers.native import requires_cuda
from helpers.sampling import native_translate, reference_translate


@pytest.fixture(scope="module")
def compiled_engine(tiny_torch_engine, tmp_path_factory):
    """A copy of the tiny torch-only engine (no ONNX graphs: compiled plans are built from the
    torch weights) with fp32 compiled plans for this CPU (built once: ~2 min)."""
    path = tmp_path_factory.mktemp("compiled") / "engine"
    shutil.copytree(tiny_torch_engine[0], path)
    assert load_engine_dir(path).formats == ("torch",)
    logs = []
    build_compiled_plans(path, device="cpu", precision="fp32", max_batch=4, log=logs.append)
    assert any("building" in m for m in logs)
    return path, tiny_torch_engine[1], tiny_torch_engine[2]


def _x0(batch=2, seed=1):
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_auto_prefers_the_compiled_plans_and_says_why(compiled_engine):
    translator = Translator(compiled_engine[0])
    assert translator.backend == "compiled" and translator.choice.device == "cpu"
    assert "fp32 compiled plans built for this machine" in translator.choice.reason


def test_a_batch_beyond_the_plans_range_runs_in_batches_of_the_plans_size(compiled_engine, tiny_torch_engine):
    """The plans take batches of 1..4: five images run as batches of 4 and 1, and equal the two
    batches run alone (seeds are per image); a list is run in batches of the plans' size too.
    The torch backend, with no plans, takes MAX_BATCH_SIZE."""
    from egsde_rt.method.settings import MAX_BATCH_SIZE

    translator = Translator(compiled_engine[0], backend="compiled")
    assert translator.max_batch == 4 and Translator(tiny_torch_engine[0], backend="torch").max_batch == MAX_BATCH_SIZE
    x0 = _x0(batch=5)
    y = translator.run_tensor(x0, seed=[0, 1, 2, 3, 4], M=2)
    assert torch.equal(y, torch.cat([translator.run_tensor(x0[:4], seed=[0, 1, 2, 3], M=2),
                                     translator.run_tensor(x0[4:], seed=4, M=2)]))
    images = [np.full((32, 32, 3), i * 40, np.uint8) for i in range(5)]
    assert len(translator.run(images, M=2)) == 5  # batches of 4 and 1


def test_the_compiled_backend_equals_the_reference(compiled_engine):
    path, unet, dse = compiled_engine
    translator = Translator(path, backend="compiled")
    x0 = _x0()
    noise = torch.randn(TINY_M + 1, *x0.shape, generator=torch.Generator().manual_seed(2))
    settings = dict(M=TINY_M, ls=500.0, li=2.0, down_N=8)
    injected = translator.run_tensor(x0, noise=noise)
    assert np.abs(injected - reference_translate(x0, unet, dse, noise=noise, **settings).numpy()).max() <= 1e-4
    seeded = translator.run_tensor(x0, seed=9)
    assert np.abs(seeded - reference_translate(x0, unet, dse, seed=9, **settings).numpy()).max() <= 1e-4
    # the dynamic batch: another batch size than the plans were traced with
    one = translator.run_tensor(x0[:1], seed=9, ls=100.0, steps=6)
    assert np.abs(one - reference_translate(x0[:1], unet, dse, seed=9, **{**settings, "ls": 100.0, "steps": 6})
                  .numpy()).max() <= 1e-4


def test_plans_are_cached_and_recorded(compiled_engine):
    path = compiled_engine[0]
    logs = []
    build_compiled_plans(path, device="cpu", precision="fp32", max_batch=4, log=logs.append)
    assert logs and all("cached" in m for m in logs)  # nothing recompiled
    plans = [p for p in load_engine_dir(path).manifest.plans.values() if p.kind == "compiled"]
    identity = compiled_identity("cpu")
    assert {p.graph for p in plans} == {"score", "dse_grad"}
    for plan in plans:
        assert (plan.device, plan.capability, plan.runtime) == (identity.device, identity.capability,
                                                                f"torch {torch.__version__}")
        assert plan.profile == [1, 4] and plan.precision == "fp32"
        assert plan.size == (path / plan.file).stat().st_size
        assert all(v["max_rel"] < 1e-3 for v in plan.validation.values())


def test_a_stale_plan_is_detected_and_refused(compiled_engine, tmp_path):
    path = tmp_path / "engine"
    shutil.copytree(compiled_engine[0], path)
    manifest = json.loads((path / "manifest.json").read_text())
    for plan in manifest["plans"].values():
        plan["runtime"] = "torch 2.0.0"  # built by another PyTorch
    (path / "manifest.json").write_text(json.dumps(manifest))
    engine = load_engine_dir(path)
    assert matching_plans(engine, compiled_identity("cpu"), kind="compiled") is None
    usable, why = probe(engine, "cpu")["compiled"]
    assert not usable and "torch 2.0.0" in why and "egsde-rt build" in why
    with pytest.raises(ConfigError, match="torch 2.0.0"):
        Translator(path, backend="compiled")
    assert Translator(path).backend == "torch"  # auto falls back (a torch-only engine), and says why in its log


def test_a_corrupt_plan_is_refused_and_never_loaded(compiled_engine, tmp_path, monkeypatch):
    """A plan's bytes changed after building (the same size): verified before a runner gets it,
    refused with the file and the command that rebuilds it, by the named backend and by auto
    (an error, as for any corrupt file the manifest lists, not a fallback); never loaded."""
    path = tmp_path / "engine"
    shutil.copytree(compiled_engine[0], path)
    plan = next((path / "plans").glob("score-*.pt2"))
    data = bytearray(plan.read_bytes())
    data[len(data) // 2] ^= 0xFF
    plan.write_bytes(bytes(data))
    calls = []
    monkeypatch.setattr(torch._inductor, "aoti_load_package", _fake_loader(calls))
    refusal = (rf"{plan.name} does not match its sha256 .*rebuild it: run "
               r"`egsde-rt build .* --backend compiled --device cpu --precision fp32`")
    for backend in ("compiled", "auto"):
        with pytest.raises(EngineDirError, match=refusal):
            Translator(path, backend=backend, device="cpu")
    assert calls == []


def _fake_loader(calls, *, with_flag=True):
    if with_flag:
        def load(path, run_single_threaded=False, device_index=-1):
            calls.append((path, run_single_threaded))
            return lambda *inputs: inputs[0] * 2
    else:
        def load(path):
            calls.append((path, None))
            return lambda *inputs: inputs[0] * 2
    return load


def test_plans_are_loaded_single_threaded_so_that_cuda_graphs_can_capture_them(monkeypatch):
    """aoti_load_package's default (run_single_threaded=False) queries a CUDA event on every run
    after the first, which invalidates a stream capture: the runner loads with the flag."""
    calls = []
    monkeypatch.setattr(torch._inductor, "aoti_load_package", _fake_loader(calls))
    runner = runners.CompiledRunner({"score": "s.pt2", "dse_grad": "d.pt2"})
    assert sorted(calls) == [("d.pt2", True), ("s.pt2", True)]
    x, out = np.arange(6, dtype=np.float32), np.zeros(6, np.float32)
    runner._run(runners.SCORE, (x, x), out)
    assert np.array_equal(out, 2 * x)


def test_a_pytorch_without_the_flag_loads_plans_as_before_and_says_so(monkeypatch, caplog):
    calls = []
    monkeypatch.setattr(torch._inductor, "aoti_load_package", _fake_loader(calls, with_flag=False))
    with caplog.at_level(logging.WARNING, logger="egsde_rt"):
        runners.load_compiled_package("s.pt2")
    assert calls == [("s.pt2", None)] and "run uncaptured" in caplog.text


@pytest.mark.gpu
@requires_cuda
def test_the_compiled_runners_captured_run_equals_its_uncaptured_run(tiny_torch_engine, tmp_path):
    """CUDA plans of the tiny engine: the Translator's captured run (one CUDA graph per step,
    replayed) equals an uncaptured run of the same sampler and runner, bit for bit, and the
    capture did not fall back."""
    path = tmp_path / "engine"
    shutil.copytree(tiny_torch_engine[0], path)
    build_compiled_plans(path, device="cuda", precision="fp32", max_batch=2, log=lambda m: None)
    tr = Translator(path, backend="compiled", device="cuda")
    assert tr.captures
    x0 = _x0()
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False  # the same kernels each run
    try:
        captured = tr.run_tensor(x0, seed=5, M=8)
        assert tr.captures, "the capture failed and the Translator fell back to uncaptured runs"
        settings = tr.settings_with(M=8)
        sampler = tr.sampler_for(settings, tuple(x0.shape))
        assert captured_step(sampler).runner is tr.runner
        uncaptured = run_sampler(sampler, x0, tr.runner, settings, seed=5)
        replayed = tr.run_tensor(x0, seed=5, M=8)
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved
    assert np.array_equal(captured, uncaptured)
    assert np.array_equal(replayed, uncaptured)


def test_bf16_networks_stay_within_40_db_of_fp32_on_the_demo():
    """bf16 networks, float32 sampler state, the same Philox noise: >= 40 dB PSNR on two demo images."""
    from egsde_rt.demo import DEMO_IMAGE_SEED, DEMO_SETTINGS, weights_path
    from egsde_rt.demo import domain_batch
    from egsde_rt.demo import DEMO_DSE_CONFIG, DEMO_SCORE_CONFIG
    from egsde_rt.evaluation.metrics import psnr
    from egsde_rt.models import ADMUNet, DSE, load_checkpoint

    score, dse = ADMUNet(**DEMO_SCORE_CONFIG), DSE(**DEMO_DSE_CONFIG)
    load_checkpoint(score, weights_path("score"))
    load_checkpoint(dse, weights_path("dse"))
    x0 = domain_batch("source", range(2), seed=DEMO_IMAGE_SEED)  # two images: bf16 on a CPU is slow
    settings = DEMO_SETTINGS.to_dict()
    fp32 = native_translate(x0, score.eval(), dse.eval(), seed=0, **settings).clamp(-1, 1)
    score.convert_torso(torch.bfloat16), dse.convert_torso(torch.bfloat16)
    bf16 = native_translate(x0, score, dse, seed=0, **settings).clamp(-1, 1)
    assert not torch.equal(fp32, bf16)  # the networks did run in bf16
    db = psnr((bf16 + 1) / 2, (fp32 + 1) / 2)
    assert (db >= 40).all(), db
