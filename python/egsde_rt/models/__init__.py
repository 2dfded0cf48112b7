"""The networks of EGSDE in PyTorch, state-dict compatible with the official checkpoints."""

from .adm_unet import ADMUNet
from .checkpoint import check_state_dict, load_checkpoint, read_state_dict
from .ddpm_unet import DDPMUNet
from .dse import DSE
from .initialization import nonzero_random_weights
from .student import GuidedStudent

MODEL_CLASSES = {cls.__name__: cls for cls in (ADMUNet, DDPMUNet, DSE, GuidedStudent)}


def build_model(class_name: str, config):
    """A model of one of our classes from the ``config`` it recorded (``model.config``)."""
    from ..errors import ConfigError

    if class_name not in MODEL_CLASSES:
        raise ConfigError(f"unknown model class {class_name!r}; expected one of {sorted(MODEL_CLASSES)}")
    cls = MODEL_CLASSES[class_name]
    return cls(config) if cls is DDPMUNet else cls(**config)


def build_preset_models(preset, device="cpu"):
    """(score_model, dse) with a preset's architectures and random weights, built on ``device``
    (``"meta"`` builds them without memory)."""
    import torch

    with torch.device(device):
        return build_model(preset.score_class, preset.score_config), build_model("DSE", preset.dse_config)


__all__ = ["ADMUNet", "DDPMUNet", "DSE", "GuidedStudent", "MODEL_CLASSES", "build_model", "build_preset_models",
           "load_checkpoint", "read_state_dict", "check_state_dict", "nonzero_random_weights"]
