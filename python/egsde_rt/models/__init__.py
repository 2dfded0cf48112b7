"""The networks of EGSDE in PyTorch, state-dict compatible with the official checkpoints."""

from .adm_unet import ADMUNet
from .checkpoint import check_state_dict, load_checkpoint, read_state_dict
from .ddpm_unet import DDPMUNet
from .dse import DSE

__all__ = ["ADMUNet", "DDPMUNet", "DSE", "load_checkpoint", "read_state_dict", "check_state_dict"]
