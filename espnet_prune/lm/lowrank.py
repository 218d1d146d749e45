"""Low-rank factorisation: every prunable matrix ``W`` (out, in) becomes ``up · down``
with ``up`` (out, r) and ``down`` (r, in), ``r·(in + out)`` parameters instead of
``in·out``.

``magnitude`` criterion: truncated SVD of ``W`` (best rank-r approximation in
Frobenius norm). ``data`` criterion: truncated SVD of ``W S^{1/2}`` with ``S = E[x xᵀ]``
the input second moment on the training text (damped: ``S + δ·mean(diag S)·I``), then
undone: ``W_r = U_r Σ_r V_rᵀ S^{-1/2}``, the rank-r matrix with the smallest expected
output error ``E‖(W - W_r) x‖²``. At full rank both reproduce ``W`` exactly.

Ranks are allocated globally: each direction (singular value ``σ_i`` of matrix l)
scores its share of the matrix's (data-weighted) energy, ``σ_i² / Σ_j σ_j²``; one
threshold on that share, found by bisection, sets every rank, and the remaining budget
is filled with the next best directions. A matrix stays dense (unfactorised) while
its rank is too high for the factors to be smaller. Repeated calls (incremental
scheduler) re-factorise the current ``up · down`` and never raise a rank, so each size
continues from the larger one.
"""

from typing import Dict, Optional, Tuple

import torch

from espnet_prune.lm.criteria import InputStatistics
from espnet_prune.lm.layers import (
    LowRankEmbedding,
    LowRankLinear,
    MaskedEmbedding,
    MaskedLinear,
    effective_weight,
    matrix_shape,
)
from espnet_prune.lm.pruned_transformer_lm import PrunedTransformerLM, rebuild

DEFAULT_DAMPING = 0.01


