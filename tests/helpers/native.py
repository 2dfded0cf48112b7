"""Helpers for the native-core tests: guarded output buffers, the CUDA skip condition, and a
stand-in for the CUDA step graph that replays a CPU sampler's step."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest

from egsde_rt import _core
from egsde_rt.runtime.devices import cuda_usable

GUARD = 64
SENTINEL = np.float32(-7.77e7)


class Guarded:
    """A float32 buffer of n elements with GUARD sentinel elements on each side."""

    def __init__(self, n: int, fill: float = np.nan):
        self.storage = np.full(n + 2 * GUARD, SENTINEL, dtype=np.float32)
        self.view = self.storage[GUARD:GUARD + n]
        self.view[:] = fill

    def intact(self) -> bool:
        return bool(np.all(self.storage[:GUARD] == SENTINEL) and np.all(self.storage[-GUARD:] == SENTINEL))


def step_draws(scalars: np.ndarray) -> list[int]:
    """The 64-bit noise draws of streams 0 and 1 in a step's scalars (float32 [STEP_SCALARS_WORDS]):
    after the row, one (low, high) pair of uint32 words per stream."""
    words = scalars.view(np.uint32)[_core.kernels.STEP_ROW_WORDS:].astype(np.uint64).reshape(-1, 2)
    return [int(low) | int(high) << 32 for low, high in words]


def cuda_ready() -> bool:
    return cuda_usable()[0]


requires_cuda = pytest.mark.skipif(not cuda_ready(), reason=cuda_usable()[1])


class HostStepGraph:
    """A stand-in for ``CudaStepGraph`` on a CPU sampler: capture records the step, replay runs it."""

    captures = 0

    def __init__(self, sampler):
        self.step = None

    def ordered(self):
        return nullcontext()

    def capture(self, step):
        HostStepGraph.captures += 1
        self.step = step

    def replay(self):
        self.step()
