"""Structured pruning: physically remove attention heads, FFN units and embedding
dimensions.

Units and their parameter cost (``d`` = att_unit, ``d_k`` = head width, ``V`` = vocab):

- attention head: rows of ``linear_q/k/v`` (+ biases) and columns of ``linear_out``:
  ``4·d_k·d + 3·d_k``; a layer may lose all heads (its attention sublayer is then the
  output bias only);
- FFN unit: a row of ``w_1`` (+ bias) and a column of ``w_2``: ``2·d + 1``; a layer
  may lose all units;
- embedding dimension: a column of the token table and of the input projection
  ``encoder.embed.0``: ``V + d``; at least one is kept.

The residual width, LayerNorms and the output layer are not pruned, so a target below
their share of the model is refused. Units are removed greedily in increasing order of
score per parameter (one global ranking over all layers and kinds) until the count is
as close to the target as the unit sizes allow, never below it.
"""

from typing import Dict, List

import torch

from espnet_prune.layers.unit_selection import head_rows, keep_units
from espnet_prune.lm.criteria import UnitGroup
from espnet_prune.lm.pruned_transformer_lm import (
    PrunedTransformerLM,
    attention_prefix,
    feed_forward_prefix,
    rebuild,
)


def unit_costs(lm: PrunedTransformerLM) -> Dict[str, int]:
    """Parameters removed with one unit of each kind: ``{"embed", "heads", "units"}``."""
    d, d_k = lm.conf["att_unit"], lm.head_dim
    return {"embed": lm.vocab_size + d, "heads": 4 * d_k * d + 3 * d_k, "units": 2 * d + 1}


def minimum_params(lm: PrunedTransformerLM) -> int:
    """Fewest parameters structured pruning can leave (all heads and FFN units and all
    embedding dimensions but one removed)."""
    costs = unit_costs(lm)
    removable = (
        costs["heads"] * sum(lm.conf["layer_heads"])
        + costs["units"] * sum(lm.conf["layer_units"])
        + costs["embed"] * (lm.conf["embed_unit"] - 1)
    )
    return lm.num_params() - removable


def select_units(
    lm: PrunedTransformerLM, scores: Dict[UnitGroup, torch.Tensor], target_params: int
) -> Dict[UnitGroup, torch.Tensor]:
    """Choose the units to keep so that the pruned LM has about ``target_params``.

    Args:
        lm: LM without masks or factors.
        scores: ``{unit group: (num units,) importance}`` (``criteria.unit_*_scores``).
        target_params: parameter budget.

    Returns:
        ``{unit group: sorted int64 indices of the kept units}``.
    """
    costs = unit_costs(lm)
    params = lm.num_params()
    minimum = minimum_params(lm)
    if target_params < minimum:
        raise ValueError(
            f"structured pruning cannot go below {minimum} parameters "
            f"({minimum / params:.3f} of the current LM: the output layer, norms and one "
            f"embedding dimension stay); asked for {target_params}"
        )
    candidates = [
        (float(score) / costs[group[0]], group, index)
        for group, group_scores in scores.items()
        for index, score in enumerate(group_scores)
    ]
    candidates.sort(key=lambda c: c[0])
    removed = {group: set() for group in scores}
    for _, group, index in candidates:
        cost = costs[group[0]]
        if params - cost < target_params:
            continue  # too big to fit; a smaller unit may still fit
        if group[0] == "embed" and len(removed[group]) == scores[group].numel() - 1:
            continue
        removed[group].add(index)
        params -= cost
    return {
        group: torch.tensor(
            [i for i in range(scores[group].numel()) if i not in removed[group]],
            dtype=torch.long,
        )
        for group in scores
    }


def remove_units(
    lm: PrunedTransformerLM, keep: Dict[UnitGroup, torch.Tensor]
) -> PrunedTransformerLM:
    """A physically smaller copy of ``lm`` keeping only the units in ``keep``.

    Args:
        lm: LM without masks or factors.
        keep: ``{unit group: kept indices}``; groups absent keep everything.

    Returns:
        the compact LM; it computes what ``lm`` computes with the other units zeroed.
    """
    state = lm.state_dict()
    num_layers = lm.conf["layer"]
    layer_heads: List[int] = list(lm.conf["layer_heads"])
    layer_units: List[int] = list(lm.conf["layer_units"])
    embed_unit = lm.conf["embed_unit"]

    if ("embed", -1) in keep:
        dims = keep[("embed", -1)]
        keep_units(state, dims, consumers=["embed", "encoder.embed.0"])
        embed_unit = dims.numel()
    for i in range(num_layers):
        if ("heads", i) in keep:
            att = attention_prefix(i)
            keep_units(state, head_rows(keep[("heads", i)], lm.head_dim),
                       [f"{att}.{projection}" for projection in ("linear_q", "linear_k", "linear_v")],
                       [f"{att}.linear_out"])
            layer_heads[i] = keep[("heads", i)].numel()
        if ("units", i) in keep:
            units = keep[("units", i)]
            ffn = feed_forward_prefix(i)
            keep_units(state, units, [f"{ffn}.w_1"], [f"{ffn}.w_2"])
            layer_units[i] = units.numel()
    return rebuild(
        lm, state, embed_unit=embed_unit, layer_heads=layer_heads, layer_units=layer_units
    )


def prune_structured(
    lm: PrunedTransformerLM, target_params: int, scores: Dict[UnitGroup, torch.Tensor]
) -> PrunedTransformerLM:
    """Remove the least important units of ``lm`` down to about ``target_params``."""
    return remove_units(lm, select_units(lm, scores, target_params))
