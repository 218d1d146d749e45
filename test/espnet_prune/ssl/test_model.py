"""Input checks of the encoder and its config."""

import json

import pytest
import torch

from espnet_prune.ssl.config import EncoderConfig, get_config, receptive_field
from espnet_prune.ssl.model import SSLEncoder
from test.espnet_prune.ssl.tiny import tiny_config


def test_waveform_shorter_than_the_receptive_field_is_refused():
    encoder = SSLEncoder(tiny_config()).eval()
    field = receptive_field(encoder.config.conv_layers)
    assert field == encoder.receptive_field == 400
    hidden, lengths = encoder(torch.randn(2, field), torch.tensor([field, field]))
    assert lengths.tolist() == [1, 1]
    with pytest.raises(ValueError, match=r"399 samples is shorter than the encoder's receptive field of 400"):
        encoder(torch.randn(2, 1000), torch.tensor([1000, 399]))
    with pytest.raises(ValueError, match="shorter than the encoder's receptive field"):
        encoder(torch.randn(1, 300))


def test_input_must_be_batch_by_samples():
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        SSLEncoder(tiny_config())(torch.randn(4000))


def test_normalised_input_ignores_padding():
    """Per-utterance normalisation uses valid samples only (a layer-norm extractor, whose
    outputs do not depend on padding otherwise; group norm over time would)."""
    encoder = SSLEncoder(tiny_config(layer_norm_first=True, normalize_waveform=True)).eval()
    torch.manual_seed(0)
    short = torch.randn(1, 3000) * 3 + 1
    padded = torch.cat([short, torch.zeros(1, 1000)], dim=1)
    with torch.no_grad():
        alone, _ = encoder(short)
        batched, lengths = encoder(torch.cat([padded, torch.randn(1, 4000)]), torch.tensor([3000, 4000]))
    frames = int(lengths[0])
    assert frames == alone[0].shape[1]
    for a, b in zip(alone, batched):
        assert (a[0] - b[0, :frames]).abs().max() < 1e-4


@pytest.mark.parametrize("values, message", [
    (dict(model_type="wav2vec3"), "Unknown model_type"),
    (dict(extractor_mode="batch_norm"), "Unknown extractor_mode"),
    (dict(num_layers=2, num_heads=[4, 4, 4], head_dim=8), "num_heads has 3 entries"),
    (dict(num_heads=[4, 4], num_layers=2), "head_dim is required"),
    (dict(embed_dim=30, num_heads=4), "not divisible"),
    (dict(conv_layers=[[32, 10]]), r"\[channels, kernel, stride\]"),
])
def test_bad_config_values_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        EncoderConfig(**values)


def test_presets_and_overrides():
    with pytest.raises(ValueError, match="Unknown architecture 'wav2vec3_base'"):
        get_config("wav2vec3_base")
    with pytest.raises(ValueError, match="Unknown EncoderConfig keys: \\['hidden_size'\\]"):
        get_config({"preset": "wav2vec2_base", "hidden_size": 10})
    small = get_config({"preset": "hubert_base", "num_layers": 2})
    assert small.model_type == "hubert" and small.num_layers == 2 and small.num_heads == [12, 12]
    large = get_config("wavlm_large")
    assert large.layer_norm_first and large.extractor_mode == "layer_norm" and large.normalize_waveform
    assert EncoderConfig.from_dict(json.loads(json.dumps(large.to_dict()))) == large
