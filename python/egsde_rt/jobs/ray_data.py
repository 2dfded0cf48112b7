"""Folder jobs on Ray Data: ``egsde-rt translate ... --ray`` (``pip install egsde-rt[ray]``).

The job's ``FileTask`` rows (``folder_job.plan_job``: files, outputs, per-file seeds) become a
Ray Dataset; ``map_batches`` hands batches of rows to a fixed pool of actors that each hold one
``Translator`` (one GPU each where the cluster has GPUs; otherwise ``cpus_per_actor`` CPU slots
each). An actor decodes its batch, translates it with each file's seed and writes the PNGs
atomically (``folder_job.translate_batch``, the code of the plain run), returning one status row
per file; the driver streams those rows into a ``JobReport`` and a progress bar. So the outputs
are the plain run's, file for file (each depends only on the engine, the file, its seed and the
settings), a finished file is never translated again by a resumed job (``plan_job`` skips it),
and a file that cannot be read is reported while the rest go on.

A node lost mid-job loses no image and writes none twice: its actors are restarted on the nodes
left (up to ``ACTOR_RESTARTS`` times each, ``max_restarts``) and the batches they were running
are run again there (``max_task_retries``: as long as the actor comes back; results stored on the
lost node are rebuilt the same way, by Ray's lineage reconstruction). A batch run again skips the
outputs its earlier run wrote (``folder_job.written_since_planned``, reported written) and never
writes an output twice (``folder_job.save_atomically``); the partial files of writers killed with
their node are removed when the job ends. A job that still cannot finish fails with an
``EgsdeError`` saying to rerun it with ``--resume``: an actor died more than ``ACTOR_RESTARTS``
times (a file that kills its actor), or the lost actors cannot be placed on the nodes left (after
``DataContext.execution_no_progress_timeout_s`` without progress, Ray Data's 30 minutes).

Inputs and outputs are paths: on a cluster every node must see them at the same place (a shared
file system). Without an address a local Ray instance is started (and stopped at the end).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path, PurePosixPath
from typing import Sequence

from ..cpu_threads import resolve_threads, slot_threads
from ..errors import ConfigError, EgsdeError
from ..images import check_fit
from .folders import (FileTask, JobReport, decoded_batches, remove_partial_files, translate_batch,
                         written_since_planned)
from ..method.settings import check_batch_size, check_positive_int
from ..runtime.devices import Device

STATUS_WRITTEN, STATUS_SKIPPED, STATUS_FAILED = "written", "skipped", "failed"
ACTOR_RESTARTS = 3  # per actor: a lost node, or a crash (a bound: a file that kills its actor fails the job)


def require_ray():
    """``ray`` with Ray Data, or an ``EgsdeError`` naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise EgsdeError("--ray needs Ray (Ray Data and Ray Serve): pip install 'egsde-rt[ray]'") from None
    return ray


def _task_rows(tasks: Sequence[FileTask]) -> list[dict]:
    # Seeds are 64-bit unsigned: carried as text (Arrow's int64 cannot hold them all).
    return [{"source": str(t.source), "relative": str(t.relative), "output": str(t.output), "seed": str(t.seed),
             "replaces": t.replaces} for t in tasks]


def _tasks_of(batch: dict) -> list[FileTask]:
    return [FileTask(Path(s), PurePosixPath(r), Path(o), int(q), str(x)) for s, r, o, q, x in
            zip(batch["source"], batch["relative"], batch["output"], batch["seed"], batch["replaces"])]


class TranslateFiles:
    """The Ray Data actor: one ``Translator``, called with batches of task rows."""

    def __init__(self, engine_dir: str, backend: str, device: str, precision: str, overrides: dict, threads: int,
                 fit: str = "crop"):
        from ..runtime.translator import Translator

        self.translator = Translator(engine_dir, backend=backend, device=device, precision=precision, threads=threads)
        self.overrides = overrides
        self.fit = fit
        self.translator.settings_with(**overrides)

    def __call__(self, batch: dict) -> dict:
        tasks = _tasks_of(batch)
        # a batch run again (its actor died): what its earlier run wrote is done
        report = JobReport(written=[t.output for t in tasks if written_since_planned(t)])
        todo = [t for t in tasks if t.output not in report.written]
        for files, x0, boxes in decoded_batches(todo, self.translator.image_size, max(1, len(todo)), report,
                                                self.translator.max_pixels, self.fit):
            try:
                report.merge(translate_batch(self.translator, files, x0, self.overrides, boxes=boxes))
            except EgsdeError as err:  # e.g. a native failure: these files fail, the job goes on
                report.failed += [(t.source, str(err)) for t in files]
        outcome = {str(p): STATUS_SKIPPED for p in report.skipped} | {str(p): STATUS_WRITTEN for p in report.written}
        failed = {str(source): why for source, why in report.failed}
        status, error = [], []
        for task in tasks:
            status.append(outcome.get(str(task.output), STATUS_FAILED))
            error.append("" if str(task.output) in outcome else failed.get(str(task.source), "not written"))
        return {"source": [str(t.source) for t in tasks], "output": [str(t.output) for t in tasks],
                "status": status, "error": error}


