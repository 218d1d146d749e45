"""Unstructured pruning: zero individual weights through fixed 0/1 masks.

Every prunable matrix (token embedding, input projection, attention and FFN
projections, output layer) keeps the same fraction of its weights, the most
important ones under the criterion (``criteria.weight_scores``); the fraction is the
one that brings the LM's non-zero parameter count (all parameters minus masked
weights; biases and LayerNorms are never masked) to the target. Masks live in the
model as ``weight_mask`` buffers (``lm_conf: weight_masks: true``) so they survive
saving, loading and fine-tuning. Already masked weights rank last, so repeated pruning
(incremental scheduler) only ever removes more.
"""

from typing import Dict

import torch

from espnet_prune.lm.layers import LowRankEmbedding, LowRankLinear, MaskedEmbedding, MaskedLinear
from espnet_prune.lm.pruned_transformer_lm import PrunedTransformerLM, rebuild


def minimum_params(lm: PrunedTransformerLM) -> int:
    """Fewest parameters unstructured pruning can leave: the unmasked biases and norms,
    plus one weight."""
    matrix_numel = sum(module.weight.numel() for module in lm.matrices().values())
    return sum(p.numel() for p in lm.parameters()) - matrix_numel + 1


def prune_unstructured(
    lm: PrunedTransformerLM, target_params: int, scores: Dict[str, torch.Tensor]
) -> PrunedTransformerLM:
    """Mask weights of ``lm`` until ``lm.num_params()`` is about ``target_params``.

    Args:
        lm: dense or already masked LM (not factorised).
        target_params: number of non-zero parameters to keep.
        scores: ``{matrix name: (out, in) importance}`` (linear orientation, see
            ``criteria.weight_scores``).

    Returns:
        a new masked LM (``weight_masks=True``); ``lm`` is unchanged.
    """
    matrices = lm.matrices()
    if any(isinstance(m, (LowRankLinear, LowRankEmbedding)) for m in matrices.values()):
        raise ValueError("unstructured pruning of a low-rank factorised LM is not supported")
    matrix_numel = {name: module.weight.numel() for name, module in matrices.items()}
    minimum = minimum_params(lm)
    if target_params < minimum:
        raise ValueError(
            f"unstructured pruning cannot go below {minimum} parameters "
            f"({minimum / lm.num_params():.3f} of the current LM: biases and norms are "
            f"not pruned); asked for {target_params}"
        )
    other_params = minimum - 1
    keep_fraction = (target_params - other_params) / sum(matrix_numel.values())

    state = lm.state_dict()
    for name, module in matrices.items():
        score = scores[name] if name != "embed" else scores[name].t()  # stored orientation
        score = score.to(module.weight.device)
        current_kept = score.numel()
        if isinstance(module, (MaskedLinear, MaskedEmbedding)):
            # Pruned weights stay pruned: rank them below every kept weight.
            score = score.masked_fill(module.weight_mask == 0, -1.0)
            current_kept = int(module.weight_mask.sum())
        keep = min(current_kept, round(keep_fraction * matrix_numel[name]))
        mask = torch.zeros(score.numel(), dtype=module.weight.dtype, device=score.device)
        mask[torch.topk(score.flatten(), keep).indices] = 1.0
        mask = mask.view_as(module.weight)
        state[f"{name}.weight_mask"] = mask
        state[f"{name}.weight"] = state[f"{name}.weight"] * mask
    return rebuild(lm, state, weight_masks=True)
