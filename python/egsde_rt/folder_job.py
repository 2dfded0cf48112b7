"""Folder jobs: many image files through one ``Translator``, as ``egsde-rt translate`` runs them
(in one process, or spread over Ray actors by ``egsde_rt.distributed``).

A job is a list of ``FileTask``: each input file with its path relative to the folder it was
found in (a file named directly: its name), its output (``OUTPUT_DIR/<relative>.png``, the
folder structure kept) and its own seed, ``noise.derive_seed(seed, relative)``. So a file's
noise does not depend on the batch size, the order, a rerun or which process translated it, and
its output bytes do not either, up to the networks' own float rounding at another batch size
(see the README's Translator section). Files under the output folder are never inputs.

Files are decoded batch by batch (memory does not grow with the folder). A file that cannot be
read is reported and the rest go on; outputs are written atomically (a hidden partial file,
renamed), so a crash never leaves half an image under an output's name. Existing outputs are
an error unless ``existing="skip"`` (resume: they are left as they are) or ``"overwrite"``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator, Sequence

import torch

from .errors import ConfigError, EgsdeError, ImageError
from .io import IMAGE_EXTENSIONS, image_to_tensor, list_images, tensor_to_images
from .noise import check_seed, derive_seed
from .settings import check_batch_size

EXISTING_POLICIES = ("error", "skip", "overwrite")


@dataclass(frozen=True)
class FileTask:
    """One file of a job: where it is, its path relative to its input folder, its output and seed."""

    source: Path
    relative: PurePosixPath
    output: Path
    seed: int


@dataclass
class JobReport:
    """What a job did: outputs written, outputs skipped (resume), and files that failed (with why)."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def merge(self, other: "JobReport") -> None:
        self.written += other.written
        self.skipped += other.skipped
        self.failed += other.failed

    @property
    def exit_code(self) -> int:
        """0 when every file was written or skipped, 1 when any failed."""
        return 1 if self.failed else 0


def _path(value, what: str) -> Path:
    if not isinstance(value, (str, os.PathLike)) or value == "":
        raise ConfigError(f"{what} must be a path (a non-empty str or os.PathLike), got {value!r}")
    return Path(value)


def input_files(items: str | os.PathLike | Iterable[str | os.PathLike],
                exclude: Path | None = None) -> list[tuple[Path, PurePosixPath]]:
    """(file, path relative to its input folder) for image files and folders named by the user
    (one path, or several); files found in folders under ``exclude`` (the output folder) are left out."""
    if isinstance(items, (str, os.PathLike)):
        items = [items]
    elif not isinstance(items, Iterable):
        raise ConfigError(f"inputs must be a path or a list of paths, got {items!r}")
    found: list[tuple[Path, PurePosixPath]] = []
    excluded = exclude.resolve() if exclude is not None else None
    for item in (_path(i, "each input") for i in items):
        if item.is_dir():
            found += [(p, PurePosixPath(p.relative_to(item).as_posix())) for p in list_images(item)
                      if excluded is None or not p.resolve().is_relative_to(excluded)]
        elif item.exists():
            found.append((item, PurePosixPath(item.name)))
        else:
            raise ImageError(f"input not found: {item}")
    if not found:
        raise ImageError(f"no input images found (image files end in {', '.join(IMAGE_EXTENSIONS)})")
    return found


def plan_job(items: str | os.PathLike | Iterable[str | os.PathLike], output_dir: str | os.PathLike, seed: int = 0, *,
             existing: str = "error") -> tuple[list[FileTask], list[FileTask]]:
    """The tasks to run and the tasks skipped because their output exists (``existing="skip"``).

    Raises ``EgsdeError`` before any work if two inputs would write the same output, or (with
    ``existing="error"``) if outputs exist."""
    if existing not in EXISTING_POLICIES:
        raise ConfigError(f"existing must be one of {EXISTING_POLICIES}, got {existing!r}")
    seed = check_seed(seed)
    output_dir = _path(output_dir, "output_dir")
    tasks = [FileTask(source, relative, output_dir / relative.with_suffix(".png"), derive_seed(seed, relative))
             for source, relative in input_files(items, exclude=output_dir)]
    by_output: dict[Path, FileTask] = {}
    for task in tasks:
        if task.output in by_output:
            raise ConfigError(f"{by_output[task.output].source} and {task.source} would both write {task.output}; "
                              "rename one or translate them into separate output folders")
        by_output[task.output] = task
    done = [t for t in tasks if t.output.exists()]
    if done and existing == "error":
        raise ConfigError(f"{len(done)} output(s) exist, e.g. {done[0].output}: pass --resume to skip them "
                          "or --overwrite to replace them")
    if existing == "skip":
        return [t for t in tasks if not t.output.exists()], done
    return tasks, []


def save_atomically(image, dst: Path) -> None:
    """Write a PNG to a hidden partial file beside ``dst``, then rename it: a reader (or a resumed
    job) never sees half an image, and concurrent writers never share a partial file."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}-{threading.get_ident()}.partial")
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def decoded_batches(tasks: Sequence[FileTask], image_size: int, batch_size: int, report: JobReport,
                    max_pixels: int | None = None) -> Iterator[tuple[list[FileTask], torch.Tensor]]:
    """Batches of up to ``batch_size`` readable files, decoded just before they are needed; a
    file that cannot be read (or has more than ``max_pixels`` pixels; None: the engine's default,
    ``io.max_pixels_for``) goes to ``report.failed`` and the next one takes its place."""
    check_batch_size(batch_size, "batch size")
    batch: list[FileTask] = []
    tensors: list[torch.Tensor] = []
    for task in tasks:
        try:
            tensors.append(image_to_tensor(task.source, image_size, max_pixels))
        except EgsdeError as err:
            report.failed.append((task.source, str(err)))
            continue
        batch.append(task)
        if len(batch) == batch_size:
            yield batch, torch.stack(tensors)
            batch, tensors = [], []
    if batch:
        yield batch, torch.stack(tensors)


def translate_batch(translator, batch: Sequence[FileTask], x0: torch.Tensor, overrides: dict,
                    callback: Callable[[int, int], None] | None = None) -> JobReport:
    """Translate one decoded batch with each file's seed and write its outputs atomically."""
    report = JobReport()
    try:
        y = translator.run_tensor(x0, seed=[t.seed for t in batch], callback=callback, **overrides)
        images = tensor_to_images(torch.as_tensor(y))
    except ImageError as err:  # a result that cannot be an image (diverged): these files fail
        report.failed += [(t.source, str(err)) for t in batch]
        return report
    for image, task in zip(images, batch):
        try:
            save_atomically(image, task.output)
        except OSError as err:
            report.failed.append((task.source, f"cannot write {task.output}: {err}"))
            continue
        report.written.append(task.output)
    return report


def run_job(translator, tasks: Sequence[FileTask], *, batch_size: int = 1, overrides: dict | None = None,
            on_update: Callable[[float], None] | None = None) -> JobReport:
    """Translate ``tasks`` in batches in this process (files of at most ``translator.max_pixels``
    pixels). ``on_update(images)`` is called after every sampling update with the fraction of an
    image (per file) it completed."""
    overrides = overrides or {}
    translator.settings_with(**overrides)  # bad settings fail before any file is decoded
    report = JobReport()
    for batch, x0 in decoded_batches(tasks, translator.image_size, batch_size, report, translator.max_pixels):
        callback = None
        if on_update is not None:
            def callback(done, total, n=len(batch)):
                on_update(n / total)
        report.merge(translate_batch(translator, batch, x0, overrides, callback))
    return report
