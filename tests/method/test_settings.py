"""The method settings (egsde_rt.method.settings): every setting declared once, with its type,
bound or allowed values; the checks' messages naming the setting, the value and what to pass
instead; construction, overrides and ``to_dict`` round trips; the text parser; the shared integer
checks (``check_positive_int``, ``check_batch_size``) and ``check_fits``. (Property-based bad
input: tests/reliability/test_api_properties.py; the solver and low-pass declarations with their
forms: test_solvers.py, test_stable_lowpass.py.)"""

import dataclasses
import json
import math

import numpy as np
import pytest

from egsde_rt.errors import ConfigError
from egsde_rt.method.settings import (DECLARATIONS, FLOAT32_MAX, MAX_BATCH_SIZE, MAX_DOWN_N, MAX_M, MAX_REPEATS,
                                      RUNTIME_OVERRIDABLE, EGSDESettings, check_batch_size, check_positive_int,
                                      overrides_from_text)


# --- declarations -------------------------------------------------------------------------------

def test_every_field_is_declared_once_with_its_type():
    """DECLARATIONS is the fields, in order, each with the type its annotation names."""
    fields = dataclasses.fields(EGSDESettings)
    assert list(DECLARATIONS) == [f.name for f in fields]
    for f in fields:
        assert DECLARATIONS[f.name] is f.metadata["declaration"]
        assert f.type.split(" | ")[0] == DECLARATIONS[f.name].kind.__name__, f.name


def test_every_text_setting_has_its_allowed_values_and_every_default_is_valid():
    assert all(d.choices for d in DECLARATIONS.values() if d.kind is str)
    defaults = EGSDESettings()
    for name, d in DECLARATIONS.items():
        value = getattr(defaults, name)
        if value is not None:  # steps: None (every update)
            d.validate(value, name)
            assert d.parse(str(value), name) == value, name


def test_the_bounds_are_the_documented_ones():
    """The declared ranges and the batch bound: docs/reliability.md's table of bounds (the energy
    weights: up to the largest float32, what the sampler computes in)."""
    bounds = {name: (d.minimum, d.maximum) for name, d in DECLARATIONS.items() if d.maximum is not None}
    assert bounds == {"M": (1, MAX_M), "ls": (0, FLOAT32_MAX), "li": (0, FLOAT32_MAX), "down_N": (1, MAX_DOWN_N),
                      "eta_min_t": (0, MAX_M), "repeats": (1, MAX_REPEATS)}
    assert (MAX_M, MAX_REPEATS, MAX_DOWN_N, MAX_BATCH_SIZE) == (1000, 16, 1024, 64)
    assert FLOAT32_MAX == float(np.float32(3.4028235e38)) and np.isfinite(np.float32(FLOAT32_MAX))


def test_every_number_setting_is_refused_beyond_float32():
    """What the sampler reads in float32 (the energy weights; eta, in [0, 1]) is refused where
    float32 holds only inf (1e39 became inf, then NaN, then a 422), in the settings, the text
    parser and the help, naming the setting and its range; the range's ends are accepted."""
    numbers = [name for name, d in DECLARATIONS.items() if d.kind is float]
    assert numbers == ["ls", "li", "eta"]
    beyond = (1e39, -1e39, 3.41e38, math.inf, -math.inf, math.nan, 10**39, 10**400)
    for name in numbers:
        solver = {} if name != "eta" else {"solver": "ddim"}
        for value in beyond:
            with pytest.raises(ConfigError, match=f"^{name} must be"):
                EGSDESettings(**{name: value}, **solver)
        with pytest.raises(ConfigError, match=f"^{name} must be"):
            overrides_from_text({name: "1e39"})
    for name in ("ls", "li"):
        assert f"(0..{FLOAT32_MAX!r})" in DECLARATIONS[name].help
        assert getattr(EGSDESettings(**{name: FLOAT32_MAX}), name) == FLOAT32_MAX
        assert getattr(EGSDESettings(**{name: 0}), name) == 0
        assert np.isfinite(np.float32(FLOAT32_MAX))
        with pytest.raises(ConfigError) as refused:
            overrides_from_text({name: "1e39"})
        assert str(refused.value) == (f"{name} must be a finite number >= 0 and at most 3.4028234663852886e+38 (the "
                                      "largest float32: the sampler computes in float32), got 1e+39")


