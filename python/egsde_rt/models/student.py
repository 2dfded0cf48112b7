"""The distilled EGSDE student: one network in place of the score UNet and the expert.

``GuidedStudent`` is the teacher's score UNet (ADM) with the perturbed source ``x_t`` as extra
input channels: ``student(y, t, x_t)`` predicts the teacher's *guided* eps, the UNet's eps plus the
domain-specific expert's gradient in eps form (``reference.translate``'s ``guided`` hook), so a
run of the student calls no DSE and takes no input gradient. ``student_from_teacher`` initialises
it from the teacher: the teacher's weights, and zeros on the ``x_t`` channels of the first
convolution, so that before any training the student is the unguided teacher exactly.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..method.settings import EGSDESettings
from .adm_unet import ADMUNet

FEW_STEP_SOLVER = "ddim"  # at eta 1: ancestral, a stage-2 student's noise shared with its teacher's


class GuidedStudent(nn.Module):
    """``GuidedStudent(**adm_config)``: an ADM UNet over ``[y, x_t]`` (twice the teacher's input
    channels); ``forward(y, t, x_t)`` returns the guided eps [N, 3, H, W]. ``config`` is the
    teacher's ADM config: ``models.build_model("GuidedStudent", student.config)`` rebuilds it (an
    engine's weights record it)."""

    def __init__(self, **adm_config):
        super().__init__()
        if adm_config.get("class_cond"):
            raise ConfigError("a class-conditional score model cannot be distilled (its label is not an input of "
                              "the sampler)")
        teacher_channels = adm_config.get("in_channels", 3)
        self.config = {**adm_config, "in_channels": teacher_channels}  # the teacher's: rebuilds the student
        self.unet = ADMUNet(**{**adm_config, "in_channels": 2 * teacher_channels})

    def convert_torso(self, dtype: torch.dtype) -> None:
        """Run the UNet's torso in ``dtype`` (``network_fns.in_precision``; ``ADMUNet.convert_torso``)."""
        self.unet.convert_torso(dtype)

    def forward(self, y: torch.Tensor, t: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        return self.unet(torch.cat([y, x_t], dim=1), t)[:, :3]


def student_from_teacher(teacher: nn.Module) -> GuidedStudent:
    """A ``GuidedStudent`` with ``teacher``'s weights (an ``ADMUNet``) and zero weights on its
    ``x_t`` inputs: the unguided teacher's eps until it is trained."""
    if not isinstance(teacher, ADMUNet):
        raise ConfigError(f"distillation starts from an ADM score UNet; the engine's is a {type(teacher).__name__}")
    student = GuidedStudent(**teacher.config)
    state = teacher.state_dict()
    first = "input_blocks.0.0.weight"
    state[first] = torch.cat([state[first], torch.zeros_like(state[first])], dim=1)
    student.unet.load_state_dict(state)
    return student


def guided_student_settings(teacher: EGSDESettings) -> EGSDESettings:
    """A stage-1 student's run: its teacher's, with the experts it folds in switched off (the DSE
    always; the low-pass expert in its gradient form, while its stable forms stay native)."""
    return teacher.with_overrides(ls=0.0, li=0.0 if teacher.lowpass == "gradient" else teacher.li)


def few_step_settings(teacher: EGSDESettings, updates: int) -> EGSDESettings:
    """A stage-2 student's run (``jobs.trajectory_distillation``): ``ddim`` at eta 1 with
    ``updates`` updates, no expert (both folded in), its teacher's M."""
    return teacher.with_overrides(solver=FEW_STEP_SOLVER, steps=updates, eta=1.0, eta_min_t=0, repeats=1,
                                  perturb="shared", ls=0.0, li=0.0, lowpass="gradient")
