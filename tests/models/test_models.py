import pytest
import torch

from conftest import golden_model
from egsde_rt.models import ADMUNet, DDPMUNet, DSE, build_preset_models
from egsde_rt.method.presets import get_preset

SPEC_OF_PRESET = {
    "adm_unet_256": ("cat2dog", "score"),
    "dse_256_2class": ("cat2dog", "dse"),
    "dse_256_3class": ("multi_afhq", "dse"),
    "ddpm_256": ("male2female", "score"),
}


@pytest.mark.parametrize("spec_prefix", sorted(SPEC_OF_PRESET))
def test_real_configs_match_the_checkpoint_state_dicts(spec_prefix, state_dict_specs):
    (spec_key,) = [k for k in state_dict_specs if k.startswith(spec_prefix + " ")]
    preset, part = SPEC_OF_PRESET[spec_prefix]
    score, dse = build_preset_models(get_preset(preset), device="meta")
    model = score if part == "score" else dse
    got = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert got == state_dict_specs[spec_key]


@pytest.mark.parametrize("name", ["golden_adm_unet_small", "golden_dse_small", "golden_ddpm_small"])
def test_golden_forwards(name):
    model, golden = golden_model(name)
    with torch.no_grad():
        out = model(torch.from_numpy(golden["x"]), torch.from_numpy(golden["t"]))
    expected = torch.from_numpy(golden["out"])
    assert out.shape == expected.shape
    assert (out - expected).abs().max() <= 1e-4


def _small_adm(**overrides):
    config = dict(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2",
                  attention_resolutions="16", num_head_channels=16, learn_sigma=True,
                  use_scale_shift_norm=True, resblock_updown=True)
    config.update(overrides)
    return ADMUNet(**config)


def _randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def _qkv_legacy_to_new(weight, heads):
    """Legacy rows are (head, part, ch); the new order's are (part, head, ch)."""
    three_c = weight.shape[0]
    ch = three_c // (3 * heads)
    return weight.reshape(heads, 3, ch, *weight.shape[1:]).transpose(0, 1).reshape(weight.shape)


def test_new_attention_order_is_legacy_attention_with_permuted_qkv(rng):
    legacy = _randomize(_small_adm())
    new = _small_adm(use_new_attention_order=True)
    state = legacy.state_dict()
    for key, value in list(state.items()):
        if key.endswith("qkv.weight") or key.endswith("qkv.bias"):
            heads = value.shape[0] // 3 // 16
            state[key] = _qkv_legacy_to_new(value, heads)
    new.load_state_dict(state)
    new.eval()
    x, t = torch.randn(2, 3, 32, 32, generator=rng), torch.tensor([3.0, 700.0])
    with torch.no_grad():
        a, b = legacy(x, t), new(x, t)
        unpermuted = _small_adm(use_new_attention_order=True)
        unpermuted.load_state_dict(legacy.state_dict())
        c = unpermuted.eval()(x, t)
    assert (a - b).abs().max() <= 1e-5
    assert (a - c).abs().max() > 1e-3  # the orders really differ, so the test can fail


def test_plain_updown_and_norm_variant_has_its_keys_and_runs():
    model = _randomize(_small_adm(resblock_updown=False, use_scale_shift_norm=False, learn_sigma=False))
    keys = model.state_dict()
    assert "input_blocks.2.0.op.weight" in keys and "output_blocks.1.2.conv.weight" in keys
    assert keys["input_blocks.1.0.emb_layers.1.weight"].shape[0] == 32
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32), torch.tensor([5.0])).shape == (1, 3, 32, 32)


def test_class_conditional_model_uses_its_labels():
    model = _randomize(_small_adm(class_cond=True, num_class=3))
    assert model.state_dict()["label_emb.weight"].shape == (3, 128)
    x, t = torch.zeros(1, 3, 32, 32), torch.tensor([10.0])
    with torch.no_grad():
        a, b = model(x, t, torch.tensor([0])), model(x, t, torch.tensor([2]))
    assert (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match="class labels"):
        model(x, t)


@pytest.mark.parametrize("pool", ["attention", "adaptive"])
def test_dse_head_and_features(pool):
    dse = _randomize(DSE(image_size=32, num_class=3, classifier_width=32, classifier_depth=1,
                         classifier_attention_resolutions="8", classifier_pool=pool,
                         channel_mult="1,2", num_head_channels=32))
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([1.0, 2.0])
    with torch.no_grad():
        assert dse(x, t).shape == (2, 64, 16, 16)
        assert dse.classify(x, t).shape == (2, 3)
    head = "I2Iout.3.weight" if pool == "adaptive" else "I2Iout.2.c_proj.weight"
    assert dse.state_dict()[head].shape[0] == 3


def test_fp16_conversion_changes_the_torso_only():
    model = _small_adm(use_fp16=True)
    assert model.input_blocks[1][0].in_layers[2].weight.dtype == torch.float16
    assert model.time_embed[0].weight.dtype == torch.float32
    assert model.out[2].weight.dtype == torch.float32
    model.convert_to_fp32()
    assert model.dtype == torch.float32


def test_ddpm_accepts_a_namespace_config():
    from types import SimpleNamespace as NS

    config = NS(data=NS(image_size=32), model=NS(ch=32, out_ch=3, ch_mult=[1, 2], num_res_blocks=1,
                                                  attn_resolutions=[16], dropout=0.0, in_channels=3,
                                                  resamp_with_conv=False),
                diffusion=NS(num_diffusion_timesteps=1000))
    model = DDPMUNet(config).eval()
    assert not any("downsample.conv" in k for k in model.state_dict())
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32), torch.tensor([1.0])).shape == (1, 3, 32, 32)