def test_every_costly_setting_has_a_declared_bound():
    """Each integer setting has a declared range (steps: M), accepted at its ends and refused past
    them; the largest run the bounds allow is 16 000 network evaluations."""
    bounded = [name for name, d in DECLARATIONS.items() if d.kind is int and name != "steps"]
    assert bounded == ["M", "down_N", "eta_min_t", "repeats"]
    for name in bounded:
        minimum, maximum = DECLARATIONS[name].minimum, DECLARATIONS[name].maximum
        assert maximum and f"{minimum}..{maximum}" in DECLARATIONS[name].help
        solver = {} if name != "eta_min_t" else {"solver": "ddim"}  # eta_min_t is not ddpm's
        for value in (minimum, maximum):
            assert getattr(EGSDESettings(**{name: value}, **solver), name) == value
        with pytest.raises(ConfigError, match=f"{name} must be at most {maximum}"):
            EGSDESettings(**{name: maximum + 1}, **solver)
        with pytest.raises(ConfigError, match=f"{name} must be"):
            EGSDESettings(**{name: minimum - 1}, **solver)
    assert EGSDESettings(M=MAX_M, repeats=MAX_REPEATS).network_evaluations == 16_000


def test_only_what_the_graphs_bake_in_is_fixed_at_run_time():
    """A run of an exported engine may override every setting but the DSE's similarity and the
    score network's kind; the command line offers every setting but the network's kind."""
    assert RUNTIME_OVERRIDABLE == tuple(n for n in DECLARATIONS if n not in ("s1", "score_kind"))
    assert [n for n, d in DECLARATIONS.items() if not d.flag] == ["score_kind"]


# --- checks and their messages ------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    (dict(M=0), "M must be a positive integer, got 0"),
    (dict(M=-1), "M must be a positive integer, got -1"),
    (dict(M=True), "M must be a positive integer, got True"),
    (dict(M=2.0), "M must be a positive integer, got 2.0"),
    (dict(M=1001), "M must be at most 1000, got 1001"),
    (dict(repeats=0), "repeats must be a positive integer, got 0"),
    (dict(eta_min_t=-1, solver="ddim"), "eta_min_t must be an integer >= 0, got -1"),
    (dict(down_N=2**70), f"down_N must be at most 1024, got {2**70}"),
    (dict(ls=-1.0), "ls must be a finite number >= 0 and at most 3.4028234663852886e+38 (the largest float32: "
                    "the sampler computes in float32), got -1.0"),
    (dict(li=math.inf), "li must be a finite number >= 0"),
    (dict(li=math.nan), "li must be a finite number >= 0"),
    (dict(ls=10**400), "ls must be a finite number >= 0"),
    (dict(ls=1e39), "ls must be a finite number >= 0 and at most 3.4028234663852886e+38"),
    (dict(ls=True), "ls must be a finite number >= 0"),
    (dict(li="2"), "li must be a finite number >= 0 and at most 3.4028234663852886e+38 (the largest float32: "
                   "the sampler computes in float32), got '2'"),
    (dict(s2="l1"), "s2 must be one of ['cosine', 'neg_l2'], got 'l1'"),
    (dict(perturb="new"), "perturb must be one of ['shared', 'fresh'], got 'new'"),
    (dict(score_kind="vae"), "score_kind must be one of ['adm', 'ddpm'], got 'vae'"),
    (dict(var_type="learned"), "var_type must be one of"),
    (dict(ilvr=1), "ilvr must be true or false, got 1"),
    (dict(steps=0), "steps must be None or an integer in 1..M (500), got 0"),
    (dict(M=8, steps=9), "steps must be None or an integer in 1..M (8), got 9"),
    (dict(steps=True), "steps must be None or an integer in 1..M (500), got True"),
    (dict(steps=2.5), "steps must be None or an integer in 1..M (500), got 2.5"),
])
def test_a_bad_value_is_refused_naming_the_setting_the_value_and_what_is_allowed(kwargs, message):
    with pytest.raises(ConfigError) as refused:
        EGSDESettings(**kwargs)
    assert message in str(refused.value)


@pytest.mark.parametrize("kwargs,problem,fix", [
    (dict(lowpass="exact", s2="cosine"), "lowpass='exact' integrates the squared-distance expert",
     "pass lowpass='gradient' for the cosine energy"),
    (dict(eta_min_t=5), "eta_min_t=5 does not apply to the ddpm solver", "pass another solver, or eta_min_t=0"),
    (dict(eta=0.5), "eta=0.5 does not apply to the ddpm solver", "pass another solver (e.g. 'ddim'"),
])
def test_settings_that_do_not_go_together_are_refused_saying_what_to_pass(kwargs, problem, fix):
    with pytest.raises(ConfigError) as refused:
        EGSDESettings(**kwargs)
    assert problem in str(refused.value) and fix in str(refused.value)
    fixed = {"lowpass": "gradient"} if "lowpass" in kwargs else {"solver": "ddim"}
    EGSDESettings(**{**kwargs, **fixed})  # the fix it names is accepted


def test_check_fits_names_the_schedule_and_the_image_size():
    settings = EGSDESettings(M=500, down_N=32)
    settings.check_fits(image_size=256, num_timesteps=500)  # at the ends: fits
    with pytest.raises(ConfigError, match="M=500 exceeds the schedule's 499 timesteps"):
        settings.check_fits(image_size=256, num_timesteps=499)
    with pytest.raises(ConfigError, match="down_N=32 must divide the image size 240"):
        settings.check_fits(image_size=240, num_timesteps=1000)


