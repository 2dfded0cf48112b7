"""Rules of the CUDA path that the CPU can check: TF32 follows the precision in every runner and
in the bench's eager reference; CUDA views name their device index; the bench reports the
driver's view of device memory and times the path users take (Translator.run_tensor)."""

import numpy as np
import pytest
import torch

from conftest import tiny_models
from egsde_rt.bench import end_to_end
from egsde_rt.bench.end_to_end import EAGER, BenchConfig, run_benchmark
from egsde_rt.bench.machine import PeakMemory
from egsde_rt.models.network_fns import tf32_mode
from egsde_rt.runtime import runners
from egsde_rt.runtime.native_sampler import build_sampler, run_sampler
from egsde_rt.runtime.translator import Translator
from egsde_rt.method.settings import EGSDESettings


def _flags():
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


@pytest.fixture()
def flags_set_to(request):
    """Set both TF32 flags to the opposite of what a run should see, and restore them after."""
    saved = _flags()

    def set_to(value: bool):
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = value

    yield set_to
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("precision,expected", [("fp32", False), ("tf32", True), ("bf16", False), ("fp16", False)])
def test_tf32_mode_sets_both_flags_from_the_precision_and_restores_them(precision, expected, flags_set_to):
    flags_set_to(not expected)
    with tf32_mode(precision):
        assert _flags() == (expected, expected)
    assert _flags() == (not expected, not expected)


def _recording(model, seen):
    model.register_forward_pre_hook(lambda module, args: seen.append(_flags()))
    return model


@pytest.mark.parametrize("precision,expected", [("fp32", False), ("tf32", True)])
def test_the_torch_runner_runs_its_networks_with_the_precisions_flags(precision, expected, flags_set_to):
    unet, dse = tiny_models()
    seen = []
    settings = EGSDESettings(M=2, ls=500.0, li=2.0, down_N=8)
    runner = runners.TorchRunner(_recording(unet, seen), _recording(dse, seen), s1=settings.s1,
                                 score_kind=settings.score_kind, precision=precision)
    flags_set_to(not expected)  # PyTorch's own default for cuDNN is True: "fp32" must turn it off
    x0 = torch.zeros(1, 3, 32, 32)
    run_sampler(build_sampler(settings, x0.shape, "cpu"), x0, runner, settings, seed=0)
    assert seen and set(seen) == {(expected, expected)}
    assert _flags() == (not expected, not expected)


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_every_backend_gets_the_translators_precision(tiny_torch_engine, precision):
    assert Translator(tiny_torch_engine[0], backend="torch", precision=precision).runner.precision == precision


def test_the_compiled_runner_runs_its_plans_with_the_precisions_flags(monkeypatch, flags_set_to):
    seen = []

    def load(path, run_single_threaded=False, device_index=-1):
        return lambda *inputs: (seen.append(_flags()), inputs[0])[1]

    monkeypatch.setattr(torch._inductor, "aoti_load_package", load)
    for precision, expected in (("fp32", False), ("tf32", True)):
        flags_set_to(not expected)
        seen.clear()
        runner = runners.CompiledRunner({"score": "s", "dse_grad": "d"}, precision=precision)
        x = np.ones(4, np.float32)
        runner._run(runners.SCORE, (x, x), np.zeros(4, np.float32))
        assert seen == [(expected, expected)]


def test_the_benchs_eager_reference_runs_with_the_precisions_flags(tiny_torch_engine, monkeypatch, flags_set_to):
    seen = []
    reference = end_to_end.reference_translate

    def recording(*args, **kwargs):
        seen.append(_flags())
        return reference(*args, **kwargs)

    monkeypatch.setattr(end_to_end, "reference_translate", recording)
    flags_set_to(True)
    run_benchmark(BenchConfig(engine_dir=tiny_torch_engine[0], steps=1, repeats=1, warmup=0, backends=[EAGER]),
                  log=lambda m: None)
    assert seen and set(seen) == {(False, False)}


def test_cuda_views_name_their_device_index(monkeypatch):
    """torch.as_tensor(..., device="cuda") would ask the driver where the pointer lives, a query
    that must not run inside a CUDA-graph capture: the runners pass the index."""
    got = {}

    class CudaRef:
        device = "cuda"

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    monkeypatch.setattr(torch, "as_tensor", lambda ref, device=None: got.setdefault("device", device))
    runners.as_tensor(CudaRef())
    assert got["device"] == torch.device("cuda", 3) and got["device"].index == 3


def test_peak_memory_reports_the_drivers_view(monkeypatch):
    free = iter([(8000 * 2**20, 0), (7000 * 2**20, 0)])
    for name, fn in {"synchronize": lambda: None, "reset_peak_memory_stats": lambda: None,
                     "max_memory_allocated": lambda: 600 * 2**20, "mem_get_info": lambda: next(free)}.items():
        monkeypatch.setattr(torch.cuda, name, fn)
    with PeakMemory("cuda") as memory:
        pass
    assert memory.device_mb == 600
    assert memory.driver_view() == {"device_free_before_mb": 8000, "device_free_after_mb": 7000,
                                    "device_driver_mb": 1000}
    with PeakMemory("cpu") as host:
        pass
    assert set(host.driver_view().values()) == {None}


def test_the_bench_times_the_translators_path_and_takes_phases_from_separate_runs(tiny_torch_engine, monkeypatch):
    calls = []
    run_tensor = Translator.run_tensor

    def spy(self, *args, **kwargs):
        calls.append(kwargs)
        return run_tensor(self, *args, **kwargs)

    monkeypatch.setattr(Translator, "run_tensor", spy)
    (run,) = run_benchmark(BenchConfig(engine_dir=tiny_torch_engine[0], steps=3, repeats=2, warmup=1, phase_runs=1,
                                       backends=["torch"]), log=lambda m: None)
    assert len(calls) == 1 + 1 + 2  # the first run, the warm-up, the timed runs: all through run_tensor
    assert all(c["steps"] == 3 for c in calls)  # the timed prefix: 3 updates over the same schedule
    assert all(callable(c["callback"]) for c in calls)  # with a progress callback, as the CLI runs it
    assert run["timed_with_progress"] is True
    assert run["timed_path"] == "uncaptured" and run["captured"] is False  # the CPU has no CUDA graphs
    assert "separate uncaptured runs" in run["phases_from"]
    assert (run["timed_updates"], run["total_updates"], run["extrapolated"]) == (3, 12, True)
    assert run["per_step_ms"]["score"]["median"] > 0


def test_the_reference_command_runs_the_oracle_in_ieee_float32(monkeypatch, flags_set_to):
    import egsde_rt.reference
    from egsde_rt.reference import EagerTranslator as _EagerTranslator

    seen = []
    monkeypatch.setattr(egsde_rt.reference, "translate", lambda x0, *a, **k: (seen.append(_flags()), x0)[1])
    flags_set_to(True)
    _EagerTranslator(None, None, EGSDESettings(M=2, down_N=8), 32, "cpu").run_tensor(torch.zeros(1, 3, 32, 32), 0)
    assert seen == [(False, False)]
