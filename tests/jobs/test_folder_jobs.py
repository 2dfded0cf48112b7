"""Folder jobs (``egsde_rt.jobs.folders``) through `egsde-rt translate` on the tiny engine: a seed
per file whatever the batch, bad files reported, resume and overwrite, outputs written atomically
and once, partial files of killed writers removed, outputs never taken as inputs."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from egsde_rt.cli import main
from egsde_rt.jobs.folders import plan_job, remove_partial_files, save_atomically, written_since_planned
from egsde_rt.method.noise import derive_seed
from egsde_rt.runtime.translator import Translator

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
    assert "backend: onnxruntime-cpu" in err and "3 written, 0 skipped" in err
    assert "3/3 images" in err or os.environ.get("TQDM_DISABLE")  # the progress bar, unless silenced
    assert main(["translate", str(tiny_engine[0]), str(inputs), "--output-dir", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err


def test_each_file_has_its_own_seed_so_the_batch_size_does_not_matter(tiny_engine, tmp_path):
    """A file's output is Translator.run(file, seed=derive_seed(--seed, its relative path)),
    byte for byte, whatever the batch size; the folder structure is kept."""
    inputs = _images(tmp_path / "in")
    (inputs / "sub").mkdir()
    (inputs / "cat1.png").rename(inputs / "sub" / "cat1.png")
    outs = {}
    for batch_size in ("1", "3"):
        out = tmp_path / f"out{batch_size}"
        assert main(["translate", str(tiny_engine[0]), str(inputs), "--output-dir", str(out), "--seed", "5",
                     "--batch-size", batch_size, "--M", "3"]) == 0
        outs[batch_size] = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.png")}
    assert sorted(outs["1"]) == ["cat0.png", "cat2.png", "sub/cat1.png"] and outs["1"] == outs["3"]
    translator = Translator(tiny_engine[0])
    expected = translator.run(inputs / "sub" / "cat1.png", seed=derive_seed(5, "sub/cat1.png"), M=3)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out1" / "sub" / "cat1.png")), np.asarray(expected))


def test_a_bad_file_is_reported_and_the_rest_are_written(tiny_engine, tmp_path, capsys):
    inputs = _images(tmp_path / "in")
    (inputs / "cat1b.png").write_bytes(b"\x89PNG broken")  # between good files in a batch
    (inputs / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    assert main(["translate", str(tiny_engine[0]), str(inputs), "--output-dir", str(out), "--batch-size", "2"]) == 1
    err = capsys.readouterr().err
    assert "failed: " in err and "cat1b.png" in err and "empty.jpg" in err
    assert "3 written, 0 skipped (existing), 2 failed of 5" in err
    assert sorted(p.name for p in out.iterdir()) == ["cat0.png", "cat1.png", "cat2.png"]  # no partial files
    good = tmp_path / "good"
    assert main(["translate", str(tiny_engine[0]), *(str(inputs / f"cat{i}.png") for i in range(3)),
                 "--output-dir", str(good), "--batch-size", "2"]) == 0
    assert all((good / n).read_bytes() == (out / n).read_bytes() for n in ("cat0.png", "cat1.png", "cat2.png"))


def test_resume_skips_finished_files(tiny_engine, tmp_path, capsys):
    inputs = _images(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["translate", str(tiny_engine[0]), str(inputs / "cat1.png"), "--output-dir", str(out)]) == 0
    (out / "cat1.png").write_bytes(b"kept")  # a resumed run leaves finished outputs alone
    capsys.readouterr()
    assert main(["translate", str(tiny_engine[0]), str(inputs), "--output-dir", str(out), "--resume"]) == 0
    assert "2 written, 1 skipped (existing), 0 failed" in capsys.readouterr().err
    assert (out / "cat1.png").read_bytes() == b"kept" and (out / "cat0.png").stat().st_size > 100
    assert main(["translate", str(tiny_engine[0]), str(inputs), "--output-dir", str(out), "--overwrite"]) == 0
    assert (out / "cat1.png").read_bytes() != b"kept"
    assert main(["translate", str(tiny_engine[0]), str(inputs), "--output-dir", str(out), "--overwrite",
                 "--resume"]) == 2


def test_colliding_outputs_are_refused_before_any_work(tiny_engine, tmp_path, capsys):
    inputs = _images(tmp_path / "in")
    Image.new("RGB", (32, 32)).save(inputs / "cat0.jpg")
    out = tmp_path / "out"
    assert main(["translate", str(tiny_engine[0]), str(inputs), "--output-dir", str(out)]) == 2
    assert "would both write" in capsys.readouterr().err and not out.exists()


def test_outputs_are_written_atomically(tmp_path, monkeypatch):
    """A write that fails half way leaves neither the output nor a partial file."""
    image = Image.new("RGB", (8, 8))

    def failing_save(self, fp, format=None, **params):
        Path(fp).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError):
        save_atomically(image, tmp_path / "a" / "x.png")
    assert list((tmp_path / "a").iterdir()) == []


def _png(path):
    return path.read_bytes()


def test_an_output_is_written_once(tmp_path):
    """A job writes an output at most once: a second write of it (a batch run again after its Ray
    actor died) leaves the first as it is; with overwrite, only the file the plan saw is replaced."""
    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    inputs = _images(tmp_path / "in", count=1)
    out = tmp_path / "out"
    (task,), _ = plan_job(inputs, out)
    assert not written_since_planned(task)
    assert save_atomically(red, task.output, task.replaces) is True and written_since_planned(task)
    first = _png(task.output)
    assert save_atomically(blue, task.output, task.replaces) is False and _png(task.output) == first

    (task,), _ = plan_job(inputs, out, existing="overwrite")  # replaces the red output, once
    assert task.replaces and not written_since_planned(task)
    assert save_atomically(blue, task.output, task.replaces) is True and _png(task.output) != first
    second = _png(task.output)
    assert written_since_planned(task)
    assert save_atomically(red, task.output, task.replaces) is False and _png(task.output) == second
    assert sorted(p.name for p in out.iterdir()) == ["cat0.png"]  # no partial files


def test_a_job_removes_the_partial_files_of_killed_writers(tiny_engine, tmp_path):
    from egsde_rt.jobs.folders import run_job

    inputs = _images(tmp_path / "in", count=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".cat1.png.4242-17.partial").write_bytes(b"half")  # a writer of cat1.png killed earlier
    (out / ".notes.txt.4242-17.partial").write_bytes(b"not an output of the job")
    tasks, _ = plan_job(inputs, out)
    assert remove_partial_files(tasks[:1]) == []  # only the partial files of the tasks' outputs
    report = run_job(Translator(tiny_engine[0]), tasks, overrides={"M": 2})
    assert len(report.written) == 2
    assert sorted(p.name for p in out.iterdir()) == [".notes.txt.4242-17.partial", "cat0.png", "cat1.png"]


def test_corrupt_engine_writes_nothing(tmp_path, capsys):
    inputs = _images(tmp_path / "in")
    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "manifest.json").write_text("[]")
    out = tmp_path / "out"
    assert main(["translate", str(engine), str(inputs), "--output-dir", str(out)]) == 2
    assert "corrupt manifest" in capsys.readouterr().err
    assert not out.exists()


def test_the_output_folder_is_never_an_input(tiny_engine, tmp_path, capsys):
    inputs = _images(tmp_path / "in")
    out = inputs / "dogs"  # outputs inside the input folder
    args = ["translate", str(tiny_engine[0]), str(inputs), "--output-dir", str(out), "--M", "2"]
    assert main(args) == 0
    assert main([*args, "--resume"]) == 0  # the outputs of the first run are not translated again
    assert "0 written, 3 skipped (existing), 0 failed of 3" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["cat0.png", "cat1.png", "cat2.png"]


def test_fit_pad_keeps_each_files_aspect_ratio(tiny_engine, tmp_path):
    """translate --fit pad: a 48 x 32 file comes back 32 x 21 (the longer side the engine's 32), equal
    to Translator.run(file, fit="pad") with the file's seed; the default crop gives 32 x 32."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((32, 48, 3)) * 255).astype(np.uint8)).save(inputs / "wide.png")
    for fit, size in (("pad", (32, 21)), ("crop", (32, 32))):
        out = tmp_path / fit
        assert main(["translate", str(tiny_engine[0]), str(inputs), "--output-dir", str(out), "--fit", fit,
                     "--M", "2"]) == 0
        with Image.open(out / "wide.png") as written:
            assert written.size == size
            got = np.asarray(written)
    expected = Translator(tiny_engine[0]).run(inputs / "wide.png", seed=derive_seed(0, "wide.png"), fit="crop", M=2)
    assert np.array_equal(got, np.asarray(expected))
    padded = Translator(tiny_engine[0]).run(inputs / "wide.png", seed=derive_seed(0, "wide.png"), fit="pad", M=2)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "pad" / "wide.png")), np.asarray(padded))
