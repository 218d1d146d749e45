"""The gated forward against an independent one that multiplies every mask into the activations,
as the module docstring of :mod:`espnet_prune.ssl.model` defines the units: outputs and the
gradients of every weight and of the gates' log-alphas agree (float64)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from espnet_prune.ssl.model import SSLEncoder, gated_layer_norm
from espnet_prune.ssl.units import UNITS
from test.espnet_prune.ssl.tiny import tiny_config


def activation_masked_forward(encoder: SSLEncoder, waveforms: torch.Tensor, masks) -> torch.Tensor:
    """The last hidden state ``(B, T, D)`` of unpadded ``waveforms`` with every mask multiplied into
    the activations (the encoder's modules are used only for their weights and norms)."""
    config = encoder.config
    x = F.layer_norm(waveforms, waveforms.shape[1:]) if config.normalize_waveform else waveforms
    x = x.unsqueeze(1)
    conv_masks = masks["conv"]
    last = len(conv_masks) - 1
    for i, layer in enumerate(encoder.feature_extractor.conv_layers):
        x = F.conv1d(x, layer.conv.weight, layer.conv.bias, layer.conv.stride)
        if isinstance(layer.layer_norm, nn.LayerNorm):
            x = gated_layer_norm(x.transpose(1, 2), layer.layer_norm, conv_masks[i]).transpose(1, 2)
        elif layer.layer_norm is not None:
            x = layer.layer_norm(x)
        x = F.gelu(x)
        if i < last:
            x = x * conv_masks[i][None, :, None]
    projection = encoder.encoder.feature_projection
    x = gated_layer_norm(x.transpose(1, 2), projection.layer_norm, conv_masks[-1]) * conv_masks[-1]
    x = projection.projection(x)
    transformer = encoder.encoder.transformer
    x = x + transformer.pos_conv_embed(x)
    pre = config.layer_norm_first
    if not pre:
        x = transformer.layer_norm(x)
    batch, frames, _ = x.shape
    for index, layer in enumerate(transformer.layers):
        attention, heads = layer.attention, config.num_heads[index]
        y = layer.layer_norm(x) if pre else x
        q, k, v = (proj(y).view(batch, frames, heads, config.head_dim).transpose(1, 2)
                   for proj in (attention.q_proj, attention.k_proj, attention.v_proj))
        weights = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(config.head_dim), dim=-1)
        context = (weights @ v) * masks["head"][index][None, :, None, None]
        y = attention.out_proj(context.transpose(1, 2).reshape(batch, frames, -1)) * masks["attn_layer"][index]
        x = x + y
        if not pre:
            x = layer.layer_norm(x)
        feed_forward = layer.feed_forward
        y = F.gelu(feed_forward.intermediate_dense(layer.final_layer_norm(x) if pre else x))
        y = feed_forward.output_dense(y * masks["interm"][index]) * masks["ffn_layer"][index]
        x = x + y
        if not pre:
            x = layer.final_layer_norm(x)
    return transformer.layer_norm(x) if pre else x


@pytest.mark.parametrize("layer_norm_first", [False, True])
def test_gated_forward_and_gradients_equal_activation_masking(layer_norm_first):
    torch.manual_seed(0)
    config = tiny_config(layer_norm_first=layer_norm_first)
    encoder = SSLEncoder(config).double().train()
    waveforms = torch.randn(2, 4000, dtype=torch.float64)
    log_alphas = {unit.name: [torch.randn(unit.mask_shape(config, layer), dtype=torch.float64, requires_grad=True)
                              for layer in range(unit.num_layers(config))] for unit in UNITS}

    def masks():
        # Some exact zeros (a closed gate) with their gradient path kept: masked layer norms.
        return {name: [torch.sigmoid(alpha) * (torch.arange(alpha.numel()) % 5 != 1).to(alpha).view(alpha.shape)
                       for alpha in alphas] for name, alphas in log_alphas.items()}
    weight = torch.randn(2, 12, config.embed_dim, dtype=torch.float64)
    parameters = [p for p in encoder.parameters() if p.requires_grad]
    leaves = parameters + [alpha for alphas in log_alphas.values() for alpha in alphas]

    def outputs_and_gradients(forward):
        out = forward()
        return out, torch.autograd.grad((out * weight).sum(), leaves, allow_unused=True)

    expected, expected_grads = outputs_and_gradients(lambda: activation_masked_forward(encoder, waveforms, masks()))
    actual, actual_grads = outputs_and_gradients(lambda: encoder(waveforms, None, masks())[0][-1])
    assert actual.shape == expected.shape == (2, 12, config.embed_dim)
    diff = (actual - expected).abs().max().item()
    if not diff <= 1e-10:
        pytest.fail(f"outputs differ by {diff}")
    names = [name for name, p in encoder.named_parameters() if p.requires_grad] + [
        f"log_alpha {unit}[{i}]" for unit, alphas in log_alphas.items() for i in range(len(alphas))]
    assert len(names) == len(leaves)
    for name, one, two in zip(names, expected_grads, actual_grads):
        if one is None or two is None:
            assert one is None and two is None, name
            continue
        scale = one.abs().max().item()
        diff = (one - two).abs().max().item()
        if not diff <= 1e-9 * max(1.0, scale):
            pytest.fail(f"gradient of {name} differs by {diff} (largest {scale})")
    # Every gate gets a gradient (a closed gate's sigmoid slope times 0 is 0, the others not).
    assert all(g is not None and g.abs().sum() > 0 for g in actual_grads[len(parameters):])


@pytest.mark.parametrize("units", [("attn_layer", "ffn_layer"), ("head", "interm")])
def test_sublayer_scalars_and_unit_masks_alone(units):
    """Only the sublayer scalars (or only the unit masks) given: the same as activation masking
    with the missing masks all ones."""
    torch.manual_seed(1)
    config = tiny_config()
    encoder = SSLEncoder(config).double().eval()
    waveforms = torch.randn(1, 3200, dtype=torch.float64)
    random = units + ("conv",)
    full = {unit.name: [(torch.rand if unit.name in random else torch.ones)(unit.mask_shape(config, i),
                                                                              dtype=torch.float64)
                        for i in range(unit.num_layers(config))] for unit in UNITS}
    given = {name: value for name, value in full.items() if name in random}
    with torch.no_grad():
        expected = activation_masked_forward(encoder, waveforms, full)
        diff = (encoder(waveforms, None, given)[0][-1] - expected).abs().max()
    if not diff <= 1e-10:
        pytest.fail(f"outputs differ by {diff}")
