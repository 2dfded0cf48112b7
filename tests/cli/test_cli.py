"""The `egsde-rt` command line: its commands (presets, reference, info, verify, export's errors,
demo --engine-path), the settings flags, a native failure as one line, a folder job's failure
lines and progress bar, `python -m`; and the package's front door (the native module's version,
the top-level Translator). Folder jobs through `egsde-rt translate`: tests/jobs/test_folder_jobs.py;
--help: test_help.py."""

import pytest
import torch

from egsde_rt import _core
from egsde_rt import __version__
from egsde_rt.cli import main


def test_presets_lists_every_preset(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("cat2dog", "wild2dog", "male2female", "multi_afhq", "cat2dog_dagger"):
        assert name in out


def test_reference_reports_a_missing_checkpoint(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    code = main(["reference", str(tmp_path / "in.png"), "--score-ckpt", str(tmp_path / "none.pt"),
                 "--dse-ckpt", str(tmp_path / "none.pt"), "--output-dir", str(tmp_path / "out")])
    assert code == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_reference_refuses_to_overwrite(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "in.png").write_bytes(b"keep")
    torch.save({}, tmp_path / "c.pt")
    code = main(["reference", str(tmp_path / "in.png"), "--score-ckpt", str(tmp_path / "c.pt"),
                 "--dse-ckpt", str(tmp_path / "c.pt"), "--output-dir", str(tmp_path / "out")])
    assert code == 2 and "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "out" / "in.png").read_bytes() == b"keep"


def test_export_reports_a_missing_checkpoint(tmp_path, capsys):
    code = main(["export", "--preset", "cat2dog", "--score-ckpt", str(tmp_path / "none.pt"),
                 "--dse-ckpt", str(tmp_path / "none.pt"), "--out", str(tmp_path / "engine")])
    assert code == 2 and "checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "engine").exists()


def test_info(tiny_engine, capsys):
    assert main(["info", str(tiny_engine[0])]) == 0
    out = capsys.readouterr().out
    assert "dse_grad.onnx" in out and "yes onnxruntime-cpu" in out
    assert "no  tensorrt" in out or "no  (every backend)   cuda" in out  # no GPU: said once for every backend


def test_top_level_translator(tiny_engine):
    import egsde_rt

    assert egsde_rt.Translator(tiny_engine[0]).image_size == 32


def test_native_module_matches_the_package():
    assert _core.__version__ == __version__
    assert isinstance(_core.built_with_cuda, bool)


def test_a_native_failure_is_one_line(monkeypatch, capsys):
    """Any EgsdeError, a NativeError from C++ included, is one line on stderr and exit code 2."""
    import numpy as np

    from egsde_rt import cli

    def broken(args):
        _core.kernels.axpby(np.zeros(4, np.float32), np.zeros(5, np.float32), np.zeros(4, np.float32), 1.0, 1.0)

    monkeypatch.setattr(cli, "_cmd_presets", broken)
    assert main(["presets"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("egsde-rt: error: axpby: arrays differ in size") and err.count("\n") == 1


def test_settings_flags_map_to_overrides():
    from egsde_rt.cli import build_parser, settings_overrides

    args = build_parser().parse_args(["translate", "engine", "in.png", "--output-dir", "out", "--M", "30",
                                      "--ls", "700", "--down-N", "4", "--var-type", "fixedlarge", "--ilvr"])
    assert settings_overrides(args) == {"M": 30, "ls": 700.0, "down_N": 4, "var_type": "fixedlarge", "ilvr": True}
    args = build_parser().parse_args(["export", "--score-ckpt", "a", "--dse-ckpt", "b", "--out", "c", "--s1", "neg_l2"])
    assert settings_overrides(args) == {"s1": "neg_l2"}
    assert settings_overrides(build_parser().parse_args(["translate", "e", "i", "--output-dir", "o"])) == {}


def test_reference_translates_a_folder_with_the_files_seeds(tmp_path, capsys, monkeypatch):
    """`reference` runs folders through the folder job as `translate` does: each file with its
    derived seed (the eager sampler's result for it, bit for bit), a bad file reported."""
    from types import SimpleNamespace

    import numpy as np
    from PIL import Image

    import egsde_rt.models as models
    import egsde_rt.method.presets as presets
    from conftest import tiny_models
    from egsde_rt.images import image_to_tensor, tensor_to_images
    from egsde_rt.method.noise import derive_seed
    from egsde_rt.reference import translate

    unet, dse = tiny_models()
    settings = presets.get_preset("cat2dog").settings.with_overrides(M=3, down_N=8)
    monkeypatch.setattr(presets, "get_preset", lambda name: SimpleNamespace(settings=settings, image_size=32))
    monkeypatch.setattr(models, "build_preset_models", lambda preset: (unet, dse))
    monkeypatch.setattr(models, "load_checkpoint", lambda model, path: model)
    (tmp_path / "in").mkdir()
    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)).save(tmp_path / "in/a.png")
    (tmp_path / "in" / "b.png").write_bytes(b"broken")
    code = main(["reference", str(tmp_path / "in"), "--score-ckpt", "x", "--dse-ckpt", "x", "--seed", "4",
                 "--output-dir", str(tmp_path / "out")])
    assert code == 1 and "b.png" in capsys.readouterr().err
    y = translate(image_to_tensor(tmp_path / "in/a.png", 32)[None], unet, dse, settings, seed=derive_seed(4, "a.png"))
    expected = np.asarray(tensor_to_images(y)[0])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "a.png")), expected)


