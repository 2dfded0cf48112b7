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


class ImageTooLargeError(ImageError):
    """An image of more pixels than a limit allows. ``fix`` ends the message: how the caller raises the
    limit where it stands (``with_fix`` says it for another caller: a service names its option)."""

    def __init__(self, name: str, size: tuple[int, int], max_pixels: int, fix: str = "raise max_pixels"):
        self.name, self.size, self.max_pixels, self.fix = name, tuple(size), max_pixels, fix
        w, h = self.size
        side = int(max_pixels ** 0.5)
        super().__init__(f"{name}: {w}x{h} is {w * h / 1e6:.1f} Mpx, over the limit of {max_pixels} pixels "
                         f"({max_pixels / 1e6:.1f} Mpx, e.g. {side}x{side}); give a smaller image or {fix}")

    def with_fix(self, fix: str) -> "ImageTooLargeError":
        return ImageTooLargeError(self.name, self.size, self.max_pixels, fix)

    def __reduce__(self):  # pickled whole (a Ray replica's error reaches the proxy): not from the message
        return ImageTooLargeError, (self.name, self.size, self.max_pixels, self.fix)


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
