"""A dependency-free progress bar on stderr for long work (sampling steps, batches)."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    def __init__(self, total: int, label: str = "", stream=None, width: int = 30):
        self.total, self.label, self.width = max(1, total), label, width
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.done = 0

    def update(self, done: int) -> None:
        self.done = min(done, self.total)
        frac = self.done / self.total
        filled = int(self.width * frac)
        elapsed = time.perf_counter() - self.start
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total} {elapsed:6.1f}s")
        if self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()

    def step_callback(self, offset: int = 0):
        """A sampler callback ``(k, K, y)`` that advances this bar to ``offset + k + 1``."""
        return lambda k, K, y: self.update(offset + k + 1)
