"""EncoderConfig: every ``arch`` value typed when the config is built, and the list of overrides
that change a loaded checkpoint's computation (``COMPUTATION_KEYS``) checked against the encoder."""

import copy
from dataclasses import fields

import pytest
import torch
import yaml

from espnet_prune.ssl.config import COMPUTATION_KEYS, PROBABILITY_KEYS, EncoderConfig, get_config
from espnet_prune.ssl.model import SSLEncoder
from test.espnet_prune.conftest import make_batch, perturb_
from test.espnet_prune.ssl.tiny import tiny_config


def test_numbers_written_as_users_write_them_build_a_working_encoder():
    """``1e-5`` reaches the config as the string '1e-5' (PyYAML); it used to survive until
    GroupNorm refused it in the first forward pass."""
    arch = yaml.safe_load("preset: wav2vec2_base\nlayer_norm_eps: 1e-5\nencoder_dropout: 1e-1\nlayer_drop: 5e-2\n"
                          "embed_dim: 4.8e1\nnum_heads: 4\nnum_layers: 2\nffn_dims: 96\n"
                          "conv_layers: [[32, 10, 5], [32, 8, 8], [32, 4, 4], [32, 2, 2]]\npos_conv_kernel: 16\n"
                          "pos_conv_groups: 4\n")
    assert isinstance(arch["layer_norm_eps"], str) and isinstance(arch["embed_dim"], str)
    config = get_config(arch)
    assert (config.layer_norm_eps, config.encoder_dropout, config.layer_drop) == (1e-5, 0.1, 0.05)
    assert type(config.layer_norm_eps) is float and type(config.embed_dim) is int and config.embed_dim == 48
    encoder = SSLEncoder(config)
    waveforms, lengths = make_batch()
    hidden, _ = encoder(waveforms, lengths)  # train mode: dropout and LayerDrop run
    assert torch.isfinite(hidden[-1]).all()
    assert EncoderConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("change, message", [
    ({"layer_norm_eps": "small"}, r"arch\.layer_norm_eps must be a number, got str 'small'"),
    ({"encoder_dropout": "0.1"}, r"arch\.encoder_dropout must be a number, got str '0\.1' \(a quoted number is a "
                                 r"string: remove the quotes\)"),
    ({"attention_dropout": True}, r"arch\.attention_dropout must be a number, got bool True"),
    ({"num_heads": "4"}, r"arch\.num_heads must be a whole number or a list of whole numbers, got str '4'"),
    ({"num_heads": [4, 2.5], "head_dim": 8}, r"arch\.num_heads\[1\] must be a whole number, got float 2\.5"),
    ({"embed_dim": True}, r"arch\.embed_dim must be a whole number, got bool True"),
    ({"normalize_waveform": "false"}, r"arch\.normalize_waveform must be true or false, got str 'false'"),
    ({"use_ffn": [True, 0]}, r"arch\.use_ffn\[1\] must be true or false, got int 0"),
    ({"conv_layers": [[32, 10, "5"]]}, r"arch\.conv_layers\[0\]\[2\] must be a whole number, got str '5'"),
    ({"kept_heads": [[0, 1, 2, 3], [0, 1, "2", 3]]}, r"arch\.kept_heads\[1\]\[2\] must be a whole number"),
    ({"model_type": 2}, r"arch\.model_type must be a string, got int 2"),
    ({"encoder_dropout": 1.5}, r"arch\.encoder_dropout must lie in \[0, 1\], got 1\.5"),
    ({"layer_drop": -0.1}, r"arch\.layer_drop must lie in \[0, 1\], got -0\.1"),
    ({"layer_norm_eps": 0}, r"arch\.layer_norm_eps must be > 0, got 0\.0"),
])
def test_a_value_of_the_wrong_type_is_refused_by_name(change, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**change)
    with pytest.raises(ValueError, match=message):
        get_config({**tiny_config().to_dict(), **change})


# One change of every field, and whether the tiny encoders of two kinds (post-LN wav2vec2, pre-LN
# WavLM) still load the weights (same parameter names and shapes) and then compute something else.
CHANGES = {
    "model_type": {"wav2vec2": "hubert", "wavlm": "wav2vec2"},
    "extractor_mode": "flip",
    "conv_layers": "stride",  # a stride is in no parameter's shape
    "conv_bias": "flip",
    "embed_dim": 64,
    "num_layers": 3,
    "num_heads": 2,  # head_dim follows: the projections keep their shapes
    "head_dim": {"num_heads": 2, "head_dim": 16},  # with num_heads, keeping their product
    "ffn_dims": 80,
    "use_attention": False,
    "use_ffn": False,
    "kept_heads": [[3, 2, 1, 0]] * 2,
    "layer_norm_first": "flip",
    "pos_conv_kernel": 8,
    "pos_conv_groups": 2,
    "num_buckets": 16,
    "max_distance": 32,
    "gru_rel_pos": "flip",
    "normalize_waveform": "flip",
    "sample_rate": 8000,
    "encoder_projection_dropout": 0.2,
    "encoder_dropout": 0.2,
    "attention_dropout": 0.2,
    "activation_dropout": 0.2,
    "layer_drop": 0.2,
    "layer_norm_eps": 1e-3,
    "final_layer_norm": "flip",
}


def changed(config: EncoderConfig, key: str) -> dict:
    values = config.to_dict()
    change = CHANGES[key]
    if isinstance(change, dict) and config.model_type in change:
        change = {key: change[config.model_type]}
    elif change == "flip":
        change = {key: not values[key]}
    elif change == "stride":
        layers = copy.deepcopy(values["conv_layers"])
        layers[1][2] += 1
        change = {key: layers}
    elif not isinstance(change, dict):
        change = {key: change}
    values.update(change)
    if "num_heads" in change and "head_dim" not in change:
        values["head_dim"] = None
    if "num_layers" in change:
        values.update(num_heads=values["num_heads"][0], ffn_dims=values["ffn_dims"][0], use_attention=True,
                      use_ffn=True)
    return values


def test_computation_keys_are_the_overrides_that_load_and_compute_something_else():
    assert set(CHANGES) == {f.name for f in fields(EncoderConfig)}, "classify the new field here"
    waveforms, lengths = make_batch((4000,))  # 12 frames: WavLM's relative distances reach max_distance's buckets
    found = set()
    for model_type, layer_norm_first in (("wav2vec2", False), ("wavlm", True)):
        config = tiny_config(model_type, layer_norm_first=layer_norm_first)
        torch.manual_seed(0)
        encoder = perturb_(SSLEncoder(config), seed=1)
        state = encoder.state_dict()
        with torch.no_grad():
            reference = encoder(waveforms, lengths)[0][-1]
        for key in CHANGES:
            try:
                other = SSLEncoder(EncoderConfig.from_dict(changed(config, key))).eval()
            except ValueError:  # e.g. final_layer_norm: false on a post-LN model
                continue
            other_state = other.state_dict()
            if other_state.keys() != state.keys() or any(v.shape != state[k].shape for k, v in other_state.items()):
                continue  # loading refuses it
            other.load_state_dict(state)
            with torch.no_grad():
                output = other(waveforms, lengths)[0][-1]
            if output.shape != reference.shape or not torch.equal(output, reference):
                found.add(key)
                assert key not in PROBABILITY_KEYS
    # sample_rate changes no output but the rate the input is taken for (fs is checked against it).
    assert found == set(COMPUTATION_KEYS) - {"sample_rate"}
