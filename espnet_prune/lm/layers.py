"""Building blocks of a pruned Transformer LM.

Every weight matrix of the LM ("prunable matrix") is one of four kinds:

- ``nn.Linear`` / ``nn.Embedding``: dense;
- :class:`MaskedLinear` / :class:`MaskedEmbedding`: dense weight times a fixed 0/1
  buffer ``weight_mask`` (unstructured pruning). The mask is a buffer, so it is saved
  in ``model.pth``, loaded back and never touched by an optimiser; the masked product
  is used in every forward pass, so pruned weights stay pruned during fine-tuning;
- :class:`LowRankLinear` / :class:`LowRankEmbedding`: ``W ≈ up · down`` with
  ``down`` (rank, in) and ``up`` (out, rank) (low-rank factorisation).

:func:`effective_weight` returns the dense matrix any of them computes, in the
"linear" orientation (out, in); an embedding table (vocab, dim) is the linear map
from one-hot tokens, i.e. weight (dim, vocab).
"""

import math
import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class MaskedLinear(nn.Linear):
    """``y = x (W ⊙ M)^T + b`` with a 0/1 buffer ``weight_mask`` M of shape (out, in)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self.register_buffer("weight_mask", torch.ones(out_features, in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out)."""
        return F.linear(x, self.weight * self.weight_mask, self.bias)


