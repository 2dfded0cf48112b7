"""The public API: ``Translator(engine_dir).run(img)``.

A Translator loads and checks an engine directory, picks a backend (``runtime.backends``: the
fastest usable on this machine, or the one named) in a precision (float32 by default; the
sampler's state is float32 always), and runs the native EGSDE loop with that backend's runner.
Samplers are built once per (settings, batch) and reused. A Translator may be called from
several threads: translations are serialised (each sampler owns its buffers), and each gives
the result of a sequential call; the GIL is released while the native loop runs, so other Python
threads (a server's event loop) keep running. On CUDA, runners whose work PyTorch can capture
run every update but the first of a run from one CUDA graph, with the progress callback called
between replays; only a failure of the capture itself falls back to uncaptured runs (logged
once). ``run_tensor`` takes and returns numpy arrays on the host, or torch tensors: a tensor on
the engine's device is read and written there (no host round trip). ``run`` and ``run_tensor``
take any number of images and run them in batches the backend takes (``Translator.batches``: the
one split, at most ``max_batch`` images each). Every image has its own
seed (one integer for all the images of a call, or a list with one per image), and its noise
depends only on that seed: not on the batch size or its position in the batch (the networks'
float kernels may still round differently at batch 1 than at 2: docs/api.md#seeds).

A distilled engine (``engine.format``: its student folds the experts in) runs through the same
loop and API on every backend: the sampler is built with ``student=True`` (one student
evaluation per update, no expert), and ``engine_settings`` refuses the run-time overrides its
student was not distilled for.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch

from ..cpu_threads import ThreadBudget
from ..engine import EngineDir, load_engine_dir
from ..errors import CaptureFailed, ConfigError, ImageError
from ..images import (ImageInput, check_fit, check_max_pixels, check_source, cut_to_boxes, fit_batch, max_pixels_for,
                      source_from_numpy, tensor_to_images)
from ..method.noise import Seeds, seed_array
from ..method.schedule import Schedule
from ..method.settings import EGSDESettings, check_batch_size, check_setting_name
from .backends import BackendChoice, get_backend, log, make_runner, select_backend
from .devices import Device
from .native_sampler import CudaStepGraph, build_sampler, host_noise, run_captured, run_sampler

_SAMPLER_CACHE = 4
# What a student folds in (any stage): another ls or li needs another student.
FOLDED_SETTINGS = ("ls", "li")
# What a stage-2 student was distilled for besides: its one run (the updates, their times and their noise).
STAGE2_RUN_SETTINGS = ("M", "steps", "spacing", "solver", "eta", "eta_min_t", "var_type", "perturb", "repeats")


def engine_settings(engine: EngineDir, **overrides) -> EGSDESettings:
    """The settings of a run of ``engine`` with run-time ``overrides``, checked against it: only
    ``RUNTIME_OVERRIDABLE`` settings; for a distilled engine, none its student has folded in
    (``FOLDED_SETTINGS``; nor ``lowpass="gradient"`` where li is not 0: the low-pass expert's
    gradient form) and, for a stage-2 student, none of its run (``STAGE2_RUN_SETTINGS``). An
    override equal to the engine's value changes nothing and is taken."""
    for name in overrides:  # a misspelling (did you mean ...?) kept apart from a setting fixed in the engine
        check_setting_name(name)
    base = engine.manifest.method
    settings = base.with_overrides(**overrides)
    distilled = engine.manifest.distilled
    if distilled is not None:
        changed = {name for name in overrides if getattr(settings, name) != getattr(base, name)}
        folded = sorted(changed & set(FOLDED_SETTINGS))
        if folded or (settings.li and settings.lowpass == "gradient"):
            teacher = distilled.teacher_settings
            raise ConfigError(
                f"{', '.join(folded) or 'lowpass=gradient'}: this student has the experts folded in (distilled from a "
                f"teacher with ls={teacher.get('ls')}, li={teacher.get('li')}, lowpass={teacher.get('lowpass')}; its "
                f"run: ls={base.ls}, li={base.li}, lowpass={base.lowpass}): distill another student for another "
                "ls/li")
        run = sorted(changed & set(STAGE2_RUN_SETTINGS))
        if distilled.stage == 2 and run:
            raise ConfigError(
                f"cannot override {run}: this stage-2 student was distilled for its exact run, {base.num_updates} "
                f"updates of {base.solver} (eta {base.eta}, M {base.M}, spacing {base.spacing}); a stage-1 student "
                "serves other update counts and solvers")
    settings.check_fits(engine.image_size, engine.manifest.schedule.num_timesteps)
    return settings


