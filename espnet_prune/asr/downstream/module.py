"""What the prunable encoders and the decoder share: structure, layers, masks.

:class:`PrunableDownstreamMixin` is mixed into ESPnet's ``ConformerEncoder``,
``TransformerEncoder`` and ``TransformerDecoder``; after ESPnet's ``__init__`` has built the
dense module, :meth:`~PrunableDownstreamMixin._make_prunable` swaps every layer for its gated
subclass (same parameters) and applies the compact structure of ``pruned_structure``.
ESPnet's own ``forward`` (and the decoder's ``forward_one_step`` / ``batch_score``) then run
unchanged over the gated layers.
"""

import inspect
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from torch import Tensor, nn

from espnet_prune.asr.downstream.structure import Sublayer, structure_from_dict, structure_to_dict
from espnet_prune.ssl.units import Unit

#: ``{unit name: [mask of layer 0, ...]}``; a mask is ``(width,)`` for a width unit, ``()`` for a
#: scalar unit, or ``None`` (that layer unmasked).
Masks = Mapping[str, Sequence[Optional[Tensor]]]


def espnet_arguments(espnet_class: type, arguments: Mapping[str, Any]) -> Dict[str, Any]:
    """The keyword arguments of ``espnet_class.__init__`` taken from ``arguments`` (a ``locals()``)."""
    names = [name for name in inspect.signature(espnet_class.__init__).parameters if name != "self"]
    return {name: arguments[name] for name in names}


def check_supported(where: str, concat_after: bool, positionwise_layer_type: str, qk_norm: bool) -> None:
    """Refuse the ESPnet options whose sublayers these classes cannot prune."""
    if qk_norm:
        raise ValueError(f"{where}: qk_norm: true is not supported by the pruned encoders/decoder")
    if concat_after:
        raise ValueError(f"{where}: concat_after: true is not supported by the pruned encoders/decoder "
                         "(its concat_linear reads the attention output beside its input)")
    if positionwise_layer_type != "linear":
        raise ValueError(f"{where}: positionwise_layer_type '{positionwise_layer_type}' is not supported by the "
                         "pruned encoders; use 'linear'")


class PrunableDownstreamMixin:
    """Masks and structure of a prunable downstream module.

    Class attributes set by the module: ``SUBLAYERS`` (its layers' sublayers), ``UNITS`` (their
    units), ``LAYERS`` (the attribute holding ESPnet's layer list: ``encoders`` or ``decoders``)
    and ``WHERE`` (``encoder_conf`` / ``decoder_conf``, for error messages).
    """

    SUBLAYERS: Tuple[Sublayer, ...] = ()
    UNITS: Tuple[Unit, ...] = ()
    LAYERS = ""
    WHERE = ""

    def _make_prunable(self, espnet_kwargs: Dict[str, Any], gated_layer: Callable[[nn.Module], nn.Module],
                       dense_structure, pruned_structure: Optional[Mapping[str, Any]]) -> None:
        """Swap every layer for ``gated_layer(layer)`` and shrink it to ``pruned_structure``."""
        #: ESPnet's keyword arguments this module was built with (without ``pruned_structure``).
        self.espnet_kwargs = dict(espnet_kwargs)
        #: The unpruned shape, built from ESPnet's keyword arguments.
        self.dense_structure = dense_structure
        #: The current shape (:class:`~espnet_prune.asr.downstream.structure.EncoderStructure` or
        #: ``DecoderStructure``).
        self.structure = structure_from_dict(dense_structure, self.SUBLAYERS, pruned_structure,
                                             f"{self.WHERE}.pruned_structure")
        layers = getattr(self, self.LAYERS)
        for index in range(len(layers)):
            layer = gated_layer(layers[index])
            for sublayer in self.SUBLAYERS:
                present = getattr(self.structure, sublayer.present)[index]
                width = getattr(self.structure, sublayer.width)[index]
                dense_width = getattr(dense_structure, sublayer.width)[index]
                if getattr(dense_structure, sublayer.present)[index] and (not present or width != dense_width):
                    layer.compact(sublayer, width, present)
            layers[index] = layer
        self._masked = False

    @property
    def pruned_structure(self) -> Dict[str, List[Any]]:
        """The per-layer fields of :attr:`structure`: the ``pruned_structure`` keyword that rebuilds it."""
        return structure_to_dict(self.structure, self.SUBLAYERS)

    def units(self) -> Tuple[Unit, ...]:
        """The pruning units this module has (present in at least one layer, with a width)."""
        return tuple(unit for unit in self.UNITS if unit.gated_layers(self.structure))

    def set_masks(self, masks: Optional[Masks]) -> None:
        """Set (or with ``None`` clear) the masks of every layer.

        Args:
            masks: ``{unit name: [one mask per layer]}``, each ``(width_l,)`` for a width unit
                (the current structure's width) or ``()`` for a scalar unit, or ``None`` for that
                layer; missing units are not masked. Masks of layers whose sublayer is removed
                are checked for shape and ignored.
        Raises:
            ValueError: an unknown unit name, a list of the wrong length, or a mask of the wrong shape.
        """
        layers = getattr(self, self.LAYERS)
        if masks is None:
            if self._masked:
                for layer in layers:
                    layer.set_layer_masks({})
                self._masked = False
            return
        by_name = {unit.name: unit for unit in self.UNITS}
        unknown = sorted(set(masks) - set(by_name))
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown mask keys {unknown}; its units are {list(by_name)}")
        for name, entries in masks.items():
            entries = list(entries)
            if len(entries) != len(layers):
                raise ValueError(f"masks['{name}'] has {len(entries)} entries for {len(layers)} layers")
            unit = by_name[name]
            for index, mask in enumerate(entries):
                if mask is not None and tuple(mask.shape) != unit.mask_shape(self.structure, index):
                    raise ValueError(f"masks['{name}'][{index}] has shape {tuple(mask.shape)}, expected "
                                     f"{unit.mask_shape(self.structure, index)}")
        for index, layer in enumerate(layers):
            layer.set_layer_masks({name: entries[index] for name, entries in masks.items()})
        self._masked = True
