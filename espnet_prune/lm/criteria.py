"""Pruning criteria: how important is a weight, a structural unit, a direction.

Two criteria, as in the NNLM-pruning paper:

``magnitude``
    data-free: sizes of the weights themselves.
``data``
    data-driven: statistics collected on the training text with hooks.

    - *activations*: the uncentred second moment ``S = E[x xᵀ]`` of the input of every
      prunable matrix (:func:`collect_input_statistics`). Removing part ``ΔW`` of a
      matrix changes its output by ``ΔW x``; ``E‖ΔW x‖² = tr(ΔW S ΔWᵀ)``. Unstructured
      pruning uses the diagonal (``W_ij² S_jj``), low-rank factorisation the full ``S``.
    - *gradients*: for structural units (attention heads, FFN units, embedding
      dimensions), the empirical Fisher information of a multiplicative gate on the
      unit (:func:`unit_fisher_scores`), i.e. the expected loss increase of removing it
      to second order — comparable across units of all kinds and layers.

A "unit group" is ``("embed", -1)`` (embedding dimensions), ``("heads", layer)``
(attention heads) or ``("units", layer)`` (FFN hidden units).
"""

import logging
from typing import Dict, Iterable, Optional, Tuple

import torch
from espnet2.lm.espnet_model import ESPnetLanguageModel
from torch import nn

from espnet_prune.lm.choices import CRITERIA
from espnet_prune.lm.layers import (
    LowRankEmbedding,
    LowRankLinear,
    MaskedEmbedding,
    MaskedLinear,
    effective_weight,
    matrix_shape,
)
from espnet_prune.lm.pruned_transformer_lm import (
    PrunedTransformerLM,
    attention_prefix,
    feed_forward_prefix,
)

UnitGroup = Tuple[str, int]
Batches = Iterable[Tuple[torch.Tensor, torch.Tensor]]


class InputStatistics:
    """Second moments of the inputs of an LM's prunable matrices.

    Attributes:
        second_moments: ``{matrix name: S}``, ``S = E[x xᵀ]`` over the non-padding
            positions of the text, float64: (in, in), or its diagonal (in,) when
            collected with ``diagonal=True``. For the token embedding, ``x`` is the
            one-hot token, so ``S`` is diagonal: the token frequencies (vocab,).
        num_positions: number of positions (tokens incl. <sos>) averaged over.
    """

    def __init__(self, second_moments: Dict[str, torch.Tensor], num_positions: int):
        self.second_moments = second_moments
        self.num_positions = num_positions

    def diagonal(self, name: str) -> torch.Tensor:
        """(in,) diagonal of matrix ``name``'s input second moment."""
        moment = self.second_moments[name]
        return moment if moment.dim() == 1 else torch.diagonal(moment)


