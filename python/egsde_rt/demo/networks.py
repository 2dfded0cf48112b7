"""The demo's networks: the architectures of the shipped score model and DSE, the independent
realism judge, and the shipped weights (``weights/``, trained with ``egsde_rt.jobs.training``; see
``weights/TRAINING.md``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ..errors import EgsdeError

DEMO_SCORE_CONFIG = dict(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2,2",
                         attention_resolutions="8", num_head_channels=32, learn_sigma=False,
                         use_scale_shift_norm=True, resblock_updown=True)
DEMO_DSE_CONFIG = dict(image_size=32, num_class=2, classifier_width=32, classifier_depth=1,
                       classifier_attention_resolutions="8", classifier_pool="attention", channel_mult="1,2,2",
                       num_head_channels=32)
WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHT_FILES = {"score": "score.pt", "dse": "dse.pt", "judge": "judge.pt", "student": "student.pt"}


class JudgeNet(nn.Module):
    """A plain CNN classifier (no time input): the demo's independent realism judge."""

    def __init__(self, num_class: int = 2, width: int = 32):
        super().__init__()
        self.config = {"num_class": num_class, "width": width}
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(2 * width, num_class)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def weights_path(name: str) -> Path:
    """The shipped weights of ``score``, ``dse``, ``judge`` or ``student`` (the distilled student)."""
    path = WEIGHTS_DIR / WEIGHT_FILES[name]
    if not path.is_file():
        raise EgsdeError(f"the demo weights are missing from the package: {path} (reinstall egsde-rt)")
    return path


def load_judge() -> JudgeNet:
    """The shipped realism judge, in eval mode."""
    judge = JudgeNet()
    judge.load_state_dict(torch.load(weights_path("judge"), map_location="cpu", weights_only=True))
    return judge.eval()
