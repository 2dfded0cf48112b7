"""egsde-rt bench --quality: the match rule, the choice, and a small sweep end to end."""

import json

import pytest

from egsde_rt.bench.quality import (QualityConfig, best_per_budget, choose, format_quality, grid, matches,
                                    pareto_front, plot_quality, run_quality, student_matches)
from egsde_rt.demo import setting_label

OFFICIAL = {"realism": 0.87, "fd": 312.0, "psnr_source": 27.05, "psnr_target": 24.0, "network_evaluations": 60,
            "settings": {"solver": "ddpm", "steps": 60, "ls": 1000.0}}


def _row(evals, **changes):
    return {**OFFICIAL, "network_evaluations": evals,
            "settings": {"solver": "dpmpp-2m-sde", "steps": evals, "ls": 500.0}, **changes}


@pytest.mark.parametrize("changes,ok", [
    ({}, True),
    ({"realism": 0.851}, True), ({"realism": 0.849}, False),      # within 0.02
    ({"fd": 312.0}, True), ({"fd": 312.1}, False),                # no worse
    ({"psnr_source": 26.56}, True), ({"psnr_source": 26.54}, False), ({"psnr_source": 27.56}, False),  # 0.5 dB
    ({"psnr_target": 23.71}, True), ({"psnr_target": 23.69}, False),  # 0.3 dB
])
def test_the_match_rule(changes, ok):
    assert matches(_row(8, **changes), OFFICIAL) is ok


@pytest.mark.parametrize("changes,ok", [
    ({}, True),
    ({"realism": 0.851}, True), ({"realism": 0.849}, False),      # within 0.02
    ({"fd": 390.0}, True), ({"fd": 390.1}, False),                # at most 1.25 x
    ({"psnr_source": 26.56}, True), ({"psnr_source": 26.54}, False), ({"psnr_source": 29.0}, True),  # a floor only
    ({"psnr_target": 23.71}, True), ({"psnr_target": 23.69}, False),  # 0.3 dB
])
def test_the_distillation_rule(changes, ok):
    """A student is held to the issue's rule: FD up to 1.25 x the official's, PSNRs as floors."""
    assert student_matches(_row(5, **changes), OFFICIAL) is ok


def test_choose_takes_the_fewest_evaluations_that_match():
    rows = [_row(12), _row(6, fd=400.0), _row(8, fd=300.0), _row(8, fd=250.0)]
    assert choose(rows, OFFICIAL) is rows[3]
    assert choose([_row(6, realism=0.5)], OFFICIAL) is None


def test_the_pareto_front_keeps_what_no_other_row_beats():
    """A row leaves the front only when another is at least as good on evaluations, PSNR to the
    true target, FD and realism, and better on one; the front is ordered by evaluations."""
    cheap = _row(10, psnr_target=23.0, fd=320.0)
    close = _row(20, psnr_target=23.9, fd=300.0)
    beaten = _row(20, psnr_target=23.8, fd=310.0)  # close is better on both, equal elsewhere
    tradeoff = _row(20, psnr_target=23.5, fd=250.0)  # lower FD, further from the target: kept
    official = {**OFFICIAL}
    front = pareto_front([official, beaten, close, cheap, tradeoff])
    assert front == [cheap, close, tradeoff, official]
    assert pareto_front([close, {**close}]) == [close, close]  # equals do not dominate each other


def test_the_sweep_has_a_spacing_axis(monkeypatch):
    config = QualityConfig(solvers=("ddpm", "dpmpp-2m-sde"), updates=(4,), ls=(500.0,), spacing=("uniform", "karras"))
    points = grid(config, M=12)
    assert [(p["solver"], p["spacing"]) for p in points] == [("ddpm", "uniform"), ("ddpm", "karras"),
                                                              ("dpmpp-2m-sde", "uniform"), ("dpmpp-2m-sde", "karras")]
    assert "karras" in setting_label({**points[1], "steps": 4}) and "uniform" not in setting_label(points[0])
    rows = [_row(4, settings={**p, "steps": 4}) for p in points]
    assert len(best_per_budget(rows, OFFICIAL)) == 4  # one per solver and spacing
    assert _config_of(monkeypatch, "--spacings", "logsnr", "karras").spacing == ("logsnr", "karras")


def _config_of(monkeypatch, *flags) -> QualityConfig:
    """The QualityConfig that ``egsde-rt bench --quality *flags`` would run."""
    import egsde_rt.bench.quality as quality
    from egsde_rt.cli import main

    def capture(config, log):
        raise SystemExit(config)

    monkeypatch.setattr(quality, "run_quality", capture)
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--quality", *flags])
    return exit_.value.code


def test_the_sweep_has_a_lowpass_axis(monkeypatch):
    config = QualityConfig(solvers=("dpmpp-2m-sde",), updates=(4, 6), ls=(500.0,), li=(50.0, 200.0),
                           lowpass=("gradient", "implicit"))
    points = grid(config, M=12)
    assert len(points) == 8 and {p["lowpass"] for p in points} == {"gradient", "implicit"}
    assert "implicit" in setting_label(points[2]) and "gradient" not in setting_label(points[0])
    rows = [_row(p["steps"], settings=p) for p in points]
    assert len(best_per_budget(rows, OFFICIAL)) == 4  # one per low-pass form and update count
    assert _config_of(monkeypatch, "--lowpass-forms", "implicit", "exact").lowpass == ("implicit", "exact")


def test_a_small_sweep_end_to_end(tiny_engine, tmp_path):
    path, _, _ = tiny_engine
    config = QualityConfig(engine_dir=path, backend="torch", solvers=("dpmpp-2m-sde",), updates=(4, 99), ls=(500.0,),
                           spacing=("logsnr",), lowpass=("implicit",), tuning_count=4, held_out_count=4,
                           reference_count=16, batch_size=2)
    logs = []
    record = run_quality(config, log=logs.append)
    json.dumps(record)  # serialisable
    official = record["held_out"]["official"]
    assert official["settings"]["solver"] == "ddpm" and official["network_evaluations"] == 12  # all M updates
    assert [r["settings"]["steps"] for r in record["tuning"]["sweep"]] == [4]  # 99 >= M is left out
    assert [r["settings"]["spacing"] for r in record["held_out"]["curve"]] == ["logsnr"]  # carried to held-out
    assert [r["settings"]["lowpass"] for r in record["held_out"]["curve"]] == ["implicit"]
    for row in (official, *record["held_out"]["curve"]):
        assert row["split"] == "held_out"
        for key in ("realism", "fd", "psnr_source", "ssim_source", "psnr_target", "ssim_target", "seconds_per_image"):
            assert isinstance(row[key], float), key
    assert record["config"]["splits"]["tuning"] != record["config"]["splits"]["held_out"]
    assert "held-out split" in format_quality(record) and "dpmpp-2m-sde 4 logsnr" in format_quality(record)
    assert "implicit" in format_quality(record)
    pytest.importorskip("matplotlib")
    assert plot_quality(record, tmp_path / "q.png").stat().st_size > 1000
