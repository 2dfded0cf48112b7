"""egsde-rt: a low-latency inference engine for EGSDE image-to-image translation."""

from . import cpu_threads
from ._version import __version__
from .errors import (CheckpointError, CheckpointMismatchError, CheckpointNotFoundError, ConfigError,
                     EgsdeError, EngineDirError, ImageError, NativeError, SamplingCancelled)

# Loaded on first use: importing egsde_rt (or a light module of it, such as service.proxy, which
# Serve's HTTP proxy imports) loads neither PyTorch, ONNX Runtime nor the native core.
_LAZY = {"Translator": ".runtime.translator", "PRESETS": ".method.presets", "get_preset": ".method.presets",
         "EGSDESettings": ".method.settings"}


# Before anything loads an OpenMP runtime (PyTorch, the native core): idle threads wait passively.
cpu_threads.set_wait_policy()


def __getattr__(name):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'egsde_rt' has no attribute {name!r}")


__all__ = [
    "Translator",
    "__version__", "EgsdeError", "ConfigError", "CheckpointError", "CheckpointNotFoundError",
    "CheckpointMismatchError", "ImageError", "EngineDirError", "NativeError", "SamplingCancelled", "PRESETS",
    "get_preset", "EGSDESettings",
]