class Translator:
    """``Translator(engine_dir, backend="auto", device="auto", precision="fp32", max_pixels=None,
    threads=None)``; ``.run(img, seed=0, fit="crop", **overrides)``, ``.run_tensor(x0, seed=0, **overrides)``;
    its repr names the engine, its kind, the backend, device, precision, image size, max batch and threads.

    ``max_pixels``: the most pixels an image file given to ``run`` (or a folder job) may have,
    checked from its header before it is decoded; None: ``io.max_pixels_for(image_size)``
    (4096 x 4096 for a 256-px engine). ``self.max_pixels`` holds the limit in force.
    ``threads``: the CPU threads a translation uses (1..``cpu_threads.MAX_THREADS``; None or
    "auto": the CPUs this process may use, from its affinity mask and cgroup quota, fewer between
    updates while other processes keep them busy: ``cpu_threads.ThreadBudget``): ONNX Runtime's
    intra-op pool, the native core's OpenMP team and PyTorch's intra-op threads (set for each run
    in the thread that runs it, and the caller's own setting back after). ``self.threads`` holds the
    limit."""

    def __init__(self, engine_dir: str | os.PathLike, backend: str = "auto", device: Device | str = "auto",
                 precision: str = "fp32", max_pixels: int | None = None, threads: int | str | None = None):
        max_pixels = check_max_pixels(max_pixels)
        self.thread_budget = ThreadBudget(threads)
        self.threads: int = self.thread_budget.limit
        self.engine = load_engine_dir(engine_dir)
        self.max_pixels: int = max_pixels_for(self.engine.image_size) if max_pixels is None else max_pixels
        self.choice: BackendChoice = select_backend(self.engine, backend, device, precision)
        # On CUDA the samplers and the runner share one stream of their own (not the legacy default
        # stream, which cannot be captured into a CUDA graph): no synchronisation between them.
        self.target: Device = self.choice.target  # resolved (checked) once by select_backend, passed inward
        self.device = self.target.torch
        self.stream = torch.cuda.Stream(self.device) if self.choice.device == "cuda" else None
        self.runner = make_runner(self.choice, self.engine, self.stream.cuda_stream if self.stream else 0,
                                  threads=self.threads)
        # the largest batch this backend runs (plans are built for a batch range), at most MAX_BATCH_SIZE
        self.max_batch: int = get_backend(self.choice.name).batch_limit(self.choice, self.engine)
        # One CUDA graph per step, replayed for every update (runners whose work can be captured;
        # injected noise runs uncaptured). `step_graph`: the graph type of the captured path.
        self.captures = self.choice.device == "cuda" and get_backend(self.choice.name).capturable
        self.step_graph = CudaStepGraph
        self.settings: EGSDESettings = self.engine.manifest.method
        self.schedule: Schedule = self.engine.schedule()  # the networks' schedule
        self._samplers: OrderedDict = OrderedDict()
        self._lock = threading.RLock()

    @property
    def image_size(self) -> int:
        return self.engine.image_size

    @property
    def backend(self) -> str:
        return self.choice.name

    def _adapting_threads(self, callback):
        """``callback`` with the threads of the next update set first (``_use_threads``)."""
        def progress(done: int, total: int):
            self._use_threads()
            return None if callback is None else callback(done, total)
        return progress

    def settings_with(self, **overrides) -> EGSDESettings:
        return engine_settings(self.engine, **overrides)

    @contextmanager
    def _threads_in_use(self):
        """A run's scope: PyTorch's threads in the calling thread set for it (``_use_threads``), and
        the caller's own back after (PyTorch's setting is the process's: a run leaves it as it was)."""
        before = torch.get_num_threads()
        self._use_threads()
        try:
            yield
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)

    def _use_threads(self) -> None:
        """PyTorch's intra-op threads in the calling thread set to the budget's (its OpenMP team size
        is per thread: a server's worker threads each get it); called before a run and, on the
        CPU, between its updates."""
        threads = self.thread_budget.now()
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)

    def sampler_for(self, settings: EGSDESettings, shape):
        """The native sampler for these settings and batch shape (built once, kept for reuse)."""
        key = (settings, tuple(shape))
        if key not in self._samplers:
            self._samplers[key] = build_sampler(settings, shape, self.target, self.schedule, stream=self.stream,
                                                threads=self.threads, student=self.engine.manifest.kind == "distilled")
            while len(self._samplers) > _SAMPLER_CACHE:
                self._samplers.popitem(last=False)
        self._samplers.move_to_end(key)
        return self._samplers[key]

    def run_tensor(self, x0: torch.Tensor | np.ndarray, seed: Seeds = 0, noise=None, perturb_noise=None,
                   callback: Callable[[int, int], "bool | None"] | None = None, batch_size: int | None = None,
                   **overrides):
        """Translate x0 [B, 3, S, S] in [-1, 1] with ``seed`` (an integer for every image, or B
        integers); returns the unclamped float32 result: a host numpy array for a numpy x0, a torch
        tensor on x0's device for a tensor (on the engine's device read and written in place,
        without a host round trip; elsewhere, e.g. a CPU tensor for a CUDA engine, through host
        memory). Any B: the images run in batches (``batches``: ``batch_size`` or ``max_batch`` images
        each), and an image's result is the same in any batch. ``noise`` [R*(K+1), B, 3, S, S] and
        ``perturb_noise`` [R*K, B, 3, S, S]: injected draws (parity tests) in place of the seeds'.
        ``callback(done, total)`` is called after every update of each batch (between CUDA-graph
        replays on the captured path) and may return False to cancel (``SamplingCancelled``)."""
        as_numpy = isinstance(x0, np.ndarray)
        if as_numpy:
            x0 = source_from_numpy(x0)
        settings = self.settings_with(**overrides)
        check_source(x0)
        self._check_size(x0)
        count = int(x0.shape[0])
        batches = self.batches(count, batch_size)
        seeds = seed_array(seed, count)
        noise, perturb_noise = host_noise(settings, tuple(x0.shape), noise, perturb_noise)
        out_device = x0.device if x0.device in (self.device, torch.device("cpu")) else torch.device("cpu")
        out = (np.empty(x0.shape, np.float32) if as_numpy
               else torch.empty(x0.shape, dtype=torch.float32, device=out_device))
        for batch in batches:
            self._translate(x0[batch], seeds[batch], settings, out[batch], callback,
                            noise=None if noise is None else noise[:, batch],
                            perturb_noise=None if perturb_noise is None else perturb_noise[:, batch])
        return out if as_numpy or out_device == x0.device else out.to(x0.device)

    def batches(self, count: int, batch_size: int | None = None) -> list[slice]:
        """The batches a call of ``count`` images runs in, in order: ``batch_size`` images each
        (1..``MAX_BATCH_SIZE``, checked; at most ``max_batch``, the backend's range) or, by default,
        ``max_batch``; the last may be smaller. The one split of ``run`` and ``run_tensor``: an
        image's noise depends only on its seed, so the split changes no result."""
        if batch_size is not None:
            check_batch_size(batch_size, "batch_size", " (or None: the backend's max_batch)")
        size = min(batch_size or self.max_batch, self.max_batch)
        return [slice(start, min(start + size, count)) for start in range(0, count, size)]

    def _check_size(self, x0: torch.Tensor) -> None:
        """Images of the engine's size."""
        if tuple(x0.shape[-2:]) != (self.image_size, self.image_size):
            raise ConfigError(f"x0 must be [B, 3, {self.image_size}, {self.image_size}] for this engine, "
                              f"got {list(x0.shape)}")

    def _translate(self, x0: torch.Tensor, seeds: np.ndarray, settings: EGSDESettings, out, callback=None,
                   noise=None, perturb_noise=None) -> None:
        """One batch of ``run_tensor`` (one of ``batches``: checked images, their checked seeds, uint64
        one per image, resolved settings and host noise) translated into ``out`` (a float32 array or
        tensor of x0's shape, on the host or the engine's device)."""
        # one translation at a time (the samplers' buffers are shared), with its threads
        with self._lock, self._threads_in_use():
            sampler = self.sampler_for(settings, tuple(x0.shape))
            if self.captures and noise is None:
                try:
                    run_captured(sampler, x0, self.runner, settings, seed=seeds, callback=callback, out=out,
                                 step_graph=self.step_graph)
                    return
                except CaptureFailed as err:  # the runner's work cannot be captured here
                    log.warning("egsde-rt: %s; running uncaptured from now on", err)
                    self.captures = False
            if self.thread_budget.adaptive and self.choice.device == "cpu":
                callback = self._adapting_threads(callback)
            run_sampler(sampler, x0, self.runner, settings, seed=seeds, noise=noise, perturb_noise=perturb_noise,
                        callback=callback, out=out)

    def run(self, img: ImageInput | list, seed: Seeds = 0, batch_size: int | None = None,
            callback: Callable[[int, int], "bool | None"] | None = None, fit: str = "crop", **overrides):
        """Translate an image (path, PIL image, HxWx3 array, image file bytes) or a list of them;
        returns PIL image(s).

        ``seed``: one integer (every image uses it) or, for a list, one integer per image. A list
        runs in batches (``batches``: ``batch_size`` images each, by default ``max_batch``), each
        decoded just before it runs (memory does not grow with the list); an image file may have
        at most ``self.max_pixels`` pixels. An image's noise depends only on its seed:
        ``run([a, b], seed=[1, 2])[1]`` is ``run(b, seed=2)`` (up to the network kernels' own
        batch-size rounding: docs/api.md#seeds).

        ``fit`` (``images.FITS``): how an image becomes the engine's S x S square. "crop" (the
        default): its centre square, resized; the result is S x S (a ``CenterCropWarning`` for a
        non-square image). "pad": the whole image, its longer side resized to S, padded to the
        square with its edge pixels (``images.padded_square``); the padding is cut from the result, which
        keeps the image's aspect ratio (300 x 200 at S = 32: 32 x 21)."""
        single = not isinstance(img, (list, tuple))
        sources = [img] if single else list(img)
        if not sources:
            raise ImageError("no images given: pass an image, or a list of at least one")
        check_fit(fit)
        batches = self.batches(len(sources), batch_size)
        if single and isinstance(seed, (list, tuple, np.ndarray)):
            raise ConfigError("seed must be one integer for a single image "
                              "(a list of seeds goes with a list of images)")
        seeds = seed_array(seed, len(sources))  # bad settings and seeds fail before any image is decoded
        settings = self.settings_with(**overrides)
        results = []
        for batch in batches:
            x0, boxes = fit_batch(sources[batch], self.image_size, self.max_pixels, fit)
            y = torch.empty(x0.shape, dtype=torch.float32)
            self._translate(x0, seeds[batch], settings, y, callback)
            results += cut_to_boxes(tensor_to_images(y), boxes)  # fit="pad": the image alone
        return results[0] if single else results

    def __repr__(self) -> str:
        kind = "distilled" if self.engine.manifest.kind == "distilled" else "official"
        return (f"Translator({str(self.engine.path)!r}, kind={kind!r}, backend={self.backend!r}, "
                f"device={str(self.target)!r}, precision={self.choice.precision!r}, image_size={self.image_size}, "
                f"max_batch={self.max_batch}, threads={self.threads})")
