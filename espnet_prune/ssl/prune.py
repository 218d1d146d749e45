"""Physical pruning: turn a gated :class:`SSLEncoder` into a smaller one that computes the same.

:func:`prune_encoder` reads the unit masks (see :mod:`espnet_prune.ssl.model`), removes
the units whose mask is exactly zero and folds the kept units' mask values into the
weights of the linear map that reads them, the place where the gated model applies them
(the units are described in :mod:`espnet_prune.ssl.units`; the CNN is pruned per layer, the
Transformer per :data:`~espnet_prune.ssl.units.SUBLAYERS` entry):

===============  ===========================================  ==========================================
unit             removed by index selection                   mask value folded into
===============  ===========================================  ==========================================
``conv`` i       conv i output channels (weight, bias), its   conv i+1 input channels, or for the last
                 norm's per-channel affine                    layer the feature projection's columns
                                                              (its LayerNorm is index-selected)
``head``         q/k/v rows, ``out_proj`` columns, WavLM's    ``out_proj`` columns of that head
                 ``gru_rel_pos_const``
``attn_layer``   the whole attention sublayer when 0          ``out_proj`` weight and bias
``interm``       ``intermediate_dense`` rows,                 ``output_dense`` columns
                 ``output_dense`` columns
``ffn_layer``    the whole FFN sublayer when 0                ``output_dense`` weight and bias
===============  ===========================================  ==========================================

The result is built as ``SSLEncoder(new_config)`` and filled with ``load_state_dict(strict=True)``,
so its structure lives entirely in its :class:`EncoderConfig`: :func:`save_compact` stores the
config as a plain dict next to the weights, and :func:`load_compact` rebuilds the model from that
alone. A removed sublayer gets zero heads / zero FFN units in the new config. WavLM layers record
the original indices of their kept heads in ``config.kept_heads``, because the shared relative
position bias and the gate's input chunks are indexed by them.
"""

import os
from typing import Any, BinaryIO, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

from espnet_prune.layers.unit_selection import StateDict, head_rows, keep_units
from espnet_prune.ssl.config import EncoderConfig
from espnet_prune.ssl.model import Masks, SSLEncoder
from espnet_prune.ssl.units import SUBLAYERS, UNIT_BY_NAME, check_unit_names


def _where(unit: str, index: int) -> str:
    """Names a mask in error messages, e.g. ``'conv' mask of CNN layer 3``."""
    return f"'{unit}' mask of {'CNN ' if UNIT_BY_NAME[unit].cnn else ''}layer {index}"


def _as_tensor(value: Any, unit: str, index: int) -> Tensor:
    """A mask entry as a detached float tensor, checked to hold finite values in [0, 1]."""
    mask = torch.as_tensor(value).detach().to(torch.float64)
    if not torch.isfinite(mask).all() or (mask < 0).any() or (mask > 1).any():
        raise ValueError(f"{_where(unit, index)} must hold values in [0, 1], got values from "
                         f"{mask.min().item()} to {mask.max().item()}")
    return mask


def _layer_masks(masks: Masks, unit: str, config: EncoderConfig) -> Optional[List[Any]]:
    """The per-layer entries of ``masks[unit]`` (``None`` if the unit is not gated), length-checked."""
    if unit not in masks or masks[unit] is None:
        return None
    entries = list(masks[unit])
    num_layers = UNIT_BY_NAME[unit].num_layers(config)
    if len(entries) != num_layers:
        raise ValueError(f"'{unit}' masks have {len(entries)} entries but the encoder has {num_layers} "
                         f"{UNIT_BY_NAME[unit].layer_kind} layers")
    return entries


def _vector_mask(entries: Optional[List[Any]], unit: str, index: int, size: int) -> Optional[Tensor]:
    """Layer ``index``'s ``(size,)`` mask, or ``None`` when the unit is not gated."""
    if entries is None:
        return None
    mask = _as_tensor(entries[index], unit, index)
    if mask.shape != (size,):
        raise ValueError(f"{_where(unit, index)} has shape {tuple(mask.shape)}, expected ({size},)")
    return mask


