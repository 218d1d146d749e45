"""ESPnet encoder ``pruned_conformer``: ESPnet's ``ConformerEncoder`` with pruning masks and compact shapes.

It takes ESPnet's keyword arguments and keeps its parameter names, so a model trained with
``encoder: conformer`` loads unchanged (``--init_param``), plus ``pruned_structure`` for the
compact shape after physical pruning (:mod:`espnet_prune.asr.downstream.prune`). Units, masks and
their placement: :mod:`espnet_prune.asr.downstream.structure`; costs:
:mod:`espnet_prune.asr.downstream.cost`.
"""

from typing import Any, Dict, List, Optional, Union

from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
from typeguard import typechecked

from espnet_prune.asr.downstream.layers import GatedConformerLayer
from espnet_prune.asr.downstream.module import PrunableDownstreamMixin, check_supported, espnet_arguments
from espnet_prune.asr.downstream.structure import CONFORMER_SUBLAYERS, CONFORMER_UNITS, EncoderStructure


def resolve_pos_enc(rel_pos_type: str, pos_enc_layer_type: str) -> str:
    """The positional encoding ESPnet's ``ConformerEncoder`` builds (legacy relative positions by default)."""
    if rel_pos_type == "legacy" and pos_enc_layer_type == "rel_pos":
        return "legacy_rel_pos"
    return pos_enc_layer_type


class PrunedConformerEncoder(PrunableDownstreamMixin, ConformerEncoder):
    """Conformer encoder whose attention heads, FFN units (both FFNs), convolution channels and
    whole sublayers can be masked and physically removed.

    Args:
        (all of ESPnet's ``ConformerEncoder``): same meaning, same defaults; ``concat_after`` must
            be false, ``positionwise_layer_type`` ``linear`` and ``qk_norm`` false.
        pruned_structure: the compact shape, ``{field: [one value per block]}`` with fields
            ``attention_heads``, ``linear_units``, ``macaron_linear_units``, ``conv_channels``
            (kept widths) and ``use_attention``, ``use_ffn``, ``use_macaron_ffn``, ``use_conv``
            (kept sublayers); missing fields, or ``None``, are dense. Written by physical pruning.
    """

    SUBLAYERS = CONFORMER_SUBLAYERS
    UNITS = CONFORMER_UNITS
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
        normalize_before: bool = True,
        concat_after: bool = False,
        positionwise_layer_type: str = "linear",
        positionwise_conv_kernel_size: int = 3,
        macaron_style: bool = False,
        rel_pos_type: str = "legacy",
        pos_enc_layer_type: str = "rel_pos",
        selfattention_layer_type: str = "rel_selfattn",
        activation_type: str = "swish",
        use_cnn_module: bool = True,
        zero_triu: bool = False,
        cnn_module_kernel: int = 31,
        padding_idx: int = -1,
        interctc_layer_idx: List[int] = [],
        interctc_use_conditioning: bool = False,
        ctc_trim: bool = False,
        stochastic_depth_rate: Union[float, List[float]] = 0.0,
        layer_drop_rate: float = 0.0,
        max_pos_emb_len: int = 5000,
        qk_norm: bool = False,
        use_flash_attn: bool = True,
        pruned_structure: Optional[Dict[str, Any]] = None,
    ):
        espnet_kwargs = espnet_arguments(ConformerEncoder, locals())
        check_supported("encoder_conf", concat_after, positionwise_layer_type, qk_norm)
        super().__init__(**espnet_kwargs)
        blocks = [True] * num_blocks
        dense = EncoderStructure(
            input_size=input_size, size=output_size, head_dim=output_size // attention_heads,
            input_layer=input_layer, pos_enc=resolve_pos_enc(rel_pos_type, pos_enc_layer_type),
            normalize_before=normalize_before, macaron_style=macaron_style, use_cnn_module=use_cnn_module,
            cnn_module_kernel=cnn_module_kernel,
            num_layers=num_blocks,
            attention_heads=[attention_heads] * num_blocks, linear_units=[linear_units] * num_blocks,
            macaron_linear_units=[linear_units if macaron_style else 0] * num_blocks,
            conv_channels=[output_size if use_cnn_module else 0] * num_blocks,
            use_attention=blocks, use_ffn=blocks, use_macaron_ffn=[macaron_style] * num_blocks,
            use_conv=[use_cnn_module] * num_blocks,
        )
        self._make_prunable(espnet_kwargs, _gated_block, dense, pruned_structure)


def _gated_block(layer) -> GatedConformerLayer:
    """ESPnet's Conformer ``EncoderLayer`` as a :class:`GatedConformerLayer` with the same modules."""
    return GatedConformerLayer(layer.size, layer.self_attn, layer.feed_forward, layer.feed_forward_macaron,
                               layer.conv_module, layer.dropout.p, layer.normalize_before, layer.concat_after,
                               layer.stochastic_depth_rate)
