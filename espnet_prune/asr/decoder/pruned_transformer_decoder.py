"""ESPnet decoder ``pruned_transformer``: ESPnet's ``TransformerDecoder`` with pruning masks and compact shapes.

Same keyword arguments and parameter names as ESPnet's, plus ``pruned_structure``. ESPnet's
``forward``, ``forward_one_step``, ``score`` and ``batch_score`` (what beam search calls) run
unchanged over the gated layers. Units: :mod:`espnet_prune.asr.downstream.structure`; cost
per decoded token: :mod:`espnet_prune.asr.downstream.cost`.
"""

from typing import Any, Dict, List, Optional

from espnet.nets.pytorch_backend.transformer.embedding import PositionalEncoding
from espnet2.asr.decoder.transformer_decoder import TransformerDecoder
from typeguard import typechecked

from espnet_prune.asr.downstream.layers import GatedDecoderLayer
from espnet_prune.asr.downstream.module import PrunableDownstreamMixin, check_supported, espnet_arguments
from espnet_prune.asr.downstream.structure import DECODER_SUBLAYERS, DECODER_UNITS, DecoderStructure


class PrunedTransformerDecoder(PrunableDownstreamMixin, TransformerDecoder):
    """Transformer decoder whose self-attention heads, source-attention heads, FFN units and
    whole sublayers can be masked and physically removed (a pre-LN layer whose three sublayers
    are removed is the identity).

    Args:
        (all of ESPnet's ``TransformerDecoder``): same meaning, same defaults; ``concat_after``
            and ``qk_norm`` must be false.
        pruned_structure: the compact shape, ``{field: [one value per layer]}`` with fields
            ``self_attention_heads``, ``src_attention_heads``, ``linear_units`` (kept widths) and
            ``use_self_attention``, ``use_src_attention``, ``use_ffn`` (kept sublayers); missing
            fields, or ``None``, are dense. Written by physical pruning.
    """

    SUBLAYERS = DECODER_SUBLAYERS
    UNITS = DECODER_UNITS
    LAYERS = "decoders"
    WHERE = "decoder_conf"

    @typechecked
    def __init__(
        self,
        vocab_size: int,
        encoder_output_size: int,
        attention_heads: int = 4,
        linear_units: int = 2048,
        num_blocks: int = 6,
        dropout_rate: float = 0.1,
        positional_dropout_rate: float = 0.1,
        self_attention_dropout_rate: float = 0.0,
        src_attention_dropout_rate: float = 0.0,
        input_layer: str = "embed",
        use_output_layer: bool = True,
        pos_enc_class=PositionalEncoding,
        normalize_before: bool = True,
        concat_after: bool = False,
        layer_drop_rate: float = 0.0,
        qk_norm: bool = False,
        use_flash_attn: bool = True,
        gradient_checkpoint_layers: List[int] = [],
        pruned_structure: Optional[Dict[str, Any]] = None,
    ):
        espnet_kwargs = espnet_arguments(TransformerDecoder, locals())
        check_supported("decoder_conf", concat_after, "linear", qk_norm)
        super().__init__(**espnet_kwargs)
        layers = [True] * num_blocks
        dense = DecoderStructure(
            vocab_size=vocab_size, size=encoder_output_size, head_dim=encoder_output_size // attention_heads,
            input_layer=input_layer, use_output_layer=use_output_layer, normalize_before=normalize_before,
            num_layers=num_blocks, self_attention_heads=[attention_heads] * num_blocks,
            src_attention_heads=[attention_heads] * num_blocks, linear_units=[linear_units] * num_blocks,
            use_self_attention=layers, use_src_attention=layers, use_ffn=layers,
        )
        self._make_prunable(espnet_kwargs, _gated_layer, dense, pruned_structure)


def _gated_layer(layer) -> GatedDecoderLayer:
    """ESPnet's ``DecoderLayer`` as a :class:`GatedDecoderLayer` with the same modules."""
    return GatedDecoderLayer(layer.size, layer.self_attn, layer.src_attn, layer.feed_forward, layer.dropout.p,
                             layer.normalize_before, layer.concat_after)
