"""Physical pruning of the downstream modules: a masked module becomes a smaller one computing the same.

:func:`prune_downstream` reads unit masks (the format of ``set_masks``), removes the units whose
mask is exactly zero and folds the kept units' mask values into the map that reads them, where
the masked module applied them:

=====================  =========================================  ===================================
unit                   removed by index selection                 mask value folded into
=====================  =========================================  ===================================
attention heads        ``linear_q/k/v`` rows (and ``linear_pos``  ``linear_out`` columns of the head
                       rows, ``pos_bias_u/v`` of relative
                       positions)
FFN units              ``w_1`` rows                               ``w_2`` columns
conv channels          ``pointwise_conv1`` rows of both GLU       ``pointwise_conv2`` input channels
                       halves, ``depthwise_conv``, ``norm``
whole sublayer         the sublayer (and a pre-LN layer's norm)   the output map's weight and bias
                       when its mask is 0
=====================  =========================================  ===================================

A kept sublayer with no unit left becomes an :class:`~espnet_prune.asr.downstream.layers.EmptySublayer`
(its output map's bias). The result is the same class built from the same ESPnet keyword arguments
with ``pruned_structure`` set, filled with ``load_state_dict(strict=True)``; so a config with that
``pruned_structure`` and the compact state dict rebuild it anywhere.
"""

from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from espnet_prune.asr.downstream.module import Masks
from espnet_prune.asr.downstream.structure import ATTENTION, CONVOLUTION, OUTPUT_MAP, Sublayer
from espnet_prune.layers.unit_selection import StateDict, head_rows, keep_units


def _mask_value(masks: Masks, unit: str, layer: int, shape: Tuple[int, ...]) -> Optional[Tensor]:
    """Layer ``layer``'s mask of ``unit`` as a float64 tensor (``None``: no mask), checked."""
    entries = masks.get(unit)
    if entries is None or entries[layer] is None:
        return None
    mask = torch.as_tensor(entries[layer]).detach().to(torch.float64)
    if tuple(mask.shape) != shape:
        raise ValueError(f"masks['{unit}'][{layer}] has shape {tuple(mask.shape)}, expected {shape}")
    if not bool(torch.isfinite(mask).all()) or bool((mask < 0).any()) or bool((mask > 1).any()):
        raise ValueError(f"masks['{unit}'][{layer}] must hold values in [0, 1]")
    return mask


def _drop(state: StateDict, prefix: str) -> None:
    for key in [key for key in state if key.startswith(prefix)]:
        del state[key]


def _prune_width(state: StateDict, prefix: str, sublayer: Sublayer, kept: Tensor, width: int,
                 mask: Optional[Tensor], head_dim: int) -> None:
    """Keep the units ``kept`` of the sublayer at ``prefix`` (``...self_attn.``), folding ``mask``."""
    output = prefix + OUTPUT_MAP[sublayer.kind]
    if sublayer.kind == ATTENTION:
        columns = None if mask is None else mask.repeat_interleave(head_dim)
        keep_units(state, head_rows(kept, head_dim), [prefix + name for name in ("linear_q", "linear_k", "linear_v",
                                                                                  "linear_pos")],
                   [output], columns)
        for name in ("pos_bias_u", "pos_bias_v"):
            if prefix + name in state:
                state[prefix + name] = state[prefix + name].index_select(0, kept)
    elif sublayer.kind == CONVOLUTION:
        keep_units(state, torch.cat([kept, kept + width]), [prefix + "pointwise_conv1"])
        keep_units(state, kept, [prefix + "depthwise_conv", prefix + "norm"], [output], mask)
        for name in ("running_mean", "running_var"):
            state[f"{prefix}norm.{name}"] = state[f"{prefix}norm.{name}"].index_select(0, kept)
    else:
        keep_units(state, kept, [prefix + "w_1"], [output], mask)


def _prune_sublayer(state: StateDict, prefix: str, sublayer: Sublayer, width: int, width_mask: Optional[Tensor],
                    scale: float, head_dim: int) -> int:
    """Prune one kept sublayer (``prefix`` ends with its module name and a dot); returns its new width."""
    kept = torch.arange(width) if width_mask is None else torch.nonzero(width_mask).flatten()
    output = prefix + OUTPUT_MAP[sublayer.kind]
    if kept.numel() == 0:  # an EmptySublayer: only the output map's bias stays
        bias = state[output + ".bias"]
        _drop(state, prefix)
        state[output + ".weight"] = bias.new_zeros(bias.shape[0], 0)
        state[output + ".bias"] = bias * scale
        return 0
    _prune_width(state, prefix, sublayer, kept, width, width_mask, head_dim)
    state[output + ".weight"] = state[output + ".weight"] * scale
    state[output + ".bias"] = state[output + ".bias"] * scale
    return int(kept.numel())


def pruned_state(module: nn.Module, masks: Masks) -> Tuple[Dict[str, Any], StateDict]:
    """The compact ``pruned_structure`` and state dict of ``module`` under ``masks`` (``module`` unchanged).

    Args:
        module: a ``pruned_conformer`` / ``pruned_transformer`` encoder or ``pruned_transformer`` decoder.
        masks: ``{unit name: [mask per layer or None]}`` as for ``set_masks``; missing units keep
            everything.
    """
    unknown = sorted(set(masks) - {unit.name for unit in module.UNITS})
    if unknown:
        raise ValueError(f"{type(module).__name__}: unknown mask keys {unknown}")
    structure = module.structure
    new = {key: list(values) for key, values in module.pruned_structure.items()}
    state = {key: value.clone() for key, value in module.state_dict().items()}
    head_dim = structure.head_dim
    for layer in range(structure.num_layers):
        for sublayer in module.SUBLAYERS:
            if not getattr(structure, sublayer.present)[layer]:
                continue
            width = getattr(structure, sublayer.width)[layer]
            prefix = f"{module.LAYERS}.{layer}.{sublayer.module}."
            scalar = _mask_value(masks, sublayer.layer_unit, layer, ())
            scale = 1.0 if scalar is None else float(scalar)
            if scale == 0.0:
                _drop(state, prefix)
                if structure.normalize_before:
                    _drop(state, f"{module.LAYERS}.{layer}.{sublayer.norm}.")
                new[sublayer.present][layer] = False
                continue
            width_mask = _mask_value(masks, sublayer.width_unit, layer, (width,))
            new[sublayer.width][layer] = _prune_sublayer(state, prefix, sublayer, width, width_mask, scale,
                                                         head_dim)
    return new, state


def prune_downstream(module: nn.Module, masks: Masks) -> nn.Module:
    """The compact module computing what ``module`` computes under ``masks`` (a new module, without masks).

    Returns:
        ``type(module)(**module.espnet_kwargs, pruned_structure=...)`` holding the pruned weights,
        in ``module``'s training mode, device and dtype.
    """
    structure, state = pruned_state(module, masks)
    parameter = next(module.parameters())
    compact = type(module)(**module.espnet_kwargs, pruned_structure=structure)
    compact.load_state_dict(state, strict=True)
    return compact.to(device=parameter.device, dtype=parameter.dtype).train(module.training)
