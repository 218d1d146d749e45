"""Physical pruning: the compact module computes what the masked one does."""

import pytest
import torch
from espnet.nets.pytorch_backend.transformer.mask import subsequent_mask

from espnet_prune.asr.decoder.pruned_transformer_decoder import PrunedTransformerDecoder
from espnet_prune.asr.downstream.cost import decoder_params, encoder_params
from espnet_prune.asr.downstream.prune import prune_downstream
from espnet_prune.asr.encoder.pruned_conformer_encoder import PrunedConformerEncoder
from espnet_prune.asr.encoder.pruned_transformer_encoder import PrunedTransformerEncoder
from espnet_prune.ssl.quantize import quantize_dynamic
from test.espnet_prune.asr.decoder.tiny import DECODER_BASE, DECODER_OPTIONS, memory, step_by_step, tokens
from test.espnet_prune.asr.encoder.tiny import (
    CONFORMER_BASE,
    CONFORMER_OPTIONS,
    TRANSFORMER_BASE,
    TRANSFORMER_OPTIONS,
    inputs,
    random_masks,
)


def settle_batch_norms(module):
    """Give the BatchNorms non-trivial running statistics (so pruning their channels is checked)."""
    for submodule in module.modules():
        if isinstance(submodule, torch.nn.BatchNorm1d):
            submodule.running_mean.uniform_(-0.5, 0.5)
            submodule.running_var.uniform_(0.5, 1.5)


ENCODERS = ([(PrunedConformerEncoder, {**CONFORMER_BASE, **options}, name) for name, options in
             CONFORMER_OPTIONS.items()]
            + [(PrunedTransformerEncoder, {**TRANSFORMER_BASE, **options}, name) for name, options in
               TRANSFORMER_OPTIONS.items()])


@pytest.mark.parametrize("cls, kwargs, name", ENCODERS, ids=[case[-1] for case in ENCODERS])
@pytest.mark.parametrize("seed", [0, 1])
def test_compact_encoder_equals_masked(cls, kwargs, name, seed):
    torch.manual_seed(seed)
    encoder = cls(**kwargs).eval()
    settle_batch_norms(encoder)
    masks = random_masks(encoder.units(), encoder.structure, seed=seed, zero_fraction=0.4)
    masks[encoder.units()[1].name][0] = torch.tensor(0.0)  # a whole sublayer removed
    encoder.set_masks(masks)
    features, lengths = inputs()
    expected = encoder(features, lengths)[0]
    compact = prune_downstream(encoder, masks)
    assert compact.structure != encoder.structure
    assert encoder_params(compact.structure)["total"] == sum(p.numel() for p in compact.parameters())
    torch.testing.assert_close(compact(features, lengths)[0], expected, rtol=1e-4, atol=1e-5)
    # The compact structure rebuilds the compact module from its keyword arguments alone.
    rebuilt = cls(**kwargs, pruned_structure=compact.pruned_structure).eval()
    rebuilt.load_state_dict(compact.state_dict(), strict=True)
    torch.testing.assert_close(rebuilt(features, lengths)[0], expected, rtol=1e-4, atol=1e-5)


def test_empty_sublayers_keep_their_bias():
    """All heads / FFN units / channels zero while the sublayer stays: the output bias remains."""
    encoder = PrunedConformerEncoder(**CONFORMER_BASE, macaron_style=True).eval()
    for module in encoder.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d)) and module.bias is not None:
            torch.nn.init.uniform_(module.bias, -1.0, 1.0)
    masks = {unit.name: [torch.zeros(unit.mask_shape(encoder.structure, 0)), None]
             for unit in encoder.units() if unit.width is not None}
    encoder.set_masks(masks)
    features, lengths = inputs()
    expected = encoder(features, lengths)[0]
    compact = prune_downstream(encoder, masks)
    assert compact.pruned_structure["attention_heads"] == [0, 2]
    assert compact.pruned_structure["conv_channels"] == [0, 16]
    torch.testing.assert_close(compact(features, lengths)[0], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("options", DECODER_OPTIONS.values(), ids=list(DECODER_OPTIONS))
def test_compact_decoder_equals_masked(options):
    torch.manual_seed(0)
    decoder = PrunedTransformerDecoder(**DECODER_BASE, **options).eval()
    masks = random_masks(decoder.units(), decoder.structure, seed=3, zero_fraction=0.4)
    masks["src_attn_layer"] = [torch.tensor(0.7), torch.tensor(0.0)]
    masks["self_attn_layer"][0] = torch.tensor(0.0)
    decoder.set_masks(masks)
    encoder_out, encoder_lengths = memory()
    ys, ys_lengths = tokens()
    expected_forward = decoder(encoder_out, encoder_lengths, ys, ys_lengths)[0]
    expected_steps = step_by_step(decoder, ys, encoder_out)
    compact = prune_downstream(decoder, masks)
    assert compact.pruned_structure["use_src_attention"] == [True, False]
    assert decoder_params(compact.structure)["total"] == sum(p.numel() for p in compact.parameters())
    assert decoder_params(compact.structure)["total"] < decoder_params(decoder.structure)["total"]
    torch.testing.assert_close(compact(encoder_out, encoder_lengths, ys, ys_lengths)[0], expected_forward,
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(step_by_step(compact, ys, encoder_out), expected_steps, rtol=1e-4, atol=1e-5)
    ys_mask = subsequent_mask(ys.shape[1]).unsqueeze(0)
    torch.testing.assert_close(compact.forward_one_step(ys, ys_mask, encoder_out)[0],
                               decoder.forward_one_step(ys, ys_mask, encoder_out)[0], rtol=1e-4, atol=1e-5)


def test_bad_mask_values_are_refused():
    encoder = PrunedConformerEncoder(**CONFORMER_BASE)
    with pytest.raises(ValueError, match=r"masks\['head'\]\[0\] must hold values in \[0, 1\]"):
        prune_downstream(encoder, {"head": [torch.tensor([float("nan"), 1.0]), None]})


def test_compact_modules_quantize_to_int8():
    """The output maps stay plain ``nn.Linear`` (masks act through a pre-hook), so ESPnet's int8
    quantization (``--quantize_asr_model true``) converts every linear map of a compact decoder, and its
    scores stay close to the float ones."""
    torch.manual_seed(0)
    decoder = PrunedTransformerDecoder(**DECODER_BASE).eval()
    masks = random_masks(decoder.units(), decoder.structure, seed=4, zero_fraction=0.3)
    masks["self_attn_layer"] = [torch.tensor(1.0), torch.tensor(1.0)]
    compact = prune_downstream(decoder, masks)
    quantized = quantize_dynamic(compact)
    assert not any(type(module) is torch.nn.Linear for module in quantized.modules())
    encoder_out, _ = memory()
    ys, _ = tokens()
    difference = (step_by_step(quantized, ys, encoder_out) - step_by_step(compact, ys, encoder_out)).abs().max()
    assert difference < 0.1
