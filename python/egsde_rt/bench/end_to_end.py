"""End-to-end benchmark: the eager reference and every engine backend on the same images.

Each run times whole translations of one batch size on one backend, as users run them: an
engine backend through ``Translator.run_tensor`` with a progress callback, as the CLI passes one
(on CUDA the captured path: every update but a run's first replayed from one CUDA graph, the
callback called between replays), the eager baseline through ``reference.translate``;
the wall time per image, first-run latency (loading, building, compiling and the first
translation) apart from the steady state (the median of ``repeats`` runs after ``warmup``
runs), and peak memory: host RSS, PyTorch's allocator peak, and the driver's view (free device
memory before and after the run, which counts the native sampler's own buffers and the CUDA
graphs too). The per-update phases are measured inside the real loop: for an engine backend in
separate, labelled, uncaptured runs (``Sampler.run_profiled``: the native sampler's
``PhaseClock``, host clocks or CUDA events on the sampler's stream; a captured graph has no
phases to read), for the eager baseline in its timed runs (the same phases around the same
work in ``reference.translate``). ``rest`` is the part of an update outside the four phases.

When ``steps`` is less than the schedule's updates, each run translates with ``steps`` updates
(the schedule respaced: the same networks per update) and the time per image is extrapolated
linearly to the full schedule, and each run says so. The eager baseline runs with TF32 set from
the precision as the engine's runners do (``network_fns.tf32_mode``).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..engine import EngineDir, load_engine_dir
from ..errors import ConfigError
from ..reference import translate as reference_translate
from ..models.network_fns import in_precision, network_dtype, tf32_mode
from ..runtime.backends import auto_order, backend_names, probe
from ..engine.torch_weights import load_engine_networks
from ..runtime.translator import Translator
from .machine import PeakMemory

EAGER = "eager"
PHASES = ("score", "dse_grad", "lowpass_grad", "update_noise")


@dataclass
class BenchConfig:
    engine_dir: Path
    batch_sizes: list = field(default_factory=lambda: [1])
    steps: int | None = None  # time the first `steps` updates only (None: all)
    repeats: int = 3
    warmup: int = 1
    backends: list | None = None  # None: the eager reference, then every usable backend
    precision: str = "fp32"
    device: str = "cpu"
    seed: int = 0
    phase_runs: int | None = None  # uncaptured profiled runs per engine backend for the phases (None: repeats)
    student: Path | None = None  # a distilled engine timed after the engine, on its default backend


class EagerTimer:
    """The ``timer`` of ``reference.translate``: phases per update, on the host or with CUDA events."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"
        self.marks: list = []  # (kind, name, mark): kind "step" or "begin"/"end"

    def _mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def step(self) -> None:
        self.marks.append(("step", None, self._mark()))

    def phase(self, name: str):
        timer = self

        class _Phase:
            def __enter__(self):
                if timer.cuda:
                    torch.cuda.nvtx.range_push(name)
                timer.marks.append(("begin", name, timer._mark()))

            def __exit__(self, *exc):
                timer.marks.append(("end", name, timer._mark()))
                if timer.cuda:
                    torch.cuda.nvtx.range_pop()

        return _Phase()

    def times(self) -> dict:
        """{"step": [ms per update], phase: [ms per update]} of the completed updates."""
        self.step()  # the end of the last update
        if self.cuda:
            torch.cuda.synchronize()

        def ms(a, b):
            return a.elapsed_time(b) if self.cuda else (b - a) * 1e3

        steps, begin, start = [], {}, None
        for kind, name, mark in self.marks:
            if kind == "step":
                if start is not None:
                    steps[-1]["step"] = ms(start, mark)
                start = mark
                steps.append({"step": 0.0, **{p: 0.0 for p in PHASES}})
            elif kind == "begin":
                begin[name] = mark
            else:
                steps[-1][name] += ms(begin.pop(name), mark)
        steps.pop()  # the mark that ended the last update starts no update
        return {name: [s[name] for s in steps] for name in ("step", *PHASES)}


