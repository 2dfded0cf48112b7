"""The method settings of one EGSDE translation, declared and validated in one place.

Presets, the eager reference sampler, the native sampler and the engine manifest all carry an
``EGSDESettings``; nothing else re-checks these values. Each setting is declared once, as a
field of ``EGSDESettings`` with its ``Declaration`` (type, whether a run of an exported engine may
override it, help text, allowed values and its check): the command line's flags, the service's
query parameters, ``RUNTIME_OVERRIDABLE`` and the parsing of text all come from these
declarations, so adding a setting touches this file alone. The allowed values come from
``choices`` (which the implementing modules read too): this module imports no implementation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Callable

import numpy as np

from ..errors import ConfigError
from .choices import (LOWPASS_FORMS, PERTURB_MODES, SCORE_KINDS, SIMILARITY_KINDS, SOLVER_NAMES, SOLVERS_DOC,
                      SPACINGS, VAR_TYPES, check_eta)

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


# The bounds of the costly values (DESIGN.md: one request's work is bounded before it starts).
# M: the official schedules' length. repeats: the official code uses 1. down_N: no image is
# larger. MAX_BATCH_SIZE: images translated together (Translator, folder jobs, the service).
MAX_M = 1000
MAX_REPEATS = 16
MAX_DOWN_N = 1024
MAX_BATCH_SIZE = 64
# The largest finite float32 (3.4028234663852886e+38): the native sampler computes in float32, so a
# number setting it reads (an energy weight) is bounded by it; beyond it, float32 holds only inf.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_positive_int(value, name: str, hint: str = "", maximum: int | None = None, minimum: int = 1) -> int:
    """``value`` if it is an integer >= ``minimum`` (1: positive; not a bool) and at most
    ``maximum``, else a ``ConfigError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{name} must be {kind}{hint}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}{hint}, got {value!r}")
    return value


def check_batch_size(value, name: str = "batch_size", hint: str = "") -> int:
    """A batch size in 1..``MAX_BATCH_SIZE``."""
    return check_positive_int(value, name, hint, MAX_BATCH_SIZE)


def _finite(value) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float (10**400)
        return False


def check_number(value, name: str, minimum: float, maximum: float) -> float:
    """``value`` if it is a finite number (an int or a float, not a bool) in ``minimum``..``maximum``,
    else a ``ConfigError`` naming ``name`` and the range."""
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value)
            or not minimum <= value <= maximum):
        why = " (the largest float32: the sampler computes in float32)" if maximum == FLOAT32_MAX else ""
        raise ConfigError(f"{name} must be a finite number >= {minimum} and at most {maximum!r}{why}, got {value!r}")
    return value


def _bounded(kind: type, minimum, maximum) -> Callable:
    """The check of an integer (or number: ``kind`` float) setting in ``minimum``..``maximum``."""
    if kind is float:
        return lambda value, name: check_number(value, name, minimum, maximum)
    return lambda value, name: check_positive_int(value, name, maximum=maximum, minimum=minimum)


def _bool(value, name: str) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")


@dataclass(frozen=True)
class Declaration:
    """What a setting is: its text type, whether a run of an exported engine may override it
    (the rest is baked into the engine's graphs), its help text, its allowed values (None: any
    value its check accepts), its check ``(value, name)`` (raising ``ConfigError``) and whether
    the command line offers it (not for what the networks decide); ``minimum``..``maximum``: the
    range of an integer or a number (stated in the help, the service's OpenAPI schema and the
    check; a number's at most ``FLOAT32_MAX``, what the sampler's float32 holds)."""

    kind: type
    overridable: bool
    help: str
    choices: tuple | None = None
    check: Callable | None = None
    flag: bool = True
    maximum: float | None = None
    minimum: float = 1

    def validate(self, value, name: str) -> None:
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{name} must be one of {list(self.choices)}, got {value!r}")
        if self.check is not None:
            self.check(value, name)

    def parse(self, text, name: str):
        """The value of ``text`` (a flag's or a query parameter's)."""
        if self.kind is bool:
            if str(text).lower() not in _TRUE + _FALSE:
                raise ConfigError(f"{name} must be true or false, got {text!r}")
            return str(text).lower() in _TRUE
        try:
            return self.kind(text)
        except ValueError:
            raise ConfigError(f"{name} must be {'an integer' if self.kind is int else 'a number'}, "
                              f"got {text!r}") from None


