"""The method settings of one EGSDE translation, validated in one place.

Presets, the eager reference sampler, the native sampler and the engine manifest all carry an
``EGSDESettings``; nothing else re-checks these values.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from .errors import ConfigError
from .schedule import VAR_TYPES
from .similarity import check_kind

SCORE_KINDS = ("adm", "ddpm")
PERTURB_MODES = ("shared", "fresh")
# What a run of an exported engine may change: the rest (s1, the score kind) is baked into its graphs.
RUNTIME_OVERRIDABLE = ("M", "ls", "li", "steps", "s2", "down_N", "var_type", "perturb", "repeats", "ilvr")
# The type of each setting a user may give as text (command-line flags, query parameters).
SETTING_TYPES = {"M": int, "ls": float, "li": float, "steps": int, "s1": str, "s2": str, "down_N": int,
                 "var_type": str, "perturb": str, "repeats": int, "ilvr": bool}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def check_positive_int(value, name: str, hint: str = "") -> int:
    """``value`` if it is an integer >= 1 (not a bool), else a ``ConfigError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer{hint}, got {value!r}")
    return value


def overrides_from_text(params, allowed=RUNTIME_OVERRIDABLE) -> dict:
    """Settings given as text (e.g. ``{"M": "300", "ilvr": "true"}``) as typed overrides; an
    unknown or non-overridable name or a value of the wrong type is a ``ConfigError``."""
    overrides = {}
    for name, text in params.items():
        if name not in allowed:
            raise ConfigError(f"unknown or fixed setting {name!r}; overridable: {list(allowed)}")
        kind = SETTING_TYPES[name]
        if kind is bool:
            if str(text).lower() not in _TRUE + _FALSE:
                raise ConfigError(f"{name} must be true or false, got {text!r}")
            overrides[name] = str(text).lower() in _TRUE
            continue
        try:
            overrides[name] = kind(text)
        except ValueError:
            raise ConfigError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    return overrides


@dataclass(frozen=True)
class EGSDESettings:
    """``M``: start time (number of timesteps noised); ``ls`` / ``li``: weights of the
    domain-specific and domain-independent experts; ``s1`` / ``s2``: their similarity kinds;
    ``down_N``: low-pass factor; ``steps``: respaced number of updates (None: all M);
    ``perturb``: "shared" (the code: one draw e for every perturbed source) or "fresh" (the
    paper's Algorithm 1); ``repeats``: the official ``sample_step``; ``ilvr``: replace the
    low-pass band of each sample with that of the perturbed source (the ILVR baseline)."""

    M: int = 500
    ls: float = 500.0
    li: float = 2.0
    s1: str = "cosine"
    s2: str = "neg_l2"
    down_N: int = 32
    var_type: str = "fixedsmall"
    score_kind: str = "adm"
    steps: int | None = None
    perturb: str = "shared"
    repeats: int = 1
    ilvr: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.M, int) or self.M < 1:
            raise ConfigError(f"M must be a positive integer, got {self.M!r}")
        for name in ("ls", "li"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0 (an energy weight; 0 turns that expert off), "
                                  f"got {value!r}")
        check_kind(self.s1, "s1")
        check_kind(self.s2, "s2")
        if not isinstance(self.down_N, int) or self.down_N < 1:
            raise ConfigError(f"down_N must be a positive integer, got {self.down_N!r}")
        if self.var_type not in VAR_TYPES:
            raise ConfigError(f"var_type must be one of {VAR_TYPES}, got {self.var_type!r}")
        if self.score_kind not in SCORE_KINDS:
            raise ConfigError(f"score_kind must be one of {SCORE_KINDS}, got {self.score_kind!r}")
        if self.steps is not None and not (isinstance(self.steps, int) and 1 <= self.steps <= self.M):
            raise ConfigError(f"steps must be None or an integer in 1..M ({self.M}), got {self.steps!r}")
        if self.perturb not in PERTURB_MODES:
            raise ConfigError(f"perturb must be one of {PERTURB_MODES}, got {self.perturb!r}")
        if not isinstance(self.repeats, int) or self.repeats < 1:
            raise ConfigError(f"repeats must be a positive integer, got {self.repeats!r}")

    def check_fits(self, image_size: int, num_timesteps: int) -> None:
        """These settings must fit an image size and a schedule length."""
        if self.M > num_timesteps:
            raise ConfigError(f"M={self.M} exceeds the schedule's {num_timesteps} timesteps")
        if image_size % self.down_N:
            raise ConfigError(f"down_N={self.down_N} must divide the image size {image_size}")

    @property
    def num_updates(self) -> int:
        return self.steps or self.M

    def with_overrides(self, **overrides) -> "EGSDESettings":
        unknown = set(overrides) - set(asdict(self))
        if unknown:
            raise ConfigError(f"unknown settings: {sorted(unknown)}")
        return replace(self, **overrides)

    def to_dict(self) -> dict:
        return asdict(self)