def _scalar_mask(entries: Optional[List[Any]], unit: str, index: int) -> float:
    """Layer ``index``'s scalar mask (1.0 when the unit is not gated)."""
    if entries is None:
        return 1.0
    mask = _as_tensor(entries[index], unit, index)
    if mask.numel() != 1:
        raise ValueError(f"{_where(unit, index)} must be a scalar, got shape {tuple(mask.shape)}")
    return float(mask)


def _kept(mask: Optional[Tensor], size: int) -> Tensor:
    """Indices ``(K,)`` of the units with a non-zero mask (all ``size`` units without a mask)."""
    if mask is None:
        return torch.arange(size)
    return mask.nonzero().squeeze(1)


def _drop(state: StateDict, prefix: str) -> None:
    """Delete every entry whose name starts with ``prefix``."""
    for key in [key for key in state if key.startswith(prefix)]:
        del state[key]


def _prune_feature_extractor(config: EncoderConfig, masks: Masks, state: StateDict) -> List[List[int]]:
    """Prune the CNN channels in ``state`` in place; returns the new ``conv_layers``."""
    num_conv = len(config.conv_layers)
    entries = _layer_masks(masks, "conv", config)
    channel_masks = [_vector_mask(entries, "conv", i, channels) for i, channels in enumerate(config.conv_channels)]
    kept = [_kept(mask, channels) for mask, channels in zip(channel_masks, config.conv_channels)]
    for i, kept_channels in enumerate(kept):
        if kept_channels.numel() == 0:
            raise ValueError(f"{_where('conv', i)} is zero for every channel; a CNN layer needs at least one "
                             f"channel")
    projection = "encoder.feature_projection."
    for i in range(num_conv):
        # Channels of layer i: its conv's rows and norm, read by the next conv (or, for the last
        # layer, through the projection's LayerNorm by the projection).
        prefix = f"feature_extractor.conv_layers.{i}."
        producers = [prefix + "conv", prefix + "layer_norm"]
        if i + 1 < num_conv:
            consumer = f"feature_extractor.conv_layers.{i + 1}.conv"
        else:
            producers.append(projection + "layer_norm")
            consumer = projection + "projection"
        keep_units(state, kept[i], producers, [consumer], channel_masks[i])
    return [[int(k.numel()), kernel, stride] for k, (_, kernel, stride) in zip(kept, config.conv_layers)]


def _prune_attention(config: EncoderConfig, index: int, head_mask: Optional[Tensor], layer_scale: float,
                     state: StateDict) -> List[int]:
    """Prune the heads of layer ``index``'s attention in ``state`` in place; returns the kept head positions."""
    prefix = f"encoder.transformer.layers.{index}.attention."
    head_dim = config.head_dim
    kept_heads = _kept(head_mask, config.num_heads[index])
    column_mask = None if head_mask is None else head_mask.repeat_interleave(head_dim)
    keep_units(state, head_rows(kept_heads, head_dim), [prefix + name for name in ("q_proj", "k_proj", "v_proj")],
               [prefix + "out_proj"], column_mask)
    state[prefix + "out_proj.weight"] = state[prefix + "out_proj.weight"] * layer_scale
    state[prefix + "out_proj.bias"] = state[prefix + "out_proj.bias"] * layer_scale
    if prefix + "gru_rel_pos_const" in state:
        const = state[prefix + "gru_rel_pos_const"]
        state[prefix + "gru_rel_pos_const"] = const.index_select(1, kept_heads.to(const.device))
    return kept_heads.tolist()


def _prune_feed_forward(config: EncoderConfig, index: int, interm_mask: Optional[Tensor], layer_scale: float,
                        state: StateDict) -> List[int]:
    """Prune layer ``index``'s FFN units in ``state`` in place; returns the kept unit positions."""
    prefix = f"encoder.transformer.layers.{index}.feed_forward."
    kept_units = _kept(interm_mask, config.ffn_dims[index])
    keep_units(state, kept_units, [prefix + "intermediate_dense"], [prefix + "output_dense"], interm_mask)
    state[prefix + "output_dense.weight"] = state[prefix + "output_dense.weight"] * layer_scale
    state[prefix + "output_dense.bias"] = state[prefix + "output_dense.bias"] * layer_scale
    return kept_units.tolist()