def test_check_positive_int_and_check_batch_size_bounds():
    assert check_batch_size(1) == 1 and check_batch_size(MAX_BATCH_SIZE) == MAX_BATCH_SIZE
    for bad, message in ((0, "batch_size must be a positive integer, got 0"), (True, "a positive integer, got True"),
                         (1.5, "a positive integer, got 1.5"), ("2", "a positive integer, got '2'"),
                         (None, "a positive integer, got None"), (65, "batch_size must be at most 64, got 65")):
        with pytest.raises(ConfigError) as refused:
            check_batch_size(bad)
        assert message in str(refused.value)
    with pytest.raises(ConfigError, match=r"^--max-batch-size must be at most 64 \(the hint\), got 65$"):
        check_batch_size(65, "--max-batch-size", " (the hint)")
    assert check_positive_int(0, "n", minimum=0) == 0 and check_positive_int(7, "n", maximum=7) == 7
    with pytest.raises(ConfigError, match=r"^n must be an integer >= 0, got -1$"):
        check_positive_int(-1, "n", minimum=0)
    with pytest.raises(ConfigError, match=r"^n must be at most 7, got 8$"):
        check_positive_int(8, "n", maximum=7)
    assert check_positive_int(10**12, "n") == 10**12  # no maximum: no bound


# --- construction, overrides, to_dict -----------------------------------------------------------

def test_to_dict_round_trips_through_construction_and_json():
    """What a manifest stores (to_dict as JSON) builds the same settings."""
    for settings in (EGSDESettings(), EGSDESettings(M=40, ls=0.0, li=3.5, s1="neg_l2", lowpass="exact", down_N=8,
                                                    steps=7, spacing="karras", solver="sa-solver-1", eta=0.3,
                                                    eta_min_t=12, perturb="fresh", repeats=2, ilvr=True,
                                                    score_kind="ddpm", var_type="fixedlarge")):
        as_dict = settings.to_dict()
        assert list(as_dict) == list(DECLARATIONS)
        assert EGSDESettings(**as_dict) == settings
        assert EGSDESettings(**json.loads(json.dumps(as_dict))) == settings


def test_settings_are_frozen_and_overrides_are_checked_as_construction_is():
    settings = EGSDESettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.M = 3
    changed = settings.with_overrides(M=40, steps=4, repeats=3)
    assert (settings.M, changed.M, changed.num_updates, changed.network_evaluations) == (500, 40, 4, 12)
    with pytest.raises(ConfigError, match=r"unknown settings: \['lambda_s', 'm'\]"):
        settings.with_overrides(m=3, lambda_s=1)
    with pytest.raises(ConfigError, match="steps must be None or an integer in 1..M"):
        settings.with_overrides(M=4, steps=5)


# --- settings as text ---------------------------------------------------------------------------

def test_text_is_parsed_by_each_settings_type():
    assert overrides_from_text({"M": "300", "ls": "1e3", "s2": "cosine", "steps": "4", "ilvr": "YES"}) == {
        "M": 300, "ls": 1000.0, "s2": "cosine", "steps": 4, "ilvr": True}
    assert [overrides_from_text({"ilvr": t})["ilvr"] for t in ("1", "true", "on", "0", "False", "off", "no")] == [
        True, True, True, False, False, False, False]
    assert overrides_from_text({}) == {}


@pytest.mark.parametrize("params,message", [
    ({"M": "3.5"}, "M must be an integer, got '3.5'"),
    ({"ls": "abc"}, "ls must be a number, got 'abc'"),
    ({"ilvr": "maybe"}, "ilvr must be true or false, got 'maybe'"),
    ({"M": "5000"}, "M must be at most 1000, got 5000"),
    ({"li": "nan"}, "li must be a finite number >= 0"),
    ({"ls": "1e39"}, "ls must be a finite number >= 0 and at most 3.4028234663852886e+38"),
    ({"solver": "euler"}, "solver must be one of"),
    ({"s1": "neg_l2"}, "setting 's1' is fixed in this engine (baked into its graphs); overridable here: ['M', 'ls'"),
    ({"lambda_s": "1"}, "unknown setting 'lambda_s'"),
])
def test_bad_text_is_refused_naming_the_setting_and_what_it_takes(params, message):
    with pytest.raises(ConfigError) as refused:
        overrides_from_text(params)
    assert message in str(refused.value)


def test_text_takes_only_the_allowed_names():
    assert overrides_from_text({"M": "3"}, allowed=("M",)) == {"M": 3}
    fixed = r"setting 'ls' is fixed in this engine \(baked into its graphs\); overridable here: \['M'\]"
    with pytest.raises(ConfigError, match=fixed):
        overrides_from_text({"ls": "1"}, allowed=("M",))