def test_presets_lists_the_demo(capsys):
    """`bench --preset` defaults to demo, so `presets` lists it too."""
    assert main(["presets"]) == 0
    assert any(line.startswith("demo ") for line in capsys.readouterr().out.splitlines())


def test_demo_engine_path_prints_the_path_alone(monkeypatch, tmp_path, capsys):
    """`ENGINE=$(egsde-rt demo --engine-path)`: the directory is the only line on stdout; what
    exporting it says (logged or printed) goes to stderr."""
    from egsde_rt import demo

    def exported(name):
        def engine_dir(*, log, rebuild=False):
            log(f"exporting the {name} engine ...")
            print("a stray print of the export")
            return tmp_path / name
        return engine_dir

    monkeypatch.setattr(demo, "engine_dir", exported("demo"))
    monkeypatch.setattr(demo, "distilled_engine_dir", exported("student"))
    assert main(["demo", "--engine-path"]) == 0
    out, err = capsys.readouterr()
    assert out == f"{tmp_path / 'demo'}\n" and "exporting the demo engine" in err and "stray print" in err
    assert main(["demo", "--distilled-engine-path"]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'student'}\n"


@pytest.mark.parametrize("module", ["egsde_rt", "egsde_rt.cli"])
def test_python_m_runs_the_command_line(module, monkeypatch, capsys):
    import runpy

    monkeypatch.setattr("sys.argv", [module, "--version"])
    with pytest.raises(SystemExit) as exit:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert exit.value.code == 0 and capsys.readouterr().out == f"egsde-rt {__version__}\n"


def test_a_failure_line_names_the_file_once(tiny_engine, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"\x89PNG broken")
    assert main(["translate", str(tiny_engine[0]), str(tmp_path / "in"), "--output-dir", str(tmp_path / "out")]) == 1
    failure = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("egsde-rt: failed:"))
    assert failure.count("broken.png") == 1 and failure.startswith(f"egsde-rt: failed: {broken}: ")


def test_the_progress_bar_counts_whole_images():
    import io

    from egsde_rt.cli.jobs import ImageProgress

    shown = io.StringIO()
    with ImageProgress(total=3, desc="translate", bar_format=ImageProgress.BAR_FORMAT, file=shown) as bar:
        for _ in range(3):
            bar.update(0.5)  # fractions of an image, as each sampling update reports them
            bar.refresh()
    frames = shown.getvalue().split("\r")
    assert "1/3 images" in frames[-1] and not any(".5" in frame for frame in frames)


def test_verify_says_how_many_files_it_checked(tiny_engine, capsys):
    from egsde_rt.engine import load_engine_dir

    m = load_engine_dir(tiny_engine[0]).manifest
    assert main(["verify", str(tiny_engine[0])]) == 0
    count = len(m.graphs) + len(m.torch_weights) + len(m.plans)
    assert f"checked {count} files, all match their sha256" in capsys.readouterr().out


def test_info_says_once_why_no_cuda_device_is_usable(tiny_engine, capsys):
    """With no usable GPU, ``info`` gives the CUDA reason once, plainly, not once per backend."""
    from egsde_rt.runtime.devices import cuda_usable

    if cuda_usable()[0]:
        pytest.skip("a CUDA device is usable here")
    assert main(["info", str(tiny_engine[0])]) == 0
    out = capsys.readouterr().out
    assert out.count("no usable CUDA device") == 1 and out.count(cuda_usable()[1]) == 1