def _summary(values: list) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _per_step(times_of_runs: list) -> dict:
    """Per-update means of each run, summarised over runs (median, min, max), with ``rest``."""
    per_run = []
    for t in times_of_runs:
        n = len(t["step"])
        means = {name: sum(t[name]) / n for name in ("step", *PHASES)}
        means["rest"] = means["step"] - sum(means[p] for p in PHASES)
        per_run.append(means)
    return {name: _summary([m[name] for m in per_run]) for name in ("step", *PHASES, "rest")}


def _source_batch(batch: int, size: int, seed: int) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def usable_backends(engine: EngineDir, device: str, precision: str) -> list:
    """The engine backends that run on ``device`` in ``precision`` here, in the order of preference."""
    found = probe(engine, device, precision)
    return [name for name in auto_order(device) if found[name][0]]


PHASES_FROM = {EAGER: "the timed runs (phases timed around the same work in reference.translate)",
               "engine": "separate uncaptured runs (Sampler.run_profiled), not the timed runs"}


class _Runner:
    """One backend prepared for timed translations of one batch shape, with ``settings`` (the
    engine's, or its timed prefix: fewer updates over the same schedule)."""

    def __init__(self, backend: str, engine: EngineDir, device: str, precision: str, settings):
        self.backend, self.device, self.precision, self.settings = backend, device, precision, settings
        if backend == EAGER:
            self.schedule = engine.schedule()
            networks = {name: in_precision(m, precision) for name, m in load_engine_networks(engine, device).items()}
            self.score, self.dse, self.student = networks.get("score"), networks.get("dse"), networks.get("student")
        else:
            self.translator = Translator(engine.path, backend=backend, device=device, precision=precision)
        self.overrides = {"steps": settings.steps} if settings.steps is not None else {}
        self.progress_calls = 0  # the timed path's progress callback, counted (it runs as the CLI's does)

    def _progress(self, done: int, total: int) -> None:
        self.progress_calls += 1

    @property
    def captured(self) -> bool:
        """Whether the timed runs take the captured path (CUDA graphs)."""
        return self.backend != EAGER and self.translator.captures

    def translate(self, x0: torch.Tensor, seed: int) -> dict | None:
        """One timed translation; the eager baseline's phase times of each update (None for an
        engine backend: its phases come from ``profile``)."""
        if self.backend == EAGER:
            timer = EagerTimer(self.device)
            with tf32_mode(self.precision):
                reference_translate(x0.to(self.device), self.score, self.dse, self.settings, seed=seed,
                                    schedule=self.schedule, timer=timer, student=self.student)
            return timer.times()
        self.translator.run_tensor(x0, seed=seed, callback=self._progress, **self.overrides)
        if self.device == "cuda":
            torch.cuda.synchronize()
        return None

    def profile(self, x0: torch.Tensor, seed: int) -> dict:
        """The phase times of each update, from an uncaptured run of the same sampler."""
        sampler = self.translator.sampler_for(self.settings, tuple(x0.shape))
        _, times = sampler.run_profiled(x0.numpy(), self.translator.runner, seed=seed)
        return times


def timed_settings(settings, steps: int | None):
    """(settings of the timed runs, timed updates, total updates): ``steps`` updates per repeat
    over the same schedule (respaced), or the whole schedule."""
    total = settings.num_updates * settings.repeats
    if steps is None or steps * settings.repeats >= total:
        return settings, total, total
    if steps < 1:
        raise ConfigError("need steps >= 1")
    timed = settings.with_overrides(steps=steps)
    return timed, timed.num_updates * timed.repeats, total


