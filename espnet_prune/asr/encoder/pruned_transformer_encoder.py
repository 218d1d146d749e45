"""ESPnet encoder ``pruned_transformer``: ESPnet's ``TransformerEncoder`` with pruning masks and compact shapes.

Same keyword arguments and parameter names as ESPnet's (``encoder: transformer`` weights load
unchanged), plus ``pruned_structure``. Units: :mod:`espnet_prune.asr.downstream.structure`.
"""

from typing import Any, Dict, List, Optional

from espnet.nets.pytorch_backend.transformer.embedding import PositionalEncoding
from espnet2.asr.encoder.transformer_encoder import TransformerEncoder
from typeguard import typechecked

from espnet_prune.asr.downstream.layers import GatedTransformerEncoderLayer
from espnet_prune.asr.downstream.module import PrunableDownstreamMixin, check_supported, espnet_arguments
from espnet_prune.asr.downstream.structure import (
    TRANSFORMER_ENCODER_SUBLAYERS,
    TRANSFORMER_ENCODER_UNITS,
    EncoderStructure,
)


class PrunedTransformerEncoder(PrunableDownstreamMixin, TransformerEncoder):
    """Transformer encoder whose attention heads, FFN units and whole sublayers can be masked and
    physically removed.

    Args:
        (all of ESPnet's ``TransformerEncoder``): same meaning, same defaults; ``concat_after``
            must be false, ``positionwise_layer_type`` ``linear`` and ``qk_norm`` false.
        pruned_structure: the compact shape, ``{field: [one value per layer]}`` with fields
            ``attention_heads``, ``linear_units`` (kept widths) and ``use_attention``, ``use_ffn``
            (kept sublayers); missing fields, or ``None``, are dense. Written by physical pruning.
    """

    SUBLAYERS = TRANSFORMER_ENCODER_SUBLAYERS
    UNITS = TRANSFORMER_ENCODER_UNITS
    LAYERS = "encoders"
    WHERE = "encoder_conf"

    @typechecked
    def __init__(
        self,
        input_size: int,
        output_size: int = 256,
        attention_heads: int = 4,
        linear_units: int = 2048,
        num_blocks: int = 6,
        dropout_rate: float = 0.1,
        positional_dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.0,
        input_layer: Optional[str] = "conv2d",
        pos_enc_class=PositionalEncoding,
        pos_enc_layer_type="abs_pos",
        normalize_before: bool = True,
        concat_after: bool = False,
        positionwise_layer_type: str = "linear",
        positionwise_conv_kernel_size: int = 1,
        padding_idx: int = -1,
        interctc_layer_idx: List[int] = [],
        interctc_use_conditioning: bool = False,
        layer_drop_rate: float = 0.0,
        qk_norm: bool = False,
        use_flash_attn: bool = True,
        pruned_structure: Optional[Dict[str, Any]] = None,
    ):
        espnet_kwargs = espnet_arguments(TransformerEncoder, locals())
        check_supported("encoder_conf", concat_after, positionwise_layer_type, qk_norm)
        super().__init__(**espnet_kwargs)
        no_blocks = [False] * num_blocks
        dense = EncoderStructure(
            input_size=input_size, size=output_size, head_dim=output_size // attention_heads,
            input_layer=input_layer, pos_enc=pos_enc_layer_type, normalize_before=normalize_before, macaron_style=False,
            use_cnn_module=False, cnn_module_kernel=0, num_layers=num_blocks,
            attention_heads=[attention_heads] * num_blocks, linear_units=[linear_units] * num_blocks,
            macaron_linear_units=[0] * num_blocks, conv_channels=[0] * num_blocks,
            use_attention=[True] * num_blocks, use_ffn=[True] * num_blocks, use_macaron_ffn=no_blocks,
            use_conv=no_blocks,
        )
        self._make_prunable(espnet_kwargs, _gated_layer, dense, pruned_structure)


def _gated_layer(layer) -> GatedTransformerEncoderLayer:
    """ESPnet's Transformer ``EncoderLayer`` as a :class:`GatedTransformerEncoderLayer` with the same modules."""
    return GatedTransformerEncoderLayer(layer.size, layer.self_attn, layer.feed_forward, layer.dropout.p,
                                        layer.normalize_before, layer.concat_after, layer.stochastic_depth_rate)