def setting(default, kind: type, help: str, *, overridable: bool = True, choices=None, check=None, flag=True,
            maximum: float | None = None, minimum: float = 1):
    """A field of ``EGSDESettings`` with its declaration; a ``maximum`` bounds an integer (or a
    number) to minimum..maximum (its check) and is stated in the help."""
    if maximum is not None:
        check, help = _bounded(kind, minimum, maximum), f"{help} ({minimum}..{maximum!r})"
    return field(default=default, metadata={
        "declaration": Declaration(kind, overridable, help, choices, check, flag, maximum, minimum)})


@dataclass(frozen=True)
class EGSDESettings:
    """The settings of one translation (see each field's help, ``DECLARATIONS``)."""

    M: int = setting(500, int, "start time (timesteps noised)", maximum=MAX_M)
    ls: float = setting(500.0, float, "weight of the domain-specific expert, the DSE (0 turns it off; at most the "
                                      "largest float32)", minimum=0, maximum=FLOAT32_MAX)
    li: float = setting(2.0, float, "weight of the domain-independent expert, the low-pass filter (0 turns it off; "
                                    "at most the largest float32)", minimum=0, maximum=FLOAT32_MAX)
    s1: str = setting("cosine", str, "similarity of the DSE features: cosine or neg_l2 (baked into the DSE "
                                     "gradient graph)", overridable=False, choices=SIMILARITY_KINDS)
    s2: str = setting("neg_l2", str, "energy of the low-pass filter: neg_l2 or cosine", choices=SIMILARITY_KINDS)
    lowpass: str = setting("gradient", str, "how an update applies the low-pass expert (s2 neg_l2): gradient (the "
                                            "official explicit step, stable only for small steps), implicit "
                                            "(the proximal step) or exact (the pull integrated exactly); the two "
                                            "stable forms equal the gradient step to first order and stay stable "
                                            "at any li and step size", choices=LOWPASS_FORMS)
    down_N: int = setting(32, int, "low-pass factor", maximum=MAX_DOWN_N)
    var_type: str = setting("fixedsmall", str, "fixedsmall or fixedlarge (the ddpm solver's variance)",
                            choices=VAR_TYPES)
    score_kind: str = setting("adm", str, "the score network's kind (baked into the engine)", overridable=False,
                              choices=SCORE_KINDS, flag=False)
    steps: int | None = setting(None, int, "number of updates, from M-1 to 0 as spacing places them (default: all M)")
    spacing: str = setting("uniform", str, "where fewer updates than M fall (always M-1 first, 0 last): uniform: "
                           "evenly in t (the official respacing); logsnr: evenly in log-SNR; karras: Karras et al. "
                           "(2022)'s rho=7 steps in sigma, denser near t=0", choices=SPACINGS)
    solver: str = setting("ddpm", str, "the sampling solver (ddpm: the official update; the others take eta and "
                                       f"fewer steps): {SOLVERS_DOC}", choices=SOLVER_NAMES)
    eta: float = setting(1.0, float, "stochasticity of every solver but ddpm (0 deterministic, 1 the SDE; "
                                     "SA-Solver's tau^2)", check=lambda v, n: check_eta(v))
    eta_min_t: int = setting(0, int, "the noise scale as a function of t (SA-Solver's tau(t) window): eta applies "
                                     "to the updates at timesteps >= eta_min_t, the ones below run deterministically "
                                     "(0: eta everywhere; not for ddpm)", minimum=0, maximum=MAX_M)
    perturb: str = setting("shared", str, "shared (the official code) or fresh (the paper's Algorithm 1)",
                           choices=PERTURB_MODES)
    repeats: int = setting(1, int, "the official sample_step repeats", maximum=MAX_REPEATS)
    ilvr: bool = setting(False, bool, "the ILVR baseline: replace the low-pass band of each sample with the "
                                      "perturbed source's", check=_bool)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (f.name == "steps" and value is None):
                f.metadata["declaration"].validate(value, f.name)
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int)
                                       or not 1 <= self.steps <= self.M):
            raise ConfigError(f"steps must be None or an integer in 1..M ({self.M}), got {self.steps!r}")
        if self.lowpass != "gradient" and self.s2 != "neg_l2":
            raise ConfigError(f"lowpass={self.lowpass!r} integrates the squared-distance expert (s2='neg_l2'), got "
                              f"s2={self.s2!r}: pass lowpass='gradient' for the cosine energy")
        if self.solver == "ddpm" and self.eta_min_t != 0:
            raise ConfigError(f"eta_min_t={self.eta_min_t!r} does not apply to the ddpm solver (its noise is the "
                              "schedule's variance): pass another solver, or eta_min_t=0")
        if self.solver == "ddpm" and self.eta != 1.0:
            raise ConfigError(f"eta={self.eta!r} does not apply to the ddpm solver (its noise is the schedule's "
                              "variance, var_type): pass another solver (e.g. 'ddim', 'dpmpp-2m-sde', "
                              "'sa-solver-1') to set eta")

    def check_fits(self, image_size: int, num_timesteps: int) -> None:
        """These settings must fit an image size and a schedule length."""
        if self.M > num_timesteps:
            raise ConfigError(f"M={self.M} exceeds the schedule's {num_timesteps} timesteps")
        if image_size % self.down_N:
            raise ConfigError(f"down_N={self.down_N} must divide the image size {image_size}")

    @property
    def num_updates(self) -> int:
        return self.steps or self.M

    @property
    def network_evaluations(self) -> int:
        """Score-network calls of one translation (each with one DSE gradient when ls > 0)."""
        return self.num_updates * self.repeats

    def with_overrides(self, **overrides) -> "EGSDESettings":
        """These settings with ``overrides`` (checked as construction is); a name that is no
        setting is a ``ConfigError`` with the closest names (``did_you_mean``)."""
        known = list(asdict(self))
        unknown = sorted(set(overrides) - set(known))
        if len(unknown) == 1:
            raise ConfigError(f"unknown setting {unknown[0]!r}{did_you_mean(unknown[0], known)}; the settings: {known}")
        if unknown:
            hints = "".join(did_you_mean(name, known, f" for {name!r}") for name in unknown)
            raise ConfigError(f"unknown settings: {unknown}{hints}; the settings: {known}")
        return replace(self, **overrides)

    def to_dict(self) -> dict:
        return asdict(self)


