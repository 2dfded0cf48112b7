"""egsde-rt: a low-latency inference engine for EGSDE image-to-image translation."""

from ._version import __version__
from .errors import (CheckpointError, CheckpointMismatchError, CheckpointNotFoundError, ConfigError,
                     EgsdeError, ImageError)
from .presets import PRESETS, get_preset
from .settings import EGSDESettings



def __getattr__(name):  # lazy: importing egsde_rt does not load ONNX Runtime or the native core
    if name == "Translator":
        from .translator import Translator

        return Translator
    raise AttributeError(f"module 'egsde_rt' has no attribute {name!r}")


__all__ = [
    "Translator",
    "__version__", "EgsdeError", "ConfigError", "CheckpointError", "CheckpointNotFoundError",
    "CheckpointMismatchError", "ImageError", "PRESETS", "get_preset", "EGSDESettings",
]
