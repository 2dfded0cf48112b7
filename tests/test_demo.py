"""The embedded demo: the cached engine and `egsde-rt demo` end to end (its metrics are
egsde_rt.evaluation.metrics, tested in test_evaluation.py)."""

import json

import pytest

from egsde_rt import demo
from egsde_rt.cli import main

pytest.importorskip("onnxruntime")


def test_demo_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EGSDE_RT_CACHE", str(tmp_path / "cache"))
    assert main(["demo", "--output-dir", str(tmp_path / "out"), "--count", "4"]) == 0
    out = capsys.readouterr().out
    assert "SDEdit" in out and "EGSDE" in out and "demo.png" in out
    record = json.loads((tmp_path / "out" / "demo.json").read_text())
    results = record["results"]
    assert set(results) == {"SDEdit", "EGSDE", "EGSDE fast", "source (reference)", "true target (reference)"}
    assert results["EGSDE fast"]["settings"]["solver"] == demo.DEMO_FAST["solver"]
    assert results["EGSDE fast"]["network_evaluations"] * 5 <= results["EGSDE"]["network_evaluations"]
    assert results["true target (reference)"]["psnr_target"] > 90  # identical images
    from PIL import Image

    grid = Image.open(tmp_path / "out" / "demo.png")
    cell = 32 * demo.GRID_SCALE
    assert grid.size[0] == 5 * cell and grid.size[1] > 4 * cell
    # the engine is cached: a second call finds it without exporting
    logs = []
    path = demo.engine_dir(log=logs.append)
    assert logs == [] and (path / "manifest.json").is_file()