def weighted_svd(
    weight: torch.Tensor,
    second_moment: Optional[torch.Tensor] = None,
    damping: float = DEFAULT_DAMPING,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``W = U diag(σ) B`` with the directions ordered by data-weighted importance.

    Args:
        weight: (out, in).
        second_moment: input second moment, (in, in) or its diagonal (in,); None for
            plain SVD (``B = Vᵀ``).
        damping: relative damping ``δ`` of ``S``.

    Returns:
        U (out, k), σ (k,) descending, B (k, in), float64, ``k = min(out, in)``;
        truncating to the first r gives the best rank-r approximation of ``W``
        (in Frobenius norm, or in expected output error under ``S``).
    """
    weight = weight.double()
    if second_moment is None:
        u, sigma, vh = torch.linalg.svd(weight, full_matrices=False)
        return u, sigma, vh
    moment = second_moment.double().to(weight.device)
    if moment.dim() == 1:
        damped = moment + damping * moment.mean().clamp_min(1e-12)
        root, inv_root = damped.sqrt(), damped.rsqrt()
        u, sigma, vh = torch.linalg.svd(weight * root[None, :], full_matrices=False)
        return u, sigma, vh * inv_root[None, :]
    eigenvalues, eigenvectors = torch.linalg.eigh(moment)
    eigenvalues = eigenvalues.clamp_min(0.0)
    eigenvalues = eigenvalues + damping * eigenvalues.mean().clamp_min(1e-12)
    root = (eigenvectors * eigenvalues.sqrt()[None, :]) @ eigenvectors.t()
    inv_root = (eigenvectors * eigenvalues.rsqrt()[None, :]) @ eigenvectors.t()
    u, sigma, vh = torch.linalg.svd(weight @ root, full_matrices=False)
    return u, sigma, vh @ inv_root


def truncate(
    u: torch.Tensor, sigma: torch.Tensor, b: torch.Tensor, rank: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Balanced rank-``rank`` factors: up (out, r) = U_r Σ_r^½, down (r, in) = Σ_r^½ B_r."""
    root = sigma[:rank].sqrt()
    return u[:, :rank] * root[None, :], root[:, None] * b[:rank]


Decomposition = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _decompose(
    lm: PrunedTransformerLM,
    names,
    statistics: Optional[InputStatistics],
    damping: float,
) -> Dict[str, Decomposition]:
    """``{name: weighted_svd(...)}`` of the named matrices of ``lm``."""
    matrices = lm.matrices()
    if any(isinstance(m, (MaskedLinear, MaskedEmbedding)) for m in matrices.values()):
        raise ValueError("low-rank factorisation of a masked (unstructured) LM is not supported")
    return {
        name: weighted_svd(
            effective_weight(matrices[name]),
            None if statistics is None else statistics.second_moments[name],
            damping,
        )
        for name in names
    }


def _with_factors(
    lm: PrunedTransformerLM, decompositions: Dict[str, Decomposition], ranks: Dict[str, int]
) -> PrunedTransformerLM:
    """A copy of ``lm`` whose matrices in ``ranks`` are the truncated decompositions."""
    matrices = lm.matrices()
    state = lm.state_dict()
    new_ranks = dict(lm.conf["ranks"])
    for name, rank in ranks.items():
        module = matrices[name]
        up, down = truncate(*decompositions[name], rank)
        dtype = next(module.parameters()).dtype
        for key in [k for k in state if k.startswith(name + ".")]:
            if key not in (f"{name}.bias", f"{name}.up.bias"):
                del state[key]
        if isinstance(module, (LowRankEmbedding, torch.nn.Embedding)):
            state[f"{name}.down.weight"] = down.t().to(dtype).contiguous()
        else:
            state[f"{name}.down.weight"] = down.to(dtype)
            if f"{name}.bias" in state:
                state[f"{name}.up.bias"] = state.pop(f"{name}.bias")
        state[f"{name}.up.weight"] = up.to(dtype)
        new_ranks[name] = rank
    return rebuild(lm, state, ranks=new_ranks)


def factorise(
    lm: PrunedTransformerLM,
    ranks: Dict[str, int],
    statistics: Optional[InputStatistics] = None,
    damping: float = DEFAULT_DAMPING,
) -> PrunedTransformerLM:
    """A copy of ``lm`` with the named matrices replaced by rank-r factors.

    Args:
        lm: LM without weight masks.
        ranks: ``{matrix name: rank}``; other matrices keep their current form.
        statistics: input second moments for the data-weighted factorisation, or None
            for plain SVD.
        damping: relative damping of the second moments.
    """
    return _with_factors(lm, _decompose(lm, ranks, statistics, damping), ranks)


class _ParamCounter:
    """Parameter count of ``lm`` as a function of the ranks of its matrices.

    A factorised matrix costs ``r·(in + out)``; a dense one ``in·out`` until factorising
    it is cheaper: ``min(r·(in + out), in·out)``. Biases and norms are fixed.
    """

    def __init__(self, lm: PrunedTransformerLM):
        matrices = lm.matrices()
        self.shapes = {name: matrix_shape(m) for name, m in matrices.items()}
        self.factorised = {
            name: isinstance(m, (LowRankLinear, LowRankEmbedding)) for name, m in matrices.items()
        }
        self.current_rank = {
            name: (m.rank if self.factorised[name] else min(self.shapes[name]))
            for name, m in matrices.items()
        }
        self.current_cost = {n: self.cost(n, r) for n, r in self.current_rank.items()}
        self.fixed = lm.num_params() - sum(self.current_cost.values())

    def factor_cost(self, name: str, rank: int) -> int:
        out_features, in_features = self.shapes[name]
        return rank * (out_features + in_features)

    def cost(self, name: str, rank: int) -> int:
        if self.factorised[name]:
            return self.factor_cost(name, rank)
        out_features, in_features = self.shapes[name]
        return min(self.factor_cost(name, rank), out_features * in_features)

    def total(self, ranks: Dict[str, int]) -> int:
        return self.fixed + sum(self.cost(name, rank) for name, rank in ranks.items())

    def saves(self, name: str, rank: int) -> bool:
        """Whether matrix ``name`` is (or should become) factorised at ``rank``."""
        out_features, in_features = self.shapes[name]
        return self.factorised[name] or self.factor_cost(name, rank) < out_features * in_features


def minimum_params(lm: PrunedTransformerLM) -> int:
    """Fewest parameters low-rank factorisation can leave (every rank 1)."""
    counter = _ParamCounter(lm)
    return counter.total({name: 1 for name in counter.shapes})


def allocate_ranks(
    lm: PrunedTransformerLM,
    spectra: Dict[str, torch.Tensor],
    target_params: int,
) -> Dict[str, int]:
    """Ranks that bring ``lm`` to at most ``target_params`` parameters, as close as the
    rank granularity allows.

    Args:
        lm: the LM (dense and/or already factorised matrices).
        spectra: ``{matrix name: (k,) descending singular values}`` (weighted or plain).
        target_params: parameter budget.

    Returns:
        ``{matrix name: rank}`` for the matrices to factorise (dense ones whose
        factorisation would not save parameters are left out). Ranks never exceed
        those of already factorised matrices.
    """
    counter = _ParamCounter(lm)
    minimum = minimum_params(lm)
    if target_params < minimum:
        raise ValueError(
            f"low-rank factorisation cannot go below {minimum} parameters "
            f"({minimum / lm.num_params():.3f} of the current LM, all ranks 1); "
            f"asked for {target_params}"
        )
    shares = {}
    for name, sigma in spectra.items():
        energy = sigma[: counter.current_rank[name]].double().pow(2)
        total = energy.sum()
        shares[name] = energy / total if total > 0 else torch.zeros_like(energy)

    def ranks_at(threshold: float) -> Dict[str, int]:
        return {n: max(1, int((s >= threshold).sum())) for n, s in shares.items()}

    # Smallest threshold (largest ranks) that fits the budget; 1.0 gives all ranks 1.
    thresholds = torch.unique(torch.cat(list(shares.values()) + [torch.ones(1).double()]))
    low, high = 0, thresholds.numel() - 1
    while low < high:
        middle = (low + high) // 2
        if counter.total(ranks_at(float(thresholds[middle]))) <= target_params:
            high = middle
        else:
            low = middle + 1
    ranks = ranks_at(float(thresholds[high]))

    # Fill the remaining budget with the best directions not yet kept.
    params = counter.total(ranks)
    candidates = sorted(
        (-float(share[i]), name, i)
        for name, share in shares.items()
        for i in range(ranks[name], share.numel())
    )
    for _, name, index in candidates:
        if index != ranks[name] or not counter.saves(name, index + 1):
            continue  # an earlier direction did not fit, or the matrix would turn dense
        extra = counter.cost(name, index + 1) - counter.cost(name, index)
        if params + extra <= target_params:
            ranks[name] = index + 1
            params += extra
    return {name: rank for name, rank in ranks.items() if counter.saves(name, rank)}


def prune_lowrank(
    lm: PrunedTransformerLM,
    target_params: int,
    statistics: Optional[InputStatistics] = None,
    damping: float = DEFAULT_DAMPING,
) -> PrunedTransformerLM:
    """Factorise ``lm`` down to at most ``target_params`` parameters.

    Args:
        lm: dense or factorised LM.
        target_params: parameter budget.
        statistics: input second moments (``data`` criterion) or None (``magnitude``).
        damping: relative damping of the second moments.
    """
    # Matrices of fully removed sublayers (no heads / FFN units) have nothing to factorise.
    names = [name for name, m in lm.matrices().items() if min(matrix_shape(m)) > 0]
    decompositions = _decompose(lm, names, statistics, damping)
    spectra = {name: sigma for name, (_, sigma, _) in decompositions.items()}
    return _with_factors(lm, decompositions, allocate_ranks(lm, spectra, target_params))
