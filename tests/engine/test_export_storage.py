"""Engine storage (format 2): each weight stored once (safetensors, referenced by both ONNX graphs
as external data), export's peak memory measured in a child process, what loading verifies
when, safetensors checkpoints, and format 1 engines."""

import json
import shutil

import pytest
import torch

from conftest import tiny_models
from egsde_rt.cli import main
from egsde_rt.engine import FORMAT_VERSION, load_engine_dir
from egsde_rt.engine import verification
from egsde_rt.engine.weights_file import stored_tensors
from egsde_rt.errors import CheckpointError, EngineDirError
from egsde_rt.models import ADMUNet, DSE, load_checkpoint, read_state_dict

onnx = pytest.importorskip("onnx")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """A fresh verification record per test (the user cache)."""
    monkeypatch.setenv("EGSDE_RT_CACHE", str(tmp_path / "cache"))


def _initializers(graph_path) -> tuple[list, int]:
    """(location, offset, length, name) of each initializer of an ONNX file stored outside it, and
    the bytes of those stored inside it."""
    model = onnx.load(str(graph_path), load_external_data=False)
    refs, inline = [], 0
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in init.external_data}
            refs.append((info["location"], int(info.get("offset", 0)), int(info["length"]), init.name))
        else:
            inline += len(onnx.numpy_helper.to_array(init).tobytes())
    return refs, inline


def test_engine_stores_each_weight_once(tiny_engine):
    path, unet, dse = tiny_engine
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION == 2
    assert not (path / "torch").exists()
    weight_bytes = {name: sum(t.numel() * t.element_size() for t in model.state_dict().values())
                    for name, model in (("score", unet), ("dse", dse))}
    for graph_name, graph in manifest["graphs"].items():
        weights = manifest["torch_weights"][graph["weights"]]
        slots = {(s.offset, s.length) for s in stored_tensors(path / weights["file"]).values()}
        refs, inline = _initializers(path / graph["file"])
        assert refs and all(location == weights["file"] for location, *_ in refs)
        assert all((offset, length) in slots for _, offset, length, _ in refs), "an external tensor is not a weight"
        assert len({offset for _, offset, _, _ in refs}) == len(refs)  # each weight once per graph
        # the weights the graph uses are read from the weights file, none is copied into the graph
        external = sum(length for _, _, length, _ in refs)
        assert external == graph["external_bytes"] > 0.8 * weight_bytes[graph["weights"]]
        assert inline < 4096, f"{graph_name}: {inline} bytes of constants in the graph"
        assert graph["size"] == (path / graph["file"]).stat().st_size < 0.25 * weight_bytes[graph["weights"]]
    files = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert files < 1.3 * sum(weight_bytes.values())


def test_a_weights_file_is_a_safetensors_state_dict(tiny_engine):
    path, unet, _ = tiny_engine
    state = read_state_dict(path / "weights" / "score.safetensors")
    assert state.keys() == unet.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in unet.state_dict().items())


MID = dict(channels=256, image_size=32)


def _mid_spec(tmp_path) -> dict:
    """A mid-sized pair (about 60 MB of float32 weights; 32x32 images, so the weights, not the
    activations, dominate export's memory), saved as checkpoints of both formats."""
    from egsde_rt.bench.export_cost import write_checkpoint
    from egsde_rt.models import nonzero_random_weights
    from egsde_rt.method.settings import EGSDESettings

    score = dict(image_size=32, num_channels=MID["channels"], num_res_blocks=1, channel_mult="1,2",
                 attention_resolutions="16", num_head_channels=64, learn_sigma=True, use_scale_shift_norm=True,
                 resblock_updown=True)
    dse = dict(image_size=32, num_class=2, classifier_width=MID["channels"], classifier_depth=1,
               classifier_attention_resolutions="8", channel_mult="1,2", num_head_channels=64)
    return {"name": "mid", "image_size": 32, "settings": EGSDESettings(M=12, down_N=8).to_dict(),
            "score": {"class": "ADMUNet", "config": score,
                      "checkpoint": str(write_checkpoint(nonzero_random_weights(ADMUNet(**score)),
                                                         tmp_path / "score.pt"))},
            "dse": {"class": "DSE", "config": dse,
                    "checkpoint": str(write_checkpoint(nonzero_random_weights(DSE(**dse), 1),
                                                       tmp_path / "dse.safetensors"))}}