# Every setting's declaration, in field order; what a run of an exported engine may change.
DECLARATIONS: dict[str, Declaration] = {f.name: f.metadata["declaration"] for f in fields(EGSDESettings)}
RUNTIME_OVERRIDABLE = tuple(name for name, d in DECLARATIONS.items() if d.overridable)


def did_you_mean(name: str, names, what: str = "") -> str:
    """`` (did you mean 'steps'?)`` for a misspelled ``name``: the one of ``names`` equal to it
    but for case (``m``: ``M``), else the closest (``difflib``); empty when none is close."""
    from difflib import get_close_matches

    names = [str(n) for n in names]
    close = [n for n in names if n.lower() == str(name).lower()] or get_close_matches(str(name), names, n=1)
    return f" (did you mean {close[0]!r}{what}?)" if close else ""


def check_setting_name(name: str, allowed=RUNTIME_OVERRIDABLE, handled=()) -> None:
    """A ``ConfigError`` unless ``name`` is one of ``allowed`` or ``handled`` (names the caller
    takes itself, such as the service's ``seed``). A declared setting outside them is fixed in
    this engine (baked into its graphs), kept apart from a name that is no setting at all (with
    the closest names taken here); both messages list the names taken here."""
    taken = [*handled, *allowed]
    if name in taken:
        return
    if name in DECLARATIONS:
        raise ConfigError(f"setting {name!r} is fixed in this engine (baked into its graphs); overridable here: "
                          f"{taken}")
    raise ConfigError(f"unknown setting {name!r}{did_you_mean(name, taken)}; overridable here: {taken}")


def overrides_from_text(params, allowed=RUNTIME_OVERRIDABLE, handled=()) -> dict:
    """Settings given as text (e.g. ``{"M": "300", "ilvr": "true"}``) as typed overrides; an
    unknown or non-overridable name (``check_setting_name``), a value of the wrong type or one
    its declaration refuses is a ``ConfigError``. ``handled``: names the caller takes itself
    (the service's ``seed``): skipped here, and listed and suggested with ``allowed``."""
    overrides = {}
    for name, text in params.items():
        check_setting_name(name, allowed, handled)
        if name in handled:
            continue
        overrides[name] = DECLARATIONS[name].parse(text, name)
        DECLARATIONS[name].validate(overrides[name], name)
    return overrides
