"""The paper's presets: which score model and DSE to build, and the method settings.

Values from the EGSDE paper (Zhao et al., NeurIPS 2022, Table 1 and Appendix) and the official
code's run profiles. ``egsde_rt.models.build_preset_models`` builds a preset's networks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from .settings import EGSDESettings

ADM_AFHQ_DOG_256 = dict(  # afhq_dog_4m.pt
    image_size=256, num_channels=128, num_res_blocks=1, channel_mult="", learn_sigma=True,
    class_cond=False, attention_resolutions="16", num_heads=4, num_head_channels=64,
    num_heads_upsample=-1, use_scale_shift_norm=True, dropout=0.0, resblock_updown=True,
    use_fp16=False, use_new_attention_order=False,
)

DDPM_CELEBAHQ_FEMALE_256 = {  # celebahq_female_ddpm.pth
    "data": {"image_size": 256},
    "model": {"type": "simple", "in_channels": 3, "out_ch": 3, "ch": 128, "ch_mult": [1, 1, 2, 2, 4, 4],
              "num_res_blocks": 2, "attn_resolutions": [16], "dropout": 0.0, "resamp_with_conv": True},
    "diffusion": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
                  "num_diffusion_timesteps": 1000},
}


def dse_256(num_class: int) -> dict:
    return dict(image_size=256, num_class=num_class, classifier_use_fp16=False, classifier_width=128,
                classifier_depth=2, classifier_attention_resolutions="32,16,8",
                classifier_use_scale_shift_norm=True, classifier_resblock_updown=True,
                classifier_pool="attention")


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    score_config: dict
    dse_config: dict
    settings: EGSDESettings
    checkpoints: dict = field(default_factory=dict)  # the official file names, for the user's reference

    @property
    def score_class(self) -> str:
        """The ``egsde_rt.models`` class of the score network (``models.build_preset_models`` builds it)."""
        return "DDPMUNet" if self.settings.score_kind == "ddpm" else "ADMUNet"

    @property
    def image_size(self) -> int:
        if self.settings.score_kind == "ddpm":
            return int(self.score_config["data"]["image_size"])
        return int(self.score_config["image_size"])


_PAPER = dict(M=500, ls=500.0, li=2.0, s1="cosine", s2="neg_l2", down_N=32, var_type="fixedsmall")

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("cat2dog", "AFHQ cat -> dog", ADM_AFHQ_DOG_256, dse_256(2),
               EGSDESettings(score_kind="adm", **_PAPER),
               {"score": "afhq_dog_4m.pt", "dse": "cat2dog_dse.pt"}),
        Preset("wild2dog", "AFHQ wild -> dog", ADM_AFHQ_DOG_256, dse_256(2),
               EGSDESettings(score_kind="adm", **_PAPER),
               {"score": "afhq_dog_4m.pt", "dse": "wild2dog_dse.pt"}),
        Preset("male2female", "CelebA-HQ male -> female", DDPM_CELEBAHQ_FEMALE_256, dse_256(2),
               EGSDESettings(score_kind="ddpm", **_PAPER),
               {"score": "celebahq_female_ddpm.pth", "dse": "male2female_dse.pt"}),
        Preset("multi_afhq", "AFHQ cat/wild -> dog with the 3-class DSE", ADM_AFHQ_DOG_256, dse_256(3),
               EGSDESettings(score_kind="adm", **_PAPER),
               {"score": "afhq_dog_4m.pt", "dse": "afhq_dse.pt"}),
        Preset("cat2dog_dagger", "AFHQ cat -> dog, the EGSDE\u2020 variant (more realism)",
               ADM_AFHQ_DOG_256, dse_256(2),
               EGSDESettings(score_kind="adm", **{**_PAPER, "M": 600, "ls": 700.0, "li": 0.5}),
               {"score": "afhq_dog_4m.pt", "dse": "cat2dog_dse.pt"}),
    ]
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
