"""The embedded demo: its two domains, the cached engine, `egsde-rt demo` end to end, and the
shipped networks' claim on held-out images (its metrics are egsde_rt.evaluation.metrics, tested in
tests/evaluation/test_evaluation.py)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from egsde_rt import demo
from egsde_rt.cli import main
from egsde_rt.errors import ConfigError

pytest.importorskip("onnxruntime")


def test_the_domains_share_everything_but_the_shape():
    source = demo.domain_batch("source", range(64), seed=5)
    target = demo.paired_target(range(64), seed=5)
    assert source.shape == target.shape == (64, 3, 32, 32)
    assert torch.equal(source, demo.domain_batch("source", range(64), seed=5))  # deterministic
    assert not torch.equal(source, demo.domain_batch("source", range(64), seed=6))
    # the same background, colours, positions and areas: the images agree at low resolution ...
    coarse = F.avg_pool2d(source, 8) - F.avg_pool2d(target, 8)
    assert coarse.abs().mean() < 0.05
    assert (source.mean((2, 3)) - target.mean((2, 3))).abs().max() < 0.05  # equal areas: equal mean colours
    # ... and differ in the shape: a square's corners lie outside its disc
    assert (source - target).abs().amax((1, 2, 3)).min() > 0.3
    with pytest.raises(ConfigError, match="domains"):
        demo.domain_batch("dog", range(2))


def test_the_judge_tells_the_shapes_apart_on_held_out_images():
    judge = demo.load_judge()
    seed = demo.QUALITY_SPLITS["held_out"]
    with torch.no_grad():
        p_source = judge(demo.domain_batch("source", range(128), seed=seed)).softmax(1)[:, 1]
        p_target = judge(demo.paired_target(range(128), seed=seed)).softmax(1)[:, 1]
    assert (p_target > 0.5).float().mean() > 0.95 and (p_source < 0.5).float().mean() > 0.95


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
    """One demo engine cache for the module's tests (the export takes most of a minute)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EGSDE_RT_CACHE", str(tmp_path_factory.mktemp("demo-cache")))
        yield


def test_demo_end_to_end(tmp_path, demo_cache, capsys):
    assert main(["demo", "--output-dir", str(tmp_path / "out"), "--count", "3"]) == 0
    out = capsys.readouterr().out
    assert "SDEdit" in out and "ILVR" in out and "EGSDE" in out and "demo.png" in out
    record = json.loads((tmp_path / "out" / "demo.json").read_text())
    results = record["results"]
    assert set(results) == {"SDEdit", "ILVR", "EGSDE", "EGSDE fast", demo.DISTILLED, "source (reference)",
                            "true target (reference)"}
    assert results["ILVR"]["settings"]["ilvr"] and not results["EGSDE"]["settings"]["ilvr"]
    assert results["EGSDE fast"]["settings"]["solver"] == demo.DEMO_FAST["solver"]
    assert results["EGSDE fast"]["network_evaluations"] * 5 <= results["EGSDE"]["network_evaluations"]
    distilled = results[demo.DISTILLED]
    assert distilled["network_evaluations"] == demo.DISTILLED_UPDATES and distilled["settings"]["ls"] == 0
    assert results["true target (reference)"]["psnr_target"] > 90  # identical images
    from PIL import Image

    grid = Image.open(tmp_path / "out" / "demo.png")
    cell = 32 * demo.GRID_SCALE
    assert grid.size[0] == 7 * cell and grid.size[1] > 3 * cell + 60  # seven titled columns, metrics below
    # the engine is cached: a second call finds it without exporting
    logs = []
    path = demo.engine_dir(log=logs.append)
    assert logs == [] and (path / "manifest.json").is_file()
    student = demo.distilled_engine_dir(log=logs.append)  # cached too, and named after its teacher
    assert logs == []
    from egsde_rt.engine import check_teacher, load_engine_dir

    check_teacher(load_engine_dir(student), load_engine_dir(path))
    assert main(["demo", "--output-dir", str(tmp_path / "out"), "--count", "0"]) == 2
    assert "count must be a positive integer" in capsys.readouterr().err


@pytest.fixture(scope="module")
def held_out(tmp_path_factory, demo_cache):
    """`egsde-rt demo --eval` on 48 held-out images (the demo's settings; chosen on the tuning split)."""
    root = tmp_path_factory.mktemp("held-out")
    assert main(["demo", "--eval", "--count", "48", "--output-dir", str(root)]) == 0
    return json.loads((root / "demo-eval.json").read_text())


def test_the_eval_record(held_out):
    assert held_out["split"] == "held_out" and held_out["count"] == 48
    assert held_out["settings_chosen_on"]["split"] == "tuning"
    seeds = set(demo.QUALITY_SPLITS.values())
    assert len(seeds) == 3 and demo.DEMO_IMAGE_SEED not in seeds and not seeds & set(range(6))  # training: 0..5
    methods = held_out["methods"]
    assert list(methods) == [*demo.demo_methods(), demo.DISTILLED, "source (as is)", "true target"]
    for row in methods.values():
        assert all(np.isfinite(row[k]) for k in ("realism", "fd", "psnr_source", "ssim_source", "l2_target"))
    assert methods["true target"]["l2_target"] == 0 and methods["true target"]["realism"] > 0.9
    assert methods["source (as is)"]["realism"] < 0.1


@pytest.mark.parametrize("baseline", ["SDEdit", "ILVR"])
def test_egsde_beats_the_baselines_on_held_out_images(held_out, baseline):
    """The shipped networks at the demo's settings: EGSDE is more realistic and closer to the true
    target than the baselines (without guidance EGSDE is SDEdit, and this fails). The few-step
    EGSDE is as realistic; it gives up some of the distance to the true target (the README's table)."""
    methods = held_out["methods"]
    egsde, fast, other = methods["EGSDE"], methods["EGSDE fast"], methods[baseline]
    assert egsde["realism"] > other["realism"] + 0.05
    assert egsde["fd"] < other["fd"]
    assert egsde["psnr_target"] > other["psnr_target"]
    assert egsde["l2_target"] < other["l2_target"]
    assert fast["realism"] > other["realism"] + 0.05 and fast["fd"] < other["fd"]
    assert fast["psnr_target"] > methods["SDEdit"]["psnr_target"]


def test_the_distilled_student_keeps_up_with_the_official_sampler_on_held_out_images(held_out):
    """The shipped student (5 updates, no expert) against the official sampler (100 updates) on the
    same held-out images and seeds: within the distillation rule's realism and PSNR bounds, a
    little wider for 48 images (the 256-image figures: docs/distillation.md), and far ahead of
    SDEdit, which is what an untrained student would be."""
    methods = held_out["methods"]
    student, official, sdedit = methods[demo.DISTILLED], methods["EGSDE"], methods["SDEdit"]
    assert student["network_evaluations"] * 20 <= official["network_evaluations"]
    assert student["realism"] >= official["realism"] - 0.04
    assert student["psnr_source"] >= official["psnr_source"] - 0.75
    assert student["psnr_target"] >= official["psnr_target"] - 0.6
    assert student["realism"] > sdedit["realism"] + 0.05 and student["fd"] < sdedit["fd"]
