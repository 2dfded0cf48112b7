"""``egsde_rt.native.translate``: the public name of the native loop with PyTorch models
(``runtime.model_loop``), kept where the API has always had it."""

from .runtime.model_loop import translate

__all__ = ["translate"]
