"""Structure and pruning units of ESPnet's downstream encoders and attention decoder.

A prunable downstream module (``encoder: pruned_conformer``, ``encoder: pruned_transformer``,
``decoder: pruned_transformer``) is ESPnet's module whose layers are made of *sublayers*
(:class:`Sublayer`): an attention, a feed-forward network or a Conformer convolution module,
each added to the residual stream. Every sublayer has two pruning units
(:class:`espnet_prune.ssl.units.Unit`, the same description the SSL encoder uses): one that
prunes its inner width and one scalar unit that removes it whole. A layer whose sublayers are
all removed is an identity in a pre-LN module (``normalize_before: true``), i.e. a removed layer;
a Conformer block keeps its ``norm_final``, so it never disappears completely.

The shape of a module, dense or pruned, is an :class:`EncoderStructure` or
:class:`DecoderStructure`: the fixed hyper-parameters (from ESPnet's constructor keywords)
and one entry per layer of every width and presence field. The per-layer fields are what the
constructor keyword ``pruned_structure`` holds (:func:`structure_from_dict`).

Encoder units (Conformer; the Transformer encoder has the ``self_attn`` and ``feed_forward`` rows):

========================  ================  ===============  ====================================
unit                      sublayer          mask of layer l  cost term (count of layer l)
========================  ================  ===============  ====================================
``macaron_interm``        macaron FFN       ``(F'_l,)``      kept macaron FFN units
``macaron_ffn_layer``     macaron FFN       ``()``           1 if the macaron FFN is kept, else 0
``head``                  self-attention    ``(H_l,)``       kept attention heads
``attn_layer``            self-attention    ``()``           1 if the attention is kept, else 0
``conv_channel``          conv module       ``(C_l,)``       kept depthwise channels
``conv_layer``            conv module       ``()``           1 if the conv module is kept, else 0
``interm``                FFN               ``(F_l,)``       kept FFN units
``ffn_layer``             FFN               ``()``           1 if the FFN is kept, else 0
========================  ================  ===============  ====================================

Decoder units:

========================  ================  ===============  ====================================
unit                      sublayer          mask of layer l  cost term (count of layer l)
========================  ================  ===============  ====================================
``self_head``             self-attention    ``(H_l,)``       kept self-attention heads
``self_attn_layer``       self-attention    ``()``           1 if the self-attention is kept
``src_head``              source attention  ``(S_l,)``       kept source-attention heads
``src_attn_layer``        source attention  ``()``           1 if the source attention is kept
``interm``                FFN               ``(F_l,)``       kept FFN units
``ffn_layer``             FFN               ``()``           1 if the FFN is kept, else 0
========================  ================  ===============  ====================================

Where a mask acts: a width mask scales the units' inputs of the sublayer's output map (the
attention's ``linear_out`` columns of each head, the FFN's ``w_2`` columns, the convolution
module's ``pointwise_conv2`` input channels); a scalar mask scales the sublayer's output.
"""

from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, List, Mapping, Optional, Tuple

from espnet_prune.ssl.units import Unit

#: Kinds of sublayer: what its width unit is and which map reads it.
ATTENTION, FEED_FORWARD, CONVOLUTION = "attention", "feed_forward", "convolution"
#: The map of each sublayer kind whose inputs are the pruned units (and whose output is the sublayer's).
OUTPUT_MAP = {ATTENTION: "linear_out", FEED_FORWARD: "w_2", CONVOLUTION: "pointwise_conv2"}


@dataclass(frozen=True)
class Sublayer:
    """A sublayer of a downstream layer and the two units that prune it.

    Args:
        module: its attribute in ESPnet's layer (``self_attn``, ``feed_forward``, ...).
        norm: the LayerNorm in front of it (pre-LN) or after its residual sum (post-LN).
        kind: :data:`ATTENTION`, :data:`FEED_FORWARD` or :data:`CONVOLUTION`.
        width: the structure field holding its per-layer width.
        present: the structure field saying whether each layer still has it.
        width_unit: the unit pruning its width (heads, FFN units, channels).
        layer_unit: the scalar unit removing it whole.
        description: what one width unit is.
    """

    module: str
    norm: str
    kind: str
    width: str
    present: str
    width_unit: str
    layer_unit: str
    description: str

    def units(self) -> Tuple[Unit, Unit]:
        """The width unit and the scalar unit, as :class:`~espnet_prune.ssl.units.Unit` rows."""
        return (Unit(self.width_unit, cnn=False, width=self.width, present=self.present, min_keep=0,
                     description=self.description),
                Unit(self.layer_unit, cnn=False, width=None, present=self.present, min_keep=0,
                     description=f"whole {self.module} sublayers"))