def run_benchmark(config: BenchConfig, log=print, on_run=None) -> list:
    """Every (batch size, backend) run of ``config``; each a dict of the JSON record's ``runs``.
    ``on_run(runs)`` is called with the runs so far after each one."""
    network_dtype(config.precision)  # a known precision
    engine = load_engine_dir(config.engine_dir)
    backends = config.backends or [EAGER, *usable_backends(engine, config.device, config.precision)]
    unknown = [b for b in backends if b != EAGER and b not in backend_names()]
    if unknown:
        raise ConfigError(f"unknown backends {unknown}; choose from {[EAGER, *backend_names()]}")
    phase_runs = config.repeats if config.phase_runs is None else config.phase_runs
    if config.repeats < 1 or config.warmup < 0 or phase_runs < 1:
        raise ConfigError("need repeats >= 1, warmup >= 0 and phase_runs >= 1")
    runs = _engine_runs(engine, backends, config, phase_runs, log, on_run, [], steps=config.steps)
    if config.student is not None:
        student = load_engine_dir(config.student)
        default = usable_backends(student, config.device, config.precision)[:1]
        # all its updates (a stage-2 student runs exactly the updates it was distilled for)
        _engine_runs(student, default, config, phase_runs, log, on_run, runs, label="student ", steps=None,
                     tag={"engine": "student"})
    return runs


def student_speedups(runs: list) -> dict:
    """{batch size: the student's images per second / the official sampler's}, each on its
    engine's default backend (the first engine backend timed at that batch size)."""
    found = {}
    for batch in dict.fromkeys(r["batch_size"] for r in runs):
        official = next((r for r in runs if r["batch_size"] == batch and r.get("engine") != "student"
                         and r["backend"] != EAGER), None)
        student = next((r for r in runs if r["batch_size"] == batch and r.get("engine") == "student"), None)
        if official and student:
            found[str(batch)] = {"official_backend": official["backend"], "student_backend": student["backend"],
                                 "speedup": student["images_per_second"] / official["images_per_second"]}
    return found


def _engine_runs(engine: EngineDir, backends: list, config: BenchConfig, phase_runs: int, log, on_run, runs: list,
                 *, steps: int | None, label: str = "", tag: dict | None = None) -> list:
    """The runs of one engine, appended to ``runs`` (``on_run`` sees them all); ``steps``: the
    updates timed (``timed_settings``); ``tag``: entries added to each run's record."""
    settings, steps, total = timed_settings(engine.manifest.method, steps)
    for batch in config.batch_sizes:
        x0 = _source_batch(batch, engine.image_size, config.seed)
        for backend in backends:
            log(f"bench: {backend} batch {batch}: {steps} of {total} updates, {config.warmup} warm-up + "
                f"{config.repeats} timed run(s) ...")
            with PeakMemory(config.device) as memory:
                start = time.perf_counter()
                runner = _Runner(backend, engine, config.device, config.precision, settings)
                runner.translate(x0, config.seed)
                first = time.perf_counter() - start
                for _ in range(config.warmup):
                    runner.translate(x0, config.seed)
                walls, times = [], []
                for _ in range(config.repeats):
                    start = time.perf_counter()
                    times.append(runner.translate(x0, config.seed))
                    walls.append(time.perf_counter() - start)
                captured = runner.captured  # after the timed runs: a failed capture falls back
                if backend != EAGER:
                    times = [runner.profile(x0, config.seed) for _ in range(phase_runs)]
            wall = statistics.median(walls)
            seconds_per_image = wall * (total / steps) / batch
            runs.append({
                **(tag or {}), "name": f"{label}{backend} b{batch}", "backend": backend, "precision": config.precision,
                "device": config.device, "batch_size": batch,
                "seconds_per_image": seconds_per_image, "images_per_second": 1.0 / seconds_per_image,
                "first_run_seconds": first, "peak_host_mb": memory.host_mb, "peak_device_mb": memory.device_mb,
                **memory.driver_view(),
                "timed_path": ("eager (reference.translate)" if backend == EAGER
                               else "captured (CUDA graphs)" if captured else "uncaptured"), "captured": captured,
                "timed_with_progress": backend != EAGER and runner.progress_calls > 0,
                "per_step_ms": _per_step(times), "phases_from": PHASES_FROM[EAGER if backend == EAGER else "engine"],
                "timed_updates": steps, "total_updates": total, "extrapolated": steps < total,
                "run_seconds": _summary(walls),
            })
            log(f"bench:   {seconds_per_image:.3f} s/image" + (" (extrapolated)" if steps < total else "")
                + (" captured" if captured else ""))
            if on_run is not None:
                on_run(runs)
    return runs
