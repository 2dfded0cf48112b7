import os

import pytest
import torch

from egsde_rt.errors import CheckpointError, CheckpointMismatchError, CheckpointNotFoundError
from egsde_rt.models import ADMUNet, load_checkpoint


def _model(**overrides):
    config = dict(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2",
                  attention_resolutions="16", num_head_channels=16, learn_sigma=True)
    config.update(overrides)
    torch.manual_seed(0)
    model = ADMUNet(**config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("layout", ["plain", "module_prefix", "ddim_list", "state_dict_key"])
def test_supported_layouts_load(tmp_path, layout):
    src = _model()
    state = src.state_dict()
    obj = {
        "plain": state,
        "module_prefix": {f"module.{k}": v for k, v in state.items()},
        "ddim_list": [state, {"state": {}, "param_groups": []}, 3, 1000],
        "state_dict_key": {"state_dict": state},
    }[layout]
    torch.save(obj, tmp_path / "ckpt.pt")
    dst = ADMUNet(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2",
                  attention_resolutions="16", num_head_channels=16, learn_sigma=True)
    assert not _same(src, dst)
    load_checkpoint(dst, tmp_path / "ckpt.pt")
    assert _same(src, dst)


def test_ddim_list_ema_is_the_last_element(tmp_path):
    plain, ema = _model(), _model()
    with torch.no_grad():
        for p in ema.parameters():
            p.mul_(2)
    torch.save([plain.state_dict(), {}, 1, 2, ema.state_dict()], tmp_path / "c.pt")
    dst = _model()
    load_checkpoint(dst, tmp_path / "c.pt", ema=True)
    assert _same(dst, ema)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="not found"):
        load_checkpoint(_model(), tmp_path / "nope.pt")


def test_wrong_architecture_lists_missing_unexpected_and_mis_shaped(tmp_path):
    torch.save(_model(num_channels=64, num_head_channels=32).state_dict(), tmp_path / "c.pt")
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(_model(), tmp_path / "c.pt")
    assert "mis-shaped keys" in str(info.value) and info.value.mis_shaped
    state = _model().state_dict()
    state.pop("out.2.bias")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "d.pt")
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(_model(), tmp_path / "d.pt")
    assert info.value.missing == ["out.2.bias"] and info.value.unexpected == ["extra.weight"]
    assert "missing keys (1): out.2.bias" in str(info.value)


def test_truncated_file(tmp_path):
    path = tmp_path / "c.pt"
    torch.save(_model().state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(_model(), path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        load_checkpoint(_model(), path)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"weight": torch.zeros(1), "evil": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(_model(), tmp_path / "evil.pt")
    assert not marker.exists()


def test_non_tensor_entries_are_refused(tmp_path):
    torch.save({"a": torch.zeros(1), "b": 3}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="not tensors"):
        load_checkpoint(_model(), tmp_path / "c.pt")
