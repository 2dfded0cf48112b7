"""Folder jobs: many image files through one ``Translator``, as ``egsde-rt translate`` runs them
(in one process, or spread over Ray actors by ``egsde_rt.jobs.ray_data``).

A job is a list of ``FileTask``: each input file with its path relative to the folder it was
found in (a file named directly: its name), its output (``OUTPUT_DIR/<relative>.png``, the
folder structure kept) and its own seed, ``noise.derive_seed(seed, relative)``. So a file's
noise does not depend on the batch size, the order, a rerun or which process translated it, and
its output bytes do not either, up to the networks' own float rounding at another batch size
(see the Translator section of docs/api.md). Files under the output folder are never inputs.

Files are decoded batch by batch (memory does not grow with the folder). A file that cannot be
read is reported and the rest go on; outputs are written atomically (a hidden partial file,
renamed), so a crash never leaves half an image under an output's name, and a job removes the
partial files of its outputs that crashed writers left when it ends. Existing outputs are an
error unless ``existing="skip"`` (resume: they are left as they are) or ``"overwrite"``.

A job writes each output at most once, even when a batch is run again (a Ray actor lost with its
node): an output that did not exist when the job was planned is created, never replaced; one that
did exist (``"overwrite"``) is replaced only while it is still the file the plan saw
(``FileTask.replaces``). An output found written by the time it is to be written is left as it is.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator, Sequence

import torch

from ..errors import ConfigError, EgsdeError, ImageError
from ..images import IMAGE_EXTENSIONS, Box, check_fit, cut_to_boxes, fit_square, list_images, tensor_to_images
from ..method.noise import check_seed, derive_seed
from ..method.settings import check_batch_size

EXISTING_POLICIES = ("error", "skip", "overwrite")


@dataclass(frozen=True)
class FileTask:
    """One file of a job: where it is, its path relative to its input folder, its output and seed;
    ``replaces``: the ``output_identity`` of the output it is to replace (``existing="overwrite"``),
    "" when the output did not exist when the job was planned."""

    source: Path
    relative: PurePosixPath
    output: Path
    seed: int
    replaces: str = ""


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
    identities = {t.output: output_identity(t.output) for t in tasks}
    done = [t for t in tasks if identities[t.output]]
    if done and existing == "error":
        raise ConfigError(f"{len(done)} output(s) exist, e.g. {done[0].output}: pass --resume to skip them "
                          "or --overwrite to replace them")
    if existing == "skip":
        return [t for t in tasks if not identities[t.output]], done
    if existing == "overwrite":
        tasks = [FileTask(t.source, t.relative, t.output, t.seed, identities[t.output]) for t in tasks]
    return tasks, []


def output_identity(path: Path) -> str:
    """Which file is at ``path`` ("" when none): its inode, size and modification time, so a file
    written in its place has another identity (the same on every node of a shared file system)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ""
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def written_since_planned(task: FileTask) -> bool:
    """Whether ``task``'s output was written after the job was planned (by an earlier run of its
    batch): it exists and is not the file the task is to replace."""
    return output_identity(task.output) not in ("", task.replaces)


_PARTIAL = re.compile(r"\.(.+)\.\d+-\d+\.partial")  # a partial file of output \1 (save_atomically's)
# What os.link raises on a file system that has no hard links (or not across these paths).
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK}


