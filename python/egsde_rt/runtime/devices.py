"""Devices, parsed once at the edge: ``Device`` (kind and CUDA index) is what every ``--device``
flag's argparse type and every public entry (``Translator``, ``select_backend``,
``build_sampler``) turn their argument into, and what they pass inward.

``Device.parse`` reads ``"auto"``, ``"cpu"``, ``"cuda"`` (the current CUDA device) or
``"cuda:N"`` (or a ``torch.device``; a ``Device`` is returned as it is). ``resolve`` makes it
concrete where it will run: ``auto`` becomes ``cuda`` where the native core and PyTorch can both
run on a GPU (``cuda_usable``, probed once a process), else ``cpu``; ``cuda`` gets the current device's index; an index
is checked against the devices present. A resolved device is marked, and resolving it again
checks nothing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from .. import _core
from ..errors import ConfigError

@dataclass(frozen=True)
class Device:
    kind: str  # "auto", "cpu" or "cuda"
    index: int | None = None  # the CUDA ordinal; None: the current CUDA device (or not CUDA)
    resolved: bool = field(default=False, compare=False, repr=False)  # made by ``resolve``: checked here

    @classmethod
    def parse(cls, value: "Device | str | object") -> "Device":
        """``value`` as a Device (see the module docstring); a ``ConfigError`` naming the forms otherwise."""
        if isinstance(value, Device):
            return value
        text = str(value)  # a torch.device prints as "cpu", "cuda" or "cuda:N"
        kind, colon, index = text.partition(":")
        if kind in ("auto", "cpu") and not colon:
            return cls(kind)
        if kind == "cuda" and (not colon or index.isdigit()):
            return cls(kind, int(index) if colon else None)
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {value!r}")

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"

    @property
    def torch(self):
        """The device as PyTorch names it (``cpu`` or ``cuda:N``; ``cuda`` for the current one)."""
        import torch

        if self.kind == "auto":
            raise ConfigError("device auto has no torch device until it is resolved (runtime.devices.resolve)")
        return torch.device(str(self))


NO_CUDA = "no usable CUDA device"


@functools.cache
def cuda_usable() -> tuple[bool, str]:
    """(whether the native core and PyTorch can both run on a GPU here, why): probed once a process.
    Why it cannot is one plain line, ``"no usable CUDA device: <reason>"`` (``_cuda_reason``)."""
    reason = _cuda_reason()
    return (True, "CUDA device present") if reason is None else (False, f"{NO_CUDA}: {reason}")


def _cuda_reason() -> str | None:
    """Why no GPU can run here, in plain words, or None."""
    if not _core.built_with_cuda:
        return "egsde_rt was built without CUDA kernels"
    if _core.cuda_device_count() == 0:
        status = _core.cuda_status().removeprefix("CUDA unavailable: ")
        # The CUDA runtime says "driver version is insufficient" when there is no driver at all.
        if "driver version is insufficient" in status and not _driver_present():
            return "no NVIDIA driver is installed (libcuda not found)"
        if "driver version is insufficient" in status:
            return "the NVIDIA driver is older than the CUDA runtime egsde_rt was built with (update the driver)"
        return status
    import torch

    if not torch.cuda.is_available():
        build = "" if torch.version.cuda else " (a CPU-only build)"
        return f"PyTorch {torch.__version__} sees no CUDA device{build}"
    return None


def _driver_present() -> bool:
    """Whether the NVIDIA driver's library (libcuda) loads here."""
    import ctypes

    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll", "libcuda.dylib"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def resolve(device: "Device | str | object") -> Device:
    """``device`` made concrete and checked (see the module docstring): ``cpu``, or ``cuda`` with
    the index of a device present; a ``ConfigError`` naming what is missing."""
    device = Device.parse(device)
    if device.resolved:
        return device
    if device.kind == "auto":
        return resolve(Device("cuda" if cuda_usable()[0] else "cpu"))
    if device.kind == "cpu":
        return Device("cpu", resolved=True)
    if not _core.built_with_cuda:
        raise ConfigError(f"device {device}: egsde_rt was built without CUDA kernels; run on the CPU or rebuild "
                          "with nvcc")
    count = _core.cuda_device_count()
    if count == 0:
        raise ConfigError(f"device {device}: {cuda_usable()[1]}")
    if device.index is None:
        import torch

        return Device("cuda", torch.cuda.current_device(), resolved=True)
    if device.index >= count:
        raise ConfigError(f"device {device}: there are {count} CUDA device(s) here (cuda:0 .. cuda:{count - 1})")
    return Device("cuda", device.index, resolved=True)