#: The sublayers of a Conformer block, in the order the block runs them.
CONFORMER_SUBLAYERS: Tuple[Sublayer, ...] = (
    Sublayer("feed_forward_macaron", "norm_ff_macaron", FEED_FORWARD, "macaron_linear_units", "use_macaron_ffn",
             "macaron_interm", "macaron_ffn_layer", "units of the macaron (first) FFN"),
    Sublayer("self_attn", "norm_mha", ATTENTION, "attention_heads", "use_attention", "head", "attn_layer",
             "self-attention heads"),
    Sublayer("conv_module", "norm_conv", CONVOLUTION, "conv_channels", "use_conv", "conv_channel", "conv_layer",
             "depthwise channels of the convolution module"),
    Sublayer("feed_forward", "norm_ff", FEED_FORWARD, "linear_units", "use_ffn", "interm", "ffn_layer",
             "FFN units"),
)
#: The sublayers of a Transformer encoder layer.
TRANSFORMER_ENCODER_SUBLAYERS: Tuple[Sublayer, ...] = (
    Sublayer("self_attn", "norm1", ATTENTION, "attention_heads", "use_attention", "head", "attn_layer",
             "self-attention heads"),
    Sublayer("feed_forward", "norm2", FEED_FORWARD, "linear_units", "use_ffn", "interm", "ffn_layer",
             "FFN units"),
)
#: The sublayers of a Transformer decoder layer.
DECODER_SUBLAYERS: Tuple[Sublayer, ...] = (
    Sublayer("self_attn", "norm1", ATTENTION, "self_attention_heads", "use_self_attention", "self_head",
             "self_attn_layer", "self-attention heads"),
    Sublayer("src_attn", "norm2", ATTENTION, "src_attention_heads", "use_src_attention", "src_head",
             "src_attn_layer", "source-attention heads"),
    Sublayer("feed_forward", "norm3", FEED_FORWARD, "linear_units", "use_ffn", "interm", "ffn_layer",
             "FFN units"),
)


def units_of(sublayers: Tuple[Sublayer, ...]) -> Tuple[Unit, ...]:
    """The pruning units of a layer made of ``sublayers``, width unit then scalar unit of each."""
    return tuple(unit for sublayer in sublayers for unit in sublayer.units())


#: Pruning units of ``encoder: pruned_conformer`` (the macaron / conv rows are absent where the
#: architecture has no macaron FFN / convolution module: their ``present`` is false in every layer).
CONFORMER_UNITS: Tuple[Unit, ...] = units_of(CONFORMER_SUBLAYERS)
#: Pruning units of ``encoder: pruned_transformer``.
TRANSFORMER_ENCODER_UNITS: Tuple[Unit, ...] = units_of(TRANSFORMER_ENCODER_SUBLAYERS)
#: Pruning units of ``decoder: pruned_transformer``.
DECODER_UNITS: Tuple[Unit, ...] = units_of(DECODER_SUBLAYERS)


@dataclass(frozen=True)
class EncoderStructure:
    """Shape of a Conformer or Transformer encoder (a Transformer encoder has no macaron FFN nor
    convolution module).

    Fixed hyper-parameters (ESPnet's constructor keywords):
        input_size: feature dimension of the input (the frontend's output).
        size: attention dimension D (``output_size``).
        head_dim: width of one attention head, ``output_size // attention_heads``.
        input_layer: ``conv2d``, ``conv2d1``, ``conv2d2``, ``conv2d6``, ``conv2d8``, ``linear``, or
            ``None`` (the names of ESPnet's ``input_layer``).
        pos_enc: ``abs_pos``, ``scaled_abs_pos``, ``rel_pos`` or ``legacy_rel_pos`` (after ESPnet's
            ``rel_pos_type`` resolution).
        normalize_before: pre-LN blocks (and the final ``after_norm``).
        macaron_style: the blocks were built with a macaron FFN (its ``ff_scale`` of 0.5 stays when
            the macaron FFN is pruned away).
        use_cnn_module: the blocks were built with a convolution module (``norm_final`` stays).
        cnn_module_kernel: depthwise kernel size.
    Per block (lists of ``num_layers`` entries, the ``pruned_structure`` fields):
        attention_heads, linear_units, macaron_linear_units, conv_channels: kept widths.
        use_attention, use_ffn, use_macaron_ffn, use_conv: whether the sublayer is still there.
    """

    input_size: int
    size: int
    head_dim: int
    input_layer: Optional[str]
    pos_enc: str
    normalize_before: bool
    macaron_style: bool
    use_cnn_module: bool
    cnn_module_kernel: int
    num_layers: int
    attention_heads: List[int]
    linear_units: List[int]
    macaron_linear_units: List[int]
    conv_channels: List[int]
    use_attention: List[bool]
    use_ffn: List[bool]
    use_macaron_ffn: List[bool]
    use_conv: List[bool]


