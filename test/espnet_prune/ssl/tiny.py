"""A tiny SSL encoder structure for tests."""

from typing import Optional

from espnet_prune.ssl.config import EncoderConfig


def tiny_config(model_type: str = "wav2vec2", layer_norm_first: bool = False,
                extractor_mode: Optional[str] = None, **overrides) -> EncoderConfig:
    """A small random-init architecture for tests (total conv stride 320)."""
    values = dict(
        model_type=model_type,
        extractor_mode=extractor_mode or ("layer_norm" if layer_norm_first else "group_norm"),
        conv_layers=[[32, 10, 5], [32, 3, 2], [32, 3, 2], [32, 3, 2], [32, 3, 2], [32, 2, 2], [32, 2, 2]],
        conv_bias=layer_norm_first,
        embed_dim=32,
        num_layers=2,
        num_heads=4,
        ffn_dims=64,
        layer_norm_first=layer_norm_first,
        pos_conv_kernel=16,
        pos_conv_groups=4,
        num_buckets=32,
        max_distance=64,
        encoder_projection_dropout=0.0,
        encoder_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        layer_drop=0.0,
    )
    values.update(overrides)
    return EncoderConfig.from_dict(values)
