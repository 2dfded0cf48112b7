"""A setting's name, as a user types it: a misspelled name says which name was meant, a known
setting that this engine fixes says so (two different mistakes, two different messages), and a
caller's own names (the service's ``seed``) are listed and suggested with the settings."""

import pytest

from egsde_rt.errors import ConfigError
from egsde_rt.method.settings import RUNTIME_OVERRIDABLE, EGSDESettings, check_setting_name, overrides_from_text


def _refusal(call) -> str:
    with pytest.raises(ConfigError) as refused:
        call()
    return str(refused.value)


@pytest.mark.parametrize("name,meant", [("step", "'steps'"), ("solvr", "'solver'"), ("m", "'M'"),
                                        ("down_n", "'down_N'"), ("etamin_t", "'eta_min_t'")])
def test_a_misspelled_setting_names_the_setting_meant(name, meant):
    message = _refusal(lambda: overrides_from_text({name: "3"}))
    assert message.startswith(f"unknown setting {name!r} (did you mean {meant}?); overridable here: ['M', ")
    assert "fixed" not in message


def test_a_name_close_to_nothing_is_unknown_without_a_guess():
    message = _refusal(lambda: overrides_from_text({"lambda_s": "1"}))
    assert message == f"unknown setting 'lambda_s'; overridable here: {list(RUNTIME_OVERRIDABLE)}"


@pytest.mark.parametrize("name", ["s1", "score_kind"])
def test_a_setting_fixed_in_the_engine_is_not_called_unknown(name):
    message = _refusal(lambda: overrides_from_text({name: "cosine"}))
    assert message == (f"setting {name!r} is fixed in this engine (baked into its graphs); overridable here: "
                       f"{list(RUNTIME_OVERRIDABLE)}")


def test_the_callers_own_names_are_listed_suggested_and_left_to_it():
    """The service takes ``seed`` itself: ``seed`` is skipped here, listed first, and ``seeds``
    or ``sead`` are taken for it."""
    assert overrides_from_text({"seed": "7", "M": "3"}, handled=("seed",)) == {"M": 3}
    message = _refusal(lambda: overrides_from_text({"sead": "7"}, handled=("seed",)))
    assert message.startswith("unknown setting 'sead' (did you mean 'seed'?); overridable here: ['seed', 'M', ")
    fixed = _refusal(lambda: overrides_from_text({"s1": "cosine"}, handled=("seed",)))
    assert fixed.endswith(f"overridable here: {['seed', *RUNTIME_OVERRIDABLE]}")
    assert "seed" not in _refusal(lambda: overrides_from_text({"sead": "7"}))  # not handled: not offered
    check_setting_name("seed", handled=("seed",))  # taken, no error


def test_with_overrides_names_the_setting_meant():
    settings = EGSDESettings()
    message = _refusal(lambda: settings.with_overrides(step=4))
    assert message.startswith("unknown setting 'step' (did you mean 'steps'?); the settings: ['M', 'ls', ")
    both = _refusal(lambda: settings.with_overrides(m=3, lambda_s=1))
    assert both.startswith("unknown settings: ['lambda_s', 'm'] (did you mean 'M' for 'm'?); the settings: ")
