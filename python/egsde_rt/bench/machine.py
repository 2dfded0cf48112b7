"""What a benchmark ran on, and the peak memory of a measured section."""

from __future__ import annotations

import datetime
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .. import _core
from .._version import __version__
from ..cpu_threads import default_threads, runnable_tasks, wait_policy

# A machine is busy when other tasks keep more than this share of the CPUs the bench may use
# runnable as it begins: other work then slows what the bench times (docs/performance.md).
BUSY_LOAD_SHARE = 0.25


def _other_runnable_tasks(samples: int = 10, interval_s: float = 0.05) -> float | None:
    """The mean count of runnable tasks besides the caller, over ``samples`` reads (None off Linux)."""
    counts = []
    for i in range(samples):
        running = runnable_tasks()
        if running is None:
            return None
        counts.append(max(0, running - 1))
        if i + 1 < samples:
            time.sleep(interval_s)
    return sum(counts) / len(counts)


_at_start = (os.getloadavg(), None)  # when the bench began (``mark_start``; first: when this was imported)


def device_description(device: str) -> dict:
    info = {"device": device, "cpu": _cpu_name(), "cpu_count": os.cpu_count(), "cpus_usable": default_threads(),
            "torch_threads": torch.get_num_threads(), "openmp_wait": wait_policy(),
            "platform": platform.platform(), "built_with_cuda": _core.built_with_cuda,
            "cuda_status": _core.cuda_status()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, sm=f"{props.major}.{props.minor}",
                    gpu_memory_gb=round(props.total_memory / 2**30, 1), cuda_runtime=torch.version.cuda,
                    driver=_nvidia_driver())
    return info


def versions() -> dict:
    found = {"egsde_rt": __version__, "python": platform.python_version(), "torch": torch.__version__,
             "numpy": np.__version__}
    for name in ("onnxruntime", "onnx", "tensorrt"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            pass
    return found


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def command_line() -> str:
    return " ".join(["egsde-rt", *sys.argv[1:]]) if Path(sys.argv[0]).name == "egsde-rt" else " ".join(sys.argv)


def mark_start() -> None:
    """Note the load as a bench begins (``machine_load``'s "before"): the load averages, and the
    other tasks runnable right now (sampled over half a second)."""
    global _at_start
    _at_start = (os.getloadavg(), _other_runnable_tasks())


def machine_load(warn=None) -> dict:
    """The 1, 5 and 15-minute load averages when the bench began (``mark_start``) and now, the
    other tasks runnable as it began, the CPUs it may use, and ``busy``: whether other work kept
    more than ``BUSY_LOAD_SHARE`` of them busy as it began (the runnable tasks, not the 1-minute
    average, which still counts a bench that has just ended; the average where the count cannot
    be read); ``warn(message)`` is called when it did."""
    cpus = default_threads()
    averages, others = _at_start
    load = averages[0] if others is None else others
    busy = load > BUSY_LOAD_SHARE * cpus
    if busy and warn is not None:
        what = "load average" if others is None else "other tasks runnable"
        warn(f"egsde-rt bench: the machine was busy when the bench began ({what} {load:.2f} on {cpus} CPUs): other "
             "work slows what it times; measure on a quiet machine")
    return {"before": list(averages), "after": list(os.getloadavg()), "others_runnable_before": others, "cpus": cpus,
            "busy": busy, "busy_above": BUSY_LOAD_SHARE * cpus}


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def record_envelope(device: str) -> dict:
    """What every bench record says of where, with what and when it was measured: ``device``
    (``device_description``), ``versions``, ``command``, ``date`` and ``load`` (``machine_load``:
    the load average before and after, and whether the machine was busy, warned of on stderr):
    the one place they are written."""
    return {"device": device_description(device), "versions": versions(), "command": command_line(), "date": now(),
            "load": machine_load(warn=_stderr)}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _nvidia_driver() -> str | None:
    try:
        return Path("/proc/driver/nvidia/version").read_text().splitlines()[0].strip()
    except OSError:
        return None


class PeakMemory:
    """Peak host RSS and device memory of a section, in MB.

    The host peak is reset through /proc/self/clear_refs where Linux allows it (so each section
    reports its own peak); elsewhere it is the process's peak so far. On CUDA, two views of the
    device: ``device_mb``, the peak of PyTorch's caching allocator (what PyTorch allocated: not
    the native sampler's own buffers, nor what cuDNN, cuBLAS or the CUDA context hold), and the
    driver's (``torch.cuda.mem_get_info``): free device memory before and after the section, whose
    difference is what the section took and still holds at its end, from any allocator."""

    def __init__(self, device: str):
        self.device = device
        self.host_mb = self.device_mb = 0.0
        self.free_before_mb = self.free_after_mb = None

    def __enter__(self) -> "PeakMemory":
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.free_before_mb = torch.cuda.mem_get_info()[0] / 2**20
        return self

    def __exit__(self, *exc) -> None:
        self.host_mb = _peak_rss_mb()
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.device_mb = torch.cuda.max_memory_allocated() / 2**20
            self.free_after_mb = torch.cuda.mem_get_info()[0] / 2**20

    def driver_view(self) -> dict:
        """The driver's view as record fields (None off CUDA): free MB before and after, and
        ``device_driver_mb``, the device memory the section took and still held at its end."""
        held = None if self.free_before_mb is None else self.free_before_mb - self.free_after_mb
        return {"device_free_before_mb": self.free_before_mb, "device_free_after_mb": self.free_after_mb,
                "device_driver_mb": held}


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