def save_atomically(image, dst: Path, replaces: str = "") -> bool:
    """Write a PNG to a hidden partial file beside ``dst``, then move it into place: a reader (or a
    resumed job) never sees half an image, and concurrent writers never share a partial file.

    ``dst`` is never written twice: without ``replaces`` it is created only if it does not exist
    (a hard link, which fails if it does; on a file system without hard links, a check then a
    rename), with ``replaces`` (an ``output_identity``) it is replaced only while it is still that
    file. Returns False, writing nothing, when ``dst`` was already written."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}-{threading.get_ident()}.partial")  # matches _PARTIAL
    try:
        image.save(tmp, format="PNG")
        if replaces:
            if output_identity(dst) != replaces:
                return False
            os.replace(tmp, dst)
            return True
        try:
            os.link(tmp, dst)
        except FileExistsError:
            return False
        except OSError as err:
            if err.errno not in _NO_HARD_LINKS:
                raise  # a real failure (no space, no permission ...): this file fails, reported
            if dst.exists():  # a file system without hard links here
                return False
            os.replace(tmp, dst)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def remove_partial_files(tasks: Sequence[FileTask]) -> list[Path]:
    """Remove the partial files that writers of ``tasks``' outputs left when they were killed
    (``save_atomically`` removes its own otherwise); the paths removed. Call it when no writer of
    these outputs runs any more: at the end of a job. (Two jobs writing the same outputs at once
    are a mistake that write-once already answers: if one removed the other's partial file, that
    file's writer reports it as failed, and a rerun with --resume finishes it.)"""
    names: dict[Path, set[str]] = {}
    for task in tasks:
        names.setdefault(task.output.parent, set()).add(task.output.name)
    removed = []
    for folder, outputs in names.items():
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            match = _PARTIAL.fullmatch(entry.name)
            if match and match[1] in outputs:
                Path(entry.path).unlink(missing_ok=True)
                removed.append(Path(entry.path))
    return removed


def _failure_text(source: Path, err: Exception) -> str:
    """Why ``source`` failed, for ``JobReport.failed``: ``err``'s message without the path it
    names (the report pairs the reason with the path, so a failure line names it once)."""
    text, path = str(err), str(source)
    if text.startswith(f"{path}: "):  # "PATH: corrupt or truncated image: ..."
        return text[len(path) + 2:]
    if text.endswith(f": {path}"):  # "image not found: PATH"
        return text[:-len(path) - 2]
    return text


def decoded_batches(tasks: Sequence[FileTask], image_size: int, batch_size: int, report: JobReport,
                    max_pixels: int | None = None,
                    fit: str = "crop") -> Iterator[tuple[list[FileTask], torch.Tensor, list[Box]]]:
    """Batches of up to ``batch_size`` readable files, decoded just before they are needed (made
    square by ``fit``, ``images.FITS``), with the box of each square that shows its image; a
    file that cannot be read (or has more than ``max_pixels`` pixels; None: the engine's default,
    ``io.max_pixels_for``) goes to ``report.failed`` and the next one takes its place."""
    check_batch_size(batch_size, "batch size")
    batch: list[FileTask] = []
    tensors: list[torch.Tensor] = []
    boxes: list[Box] = []
    for task in tasks:
        try:
            tensor, box = fit_square(task.source, image_size, max_pixels, fit)
        except EgsdeError as err:
            report.failed.append((task.source, _failure_text(task.source, err)))
            continue
        batch.append(task)
        tensors.append(tensor)
        boxes.append(box)
        if len(batch) == batch_size:
            yield batch, torch.stack(tensors), boxes
            batch, tensors, boxes = [], [], []
    if batch:
        yield batch, torch.stack(tensors), boxes


def translate_batch(translator, batch: Sequence[FileTask], x0: torch.Tensor, overrides: dict,
                    callback: Callable[[int, int], None] | None = None,
                    boxes: Sequence[Box] | None = None) -> JobReport:
    """Translate one decoded batch with each file's seed and write its outputs atomically, each
    cut to its box (``decoded_batches``; None: whole); an output found written meanwhile is left
    as it is (reported skipped)."""
    report = JobReport()
    try:
        y = translator.run_tensor(x0, seed=[t.seed for t in batch], callback=callback, **overrides)
        images = cut_to_boxes(tensor_to_images(torch.as_tensor(y)), boxes)
    except ImageError as err:  # a result that cannot be an image (diverged): these files fail
        report.failed += [(t.source, str(err)) for t in batch]
        return report
    for image, task in zip(images, batch):
        try:
            written = save_atomically(image, task.output, task.replaces)
        except OSError as err:
            report.failed.append((task.source, f"cannot write {task.output}: {err}"))
            continue
        (report.written if written else report.skipped).append(task.output)
    return report


def run_job(translator, tasks: Sequence[FileTask], *, batch_size: int = 1, overrides: dict | None = None,
            on_update: Callable[[float], None] | None = None, fit: str = "crop") -> JobReport:
    """Translate ``tasks`` in batches in this process (files of at most ``translator.max_pixels``
    pixels, made square by ``fit``: ``images.FITS``). ``on_update(images)`` is called after every
    sampling update with the fraction of an image (per file) it completed; returning False cancels
    the job (``SamplingCancelled``; the outputs written so far stay)."""
    overrides = overrides or {}
    translator.settings_with(**overrides)  # bad settings (or a bad fit) fail before any file is decoded
    check_fit(fit)
    report = JobReport()
    try:
        for batch, x0, boxes in decoded_batches(tasks, translator.image_size, batch_size, report,
                                                translator.max_pixels, fit):
            callback = None
            if on_update is not None:
                def callback(done, total, n=len(batch)):
                    return on_update(n / total)
            report.merge(translate_batch(translator, batch, x0, overrides, callback, boxes))
    finally:
        remove_partial_files(tasks)  # those of an earlier run of this job that was killed
    return report