class MaskedEmbedding(nn.Embedding):
    """Embedding lookup in ``W ⊙ M`` with a 0/1 buffer ``weight_mask`` M of shape (vocab, dim)."""

    def __init__(self, num_embeddings: int, embedding_dim: int):
        super().__init__(num_embeddings, embedding_dim)
        self.register_buffer("weight_mask", torch.ones(num_embeddings, embedding_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(...) int64 -> (..., dim)."""
        return F.embedding(tokens, self.weight * self.weight_mask)


class LowRankLinear(nn.Module):
    """``y = up(down(x))``: a rank-``rank`` factorisation of an (out, in) linear layer.

    Submodules: ``down`` = Linear(in, rank, bias=False), ``up`` = Linear(rank, out, bias).
    Parameters: ``rank * (in + out)`` (+ ``out`` for the bias).
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=bias)

    @property
    def bias(self) -> Optional[torch.Tensor]:
        return self.up.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out)."""
        return self.up(self.down(x))


class LowRankEmbedding(nn.Module):
    """``embed(t) = up(down[t])``: a rank-``rank`` factorisation of a (vocab, dim) table.

    Submodules: ``down`` = Embedding(vocab, rank), ``up`` = Linear(rank, dim, bias=False).
    Parameters: ``rank * (vocab + dim)``.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, rank: int):
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.rank = rank
        self.down = nn.Embedding(num_embeddings, rank)
        self.up = nn.Linear(rank, embedding_dim, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(...) int64 -> (..., dim)."""
        return self.up(self.down(tokens))


def make_linear(
    in_features: int, out_features: int, rank: Optional[int], masked: bool, bias: bool = True
) -> nn.Module:
    """The linear layer of the requested kind: low-rank if ``rank``, masked if ``masked``."""
    if rank is not None:
        return LowRankLinear(in_features, out_features, rank, bias=bias)
    linear_class = MaskedLinear if masked else nn.Linear
    with warnings.catch_warnings():
        # A fully pruned sublayer has (out, 0) or (0, in) weights; initialising them is a no-op.
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        return linear_class(in_features, out_features, bias=bias)


def make_embedding(
    num_embeddings: int, embedding_dim: int, rank: Optional[int], masked: bool
) -> nn.Module:
    """The embedding table of the requested kind: low-rank if ``rank``, masked if ``masked``."""
    if rank is not None:
        return LowRankEmbedding(num_embeddings, embedding_dim, rank)
    if masked:
        return MaskedEmbedding(num_embeddings, embedding_dim)
    return nn.Embedding(num_embeddings, embedding_dim)


def matrix_shape(module: nn.Module) -> tuple:
    """(out, in) of a prunable matrix in linear orientation; an embedding is (dim, vocab)."""
    if isinstance(module, (nn.Linear, LowRankLinear)):
        return module.out_features, module.in_features
    if isinstance(module, (nn.Embedding, LowRankEmbedding)):
        return module.embedding_dim, module.num_embeddings
    raise TypeError(f"not a prunable matrix: {type(module).__name__}")


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The dense (out, in) matrix that ``module`` applies (embeddings: (dim, vocab)), detached."""
    if isinstance(module, LowRankLinear):
        return (module.up.weight @ module.down.weight).detach()
    if isinstance(module, LowRankEmbedding):
        return (module.up.weight @ module.down.weight.t()).detach()
    if isinstance(module, (MaskedLinear, nn.Linear)):
        weight = module.weight
        if isinstance(module, MaskedLinear):
            weight = weight * module.weight_mask
        return weight.detach()
    if isinstance(module, (MaskedEmbedding, nn.Embedding)):
        weight = module.weight
        if isinstance(module, MaskedEmbedding):
            weight = weight * module.weight_mask
        return weight.detach().t()
    raise TypeError(f"not a prunable matrix: {type(module).__name__}")


class PrunableMultiHeadedAttention(nn.Module):
    """ESPnet's multi-head self-attention with ``n_head`` heads of width ``d_k``.

    Computes exactly what ``espnet...transformer.attention.MultiHeadedAttention`` computes
    (same parameter names ``linear_q/k/v/out``), but the inner width ``n_head * d_k`` need
    not equal ``n_feat``, so heads can be removed. With ``n_head == 0`` the sublayer
    outputs the bias of ``linear_out`` (the weights are empty tensors).

    Args:
        n_feat: model width (input and output size).
        n_head: number of heads kept.
        d_k: width of one head.
        dropout_rate: dropout on attention weights.
        ranks: optional rank per projection (``{"linear_q": 8}``); absent = full matrix.
        masked: use :class:`MaskedLinear` projections.
    """

    PROJECTIONS = ("linear_q", "linear_k", "linear_v", "linear_out")

    def __init__(
        self,
        n_feat: int,
        n_head: int,
        d_k: int,
        dropout_rate: float,
        ranks: Optional[dict] = None,
        masked: bool = False,
    ):
        super().__init__()
        ranks = ranks or {}
        self.h = n_head
        self.d_k = d_k
        inner = n_head * d_k
        self.linear_q = make_linear(n_feat, inner, ranks.get("linear_q"), masked)
        self.linear_k = make_linear(n_feat, inner, ranks.get("linear_k"), masked)
        self.linear_v = make_linear(n_feat, inner, ranks.get("linear_v"), masked)
        self.linear_out = make_linear(inner, n_feat, ranks.get("linear_out"), masked)
        self.dropout = nn.Dropout(p=dropout_rate)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """Scaled dot-product attention.

        Args:
            query: (batch, time1, n_feat).
            key, value: (batch, time2, n_feat).
            mask: (batch, 1, time2) or (batch, time1, time2), nonzero = attend; or None.

        Returns:
            (batch, time1, n_feat).
        """
        n_batch = query.size(0)
        if self.h == 0:
            out_bias = self.linear_out.bias
            return out_bias.expand(n_batch, query.size(1), out_bias.numel())
        q = self.linear_q(query).view(n_batch, -1, self.h, self.d_k).transpose(1, 2)
        k = self.linear_k(key).view(n_batch, -1, self.h, self.d_k).transpose(1, 2)
        v = self.linear_v(value).view(n_batch, -1, self.h, self.d_k).transpose(1, 2)
        # (batch, head, time1, time2)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.d_k)
        if mask is not None:
            blocked = mask.unsqueeze(1).eq(0)
            scores = scores.masked_fill(blocked, torch.finfo(scores.dtype).min)
            attn = torch.softmax(scores, dim=-1).masked_fill(blocked, 0.0)
        else:
            attn = torch.softmax(scores, dim=-1)
        context = torch.matmul(self.dropout(attn), v)  # (batch, head, time1, d_k)
        context = context.transpose(1, 2).contiguous().view(n_batch, -1, self.h * self.d_k)
        return self.linear_out(context)


class PrunableFeedForward(nn.Module):
    """ESPnet's position-wise feed-forward ``w_2(dropout(relu(w_1 x)))`` of any width.

    Args:
        n_feat: model width.
        n_units: hidden width (0 = the sublayer outputs the bias of ``w_2``).
        dropout_rate: dropout on the hidden activations.
        ranks: optional rank per projection (``{"w_1": 8}``); absent = full matrix.
        masked: use :class:`MaskedLinear` projections.
    """

    PROJECTIONS = ("w_1", "w_2")

    def __init__(
        self,
        n_feat: int,
        n_units: int,
        dropout_rate: float,
        ranks: Optional[dict] = None,
        masked: bool = False,
    ):
        super().__init__()
        ranks = ranks or {}
        self.w_1 = make_linear(n_feat, n_units, ranks.get("w_1"), masked)
        self.w_2 = make_linear(n_units, n_feat, ranks.get("w_2"), masked)
        self.dropout = nn.Dropout(dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, time, n_feat) -> (batch, time, n_feat)."""
        return self.w_2(self.dropout(torch.relu(self.w_1(x))))
