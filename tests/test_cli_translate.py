"""`egsde-rt translate` and `egsde-rt info` on the tiny engine."""

import numpy as np
import pytest
from PIL import Image

from egsde_rt.cli import main

pytest.importorskip("onnxruntime")


def _images(folder, count=3):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(folder / f"cat{i}.png")
    return folder


def test_translate_a_folder(tiny_engine, tmp_path, capsys):
    inputs = _images(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["translate", str(tiny_engine[0]), str(inputs), "--output-dir", str(out), "--batch-size", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cat0.png", "cat1.png", "cat2.png"]
    err = capsys.readouterr().err
    assert "backend: onnxruntime-cpu" in err and f"{2 * 12}/{2 * 12}" in err  # the progress bar
    assert main(["translate", str(tiny_engine[0]), str(inputs), "--output-dir", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_corrupt_image_writes_nothing(tiny_engine, tmp_path, capsys):
    inputs = _images(tmp_path / "in")
    (inputs / "cat9.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    assert main(["translate", str(tiny_engine[0]), str(inputs), "--output-dir", str(out)]) == 2
    assert "cat9.png" in capsys.readouterr().err
    assert not out.exists()


def test_corrupt_engine_writes_nothing(tmp_path, capsys):
    inputs = _images(tmp_path / "in")
    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "manifest.json").write_text("[]")
    out = tmp_path / "out"
    assert main(["translate", str(engine), str(inputs), "--output-dir", str(out)]) == 2
    assert "corrupt manifest" in capsys.readouterr().err
    assert not out.exists()


def test_info(tiny_engine, capsys):
    assert main(["info", str(tiny_engine[0])]) == 0
    out = capsys.readouterr().out
    assert "dse_grad.onnx" in out and "yes onnxruntime-cpu" in out and "no  tensorrt" in out


def test_export_reports_a_missing_checkpoint(tmp_path, capsys):
    code = main(["export", "--preset", "cat2dog", "--score-ckpt", str(tmp_path / "none.pt"),
                 "--dse-ckpt", str(tmp_path / "none.pt"), "--out", str(tmp_path / "engine")])
    assert code == 2 and "checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "engine").exists()


def test_top_level_translator(tiny_engine):
    import egsde_rt

    assert egsde_rt.Translator(tiny_engine[0]).image_size == 32
