"""The ADM score UNet (guided-diffusion's ``UNetModel``), built from ``create_model``'s vocabulary."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ConfigError
from .adm_blocks import (AttentionBlock, EncoderTrunk, ResBlock, TimestepEmbedSequential, Upsample,
                         conv_nd, convert_module_to, normalization,
                         parse_attention_resolutions, parse_channel_mult, zero_module)

DEFAULT_NUM_CLASSES = 1000


class ADMUNet(EncoderTrunk):
    """``ADMUNet(image_size=256, num_channels=128, ...)``: keyword names as guided-diffusion's
    ``create_model``. ``forward(x, t, y=None)`` returns [N, 6, H, W] with learn_sigma (eps, then
    the variance interpolation), else [N, 3, H, W]. ``t`` is a float tensor of timesteps."""

    def __init__(self, image_size=256, num_channels=128, num_res_blocks=2, channel_mult="",
                 learn_sigma=False, class_cond=False, num_class=None, use_checkpoint=False,
                 attention_resolutions="16", num_heads=1, num_head_channels=-1,
                 num_heads_upsample=-1, use_scale_shift_norm=False, dropout=0.0,
                 resblock_updown=False, use_fp16=False, use_new_attention_order=False,
                 in_channels=3, dims=2):
        config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        self.config = config  # the constructor arguments, to rebuild the model
        mult = parse_channel_mult(channel_mult, image_size)
        attention_ds = parse_attention_resolutions(attention_resolutions, image_size)
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        self.image_size = image_size
        self.in_channels = in_channels
        self.out_channels = 6 if learn_sigma else 3
        self.learn_sigma = learn_sigma
        # The official create_model passes NUM_CLASSES (1000) for class-conditional models.
        self.num_classes = (num_class or DEFAULT_NUM_CLASSES) if class_cond else None
        ch, ds, chans = self._build_trunk(
            in_channels=in_channels, model_channels=num_channels, num_res_blocks=num_res_blocks,
            attention_ds=attention_ds, dropout=dropout, channel_mult=mult, dims=dims,
            num_heads=num_heads, num_head_channels=num_head_channels,
            use_scale_shift_norm=use_scale_shift_norm, resblock_updown=resblock_updown,
            use_new_attention_order=use_new_attention_order, num_classes=self.num_classes,
        )
        time_embed_dim = num_channels * 4
        self.output_blocks = nn.ModuleList([])
        for level, m in list(enumerate(mult))[::-1]:
            for i in range(num_res_blocks + 1):
                skip_ch = chans.pop()
                layers = [ResBlock(ch + skip_ch, time_embed_dim, dropout, out_channels=int(num_channels * m),
                                   dims=dims, use_scale_shift_norm=use_scale_shift_norm)]
                ch = int(num_channels * m)
                if ds in attention_ds:
                    layers.append(AttentionBlock(ch, num_heads_upsample, num_head_channels,
                                                 use_new_attention_order))
                if level and i == num_res_blocks:
                    layers.append(
                        ResBlock(ch, time_embed_dim, dropout, out_channels=ch, dims=dims,
                                 use_scale_shift_norm=use_scale_shift_norm, up=True)
                        if resblock_updown else Upsample(ch, True, dims=dims, out_channels=ch)
                    )
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(
            normalization(ch), nn.SiLU(),
            zero_module(conv_nd(dims, int(mult[0] * num_channels), self.out_channels, 3, padding=1)),
        )
        if use_fp16:
            self.convert_to_fp16()

    def convert_to_fp16(self) -> None:
        """Run the torso (input, middle, output blocks) in float16, as guided-diffusion."""
        self.convert_torso(torch.float16)

    def convert_to_fp32(self) -> None:
        self.convert_torso(torch.float32)

    def convert_torso(self, dtype: torch.dtype) -> None:
        """Run the torso in ``dtype`` (float16 or bfloat16); inputs, outputs, the time embedding and
        the normalisations stay float32."""
        for part in (self.input_blocks, self.middle_block, self.output_blocks):
            part.apply(convert_module_to(dtype))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor | None = None):
        if (y is not None) != (self.num_classes is not None):
            raise ConfigError("class labels y must be given if and only if the model is class-conditional")
        emb = self.embed(timesteps)
        if y is not None:
            emb = emb + self.label_emb(y)
        skips: list[torch.Tensor] = []
        h = self.trunk(x, emb, skips)
        emb = emb.type(self.dtype)
        for module in self.output_blocks:
            h = module(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.type(x.dtype))
