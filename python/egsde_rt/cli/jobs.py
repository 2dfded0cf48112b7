"""What the folder-job commands (``translate``, ``reference``) share: the run with a progress bar
and the summary that gives the exit code."""

from __future__ import annotations

import sys


def run_with_progress(translator, tasks, batch_size: int, overrides: dict | None = None):
    """``folder_job.run_job`` with a progress bar counting images (failed files count as done)."""
    from tqdm import tqdm

    from ..jobs.folders import run_job

    with tqdm(total=len(tasks), desc="translate", unit="image", bar_format="{l_bar}{bar}| {n:.1f}/{total} "
              "[{elapsed}<{remaining}]") as bar:
        def advance(images: float) -> None:  # fractions of images, never past the total
            bar.update(min(images, bar.total - bar.n))

        report = run_job(translator, tasks, batch_size=batch_size, overrides=overrides, on_update=advance)
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
