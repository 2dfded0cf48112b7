"""The embedded demo: metrics, the cached engine, and `egsde-rt demo` end to end."""

import json

import pytest
import torch

from egsde_rt import demo
from egsde_rt.cli import main

pytest.importorskip("onnxruntime")


def test_psnr_and_ssim_against_known_values():
    a = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(demo.ssim(a, a), torch.ones(2))
    assert torch.isinf(demo.psnr(a, a)).all() or (demo.psnr(a, a) > 90).all()
    b = (a + 0.1).clamp(0, 1)
    mse = ((a - b) ** 2).flatten(1).mean(1)
    assert torch.allclose(demo.psnr(a, b), 10 * torch.log10(1 / mse))
    noisy = (a + 0.3 * torch.randn(a.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert (demo.ssim(a, noisy) < demo.ssim(a, b)).all()
    flat = torch.full((1, 3, 32, 32), 0.5)
    assert torch.allclose(demo.ssim(flat, flat + 0.2), torch.tensor([(2 * 0.5 * 0.7 + 1e-4) / (0.25 + 0.49 + 1e-4)]),
                          atol=1e-5)  # constant images: only the luminance term remains


def test_demo_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EGSDE_RT_CACHE", str(tmp_path / "cache"))
    assert main(["demo", "--output-dir", str(tmp_path / "out"), "--count", "4"]) == 0
    out = capsys.readouterr().out
    assert "SDEdit" in out and "EGSDE" in out and "demo.png" in out
    record = json.loads((tmp_path / "out" / "demo.json").read_text())
    assert set(record["results"]) == {"SDEdit", "EGSDE", "source (reference)"}
    from PIL import Image

    grid = Image.open(tmp_path / "out" / "demo.png")
    assert grid.size == (3 * 32 * demo.GRID_SCALE, 4 * 32 * demo.GRID_SCALE)
    # the engine is cached: a second call finds it without exporting
    logs = []
    path = demo.engine_dir(log=logs.append)
    assert logs == [] and (path / "manifest.json").is_file()
