"""CPU threads: how many a translation uses, and how idle ones wait.

Chosen once, at the edge (``Translator(threads=)``, ``--threads``, the service's per-replica
value), and passed inward as a checked integer: PyTorch's intra-op threads (the torch and compiled
backends), the native core's OpenMP team (``SamplerConfig.threads``, a cap) and ONNX Runtime's
intra-op pool all get it. The default ("auto") is the CPUs this process may actually use: the
affinity mask and the cgroup CPU quota (``loky.cpu_count``), not ``os.cpu_count()``, which counts
the whole host (a container limited to 2 CPUs of 64 would otherwise run 64 threads on 2); with
"auto", PyTorch's and the core's OpenMP team shrinks between updates while other processes keep
the CPUs busy (``ThreadBudget``).

Idle OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE``; GNU OpenMP, which PyTorch and
the native core share, with a short spin of ``GOMP_SPINCOUNT`` iterations, about ten microseconds,
before it sleeps). By default libgomp spins for milliseconds after every parallel region: alone that
is a little faster, but two translations on one machine then burn each other's cores (measured:
``egsde-rt bench --contention``, docs/performance.md). An OpenMP runtime reads these variables
once, when it is loaded, so ``import egsde_rt`` sets them (unless the user has) before anything
loads PyTorch; ``wait_policy()`` says what is in force, and whether a runtime was loaded before
egsde_rt could set it (then it spins: import egsde_rt before torch, or export the variables).

This module imports nothing heavy (the package's ``__init__`` calls ``set_wait_policy``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .errors import ConfigError

# A translation's threads are at most this many (a costly value with a declared bound: each is a
# thread of every pool above).
MAX_THREADS = 256
# The wait policy egsde_rt sets where the user has set none (measured on the 2-core CPU:
# docs/performance.md#cpu-threads-on-a-shared-machine-egsde-rt-bench---contention).
WAIT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "1000"}
# The default of ``threads`` where none is given: an integer, or "auto" (unset: "auto").
THREADS_ENV = "EGSDE_RT_THREADS"

_loaded_before: list[str] = []  # OpenMP runtimes already in the process when set_wait_policy ran


def _openmp_runtimes_loaded() -> list[str]:
    """The OpenMP runtimes mapped into this process (Linux; elsewhere none is known)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    names = {Path(line.split()[-1]).name for line in maps.splitlines() if line.count(" ") >= 5}
    return sorted(n for n in names if n.startswith(("libgomp", "libomp", "libiomp")))


def set_wait_policy() -> None:
    """Set ``WAIT_POLICY`` in the environment where the user has not set these variables (once,
    at ``import egsde_rt``), noting any OpenMP runtime that was loaded before (it keeps its own)."""
    _loaded_before[:] = _openmp_runtimes_loaded()
    for name, value in WAIT_POLICY.items():
        os.environ.setdefault(name, value)


def wait_policy() -> dict:
    """The wait policy in force, for reports: the variables, and ``loaded_before``: the OpenMP
    runtimes that were loaded before egsde_rt set them (they keep their default, spinning; empty:
    every wait is passive)."""
    return {**{name: os.environ.get(name) for name in WAIT_POLICY}, "loaded_before": list(_loaded_before)}


def default_threads() -> int:
    """The CPUs this process may use: the affinity mask and the cgroup CPU quota (``loky.cpu_count``)."""
    from loky import cpu_count

    return max(1, int(cpu_count()))


def resolve_threads(threads) -> int:
    """``threads`` checked (an integer 1..``MAX_THREADS``), or the default for None or "auto"."""
    if threads is None or threads == "auto":
        return default_threads()
    if isinstance(threads, str) and threads.strip().isdigit():
        threads = int(threads)
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise ConfigError(f"threads must be an integer in 1..{MAX_THREADS} or 'auto' (the CPUs this process may "
                          f"use: its affinity mask and cgroup quota, here {default_threads()}), got {threads!r}")
    return threads


def runnable_tasks() -> int | None:
    """The tasks runnable on the machine right now (``/proc/loadavg``'s fourth field, the caller's
    own thread included); None where it cannot be read."""
    try:
        return int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None


class ThreadBudget:
    """The threads of a translation's next update: ``limit`` (``resolve_threads``), or, ``adaptive``
    (threads "auto"), ``limit`` less the CPUs the machine's other runnable tasks take (their share
    of ours where the host has more CPUs than we may use), at least 1. Read between updates: an
    OpenMP team waits at every barrier for its slowest thread, so a team as large as the CPUs,
    beside processes that keep them busy, waits for a time slice at every parallel region (measured:
    five times slower beside two busy processes on 2 cores, against 2.6 times for one thread;
    docs/performance.md#cpu-threads-on-a-shared-machine-egsde-rt-bench---contention)."""

    def __init__(self, threads=None):
        if threads is None:
            threads = _from_environment(os.environ.get(THREADS_ENV) or "auto")
        elif isinstance(threads, str):
            threads = parse_threads(threads)
        self.limit = resolve_threads(threads)
        self.adaptive = threads == "auto"

    def now(self) -> int:
        running = runnable_tasks() if self.adaptive and self.limit > 1 else None
        if running is None:
            return self.limit
        others = max(0, running - 1)  # every runnable task but the caller (its idle OpenMP threads sleep)
        free = self.limit - others * self.limit / max(os.cpu_count() or 1, self.limit)
        return max(1, min(self.limit, int(free + 0.5)))


def _from_environment(text: str) -> "int | str":
    try:
        return parse_threads(text)
    except ConfigError as err:
        raise ConfigError(f"{THREADS_ENV}={text!r}: {err}") from None


def slot_threads(cpus: float) -> int:
    """The default threads of a Ray actor or Serve replica that reserves ``cpus`` CPU slots: as many
    (at least 1, at most ``default_threads()``), so that the actors of one machine share its cores
    instead of each running a thread per core."""
    return max(1, min(default_threads(), math.ceil(cpus)))


def parse_threads(text: str) -> "int | str":
    """``--threads`` (and ``EGSDE_RT_THREADS``): ``"auto"``, or an integer checked against its bound
    (argparse's type: a ``ConfigError`` for anything else)."""
    text = text.strip().lower() if isinstance(text, str) else text
    return "auto" if text == "auto" else resolve_threads(text)
