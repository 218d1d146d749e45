"""Dynamic int8 quantization of the encoder: which modules it replaces, and that pruned
models with zero-size linear maps stay correct."""

import pytest
import torch
from torch import nn

from espnet_prune.ssl.model import EmptyLinear, SSLEncoder
from espnet_prune.ssl.quantize import quantization_summary, quantize_dynamic
from test.espnet_prune.conftest import make_batch, perturb_
from test.espnet_prune.ssl.tiny import tiny_config


def encoder(**overrides) -> SSLEncoder:
    torch.manual_seed(0)
    return perturb_(SSLEncoder(tiny_config(head_dim=8, **overrides)), 0)


def relative_error(model: nn.Module, quantized: nn.Module) -> float:
    speech, lengths = make_batch((8000, 6000))
    with torch.no_grad():
        expected = model(speech, lengths)[0][-1]
        actual = quantized(speech, lengths)[0][-1]
    return float((actual - expected).norm() / expected.norm())


@pytest.mark.parametrize("model_type", ["wav2vec2", "wavlm"])
def test_every_linear_map_is_quantized_and_the_convolutions_are_not(model_type):
    model = encoder(model_type=model_type)
    quantized = quantize_dynamic(model)
    linears = sum(type(m) is nn.Linear for m in model.modules())
    # feature projection + (q, k, v, out, 2 FFN [+ WavLM's gate]) per layer
    assert linears == 1 + 2 * (6 + (model_type == "wavlm"))
    assert quantization_summary(quantized) == {"int8_linear": linears, "float_linear": 0, "empty_linear": 0,
                                               "conv": 8}
    assert quantization_summary(model)["float_linear"] == linears  # the input model is left alone
    assert 0.0 < relative_error(model, quantized) < 0.05


@pytest.mark.parametrize("heads,ffn", [([4, 0], [64, 64]), ([4, 4], [64, 0])])
def test_zero_size_linear_maps_are_left_alone(heads, ffn):
    """A layer with every head (or FFN unit) removed but its sublayer kept: quantizing its
    zero-size nn.Linear gave NaN or a wrong bias; EmptyLinear is skipped and exact."""
    model = encoder(num_heads=heads, ffn_dims=ffn)
    empty = [m for m in model.modules() if isinstance(m, EmptyLinear)]
    assert len(empty) == (4 if 0 in heads else 2)
    quantized = quantize_dynamic(model)
    summary = quantization_summary(quantized)
    assert summary["empty_linear"] == len(empty) and summary["float_linear"] == 0
    error = relative_error(model, quantized)
    assert 0.0 < error < 0.05, error


def test_empty_linear_computes_what_nn_linear_computes():
    for in_features, out_features in ((0, 5), (5, 0)):
        empty = EmptyLinear(in_features, out_features)
        reference = nn.Linear(in_features, out_features)
        with torch.no_grad():
            reference.bias.copy_(torch.randn(out_features))
            empty.load_state_dict(reference.state_dict())
        x = torch.randn(2, 3, in_features)
        assert torch.equal(empty(x), reference(x))


def test_bad_quantization_options_are_rejected():
    with pytest.raises(ValueError, match="not torch.nn classes"):
        quantize_dynamic(nn.Linear(2, 2), modules=["Linearr"])
    with pytest.raises(ValueError, match="qint8 or float16"):
        quantize_dynamic(nn.Linear(2, 2), dtype="int4")
