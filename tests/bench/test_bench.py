"""egsde-rt bench: the phase breakdown sums, the JSON record's schema, the extrapolation label."""

import json
import sys

import pytest
import torch

from egsde_rt.bench.end_to_end import EAGER, PHASES, BenchConfig, run_benchmark
from egsde_rt.bench.report import add_speedups, plot
from egsde_rt.cli import main
from egsde_rt.errors import ConfigError, EgsdeError
from egsde_rt.models import ADMUNet, nonzero_random_weights

pytest.importorskip("onnxruntime")
RUN_KEYS = {"name", "backend", "precision", "batch_size", "seconds_per_image", "images_per_second",
            "first_run_seconds", "peak_host_mb", "peak_device_mb", "per_step_ms"}


@pytest.fixture(scope="module")
def runs(tiny_engine):
    config = BenchConfig(engine_dir=tiny_engine[0], batch_sizes=[1, 2], steps=4, repeats=2, warmup=1)
    runs = run_benchmark(config, log=lambda m: None)
    add_speedups(runs)
    return runs


def test_every_usable_backend_runs_after_the_eager_baseline(runs):
    assert [r["backend"] for r in runs] == [EAGER, "onnxruntime-cpu", "torch"] * 2
    assert [r["batch_size"] for r in runs] == [1] * 3 + [2] * 3
    for r in runs:
        assert RUN_KEYS <= set(r)
        assert r["speedup_vs_eager"] == pytest.approx(
            next(e["seconds_per_image"] for e in runs if e["backend"] == EAGER and e["batch_size"] == r["batch_size"])
            / r["seconds_per_image"])


def test_the_phases_sum_to_the_step(runs):
    for r in runs:
        ms = r["per_step_ms"]
        assert all(ms[p]["min"] <= ms[p]["median"] <= ms[p]["max"] for p in ms)
        assert all(ms[p]["median"] >= 0 for p in PHASES)
        assert ms["score"]["median"] > 0 and ms["dse_grad"]["median"] > 0 and ms["lowpass_grad"]["median"] > 0
        phases = sum(ms[p]["median"] for p in PHASES)
        # the phases cover the update: what is left (loop and glue) is within 10 % of it
        assert phases <= ms["step"]["median"] * 1.001 + 1e-3, r["name"]
        assert ms["rest"]["median"] <= 0.1 * ms["step"]["median"] + 0.2, r["name"]


def test_a_timed_prefix_is_extrapolated_and_labelled(runs, tiny_engine):
    for r in runs:
        assert (r["timed_updates"], r["total_updates"], r["extrapolated"]) == (4, 12, True)
        # seconds per image = median wall time of the 4-update prefix x 12/4, per image
        expected = r["run_seconds"]["median"] * 12 / 4 / r["batch_size"]
        assert r["seconds_per_image"] == pytest.approx(expected)
        assert r["images_per_second"] == pytest.approx(1 / r["seconds_per_image"])
    full = run_benchmark(BenchConfig(engine_dir=tiny_engine[0], steps=None, repeats=1, warmup=0,
                                     backends=["torch"]), log=lambda m: None)
    assert (full[0]["timed_updates"], full[0]["extrapolated"]) == (12, False)


def test_the_command_writes_the_json_record_and_the_plot(tiny_engine, tmp_path, capsys):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    code = main(["bench", "--engine", str(tiny_engine[0]), "--steps", "2", "--repeats", "1", "--warmup", "0",
                 "--backends", "eager", "torch", "--device", "cpu", "--json", str(out), "--plot", str(png)])
    assert code == 0
    record = json.loads(out.read_text())
    assert {"device", "versions", "config", "command", "date", "runs"} <= set(record)
    assert record["device"]["device"] == "cpu" and record["versions"]["torch"] == torch.__version__
    assert [r["backend"] for r in record["runs"]] == ["eager", "torch"]
    assert RUN_KEYS <= set(record["runs"][1])
    assert set(record["runs"][1]["per_step_ms"]) == {"step", *PHASES, "rest"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    assert "eager b1" in table and "extrapolated linearly" in table


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(EgsdeError, match="matplotlib"):
        plot({"runs": [], "device": {}, "config": {}}, tmp_path / "x.png")


def test_bad_requests_are_clear_errors(tiny_engine):
    with pytest.raises(ConfigError, match="unknown backends"):
        run_benchmark(BenchConfig(engine_dir=tiny_engine[0], backends=["openvino"]), log=lambda m: None)
    with pytest.raises(ConfigError, match="precision"):
        run_benchmark(BenchConfig(engine_dir=tiny_engine[0], precision="int4"), log=lambda m: None)


def test_kernel_benchmark(tmp_path, capsys):
    out = tmp_path / "kernels.json"
    assert main(["bench", "--kernels", "--device", "cpu", "--size", "32", "--down-N", "8", "--iters", "2",
                 "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert {r["kernel"] for r in record["results"]} >= {"axpby", "egsde_update", "philox_normal"}
    assert all(r["native_ms"] > 0 and r["eager_ms"] > 0 and r["native_gbs"] > 0 for r in record["results"])


def test_random_weights_make_every_layer_count():
    """A fresh ADM UNet returns eps = 0 (zero-initialised output layers); the bench's weights do not."""
    unet = ADMUNet(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="16",
                   num_head_channels=16, learn_sigma=True)
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([10.0])
    with torch.no_grad():
        assert unet(x, t).abs().max() == 0
        nonzero_random_weights(unet, seed=0)
        assert unet(x, t)[:, :3].std() > 0.01
    zero = [n for n, p in unet.named_parameters() if p.ndim >= 2 and torch.count_nonzero(p) == 0]
    assert zero == []
