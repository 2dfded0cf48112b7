"""The exceptions egsde-rt raises: one base class, one subclass per kind of bad input."""


class EgsdeError(Exception):
    """Base class of every error egsde-rt raises on purpose."""


class ConfigError(EgsdeError, ValueError):
    """An argument or configuration value is out of range or unknown."""


class CheckpointError(EgsdeError):
    """A checkpoint cannot be read, is unsafe to read, or does not fit the model."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's keys or shapes do not match the model's state dict."""

    def __init__(self, message: str, missing=(), unexpected=(), mis_shaped=()):
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mis_shaped = list(mis_shaped)


class ImageError(EgsdeError, ValueError):
    """An input image is missing, corrupt, of the wrong mode or size, or not finite."""


class EngineDirError(EgsdeError):
    """An engine directory is missing, incomplete, corrupt or of another format version."""


class MissingGraphsError(EngineDirError):
    """A backend that runs the ONNX graphs was given an engine exported without them (torch only)."""


class NativeError(EgsdeError, RuntimeError):
    """The native core refused an input or failed (raised from C++ through the bindings)."""


class SamplingCancelled(EgsdeError):
    """The progress callback returned False."""


class CaptureFailed(EgsdeError):
    """Capturing a sampling step into a CUDA graph failed (work the runner cannot capture); the
    caller may run uncaptured instead."""
