"""egsde-rt: a low-latency inference engine for EGSDE image-to-image translation."""

from ._version import __version__
from .errors import (CheckpointError, CheckpointMismatchError, CheckpointNotFoundError, ConfigError,
                     EgsdeError, EngineDirError, ImageError, NativeError, SamplingCancelled)
from .presets import PRESETS, get_preset
from .settings import EGSDESettings


def __getattr__(name):  # lazy: importing egsde_rt does not load ONNX Runtime or the native core
    if name == "Translator":
        from .runtime.translator import Translator

        return Translator
    raise AttributeError(f"module 'egsde_rt' has no attribute {name!r}")


__all__ = [
    "Translator",
    "__version__", "EgsdeError", "ConfigError", "CheckpointError", "CheckpointNotFoundError",
    "CheckpointMismatchError", "ImageError", "EngineDirError", "NativeError", "SamplingCancelled", "PRESETS",
    "get_preset", "EGSDESettings",
]
