"""The demo's networks, shared by training (``egsde_rt.train``) and the demo (``egsde_rt.demo``):
the architectures of the shipped score model and DSE, and the independent realism judge.
"""

from __future__ import annotations

import torch.nn as nn

DEMO_SCORE_CONFIG = dict(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2,2",
                         attention_resolutions="8", num_head_channels=32, learn_sigma=False,
                         use_scale_shift_norm=True, resblock_updown=True)
DEMO_DSE_CONFIG = dict(image_size=32, num_class=2, classifier_width=32, classifier_depth=1,
                       classifier_attention_resolutions="8", classifier_pool="attention", channel_mult="1,2,2",
                       num_head_channels=32)


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
