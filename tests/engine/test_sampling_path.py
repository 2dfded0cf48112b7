"""One sampling path for every caller. On the CPU: the GIL released while the native loop runs,
progress and cancellation between the replays of the captured path (a stand-in graph replays a
CPU sampler's step), the capture fallback narrowed to failures of the capture, tensors in and out
without copies, and the one backend registry. On a GPU (marker ``gpu``; skipped without CUDA; run
by the GPU protocol): the Translator captures with a progress callback, reads and writes CUDA
tensors in place, and runs on ``cuda:N`` (the last device here) end to end."""

import logging
import threading
import time

import numpy as np
import pytest
import torch

from egsde_rt import _core, cli
from egsde_rt.bench.end_to_end import usable_backends
from egsde_rt.engine import load_engine_dir
from egsde_rt.errors import CaptureFailed, ConfigError, NativeError, SamplingCancelled
from egsde_rt.models.network_fns import PRECISIONS
from egsde_rt.runtime import backends
from egsde_rt.runtime.native_sampler import build_sampler, capture_step, captured_step, run_captured, run_sampler
from egsde_rt.runtime.translator import Translator
from egsde_rt.method.settings import EGSDESettings
from helpers.native import HostStepGraph, requires_cuda


class ZeroRunner(_core.Runner):
    """Networks that cost nothing: the loop's time is the native kernels'."""

    def score(self, y, t, eps_out):
        np.asarray(eps_out)[...] = 0.0

    def dse_grad(self, y, x_t, t, grad_out):
        np.asarray(grad_out)[...] = 0.0


class RunningStepGraph(HostStepGraph):
    """A capture that runs the step with the runner told it is being captured (as a CUDA capture
    runs the runner's Python code once, recording its work)."""

    def capture(self, step):
        Raising.capturing = True
        try:
            step()
        finally:
            Raising.capturing = False
        self.step = step


class Raising(_core.Runner):
    """Delegates to a runner; raises `error` while its step is captured (`when="capture"`) or on
    its first call (`when="always"`)."""

    capturing = False

    def __init__(self, inner, error, when="capture"):
        super().__init__()
        self.inner, self.error, self.when = inner, error, when

    def score(self, y, t, eps_out):
        if self.when == "always" or Raising.capturing:
            raise self.error
        self.inner.score(y, t, eps_out)

    def dse_grad(self, y, x_t, t, grad_out):
        self.inner.dse_grad(y, x_t, t, grad_out)


def _x0(batch=1, size=32, seed=1):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --- 3. the GIL is released while the native loop runs ---------------------------------------------

def _ticks(during) -> tuple[int, float]:
    """How often a Python thread that sleeps 1 ms per tick ticked while ``during()`` ran (each
    tick needs the GIL back), and for how long ``during()`` ran."""
    stop, count = threading.Event(), [0]

    def ticker():
        while not stop.is_set():
            time.sleep(0.001)
            count[0] += 1

    thread = threading.Thread(target=ticker)
    thread.start()
    start = time.perf_counter()
    try:
        during()
    finally:
        seconds = time.perf_counter() - start
        stop.set()
        thread.join()
    return count[0], seconds


def test_a_python_thread_keeps_running_while_a_translation_runs():
    """A Python thread ticks on while the CPU loop runs its kernels (large low-pass gradients,
    networks that cost nothing) at at least half the rate it ticks beside a sleeping main
    thread. With the GIL held through the loop it ticks only while the runner's Python code runs
    (measured: ~5% of the rate; released: ~100%)."""
    settings = EGSDESettings(M=12, ls=0.0, li=2.0, down_N=4)
    x0 = _x0(size=256)
    sampler = build_sampler(settings, tuple(x0.shape), "cpu")
    run_sampler(sampler, x0, ZeroRunner(), settings, seed=1)  # warm
    during_run, run_seconds = _ticks(lambda: run_sampler(sampler, x0, ZeroRunner(), settings, seed=1))
    beside_sleep, sleep_seconds = _ticks(lambda: time.sleep(run_seconds))
    ratio = (during_run / run_seconds) / (beside_sleep / sleep_seconds)
    assert ratio > 0.5, f"the thread ticked at {ratio:.2f} of its rate beside a sleep during the run: the GIL was held"


