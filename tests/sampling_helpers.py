"""Keyword front-ends of the samplers for tests: settings fields and run options in one call,
e.g. ``reference_translate(x0, unet, dse, M=8, ls=500.0, noise=noise)``."""

from __future__ import annotations

from egsde_rt import native, reference
from egsde_rt.settings import EGSDESettings

RUN_OPTIONS = ("seed", "noise", "perturb_noise", "schedule", "class_label", "callback")


def split_settings(kwargs: dict) -> tuple[EGSDESettings, dict]:
    """(EGSDESettings of the settings fields, the run options)."""
    kwargs = dict(kwargs)
    options = {k: kwargs.pop(k) for k in RUN_OPTIONS if k in kwargs}
    return EGSDESettings(**kwargs), options


def reference_translate(x0, score_model, dse, **kwargs):
    settings, options = split_settings(kwargs)
    return reference.translate(x0, score_model, dse, settings, **options)


def native_translate(x0, score_model, dse, **kwargs):
    settings, options = split_settings(kwargs)
    return native.translate(x0, score_model, dse, settings, **options)