@pytest.mark.slow
def test_mid_sized_export_stays_under_a_memory_bound(tmp_path):
    """Peak RSS of the whole export process (measured in a child) within a generous bound: the
    interpreter and libraries, the networks, and one more copy of the weights; format 1's
    export held the weights four to five times (graph protos, serialisation, ONNX Runtime copies)."""
    from egsde_rt.bench.export_cost import run_export_bench

    record = run_export_bench(_mid_spec(tmp_path), work_dir=str(tmp_path), keep=True, log=lambda m: None)
    weights = record["weights_mb"]
    assert weights > 40
    assert record["engine_over_weights"] < 1.1, record["files_mb"]
    setup = record["stages"]["setup"]["peak_rss_mb"]  # imports, networks built, checkpoints loaded
    assert record["peak_rss_mb"] < setup + 1.5 * weights + 400, record["stages"]
    assert set(record["stages"]) >= {"weights", "trace", "graphs", "validation"}
    engine = load_engine_dir(record["engine_dir"])
    assert engine.formats == ("onnx", "torch")


def test_loading_hashes_once_per_machine_and_catches_changes(tiny_engine, tmp_path, monkeypatch):
    path = tmp_path / "engine"
    shutil.copytree(tiny_engine[0], path)  # new files: never verified here
    hashed = []
    real = verification.sha256_file
    monkeypatch.setattr(verification, "sha256_file", lambda p: hashed.append(p) or real(p))
    load_engine_dir(path)
    files = {p.name for p in hashed}
    variants = {f"{graph}.{precision}.onnx" for graph in ("score", "dse_grad") for precision in ("fp16", "bf16")}
    assert files == {"score.onnx", "dse_grad.onnx", "score.safetensors", "dse.safetensors", *variants}
    hashed.clear()
    load_engine_dir(path)
    assert hashed == []  # verified: sizes only
    weights = path / "weights" / "dse.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, one bit
    weights.write_bytes(bytes(data))
    with pytest.raises(EngineDirError, match="dse.safetensors does not match its sha256"):
        load_engine_dir(path)
    weights.write_bytes(bytes(data[:-4]))
    with pytest.raises(EngineDirError, match="dse.safetensors has .* bytes, the manifest says"):
        load_engine_dir(path, check_hashes=False)
    hashed.clear()
    shutil.rmtree(path)
    shutil.copytree(tiny_engine[0], path)
    load_engine_dir(path, verify="full")
    load_engine_dir(path, verify="full")
    assert len(hashed) == 2 * len(files)  # full: every file, every time


def test_verify_command(tiny_engine, tmp_path, capsys):
    path = tmp_path / "engine"
    shutil.copytree(tiny_engine[0], path)
    assert main(["verify", str(path)]) == 0
    assert "match their sha256" in capsys.readouterr().out
    graph = path / "score.onnx"
    data = bytearray(graph.read_bytes())
    data[-1] ^= 0xFF
    graph.write_bytes(bytes(data))
    assert main(["verify", str(path)]) == 2
    assert "score.onnx does not match its sha256" in capsys.readouterr().err


def test_checkpoints_load_from_safetensors(tmp_path):
    from egsde_rt.engine.weights_file import save_weights

    unet, _ = tiny_models()
    save_weights({f"module.{k}": v for k, v in unet.state_dict().items()}, tmp_path / "score.safetensors")
    shutil.copy(tmp_path / "score.safetensors", tmp_path / "score.bin")  # recognised by its header too
    for name in ("score.safetensors", "score.bin"):
        fresh, _ = tiny_models(seed=1)
        load_checkpoint(fresh, tmp_path / name)
        assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), unet.state_dict().values()))
    (tmp_path / "broken.safetensors").write_bytes((tmp_path / "score.safetensors").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_state_dict(tmp_path / "broken.safetensors")


def test_format_1_engines_still_load(tiny_torch_engine, tmp_path):
    """A format 1 engine (state dicts in torch/*.pt, no sizes) loads and runs on the torch backend."""
    from egsde_rt.engine.torch_weights import load_engine_models

    path = tmp_path / "v1"
    (path / "torch").mkdir(parents=True)
    manifest = json.loads((tiny_torch_engine[0] / "manifest.json").read_text())
    for name, model in zip(("score", "dse"), tiny_torch_engine[1:]):
        torch.save(model.state_dict(), path / "torch" / f"{name}.pt")
        entry = manifest["torch_weights"][name]
        entry.update(file=f"torch/{name}.pt", sha256=verification.sha256_file(path / "torch" / f"{name}.pt"))
        del entry["size"]
    (path / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    engine = load_engine_dir(path)
    score, _ = load_engine_models(engine)
    assert all(torch.equal(a, b) for a, b in zip(score.state_dict().values(),
                                                  tiny_torch_engine[1].state_dict().values()))
    (path / "manifest.json").write_text(json.dumps({**manifest, "format_version": 3}))
    with pytest.raises(EngineDirError, match=r"reads versions 1, 2\): export the engine again"):
        load_engine_dir(path)
