"""The pruning units of an SSL encoder, each described once.

A *pruning unit* is a kind of structure a gate can remove. Every part of the package that
deals with units iterates over :data:`UNITS` instead of naming them:

* the encoder (:mod:`espnet_prune.ssl.model`) takes one mask per layer of each unit,
  shaped as :meth:`Unit.mask_shape` says, and applies it where its docstring says;
* the cost model (:mod:`espnet_prune.ssl.cost`) takes one count per layer of each unit
  (its *cost term*: the number of kept channels / heads / FFN units, or 1 / 0 for a kept /
  removed sublayer), keyed by the unit's name;
* the gate bank (:mod:`espnet_prune.pruning.gates`) builds one hard-concrete gate per
  layer that has the unit (:meth:`Unit.gated_layers`), or one gate over those layers for a
  scalar unit;
* physical pruning (:mod:`espnet_prune.ssl.prune`) removes what each unit's mask zeroes,
  per CNN layer for ``conv`` and per :data:`SUBLAYERS` entry for the Transformer units.

=============  ==========  ========================  ==========================================
unit           per         mask of layer l           cost term (count of layer l)
=============  ==========  ========================  ==========================================
``conv``       CNN layer   ``(C_l,)`` channels       kept output channels ``C_l``
``head``       layer       ``(H_l,)`` heads          kept heads ``H_l``
``attn_layer`` layer       ``()`` the sublayer       1 if the attention sublayer is kept, else 0
``interm``     layer       ``(F_l,)`` FFN units      kept FFN intermediate units ``F_l``
``ffn_layer``  layer       ``()`` the sublayer       1 if the FFN sublayer is kept, else 0
=============  ==========  ========================  ==========================================
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from espnet_prune.ssl.config import EncoderConfig


@dataclass(frozen=True)
class Unit:
    """One pruning unit.

    The ``config`` its methods take is any structure with ``num_layers`` (and, for a CNN unit,
    ``conv_layers``) and the per-layer list attributes the unit names: an :class:`EncoderConfig`
    here, the downstream encoders' and decoder's structures in
    :mod:`espnet_prune.asr.downstream.structure`.

    Args:
        name: the key of its masks, gates and counts (``conv``, ``head``, ...).
        cnn: one mask per CNN layer (else one per Transformer layer).
        width: the :class:`EncoderConfig` attribute giving each layer's number of units
            (``conv_channels``, ``num_heads``, ``ffn_dims``); ``None`` for a scalar unit,
            whose mask scales a whole sublayer.
        present: the :class:`EncoderConfig` attribute saying whether each layer still has the
            sublayer the unit belongs to (``use_attention``, ``use_ffn``); ``None``: always.
        min_keep: units the deterministic mask keeps at least, per layer (a CNN layer needs
            one channel, or the encoder's input is cut off).
        description: what one unit is, for messages and documentation.
    """

    name: str
    cnn: bool
    width: Optional[str]
    present: Optional[str]
    min_keep: int
    description: str

    @property
    def scalar(self) -> bool:
        """Whether a layer's mask is one scalar (a whole sublayer) rather than a vector."""
        return self.width is None

    @property
    def layer_kind(self) -> str:
        """``CNN`` or ``Transformer``: the layers that carry this unit's masks."""
        return "CNN" if self.cnn else "Transformer"

    def num_layers(self, config: EncoderConfig) -> int:
        """Number of masks (layers) of this unit in ``config``."""
        return len(config.conv_layers) if self.cnn else config.num_layers

    def widths(self, config: EncoderConfig) -> List[int]:
        """Units per layer: the vector masks' sizes (1 for a scalar unit)."""
        if self.width is None:
            return [1] * self.num_layers(config)
        return list(getattr(config, self.width))

    def mask_shape(self, config: EncoderConfig, layer: int) -> Tuple[int, ...]:
        """Shape of layer ``layer``'s mask: ``(width,)``, or ``()`` for a scalar unit."""
        return () if self.scalar else (self.widths(config)[layer],)

    def layer_present(self, config: EncoderConfig) -> List[bool]:
        """Whether each layer still has the structure this unit prunes."""
        if self.present is None:
            return [True] * self.num_layers(config)
        return list(getattr(config, self.present))

    def gated_layers(self, config: EncoderConfig) -> List[int]:
        """Layers that get a gate: those that have the unit, with at least one of it."""
        return [layer for layer, (present, width) in enumerate(zip(self.layer_present(config), self.widths(config)))
                if present and width > 0]

    def exact_counts(self, config: EncoderConfig) -> List[int]:
        """The cost term of every layer of ``config``: its width for a vector unit, 1 / 0 for a
        kept / removed sublayer. Widths of removed sublayers are listed too; the sublayer's 0
        cancels them in every cost."""
        if self.scalar:
            return [int(present) for present in self.layer_present(config)]
        return self.widths(config)


@dataclass(frozen=True)
class Sublayer:
    """A sublayer of a Transformer layer and the two units that prune it.

    Args:
        module: its attribute in :class:`~espnet_prune.ssl.model.EncoderLayer`
            (``attention``, ``feed_forward``).
        norm: the LayerNorm that a pre-LN layer removes with it.
        width_unit: the unit that prunes its inner width (``head``, ``interm``).
        layer_unit: the scalar unit that removes it whole (``attn_layer``, ``ffn_layer``).
    """

    module: str
    norm: str
    width_unit: str
    layer_unit: str


#: Every pruning unit, in the order the encoder consumes their masks.
UNITS: Tuple[Unit, ...] = (
    Unit("conv", cnn=True, width="conv_channels", present=None, min_keep=1,
         description="output channels of every CNN layer"),
    Unit("head", cnn=False, width="num_heads", present="use_attention", min_keep=0,
         description="attention heads"),
    Unit("attn_layer", cnn=False, width=None, present="use_attention", min_keep=0,
         description="whole attention sublayers"),
    Unit("interm", cnn=False, width="ffn_dims", present="use_ffn", min_keep=0,
         description="FFN intermediate units"),
    Unit("ffn_layer", cnn=False, width=None, present="use_ffn", min_keep=0,
         description="whole FFN sublayers"),
)
#: ``{name: Unit}``.
UNIT_BY_NAME: Dict[str, Unit] = {unit.name: unit for unit in UNITS}
#: The unit names, the keys of masks (:data:`espnet_prune.ssl.model.Masks`) and counts
#: (:data:`espnet_prune.ssl.cost.UnitCounts`).
UNIT_NAMES: Tuple[str, ...] = tuple(UNIT_BY_NAME)
#: The units whose masks are given per Transformer layer.
LAYER_UNITS: Tuple[str, ...] = tuple(unit.name for unit in UNITS if not unit.cnn)
#: The sublayers of a Transformer layer, in the order the layer runs them.
SUBLAYERS: Tuple[Sublayer, ...] = (
    Sublayer("attention", norm="layer_norm", width_unit="head", layer_unit="attn_layer"),
    Sublayer("feed_forward", norm="final_layer_norm", width_unit="interm", layer_unit="ffn_layer"),
)


def check_unit_names(names, what: str = "mask") -> None:
    """Raise ``ValueError`` naming the keys of ``names`` that are no pruning unit."""
    unknown = sorted(set(names) - set(UNIT_NAMES))
    if unknown:
        raise ValueError(f"Unknown {what} keys {unknown}; known pruning units are {list(UNIT_NAMES)}")
