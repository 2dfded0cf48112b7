"""The domain-specific extractor: guided-diffusion's time-conditioned encoder (``create_dse``).

``forward(x, t)`` returns the trunk features (input blocks + middle block), which EGSDE's
domain-specific expert compares; ``classify(x, t)`` runs the classifier head ``I2Iout`` on
them (used for training a DSE, never by the sampler).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ConfigError
from .adm_blocks import (EncoderTrunk, QKVAttention, conv_nd, convert_module_to,
                         normalization, parse_attention_resolutions,
                         parse_channel_mult, zero_module)

POOLS = ("attention", "adaptive")


class AttentionPool2d(nn.Module):
    """CLIP-style attention pooling to one vector per image."""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads_channels: int, output_dim=None):
        super().__init__()
        self.positional_embedding = nn.Parameter(
            torch.randn(embed_dim, spacial_dim**2 + 1) / embed_dim**0.5
        )
        self.qkv_proj = conv_nd(1, embed_dim, 3 * embed_dim, 1)
        self.c_proj = conv_nd(1, embed_dim, output_dim or embed_dim, 1)
        self.attention = QKVAttention(embed_dim // num_heads_channels)

    def forward(self, x):
        b, c = x.shape[:2]
        x = x.reshape(b, c, -1)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1)
        x = x + self.positional_embedding[None].to(x.dtype)
        x = self.c_proj(self.attention(self.qkv_proj(x)))
        return x[:, :, 0]


class DSE(EncoderTrunk):
    """``DSE(image_size=256, num_class=2, classifier_width=128, ...)`` as EGSDE's ``create_dse``;
    ``channel_mult`` and ``num_head_channels`` (64 in the original) may be overridden."""

    def __init__(self, image_size=256, num_class=2, classifier_use_fp16=False, classifier_width=128,
                 classifier_depth=2, classifier_attention_resolutions="32,16,8",
                 classifier_use_scale_shift_norm=True, classifier_resblock_updown=True,
                 classifier_pool="attention", channel_mult="", num_head_channels=64,
                 in_channels=3, dims=2, dropout=0.0, phase=None):
        config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        self.config = config  # the constructor arguments, to rebuild the model
        if classifier_pool not in POOLS:
            raise ConfigError(f"classifier_pool must be one of {POOLS}, got {classifier_pool!r}")
        self.image_size = image_size
        self.num_class = num_class
        ch, ds, _ = self._build_trunk(
            in_channels=in_channels, model_channels=classifier_width, num_res_blocks=classifier_depth,
            attention_ds=parse_attention_resolutions(classifier_attention_resolutions, image_size),
            dropout=dropout, channel_mult=parse_channel_mult(channel_mult, image_size), dims=dims,
            num_heads=1, num_head_channels=num_head_channels,
            use_scale_shift_norm=classifier_use_scale_shift_norm,
            resblock_updown=classifier_resblock_updown, use_new_attention_order=False,
        )
        self.feature_channels = ch
        self.feature_size = image_size // ds
        if classifier_pool == "adaptive":
            self.I2Iout = nn.Sequential(
                normalization(ch), nn.SiLU(), nn.AdaptiveAvgPool2d((1, 1)),
                zero_module(conv_nd(dims, ch, num_class, 1)), nn.Flatten(),
            )
        else:
            self.I2Iout = nn.Sequential(
                normalization(ch), nn.SiLU(),
                AttentionPool2d(image_size // ds, ch, num_head_channels, num_class),
            )
        if classifier_use_fp16:
            self.convert_to_fp16()

    def convert_to_fp16(self) -> None:
        self.convert_torso(torch.float16)

    def convert_to_fp32(self) -> None:
        self.convert_torso(torch.float32)

    def convert_torso(self, dtype: torch.dtype) -> None:
        """Run the trunk in ``dtype`` (float16 or bfloat16); features come back in the input's dtype."""
        self.input_blocks.apply(convert_module_to(dtype))
        self.middle_block.apply(convert_module_to(dtype))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Trunk features [N, C_f, H/ds, W/ds] in the input's dtype."""
        return self.trunk(x, self.embed(timesteps)).type(x.dtype)

    def classify(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Class logits [N, num_class] from the head."""
        return self.I2Iout(self.forward(x, timesteps))
