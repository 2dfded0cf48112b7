import pytest

from egsde_rt.errors import ConfigError
from egsde_rt.method.presets import PRESETS, get_preset


def test_paper_values():
    for name in ("cat2dog", "wild2dog", "male2female", "multi_afhq"):
        s = get_preset(name).settings
        assert (s.M, s.ls, s.li, s.s1, s.s2, s.down_N) == (500, 500.0, 2.0, "cosine", "neg_l2", 32)
    dagger = get_preset("cat2dog_dagger").settings
    assert (dagger.M, dagger.ls, dagger.li) == (600, 700.0, 0.5)
    assert get_preset("male2female").settings.score_kind == "ddpm"
    assert get_preset("multi_afhq").dse_config["num_class"] == 3
    assert all(p.image_size == 256 for p in PRESETS.values())


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset"):
        get_preset("horse2zebra")