@dataclass(frozen=True)
class DecoderStructure:
    """Shape of a Transformer decoder.

    Fixed hyper-parameters (ESPnet's constructor keywords):
        vocab_size: output tokens V.
        size: attention dimension D (``encoder_output_size``).
        head_dim: width of one attention head, ``D // attention_heads``.
        input_layer: ``embed`` or ``linear``.
        use_output_layer: whether the decoder ends in its ``D -> V`` output layer.
        normalize_before: pre-LN layers (and the final ``after_norm``).
    Per layer (lists of ``num_layers`` entries, the ``pruned_structure`` fields):
        self_attention_heads, src_attention_heads, linear_units: kept widths.
        use_self_attention, use_src_attention, use_ffn: whether the sublayer is still there.
    """

    vocab_size: int
    size: int
    head_dim: int
    input_layer: str
    use_output_layer: bool
    normalize_before: bool
    num_layers: int
    self_attention_heads: List[int]
    src_attention_heads: List[int]
    linear_units: List[int]
    use_self_attention: List[bool]
    use_src_attention: List[bool]
    use_ffn: List[bool]


def per_layer_fields(sublayers: Tuple[Sublayer, ...]) -> Tuple[str, ...]:
    """The ``pruned_structure`` keys of a module made of ``sublayers``: widths, then presences."""
    return tuple(s.width for s in sublayers) + tuple(s.present for s in sublayers)


def structure_to_dict(structure, sublayers: Tuple[Sublayer, ...]) -> Dict[str, List[Any]]:
    """The per-layer fields of ``structure`` as a plain dict (the ``pruned_structure`` value)."""
    values = asdict(structure)
    return {key: list(values[key]) for key in per_layer_fields(sublayers)}


def structure_from_dict(dense, sublayers: Tuple[Sublayer, ...], pruned: Optional[Mapping[str, Any]],
                        where: str):
    """``dense`` with the per-layer fields of ``pruned`` (a ``pruned_structure`` value) applied.

    Args:
        dense: the structure of the unpruned module (its fixed fields are kept).
        sublayers: the module's sublayers (which keys ``pruned`` may have).
        pruned: ``{field: [one value per layer]}``; missing fields stay dense; ``None``: dense.
        where: the YAML key of ``pruned`` for error messages (``encoder_conf.pruned_structure``).
    Raises:
        ValueError: naming the key of an unknown field, a list of the wrong length, a width
            beyond the dense one, or a sublayer the architecture does not have.
    """
    if pruned is None:
        return dense
    if not isinstance(pruned, Mapping):
        raise ValueError(f"{where} must be a mapping of per-layer lists, got {type(pruned).__name__}")
    allowed = per_layer_fields(sublayers)
    unknown = sorted(set(pruned) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known keys are {list(allowed)}")
    changes: Dict[str, List[Any]] = {}
    for key, values in pruned.items():
        if not isinstance(values, (list, tuple)) or len(values) != dense.num_layers:
            raise ValueError(f"{where}.{key} must be a list of {dense.num_layers} entries (one per layer), "
                             f"got {values!r}")
        limits = getattr(dense, key)
        if key.startswith("use_"):
            for index, (value, allowed_value) in enumerate(zip(values, limits)):
                if not isinstance(value, bool):
                    raise ValueError(f"{where}.{key}[{index}] must be true or false, got {value!r}")
                if value and not allowed_value:
                    raise ValueError(f"{where}.{key}[{index}] is true but the architecture has no such sublayer")
        else:
            for index, (value, limit) in enumerate(zip(values, limits)):
                if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
                    raise ValueError(f"{where}.{key}[{index}] must be an integer in [0, {limit}], got {value!r}")
        changes[key] = list(values)
    return replace(dense, **changes)