def _lm_inputs(
    text: torch.Tensor, lengths: torch.Tensor, eos: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """As ``ESPnetLanguageModel.nll``: (batch, L) text -> (batch, L+1) ``<sos> text``
    ids and the (batch, L+1) bool mask of non-padding positions."""
    text = text[:, : int(lengths.max())]
    inputs = torch.nn.functional.pad(text, [1, 0], "constant", eos)
    valid = torch.arange(inputs.size(1))[None, :] < (lengths[:, None] + 1)
    return inputs, valid


@torch.no_grad()
def collect_input_statistics(
    lm: PrunedTransformerLM, batches: Batches, eos: int, diagonal: bool = False
) -> InputStatistics:
    """Run ``lm`` (eval mode) on ``batches`` and average ``x xᵀ`` at every matrix input.

    Args:
        lm: the LM (its current, possibly pruned, structure).
        batches: (text (batch, L) int64, lengths (batch,)) pairs, e.g. ``data.text_batches``.
        eos: id of ``<sos/eos>`` (the LM's first input token).
        diagonal: keep only the diagonal of ``S`` (enough for unstructured pruning).
    """
    device = next(lm.parameters()).device
    sums: Dict[str, torch.Tensor] = {}
    for name, module in lm.matrices().items():
        in_features = matrix_shape(module)[1]
        diagonal_only = diagonal or isinstance(module, (nn.Embedding, LowRankEmbedding))
        shape = (in_features,) if diagonal_only else (in_features, in_features)
        sums[name] = torch.zeros(shape, dtype=torch.float64, device=device)
    current = {}

    def make_hook(name: str, module: nn.Module):
        is_embedding = isinstance(module, (nn.Embedding, LowRankEmbedding))

        def hook(_module, inputs, _output):
            x = inputs[0][current["valid"]]  # (positions, in) or (positions,) ids
            if is_embedding:
                moment = torch.bincount(x, minlength=lm.vocab_size).double()
            elif diagonal:
                moment = x.double().pow(2).sum(0)
            else:
                x = x.double()
                moment = x.t() @ x
            sums[name] += moment

        return hook

    handles = [m.register_forward_hook(make_hook(n, m)) for n, m in lm.matrices().items()]
    was_training = lm.training
    lm.eval()
    num_positions = 0
    try:
        for i, (text, lengths) in enumerate(batches):
            inputs, valid = _lm_inputs(text, lengths, eos)
            current["valid"] = valid.to(device)
            lm(inputs.to(device), None)
            num_positions += int(valid.sum())
            if (i + 1) % 50 == 0:
                logging.info(f"activation statistics: {i + 1} batches, {num_positions} tokens")
    finally:
        for handle in handles:
            handle.remove()
        lm.train(was_training)
    if num_positions == 0:
        raise ValueError("no text to collect activation statistics on")
    moments = {name: (total / num_positions).cpu() for name, total in sums.items()}
    return InputStatistics(moments, num_positions)


def weight_scores(
    lm: PrunedTransformerLM, criterion: str, statistics: Optional[InputStatistics] = None
) -> Dict[str, torch.Tensor]:
    """Importance of every weight of every prunable matrix (unstructured pruning).

    ``magnitude``: ``W_ij²``; ``data``: ``W_ij² · E[x_j²]``, the expected squared change
    of the matrix output when ``W_ij`` is removed. Masked-out weights score 0.

    Returns:
        ``{matrix name: (out, in) float64 scores}`` in linear orientation (an embedding
        table (vocab, dim) is scored as its transpose (dim, vocab)).
    """
    scores = {}
    for name, module in lm.matrices().items():
        weight_sq = effective_weight(module).double().cpu().pow(2)
        if criterion == "magnitude":
            scores[name] = weight_sq
        elif criterion == "data":
            scores[name] = weight_sq * statistics.diagonal(name)[None, :]
        else:
            raise ValueError(f"unknown criterion '{criterion}', choose from {CRITERIA}")
    return scores


def _check_plain(lm: PrunedTransformerLM) -> None:
    for module in lm.matrices().values():
        if isinstance(module, (MaskedLinear, MaskedEmbedding, LowRankLinear, LowRankEmbedding)):
            raise ValueError(
                "structural units can only be scored on an LM without weight masks or "
                "low-rank factors (prune with one method per run)"
            )


def _unit_tensors(lm: PrunedTransformerLM) -> Dict[UnitGroup, Tuple[torch.Tensor, ...]]:
    """Per unit group, the weights whose slices make up each unit:
    (gate weight (rows, units·width) whose column blocks are the units' outputs,
    width of a unit, partner weight in its stored orientation)."""
    groups = {("embed", -1): (lm.embed.weight, 1, lm.encoder.embed[0].weight)}
    for i in range(lm.conf["layer"]):
        attention = lm.get_submodule(attention_prefix(i))
        groups[("heads", i)] = (attention.linear_out.weight, lm.head_dim, attention.linear_v.weight)
        ffn = lm.get_submodule(feed_forward_prefix(i))
        groups[("units", i)] = (ffn.w_2.weight, 1, ffn.w_1.weight)
    return groups


@torch.no_grad()
def unit_magnitude_scores(lm: PrunedTransformerLM) -> Dict[UnitGroup, torch.Tensor]:
    """Data-free importance of every structural unit: product of the squared norms of
    the weights that read the unit and that write it.

    - head: ``‖W_v[head rows]‖² · ‖W_out[:, head cols]‖²`` (value path; queries and
      keys only mix positions);
    - FFN unit k: ``‖W_1[k, :]‖² · ‖W_2[:, k]‖²``;
    - embedding dimension j: ``‖E[:, j]‖² · ‖W_in[:, j]‖²``.

    Returns:
        ``{unit group: (num units,) float64}``.
    """
    _check_plain(lm)
    scores = {}
    for group, (gate_weight, width, partner) in _unit_tensors(lm).items():
        num_units = gate_weight.size(1) // width
        rows = gate_weight.size(0)
        out_norm = gate_weight.double().pow(2).view(rows, num_units, width).sum((0, 2))
        if group[0] == "embed":  # embedding (vocab, dim) and W_in (att, dim): columns
            in_norm = partner.double().pow(2).sum(0)
        else:  # W_v / W_1 (units·width, in): row blocks
            in_norm = partner.double().pow(2).view(num_units, width, partner.size(1)).sum((1, 2))
        scores[group] = (out_norm * in_norm).cpu()
    return scores


def unit_fisher_scores(
    model: ESPnetLanguageModel, batches: Batches
) -> Dict[UnitGroup, torch.Tensor]:
    """Data-driven importance of every structural unit: empirical Fisher of its gate.

    A gate ``g`` multiplying unit u's output has ``∂L/∂g = Σ W ⊙ ∂L/∂W`` over the
    unit's slice of the matrix that reads it (``linear_out`` columns of a head,
    ``w_2`` column of an FFN unit, embedding column). Score = mean over mini-batches of
    ``(∂L/∂g)²``: the loss increase of removing the unit, to second order.

    Args:
        model: ESPnet LM wrapper (its ``lm`` a :class:`PrunedTransformerLM`); gradients
            of its per-token loss on ``batches`` are used, weights are not changed.
        batches: (text (batch, L), lengths (batch,)) pairs.

    Returns:
        ``{unit group: (num units,) float64}``.
    """
    lm = model.lm
    _check_plain(lm)
    groups = _unit_tensors(lm)
    totals = {g: torch.zeros(t[0].size(1) // t[1], dtype=torch.float64) for g, t in groups.items()}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    num_batches = 0
    try:
        for text, lengths in batches:
            model.zero_grad(set_to_none=True)
            loss, _, _ = model(text.to(device), lengths.to(device))
            loss.backward()
            for group, (gate_weight, width, _) in groups.items():
                num_units = gate_weight.size(1) // width
                if num_units == 0:  # fully removed sublayer: its weight is unused
                    continue
                gate_grad = (gate_weight.detach() * gate_weight.grad).double()
                gate_grad = gate_grad.view(gate_weight.size(0), num_units, width)
                totals[group] += gate_grad.sum((0, 2)).pow(2).cpu()
            num_batches += 1
            if num_batches % 50 == 0:
                logging.info(f"gradient statistics: {num_batches} batches")
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if num_batches == 0:
        raise ValueError("no text to collect gradient statistics on")
    return {group: total / num_batches for group, total in totals.items()}
