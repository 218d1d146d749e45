"""``encoder: pruned_conformer`` / ``pruned_transformer`` against ESPnet's own encoders."""

import pytest
import torch
from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
from espnet2.asr.encoder.transformer_encoder import TransformerEncoder

from espnet_prune.asr.encoder.pruned_conformer_encoder import PrunedConformerEncoder
from espnet_prune.asr.encoder.pruned_transformer_encoder import PrunedTransformerEncoder
from test.espnet_prune.asr.encoder.tiny import (
    CONFORMER_BASE,
    CONFORMER_OPTIONS,
    TRANSFORMER_BASE,
    TRANSFORMER_OPTIONS,
    inputs,
)

CASES = ([(ConformerEncoder, PrunedConformerEncoder, {**CONFORMER_BASE, **options}, name)
          for name, options in CONFORMER_OPTIONS.items()]
         + [(TransformerEncoder, PrunedTransformerEncoder, {**TRANSFORMER_BASE, **options}, name)
            for name, options in TRANSFORMER_OPTIONS.items()])


def ones_masks(encoder):
    return {unit.name: [torch.ones(unit.mask_shape(encoder.structure, layer))
                        for layer in range(encoder.structure.num_layers)] for unit in encoder.units()}


@pytest.mark.parametrize("espnet_class, pruned_class, kwargs, name", CASES, ids=[case[-1] for case in CASES])
def test_espnet_weights_load_and_outputs_match(espnet_class, pruned_class, kwargs, name):
    """ESPnet's state dict loads strictly (as ``--init_param`` does) and the outputs equal ESPnet's,
    without masks and with all-ones masks, in eval and (dropout 0) training mode."""
    torch.manual_seed(0)
    reference = espnet_class(**kwargs)
    torch.manual_seed(1)  # different initial weights: the load must replace all of them
    pruned = pruned_class(**kwargs)
    pruned.load_state_dict(reference.state_dict(), strict=True)
    features, lengths = inputs()
    for train in (False, True):
        reference.train(train)
        pruned.train(train)
        expected, expected_lengths, _ = reference(features, lengths)
        for masks in (None, ones_masks(pruned)):
            pruned.set_masks(masks)
            output, output_lengths, _ = pruned(features, lengths)
            torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-6)
            assert torch.equal(output_lengths, expected_lengths)
    pruned.set_masks(None)


def test_zero_masks_change_the_output():
    """The masks act (so the equality above is no accident of masks being ignored)."""
    encoder = PrunedConformerEncoder(**CONFORMER_BASE, macaron_style=True).eval()
    features, lengths = inputs()
    dense = encoder(features, lengths)[0]
    for unit in encoder.units():
        masks = ones_masks(encoder)
        masks[unit.name][0] = torch.zeros_like(masks[unit.name][0])
        encoder.set_masks(masks)
        difference = (encoder(features, lengths)[0] - dense).abs().max()
        assert difference > 1e-4, unit.name
    encoder.set_masks(None)


def test_units_follow_the_architecture():
    conformer = PrunedConformerEncoder(**CONFORMER_BASE, macaron_style=False, use_cnn_module=True)
    assert [unit.name for unit in conformer.units()] == ["head", "attn_layer", "conv_channel", "conv_layer",
                                                         "interm", "ffn_layer"]
    transformer = PrunedTransformerEncoder(**TRANSFORMER_BASE)
    assert [unit.name for unit in transformer.units()] == ["head", "attn_layer", "interm", "ffn_layer"]


def test_bad_masks_and_structures_are_named():
    encoder = PrunedConformerEncoder(**CONFORMER_BASE)
    with pytest.raises(ValueError, match="unknown mask keys"):
        encoder.set_masks({"conv": [None, None]})
    with pytest.raises(ValueError, match=r"masks\['head'\]\[1\] has shape \(3,\)"):
        encoder.set_masks({"head": [torch.ones(2), torch.ones(3)]})
    with pytest.raises(ValueError, match="1 entries for 2 layers"):
        encoder.set_masks({"head": [torch.ones(2)]})
    with pytest.raises(ValueError, match=r"encoder_conf.pruned_structure.attention_heads\[0\]"):
        PrunedConformerEncoder(**CONFORMER_BASE, pruned_structure={"attention_heads": [3, 2]})
    with pytest.raises(ValueError, match=r"use_macaron_ffn\[0\] is true but the architecture"):
        PrunedConformerEncoder(**CONFORMER_BASE, pruned_structure={"use_macaron_ffn": [True, False]})
    with pytest.raises(ValueError, match="unknown keys"):
        PrunedConformerEncoder(**CONFORMER_BASE, pruned_structure={"heads": [1, 1]})
    with pytest.raises(ValueError, match="concat_after"):
        PrunedConformerEncoder(**CONFORMER_BASE, concat_after=True)


def test_gradients_reach_the_masks():
    """In training, the loss is differentiable in every mask (how the gates learn)."""
    encoder = PrunedConformerEncoder(**CONFORMER_BASE, macaron_style=True).train()
    masks = {name: [mask.clone().fill_(0.9).requires_grad_() for mask in entries]
             for name, entries in ones_masks(encoder).items()}
    encoder.set_masks(masks)
    features, lengths = inputs()
    encoder(features, lengths)[0].pow(2).sum().backward()
    for name, entries in masks.items():
        for mask in entries:
            assert mask.grad is not None and bool(torch.isfinite(mask.grad).all()), name
            assert mask.grad.abs().sum() > 0, name