#: Physical pruning of each :data:`~espnet_prune.ssl.units.SUBLAYERS` entry's width unit:
#: ``(config, layer, width mask or None, layer scale, state) -> kept positions``, in place.
_SUBLAYER_PRUNERS = {"attention": _prune_attention, "feed_forward": _prune_feed_forward}


def _compact_config_and_state(model: SSLEncoder, masks: Masks) -> Tuple[EncoderConfig, StateDict]:
    """The pruned model's config and its complete state dict (new tensors; ``model`` is not modified)."""
    config = model.config
    state = dict(model.state_dict())
    conv_layers = _prune_feature_extractor(config, masks, state)

    entries = {sub.module: (_layer_masks(masks, sub.layer_unit, config), _layer_masks(masks, sub.width_unit, config))
               for sub in SUBLAYERS}
    # Per sublayer: the kept units' positions in every layer (None where the sublayer goes).
    kept: Dict[str, List[Optional[List[int]]]] = {sub.module: [] for sub in SUBLAYERS}
    for index in range(config.num_layers):
        prefix = f"encoder.transformer.layers.{index}."
        for sub in SUBLAYERS:
            layer_entries, width_entries = entries[sub.module]
            width_unit = UNIT_BY_NAME[sub.width_unit]
            # A sublayer the model no longer has ignores its masks.
            present = width_unit.layer_present(config)[index]
            scale = _scalar_mask(layer_entries, sub.layer_unit, index) if present else 0.0
            if scale == 0.0:
                _drop(state, f"{prefix}{sub.module}.")
                if config.layer_norm_first:
                    _drop(state, f"{prefix}{sub.norm}.")
                kept[sub.module].append(None)
                continue
            width = width_unit.widths(config)[index]
            mask = _vector_mask(width_entries, sub.width_unit, index, width)
            kept[sub.module].append(_SUBLAYER_PRUNERS[sub.module](config, index, mask, scale, state))

    original = [config.head_indices(index) for index in range(config.num_layers)]
    kept_heads = [[] if positions is None else [original[index][p] for p in positions]
                  for index, positions in enumerate(kept["attention"])]
    ffn_dims = [0 if units is None else len(units) for units in kept["feed_forward"]]
    num_heads = [len(heads) for heads in kept_heads]
    use_attention = [positions is not None for positions in kept["attention"]]
    use_ffn = [units is not None for units in kept["feed_forward"]]
    record_heads = config.relative_position_bias or config.kept_heads is not None
    new_config = config.replace(conv_layers=conv_layers, num_heads=num_heads, ffn_dims=ffn_dims,
                                use_attention=use_attention, use_ffn=use_ffn,
                                kept_heads=kept_heads if record_heads else None)
    embed_key = "encoder.transformer.position_bias.rel_attn_embed.weight"
    if embed_key in state:
        # Heads beyond the largest kept original index are read by no layer.
        state[embed_key] = state[embed_key][:, : new_config.total_heads]
    return new_config, state


def prune_encoder(model: SSLEncoder, masks: Masks) -> SSLEncoder:
    """Physically prune ``model`` with ``masks``; the gated model is left untouched.

    Args:
        model: the gated encoder (dense or already pruned).
        masks: unit masks as described in :mod:`espnet_prune.ssl.model`: ``conv`` one ``(C_i,)``
            per CNN layer, ``head`` one ``(H_l,)`` per layer, ``attn_layer`` ``L`` scalars,
            ``interm`` one ``(F_l,)`` per layer, ``ffn_layer`` ``L`` scalars; values in [0, 1].
            A missing key leaves that unit unpruned; masks of a sublayer the model has already
            lost are ignored.
    Returns:
        A new encoder with a new :class:`EncoderConfig`, on ``model``'s device and dtype and in its
        train/eval mode, whose eval outputs equal ``model(x, masks=masks)`` in eval mode.
    Raises:
        ValueError: unknown mask keys, wrong numbers of layers or mask shapes, values outside
            [0, 1], or a CNN layer whose channels are all zero.
    """
    check_unit_names(masks)
    new_config, state = _compact_config_and_state(model, masks)
    reference = next(model.parameters())
    compact = SSLEncoder(new_config).to(device=reference.device, dtype=reference.dtype)
    compact.load_state_dict(state, strict=True)
    return compact.train(model.training)


