"""egsde-rt: a low-latency inference engine for EGSDE image-to-image translation."""

from ._version import __version__
from .errors import (CheckpointError, CheckpointMismatchError, CheckpointNotFoundError, ConfigError,
                     EgsdeError, ImageError)
from .presets import PRESETS, get_preset
from .settings import EGSDESettings

__all__ = [
    "__version__", "EgsdeError", "ConfigError", "CheckpointError", "CheckpointNotFoundError",
    "CheckpointMismatchError", "ImageError", "PRESETS", "get_preset", "EGSDESettings",
]