# What Ray 2.58's DataContext says of its own deprecated fields each time one is made (its __init__
# sets every field, these among them): none of ours, and nothing a user can act on.
_DATA_CONTEXT_NOTICES = r"`(use_push_based_shuffle|use_polars|use_arrow_tensor_v2)` is deprecated"


def data_context(ray):
    """Ray Data's current ``DataContext`` (made on first use, once a process), without the
    deprecation notices its constructor gives of fields that nothing sets (``_DATA_CONTEXT_NOTICES``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", _DATA_CONTEXT_NOTICES, DeprecationWarning)
        return ray.data.DataContext.get_current()


def init_ray(ray, address: str | None, ray_init_args: dict | None = None) -> None:
    """Join the cluster at ``address``, or start a local instance of this machine's CPUs (never
    an unrelated cluster that ``RAY_ADDRESS`` or a running ``ray start`` would point at)."""
    init = {"address": address or "local", "include_dashboard": False, "log_to_driver": False,
            **(ray_init_args or {})}
    if address is None:
        init.setdefault("num_cpus", max(1, os.cpu_count() or 1))
    ray.init(**init)


def actor_resources(ray, actors: int | None, cpus_per_actor: float, device: Device) -> tuple[int, dict]:
    """(actors, resources per actor): one GPU each where the cluster has GPUs (device auto or
    cuda), else ``cpus_per_actor`` CPU slots each; by default one actor per GPU, or one."""
    gpus = int(ray.cluster_resources().get("GPU", 0)) if device.kind in ("auto", "cuda") else 0
    if device.kind == "cuda" and gpus == 0:
        raise ConfigError("--device cuda, but the Ray cluster has no GPU")
    if actors is not None:
        check_positive_int(actors, "the number of Ray actors")
    if not cpus_per_actor > 0:
        raise ConfigError(f"CPU slots per actor must be positive, got {cpus_per_actor!r}")
    if gpus:
        return (actors or gpus), {"num_gpus": 1, "num_cpus": cpus_per_actor}
    return (actors or 1), {"num_cpus": cpus_per_actor}


def ray_translate(engine_dir: str | os.PathLike, tasks: Sequence[FileTask], *, address: str | None = None,
                  batch_size: int = 1, backend: str = "auto", device: Device | str = "auto", precision: str = "fp32",
                  overrides: dict | None = None, actors: int | None = None, cpus_per_actor: float = 1.0,
                  progress: bool = True, ray_init_args: dict | None = None, threads: int | None = None,
                  fit: str = "crop") -> JobReport:
    """Translate ``tasks`` on Ray Data actors; what ``folder_job.run_job`` does in one process.
    ``threads``: each actor's CPU threads (default: its CPU slots, ``cpu_threads.slot_threads``)."""
    ray = require_ray()
    check_batch_size(batch_size, "batch size")
    check_fit(fit)
    threads = slot_threads(cpus_per_actor) if threads is None else resolve_threads(threads)
    overrides = overrides or {}
    from ..engine import load_engine_dir
    from ..runtime.translator import engine_settings

    engine_settings(load_engine_dir(engine_dir), **overrides)  # checked here, before any actor starts
    report = JobReport()
    if not tasks:
        return report
    started = not ray.is_initialized()
    if started:
        init_ray(ray, address, ray_init_args)
    try:
        count, resources = actor_resources(ray, actors, cpus_per_actor, Device.parse(device))
        context = data_context(ray)
        context.enable_progress_bars = False
        dataset = ray.data.from_items(_task_rows(tasks), override_num_blocks=max(1, min(len(tasks), 4 * count)))
        results = dataset.map_batches(
            TranslateFiles, batch_size=batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=count),
            fn_constructor_kwargs=dict(engine_dir=str(engine_dir), backend=backend, device=str(device),
                                       precision=precision, overrides=overrides, threads=threads, fit=fit),
            # an actor lost with its node comes back on another node and runs its batches again
            max_restarts=ACTOR_RESTARTS, max_task_retries=-1,
            **resources)
        from tqdm import tqdm

        with tqdm(total=len(tasks), desc=f"translate on {count} Ray actor(s)", unit="image",
                  disable=not progress) as bar:
            try:
                for row in results.iter_rows():
                    if row["status"] == STATUS_WRITTEN:
                        report.written.append(Path(row["output"]))
                    elif row["status"] == STATUS_SKIPPED:
                        report.skipped.append(Path(row["output"]))
                    else:
                        report.failed.append((Path(row["source"]), row["error"]))
                    bar.update(1)
            # an actor could not start or died more than ACTOR_RESTARTS times, or no progress for
            # DataContext.execution_no_progress_timeout_s (lost actors that cannot be placed again)
            except (ray.exceptions.RayError, ray.data.exceptions.ExecutionTimeoutError) as err:
                raise EgsdeError(f"the Ray job failed after {len(report.written)} file(s) were written (rerun with "
                                 f"--resume to finish it): {str(err).splitlines()[0]}") from None
    finally:
        if started:
            ray.shutdown()
        remove_partial_files(tasks)  # those of actors killed with their node
    return report