def test_a_runner_that_raises_with_the_gil_released_raises_its_own_error():
    settings = EGSDESettings(M=3, ls=0.0, li=0.0, down_N=8)
    sampler = build_sampler(settings, (1, 3, 32, 32), "cpu")
    with pytest.raises(ValueError, match="boom"):
        run_sampler(sampler, _x0(), Raising(ZeroRunner(), ValueError("boom"), when="always"), settings)
    with pytest.raises(KeyError):
        run_sampler(sampler, _x0(), ZeroRunner(), settings, callback=lambda d, t: {}["missing"])
    assert run_sampler(sampler, _x0(), ZeroRunner(), settings).shape == (1, 3, 32, 32)  # usable after


# --- 1. progress and cancellation between replays ------------------------------------------------

@pytest.mark.parametrize("repeats", [1, 2])
def test_the_replayed_path_calls_progress_between_replays_and_equals_the_loop(small_unet, small_dse, repeats):
    from egsde_rt.runtime.runners import TorchRunner

    settings = EGSDESettings(M=8, ls=500.0, li=2.0, down_N=8, repeats=repeats)
    x0 = _x0(batch=2)
    runner = TorchRunner(small_unet, small_dse, s1=settings.s1, score_kind=settings.score_kind)
    sampler = build_sampler(settings, tuple(x0.shape), "cpu")
    loop = run_sampler(sampler, x0, runner, settings, seed=[3, 4])
    seen = []
    HostStepGraph.captures = 0
    replayed = run_captured(sampler, x0, runner, settings, seed=[3, 4], callback=lambda d, t: seen.append((d, t)),
                            step_graph=HostStepGraph)
    total = settings.num_updates * repeats
    assert seen == [(k, total) for k in range(1, total + 1)]
    assert np.array_equal(replayed, loop)
    again = run_captured(sampler, x0, runner, settings, seed=[3, 4], step_graph=HostStepGraph)
    assert np.array_equal(again, loop) and HostStepGraph.captures == 1  # the kept graph, replayed only


def test_returning_false_cancels_the_replayed_path_where_it_is():
    settings = EGSDESettings(M=8, ls=0.0, li=2.0, down_N=8)
    sampler = build_sampler(settings, (1, 3, 32, 32), "cpu")
    seen = []

    def stop_at_3(done, total):
        seen.append(done)
        return done < 3

    with pytest.raises(SamplingCancelled):
        run_captured(sampler, _x0(), ZeroRunner(), settings, callback=stop_at_3, step_graph=HostStepGraph)
    assert seen == [1, 2, 3] and sampler.step_counter == 3  # no update ran after the cancel


def test_the_translator_captures_with_a_callback(tiny_torch_engine):
    """The Translator's captured path (a stand-in graph on the CPU) takes the callback: it
    captures, reports every update and cancels."""
    tr = Translator(tiny_torch_engine[0], backend="torch", device="cpu")
    expected = tr.run_tensor(_x0(), seed=2, M=6)  # uncaptured (the CPU)
    tr.captures, tr.step_graph = True, HostStepGraph
    seen = []
    got = tr.run_tensor(_x0(), seed=2, M=6, callback=lambda d, t: seen.append(d))
    assert tr.captures and isinstance(captured_step(tr.sampler_for(tr.settings_with(M=6), (1, 3, 32, 32))).graph,
                                      HostStepGraph)
    assert seen == list(range(1, len(seen) + 1)) and len(seen) == tr.settings_with(M=6).num_updates
    assert torch.equal(got, expected)
    with pytest.raises(SamplingCancelled):
        tr.run_tensor(_x0(), seed=2, M=6, callback=lambda d, t: d < 2)


# --- 2. capture fails loudly or narrowly ---------------------------------------------------------

