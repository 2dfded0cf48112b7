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


def test_native_module_matches_the_package():
    assert _core.__version__ == __version__
    assert isinstance(_core.built_with_cuda, bool)
