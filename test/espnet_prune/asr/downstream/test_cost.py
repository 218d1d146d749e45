"""Exact parameter and MAC counts of the downstream modules against the modules and torch's flop counter."""

import pytest
import torch
from espnet.nets.pytorch_backend.transformer.mask import subsequent_mask
from torch.utils.flop_counter import FlopCounterMode

from espnet_prune.asr.decoder.pruned_transformer_decoder import PrunedTransformerDecoder
from espnet_prune.asr.downstream.cost import (
    decoder_macs,
    decoder_params,
    decoder_step_macs,
    encoder_macs,
    encoder_macs_per_second,
    encoder_output_frames,
    encoder_params,
)
from espnet_prune.asr.encoder.pruned_conformer_encoder import PrunedConformerEncoder
from espnet_prune.asr.encoder.pruned_transformer_encoder import PrunedTransformerEncoder
from test.espnet_prune.asr.decoder.tiny import DECODER_BASE, memory
from test.espnet_prune.asr.encoder.tiny import CONFORMER_BASE, CONFORMER_OPTIONS, TRANSFORMER_BASE, inputs

#: Compact shapes: fewer heads / units / channels, an empty sublayer (width 0) and removed sublayers.
CONFORMER_COMPACT = {"attention_heads": [1, 0], "linear_units": [5, 12], "macaron_linear_units": [0, 3],
                     "conv_channels": [7, 16], "use_attention": [True, True], "use_ffn": [False, True],
                     "use_macaron_ffn": [True, False], "use_conv": [True, False]}
DECODER_COMPACT = {"self_attention_heads": [1, 2], "src_attention_heads": [0, 1], "linear_units": [4, 12],
                   "use_self_attention": [True, False], "use_src_attention": [True, True], "use_ffn": [False, True]}


def flop_macs(function) -> int:
    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops() // 2


def conformer(options, compact):
    kwargs = {**CONFORMER_BASE, **options}
    if compact:
        kwargs["pruned_structure"] = {key: value for key, value in CONFORMER_COMPACT.items()
                                      if (kwargs.get("macaron_style") or "macaron" not in key)
                                      and (kwargs.get("use_cnn_module", True) or "conv" not in key)}
    return PrunedConformerEncoder(**kwargs).eval()


@pytest.mark.parametrize("compact", [False, True], ids=["dense", "compact"])
@pytest.mark.parametrize("name", list(CONFORMER_OPTIONS))
def test_conformer_counts_are_exact(name, compact):
    encoder = conformer(CONFORMER_OPTIONS[name], compact)
    structure = encoder.structure
    assert encoder_params(structure)["total"] == sum(p.numel() for p in encoder.parameters())
    features, lengths = inputs(frames=41, batch=1)
    with torch.no_grad():
        macs = flop_macs(lambda: encoder(features, lengths))
        frames = encoder(features, lengths)[1].item()
    assert encoder_macs(structure, 41)["total"] == macs
    assert encoder_output_frames(structure, 41) == frames


def test_transformer_encoder_counts_are_exact():
    for compact in (None, {"attention_heads": [2, 1], "linear_units": [0, 3], "use_ffn": [True, False]}):
        encoder = PrunedTransformerEncoder(**TRANSFORMER_BASE, pruned_structure=compact).eval()
        assert encoder_params(encoder.structure)["total"] == sum(p.numel() for p in encoder.parameters())
        features, lengths = inputs(frames=41, batch=1)
        with torch.no_grad():
            assert encoder_macs(encoder.structure, 41)["total"] == flop_macs(lambda: encoder(features, lengths))


def test_hand_count_of_one_block():
    """One post-subsampling block by hand: D=16, 2 heads of 8, FFN 12, 'linear' input of 20 features,
    T=10, absolute positions, no conv module, no macaron."""
    encoder = PrunedConformerEncoder(**{**CONFORMER_BASE, "num_blocks": 1, "input_layer": "linear",
                                        "use_cnn_module": False, "rel_pos_type": "latest",
                                        "pos_enc_layer_type": "abs_pos", "selfattention_layer_type": "selfattn"})
    macs = encoder_macs(encoder.structure, 10)
    assert macs["embed"] == 10 * 20 * 16
    assert macs["attention"] == 4 * 10 * 16 * 16 + 2 * 10 * 10 * 16
    assert macs["feed_forward"] == 2 * 10 * 16 * 12
    assert encoder_macs_per_second(encoder.structure, 50.0, 0.2)["total"] == macs["total"] / 0.2


@pytest.mark.parametrize("compact", [None, DECODER_COMPACT], ids=["dense", "compact"])
def test_decoder_counts_are_exact(compact):
    decoder = PrunedTransformerDecoder(**DECODER_BASE, pruned_structure=compact).eval()
    structure = decoder.structure
    assert decoder_params(structure)["total"] == sum(p.numel() for p in decoder.parameters())
    encoder_out, _ = memory(frames=9, batch=1)
    ys = torch.tensor([[1, 4, 2, 7]])
    with torch.no_grad():
        cache = decoder.forward_one_step(ys[:, :3], subsequent_mask(3).unsqueeze(0), encoder_out)[1]
        step = flop_macs(lambda: decoder.batch_score(ys, [[c[0] for c in cache]], encoder_out))
        states = [None]
        total = 0
        for length in range(1, 5):
            total += flop_macs(lambda: decoder.batch_score(ys[:, :length], states, encoder_out))
            states = decoder.batch_score(ys[:, :length], states, encoder_out)[1]
    assert decoder_step_macs(structure, 9, 4)["total"] == step
    assert decoder_macs(structure, 9, 4)["total"] == total


def test_expected_counts_are_differentiable():
    encoder = PrunedConformerEncoder(**CONFORMER_BASE, macaron_style=True)
    keep = torch.full((2,), 0.5, requires_grad=True)
    counts = {"head": [keep.sum(), keep.sum()], "attn_layer": [keep[0], keep[1]]}
    macs = encoder_macs(encoder.structure, 41, counts)["total"]
    macs.backward()
    assert keep.grad is not None and bool((keep.grad > 0).all())
    with pytest.raises(ValueError, match="Unknown unit count key 'conv'"):
        encoder_params(encoder.structure, {"conv": [1, 1]})
