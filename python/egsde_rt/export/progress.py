"""The stages of an export or a plan build, each with its progress bar (tqdm, on a terminal;
``TQDM_DISABLE=1`` silences it) and an optional observer (``on_stage(name, "begin" | "end")``:
``egsde-rt bench --export`` measures each stage's time and peak memory through it)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

from tqdm import tqdm

StageObserver = Callable[[str, str], None]


@contextmanager
def stage(name: str, total: int, on_stage: StageObserver | None = None):
    """A stage of ``total`` steps: yields its bar (``bar.update()`` after each step)."""
    if on_stage is not None:
        on_stage(name, "begin")
    with tqdm(total=total, desc=f"{name:10s}", unit="step", disable=None, leave=True) as bar:
        yield bar
    if on_stage is not None:
        on_stage(name, "end")