def test_only_a_failed_capture_falls_back_and_says_so_once(tiny_torch_engine, caplog):
    tr = Translator(tiny_torch_engine[0], backend="torch", device="cpu")
    expected = tr.run_tensor(_x0(), seed=2, M=6)
    tr.runner = Raising(tr.runner, RuntimeError("operation not permitted when stream is capturing"))
    tr.captures, tr.step_graph = True, RunningStepGraph
    with caplog.at_level(logging.WARNING, logger="egsde_rt"):
        got = tr.run_tensor(_x0(), seed=2, M=6)
        assert torch.equal(tr.run_tensor(_x0(), seed=2, M=6), expected)
    assert torch.equal(got, expected) and not tr.captures
    warnings = [r.getMessage() for r in caplog.records if "capturing a step" in r.getMessage()]
    assert len(warnings) == 1 and "operation not permitted" in warnings[0] and "uncaptured" in warnings[0]


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError("CUDA out of memory"),
                                   NativeError("cudaMalloc failed"), ValueError("the runner's own")])
def test_out_of_memory_native_and_runner_errors_reach_the_caller(tiny_torch_engine, error):
    tr = Translator(tiny_torch_engine[0], backend="torch", device="cpu")
    tr.runner = Raising(tr.runner, error)
    tr.captures, tr.step_graph = True, RunningStepGraph
    with pytest.raises(type(error), match=str(error)):
        tr.run_tensor(_x0(), seed=2, M=6)
    assert tr.captures  # not turned off: the capture itself did not fail


def test_a_runner_raising_in_the_warm_up_update_reaches_the_caller(tiny_torch_engine):
    tr = Translator(tiny_torch_engine[0], backend="torch", device="cpu")
    tr.runner = Raising(tr.runner, RuntimeError("the runner's own"), when="always")
    tr.captures, tr.step_graph = True, HostStepGraph
    with pytest.raises(RuntimeError, match="the runner's own"):
        tr.run_tensor(_x0(), seed=2, M=6)
    assert tr.captures


def test_capture_step_wraps_only_runtime_errors():
    settings = EGSDESettings(M=3, ls=0.0, li=0.0, down_N=8)
    sampler = build_sampler(settings, (1, 3, 32, 32), "cpu")
    sampler.begin(np.zeros((1, 3, 32, 32), np.float32), seed=0)
    with pytest.raises(CaptureFailed, match="Raising.*illegal"):
        capture_step(sampler, Raising(ZeroRunner(), RuntimeError("illegal")), RunningStepGraph)


# --- 4. tensors in and out -----------------------------------------------------------------------

def test_numpy_in_numpy_out_and_tensors_in_tensors_out(tiny_torch_engine):
    tr = Translator(tiny_torch_engine[0], backend="torch", device="cpu")
    x0 = _x0(batch=2)
    as_numpy = tr.run_tensor(x0.numpy(), seed=[1, 2], M=4)
    as_tensor = tr.run_tensor(x0, seed=[1, 2], M=4)
    assert isinstance(as_numpy, np.ndarray) and as_numpy.dtype == np.float32
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.device == x0.device and as_tensor.dtype == torch.float32
    assert np.array_equal(as_tensor.numpy(), as_numpy)


