"""The networks of EGSDE in PyTorch, state-dict compatible with the official checkpoints."""

from .adm_unet import ADMUNet
from .checkpoint import check_state_dict, load_checkpoint, read_state_dict
from .ddpm_unet import DDPMUNet
from .dse import DSE

MODEL_CLASSES = {cls.__name__: cls for cls in (ADMUNet, DDPMUNet, DSE)}


def build_model(class_name: str, config):
    """A model of one of our classes from the ``config`` it recorded (``model.config``)."""
    from ..errors import ConfigError

    if class_name not in MODEL_CLASSES:
        raise ConfigError(f"unknown model class {class_name!r}; expected one of {sorted(MODEL_CLASSES)}")
    cls = MODEL_CLASSES[class_name]
    return cls(config) if cls is DDPMUNet else cls(**config)


__all__ = ["ADMUNet", "DDPMUNet", "DSE", "MODEL_CLASSES", "build_model", "load_checkpoint", "read_state_dict",
           "check_state_dict"]
