"""Index selection for physical pruning, shared by the SSL encoder and the Transformer LM.

A pruned unit (a channel, an attention head's rows, an FFN unit, an embedding dimension)
is an output of one or more *producers* (linear maps or convolutions whose weight rows and
bias entries compute it, and per-channel norms) and an input of its *consumers* (the maps
whose weight columns read it). Removing units is the same index selection on both sides,
done in place on a state dict; a soft mask value still on a kept unit is folded into the
consumers' columns, where the gated model applied it.
"""

from typing import Dict, Optional, Sequence

import torch
from torch import Tensor

StateDict = Dict[str, Tensor]


def head_rows(kept_heads: Tensor, head_dim: int) -> Tensor:
    """Rows ``(K * head_dim,)`` of the kept heads ``(K,)`` in a ``(heads * head_dim, ...)`` projection."""
    return (kept_heads[:, None] * head_dim + torch.arange(head_dim)[None, :]).reshape(-1)


def keep_units(state: StateDict, index: Tensor, producers: Sequence[str] = (), consumers: Sequence[str] = (),
               mask: Optional[Tensor] = None) -> None:
    """Keep only the units ``index`` between ``producers`` and ``consumers``, in ``state`` in place.

    Args:
        state: a state dict, changed in place.
        index: ``(K,)`` long indices of the kept units.
        producers: module prefixes whose ``.weight`` rows (dim 0) and ``.bias`` entries are the
            units; missing entries are skipped (biases and norms are optional).
        consumers: module prefixes whose ``.weight`` columns (dim 1) read the units.
        mask: ``(units,)`` mask values, multiplied into the consumers' columns before selection
            (folding the gated model's mask into the map that reads it); ``None``: no scaling.
    """
    for prefix in producers:
        for key in (f"{prefix}.weight", f"{prefix}.bias"):
            if key in state:
                state[key] = state[key].index_select(0, index.to(state[key].device))
    for prefix in consumers:
        key = f"{prefix}.weight"
        weight = state[key]
        if mask is not None:
            shape = [1] * weight.ndim
            shape[1] = -1
            weight = weight * mask.to(weight).view(shape)
        state[key] = weight.index_select(1, index.to(weight.device))