def test_the_sampler_reads_and_writes_the_callers_buffers_in_place():
    settings = EGSDESettings(M=4, ls=0.0, li=2.0, down_N=8)
    x0 = _x0(batch=2)
    sampler = build_sampler(settings, tuple(x0.shape), "cpu")
    out = torch.full(x0.shape, float("nan"))
    result = run_sampler(sampler, x0, ZeroRunner(), settings, seed=3, out=out)
    assert result is out and torch.isfinite(out).all()
    assert np.array_equal(out.numpy(), run_sampler(sampler, x0, ZeroRunner(), settings, seed=3))
    host = np.zeros(x0.shape, np.float32)
    assert run_sampler(sampler, x0, ZeroRunner(), settings, seed=3, out=host) is host
    with pytest.raises(ConfigError, match="out"):
        run_sampler(sampler, x0, ZeroRunner(), settings, out=torch.zeros(x0.shape, dtype=torch.float64))
    with pytest.raises(ConfigError, match="out"):
        run_sampler(sampler, x0, ZeroRunner(), settings, out=np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(NativeError, match="out"):
        sampler.finish(np.zeros(5, np.float32))


# --- 5. one backend registry ---------------------------------------------------------------------

def test_the_registry_is_the_one_source_of_the_backends():
    names = backends.backend_names()
    assert len(set(names)) == len(names) == len(backends.REGISTRY)
    assert backends.auto_order("cuda") == ("compiled", "tensorrt", "onnxruntime-cuda", "torch")
    assert backends.auto_order("cpu") == ("compiled", "onnxruntime-cpu", "torch")
    assert {b.name for b in backends.REGISTRY if b.capturable} == {"compiled", "tensorrt", "torch"}
    assert set().union(*(b.precisions for b in backends.REGISTRY)) == set(PRECISIONS)
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for command in commands.values():
        for action in command._actions:
            if action.dest in ("backend", "quality_backend") and "auto" in (action.choices or ()):
                assert list(action.choices) == ["auto", *names]
            if action.dest == "precision":
                assert tuple(action.choices) == PRECISIONS


def test_adding_a_backend_touches_one_place(tiny_torch_engine, monkeypatch):
    made = []
    extra = backends.Backend("fake", ("cpu",), ("fp32",), False, lambda engine, device, precision: (True, "a test"),
                             lambda choice, engine, stream, threads: made.append(choice) or ZeroRunner())
    monkeypatch.setattr(backends, "REGISTRY", (extra, *backends.REGISTRY))
    engine = load_engine_dir(tiny_torch_engine[0])
    assert backends.auto_order("cpu")[0] == "fake" and "fake" in backends.backend_names()
    assert backends.probe(engine, "cpu")["fake"] == (True, "a test")
    assert usable_backends(engine, "cpu", "fp32")[0] == "fake"  # the bench's list
    assert backends.probe(engine, "cpu", "bf16")["fake"][0] is False  # its precisions
    tr = Translator(tiny_torch_engine[0], device="cpu")  # auto takes it first
    assert tr.backend == "fake" and made[0].name == "fake"
    assert tr.run_tensor(_x0(), seed=1, M=3, ls=0.0).shape == (1, 3, 32, 32)


def test_a_precision_a_backend_does_not_run_is_refused_with_the_ones_that_do(tiny_engine):
    engine = load_engine_dir(tiny_engine[0])
    usable, why = backends.probe(engine, "cpu", "bf16")["onnxruntime-cpu"]
    assert not usable and "fp32" in why and "torch" in why and "compiled" in why
    with pytest.raises(ConfigError, match="unknown backend 'nope'.*torch"):
        backends.select_backend(engine, "nope", "cpu")


def test_devices_are_cpu_cuda_or_cuda_n():
    from egsde_rt.runtime.devices import Device, resolve

    assert Device.parse("cuda:1") == Device("cuda", 1) and str(Device.parse("cuda:1")) == "cuda:1"
    assert Device.parse("cuda") == Device("cuda") and Device.parse("cpu") == Device("cpu")
    assert Device.parse(torch.device("cuda", 3)) == Device("cuda", 3)
    device = Device.parse("auto")
    assert Device.parse(device) is device  # parsed once: a Device passes through
    for bad in ("gpu", "cuda:x", "cpu:0", "cuda:-1", ""):
        with pytest.raises(ConfigError, match="cuda:N"):
            Device.parse(bad)
    assert resolve("cpu") == Device("cpu") and resolve("cpu").resolved
    assert backends.BackendChoice("torch", "cuda", "", index=2).torch_device == "cuda:2"


def test_a_resolved_device_is_not_checked_again(monkeypatch):
    from egsde_rt.runtime import devices

    cpu = devices.resolve("cpu")
    calls = []
    monkeypatch.setattr(devices, "cuda_usable", lambda: calls.append(1) or (False, "stand-in"))
    assert devices.resolve(cpu) is cpu and devices.resolve("auto") == cpu and calls == [1]


def test_the_runners_are_made_for_the_chosen_cuda_device(tiny_engine, monkeypatch):
    """ONNX Runtime gets the device id of cuda:N (and the sampler's stream, the precision and the
    Translator's threads)."""
    from egsde_rt.runtime import runners

    made = []
    monkeypatch.setattr(runners, "OrtRunner", lambda engine, **kwargs: made.append(kwargs))
    choice = backends.BackendChoice("onnxruntime-cuda", "cuda", "test", "bf16", index=3)
    backends.make_runner(choice, load_engine_dir(tiny_engine[0]), stream=77, threads=5)
    assert made == [{"device": "cuda", "device_id": 3, "stream": 77, "precision": "bf16", "threads": 5}]


@pytest.mark.skipif(_core.cuda_device_count() > 0, reason="a machine without CUDA")
def test_cuda_n_without_a_gpu_is_refused_with_the_reason(tiny_torch_engine):
    with pytest.raises(ConfigError, match="no usable backend"):
        Translator(tiny_torch_engine[0], backend="torch", device="cuda:1")
    with pytest.raises(ConfigError):
        build_sampler(EGSDESettings(M=3, down_N=8), (1, 3, 32, 32), "cuda:1")


# --- on a GPU -----------------------------------------------------------------------------------

@pytest.fixture
def deterministic_cudnn():
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def _cuda_x0(batch=2, device="cpu"):
    return (torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(device)


@pytest.mark.gpu
@requires_cuda
def test_the_translator_captures_with_progress_and_keeps_tensors_on_the_device(tiny_torch_engine,
                                                                               deterministic_cudnn):
    tr = Translator(tiny_torch_engine[0], backend="torch", device="cuda")
    x0 = _cuda_x0(device=tr.device)
    seen = []
    got = tr.run_tensor(x0, seed=[5, 6], M=8, callback=lambda done, total: seen.append((done, total)))
    settings = tr.settings_with(M=8)
    total = settings.num_updates * settings.repeats
    assert seen == [(k, total) for k in range(1, total + 1)]
    sampler = tr.sampler_for(settings, tuple(x0.shape))
    assert tr.captures and captured_step(sampler).runner is tr.runner, "the callback turned capture off"
    assert isinstance(got, torch.Tensor) and got.device == x0.device
    with torch.cuda.stream(tr.stream):
        uncaptured = run_sampler(sampler, x0, tr.runner, settings, seed=[5, 6])
    assert np.array_equal(got.cpu().numpy(), uncaptured)
    assert np.array_equal(tr.run_tensor(x0.cpu().numpy(), seed=[5, 6], M=8), uncaptured)  # numpy in, numpy out
    with pytest.raises(SamplingCancelled):
        tr.run_tensor(x0, seed=[5, 6], M=8, callback=lambda done, total: done < 3)
    assert sampler.step_counter == 3 and tr.captures


@pytest.mark.gpu
@requires_cuda
def test_cuda_n_runs_end_to_end(tiny_torch_engine, deterministic_cudnn):
    """The last CUDA device by its index (cuda:1 on a two-GPU machine): the sampler, the runner
    and the result live there, whichever device is current; an index past the devices is
    refused."""
    last = torch.cuda.device_count() - 1
    on_last = Translator(tiny_torch_engine[0], backend="torch", device=f"cuda:{last}")
    assert on_last.choice.index == last and on_last.device == torch.device("cuda", last)
    with torch.cuda.device(0):
        got = on_last.run_tensor(_cuda_x0(device=f"cuda:{last}"), seed=3, M=6)
    sampler = on_last.sampler_for(on_last.settings_with(M=6), (2, 3, 32, 32))
    assert sampler.config.device_index == last and got.device == torch.device("cuda", last)
    on_first = Translator(tiny_torch_engine[0], backend="torch", device="cuda:0")
    assert np.abs(got.cpu().numpy() - on_first.run_tensor(_cuda_x0().numpy(), seed=3, M=6)).max() <= 1e-4
    with pytest.raises(ConfigError, match=f"cuda:{last + 1}"):
        Translator(tiny_torch_engine[0], backend="torch", device=f"cuda:{last + 1}")
