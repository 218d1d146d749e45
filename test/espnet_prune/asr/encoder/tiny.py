"""Tiny encoder configs (2 blocks, D=16, 2 heads) and random masks shared by the encoder tests."""

import torch

from espnet_prune.asr.downstream.structure import EncoderStructure

CONFORMER_BASE = dict(input_size=20, output_size=16, attention_heads=2, linear_units=12, num_blocks=2,
                      cnn_module_kernel=3, dropout_rate=0.0, positional_dropout_rate=0.0, use_flash_attn=False)
#: ESPnet option combinations: macaron / conv module on and off, relative (latest and legacy) and
#: absolute positions, pre- and post-LN, conv2d subsampling and a linear input layer.
CONFORMER_OPTIONS = {
    "macaron_conv_relpos": dict(macaron_style=True, use_cnn_module=True, rel_pos_type="latest"),
    "legacy_relpos_postln": dict(macaron_style=False, use_cnn_module=True, normalize_before=False),
    "abspos_noconv_linear": dict(macaron_style=True, use_cnn_module=False, rel_pos_type="latest",
                                 pos_enc_layer_type="abs_pos", selfattention_layer_type="selfattn",
                                 input_layer="linear"),
    "conv2d6_postln_macaron": dict(macaron_style=True, rel_pos_type="latest", normalize_before=False,
                                   input_layer="conv2d6"),
}
TRANSFORMER_BASE = dict(input_size=20, output_size=16, attention_heads=2, linear_units=12, num_blocks=2,
                        dropout_rate=0.0, positional_dropout_rate=0.0, use_flash_attn=False)
TRANSFORMER_OPTIONS = {
    "conv2d_preln": dict(),
    "linear_postln": dict(input_layer="linear", normalize_before=False),
}


def inputs(frames: int = 29, batch: int = 2, dim: int = 20, seed: int = 1):
    """``(B, T, dim)`` features and lengths ``(B,)`` (the second utterance shorter)."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([frames] + [frames - 7] * (batch - 1))
    return torch.randn(batch, frames, dim, generator=generator), lengths


def random_masks(units, structure: EncoderStructure, seed: int = 0, zero_fraction: float = 0.3):
    """Soft masks in [0, 1] for ``units`` with about ``zero_fraction`` exact zeros (``None`` where the
    layer has no such sublayer)."""
    generator = torch.Generator().manual_seed(seed)
    masks = {}
    for unit in units:
        entries = []
        for layer in range(structure.num_layers):
            shape = unit.mask_shape(structure, layer)
            values = torch.rand(shape, generator=generator)
            values = torch.where(torch.rand(shape, generator=generator) < zero_fraction, 0.0, values)
            entries.append(values)
        masks[unit.name] = entries
    return masks
