"""What the folder-job commands (``translate``, ``reference``) share: the run with a progress bar
and the summary that gives the exit code."""

from __future__ import annotations

import sys

from tqdm import tqdm


class ImageProgress(tqdm):
    """A progress bar of images: it advances by the fraction of an image each sampling update
    completes (so its rate and time left move within a long image), and shows whole images done."""

    BAR_FORMAT = "{l_bar}{bar}| {images}/{total} images [{elapsed}<{remaining}]"

    @property
    def format_dict(self):
        return {**super().format_dict, "images": int(self.n + 1e-6)}  # the fractions' float sum, floored


def run_with_progress(translator, tasks, batch_size: int, overrides: dict | None = None, fit: str = "crop"):
    """``folder_job.run_job`` with a progress bar counting images (failed files count as done)."""
    from ..jobs.folders import run_job

    with ImageProgress(total=len(tasks), desc="translate", unit="image", bar_format=ImageProgress.BAR_FORMAT) as bar:
        def advance(images: float) -> None:  # fractions of images, never past the total
            bar.update(min(images, bar.total - bar.n))

        report = run_job(translator, tasks, batch_size=batch_size, overrides=overrides, on_update=advance, fit=fit)
        bar.update(bar.total - bar.n)
    return report


def finish_job(report, tasks, skipped) -> int:
    """Print what a folder job did (outputs on stdout, failures on stderr); its exit code.
    ``tasks`` ran, ``skipped`` (existing outputs) did not."""
    report.skipped += [t.output for t in skipped]
    total = len(tasks) + len(skipped)
    for path in report.written:
        print(path)
    for source, why in report.failed:
        print(f"egsde-rt: failed: {source}: {why}", file=sys.stderr)
    print(f"{len(report.written)} written, {len(report.skipped)} skipped (existing), {len(report.failed)} failed "
          f"of {total}", file=sys.stderr)
    return report.exit_code
