"""``decoder: pruned_transformer`` against ESPnet's ``TransformerDecoder``."""

import pytest
import torch
from espnet.nets.pytorch_backend.transformer.mask import subsequent_mask
from espnet2.asr.decoder.transformer_decoder import TransformerDecoder

from espnet_prune.asr.decoder.pruned_transformer_decoder import PrunedTransformerDecoder
from test.espnet_prune.asr.decoder.tiny import DECODER_BASE, DECODER_OPTIONS, memory, step_by_step, tokens


def ones_masks(decoder):
    return {unit.name: [torch.ones(unit.mask_shape(decoder.structure, layer))
                        for layer in range(decoder.structure.num_layers)] for unit in decoder.units()}


@pytest.mark.parametrize("options", DECODER_OPTIONS.values(), ids=list(DECODER_OPTIONS))
def test_espnet_weights_load_and_decoding_matches(options):
    """ESPnet's state dict loads strictly; ``forward``, ``forward_one_step`` with its cache and
    ``batch_score`` equal ESPnet's, without masks and with all-ones masks."""
    kwargs = {**DECODER_BASE, **options}
    torch.manual_seed(0)
    reference = TransformerDecoder(**kwargs).eval()
    torch.manual_seed(1)
    pruned = PrunedTransformerDecoder(**kwargs).eval()
    pruned.load_state_dict(reference.state_dict(), strict=True)
    encoder_out, encoder_lengths = memory()
    ys, ys_lengths = tokens()
    expected = reference(encoder_out, encoder_lengths, ys, ys_lengths)[0]
    expected_steps = step_by_step(reference, ys, encoder_out)
    ys_mask = subsequent_mask(3).unsqueeze(0)
    expected_one, expected_cache = reference.forward_one_step(ys[:, :3], ys_mask, encoder_out,
                                                              cache=[c[:, :2] for c in _cache(reference, ys,
                                                                                               encoder_out)])
    for masks in (None, ones_masks(pruned)):
        pruned.set_masks(masks)
        torch.testing.assert_close(pruned(encoder_out, encoder_lengths, ys, ys_lengths)[0], expected)
        torch.testing.assert_close(step_by_step(pruned, ys, encoder_out), expected_steps)
        one, cache = pruned.forward_one_step(ys[:, :3], ys_mask, encoder_out,
                                             cache=[c[:, :2] for c in _cache(pruned, ys, encoder_out)])
        torch.testing.assert_close(one, expected_one)
        for got, want in zip(cache, expected_cache):
            torch.testing.assert_close(got, want)


def _cache(decoder, ys, encoder_out):
    """Per-layer outputs over the whole prefix ``ys`` (what the cache holds after decoding it)."""
    return decoder.forward_one_step(ys, subsequent_mask(ys.shape[1]).unsqueeze(0), encoder_out)[1]


def test_zero_masks_change_the_scores():
    decoder = PrunedTransformerDecoder(**DECODER_BASE).eval()
    encoder_out, _ = memory()
    ys, _ = tokens()
    dense = step_by_step(decoder, ys, encoder_out)
    assert [unit.name for unit in decoder.units()] == ["self_head", "self_attn_layer", "src_head", "src_attn_layer",
                                                       "interm", "ffn_layer"]
    for unit in decoder.units():
        masks = ones_masks(decoder)
        masks[unit.name][1] = torch.zeros_like(masks[unit.name][1])
        decoder.set_masks(masks)
        assert (step_by_step(decoder, ys, encoder_out) - dense).abs().max() > 1e-4, unit.name