def save_compact(model: SSLEncoder, path: Union[str, os.PathLike, BinaryIO]) -> None:
    """Save ``model`` as ``{"config": plain dict, "state_dict": tensors}`` with :func:`torch.save`.

    The file needs no other model to load; see :func:`load_compact`.
    """
    torch.save({"config": model.config.to_dict(), "state_dict": model.state_dict()}, path)


def load_compact(path_or_obj: Union[str, os.PathLike, BinaryIO, Dict[str, Any]]) -> SSLEncoder:
    """Rebuild an encoder saved by :func:`save_compact`.

    Args:
        path_or_obj: a file (path or binary file object) written by :func:`save_compact`, or the
            dict it holds, ``{"config": EncoderConfig.to_dict(), "state_dict": {...}}``.
    Returns:
        The encoder on CPU, in eval mode.
    """
    if isinstance(path_or_obj, dict):
        saved = path_or_obj
    else:
        saved = torch.load(path_or_obj, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or set(saved) != {"config", "state_dict"}:
        found = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
        raise ValueError(f"A compact encoder is a dict with exactly the keys 'config' and 'state_dict', got {found}")
    model = SSLEncoder(EncoderConfig.from_dict(saved["config"]))
    model.load_state_dict(saved["state_dict"], strict=True)
    return model.eval()


__all__ = ["prune_encoder", "save_compact", "load_compact"]


def keep_first_layers(model: SSLEncoder, num_layers: int) -> SSLEncoder:
    """The encoder up to and including Transformer layer ``num_layers`` (1-based), the rest removed.

    ``keep_first_layers(m, k)(x)[0][-1]`` equals ``m(x)[0][k]``: the hidden states of the
    kept layers are unchanged, and a pre-LN model loses its final LayerNorm (which only
    the last layer's output passes through; ``config.final_layer_norm`` becomes false).
    ``num_layers = 0`` keeps the CNN, the projection and the positional convolution.

    Args:
        model: a dense or pruned encoder.
        num_layers: layers to keep, ``0 <= num_layers <= model.config.num_layers``.
    Returns:
        A new :class:`SSLEncoder` (in ``model``'s mode, on its device) sharing no tensors with ``model``.
    """
    config = model.config
    if not 0 <= num_layers <= config.num_layers:
        raise ValueError(f"keep_first_layers: num_layers={num_layers} is not in 0..{config.num_layers}")
    if num_layers == config.num_layers:
        return model
    per_layer = {key: getattr(config, key)[:num_layers]
                 for key in ("num_heads", "ffn_dims", "use_attention", "use_ffn")}
    if config.kept_heads is not None:
        per_layer["kept_heads"] = config.kept_heads[:num_layers]
    new_config = config.replace(num_layers=num_layers, head_dim=config.head_dim,
                                final_layer_norm=config.final_layer_norm and not config.layer_norm_first,
                                **per_layer)
    state = {key: value.detach().clone() for key, value in model.state_dict().items()}
    for index in range(num_layers, config.num_layers):
        _drop(state, f"encoder.transformer.layers.{index}.")
    if not new_config.final_layer_norm:
        _drop(state, "encoder.transformer.layer_norm.")
    bias_key = "encoder.transformer.position_bias.rel_attn_embed.weight"
    if bias_key in state:
        if num_layers == 0:
            del state[bias_key]
        else:  # heads index the shared bias by their original index; keep the ones still referenced
            state[bias_key] = state[bias_key][:, :new_config.total_heads].contiguous()
    reference = next(iter(model.parameters()))
    result = SSLEncoder(new_config).to(device=reference.device, dtype=reference.dtype)
    result.load_state_dict(state, strict=True)
    return result.train(model.training)
