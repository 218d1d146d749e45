"""``PrunedTransformerLM``: ESPnet's Transformer LM with pruned heads, FFN units,
embedding dimensions, low-rank weights and/or unstructured weight masks.

Registered as ``lm: pruned_transformer`` (``espnet_prune.register()``), so that
``lm_train``, ``lm_calc_perplexity`` and ``asr_inference`` (shallow fusion) build it
from a ``config.yaml`` through ``LMTask.build_model_from_file``.

With default arguments it is exactly ``espnet2.lm.transformer_lm.TransformerLM``: same
computation and same parameter names, so a dense ``lm: transformer`` checkpoint loads
into it unchanged (``load_state_dict(strict=True)``).
"""

from typing import Any, Dict, List, Optional, Tuple

import torch
from espnet.nets.pytorch_backend.transformer.embedding import PositionalEncoding
from espnet.nets.pytorch_backend.transformer.encoder_layer import EncoderLayer
from espnet.nets.pytorch_backend.transformer.layer_norm import LayerNorm
from espnet.nets.pytorch_backend.transformer.mask import subsequent_mask
from espnet2.lm.abs_model import AbsLM
from torch import nn
from typeguard import typechecked

from espnet_prune.lm.layers import (
    MaskedEmbedding,
    MaskedLinear,
    PrunableFeedForward,
    PrunableMultiHeadedAttention,
    make_embedding,
    make_linear,
)


def attention_prefix(layer: int) -> str:
    """Module name of layer ``layer``'s self-attention, relative to the LM."""
    return f"encoder.encoders.{layer}.self_attn"


def feed_forward_prefix(layer: int) -> str:
    """Module name of layer ``layer``'s feed-forward block, relative to the LM."""
    return f"encoder.encoders.{layer}.feed_forward"


def matrix_names(num_layers: int) -> List[str]:
    """Names of all prunable matrices of a ``num_layers``-layer LM, input to output.

    ``embed`` (token table), ``encoder.embed.0`` (input projection), per layer the
    attention projections ``linear_q/k/v/out`` and FFN ``w_1/w_2``, and ``decoder``
    (output projection). These are the keys allowed in ``ranks``.
    """
    names = ["embed", "encoder.embed.0"]
    for i in range(num_layers):
        names += [f"{attention_prefix(i)}.{p}" for p in PrunableMultiHeadedAttention.PROJECTIONS]
        names += [f"{feed_forward_prefix(i)}.{p}" for p in PrunableFeedForward.PROJECTIONS]
    names.append("decoder")
    return names


class PrunedTransformerEncoder(nn.Module):
    """ESPnet's Transformer encoder (``input_layer="linear"``, pre-LayerNorm) with
    per-layer head counts, FFN widths, ranks and masks.

    Submodules (names as in ``espnet...transformer.encoder.Encoder``): ``embed`` =
    [Linear(idim, att_unit), LayerNorm, Dropout, ReLU, positional encoding],
    ``encoders`` = list of ESPnet ``EncoderLayer``, ``after_norm``.
    """

    def __init__(
        self,
        idim: int,
        att_unit: int,
        d_k: int,
        layer_heads: List[int],
        layer_units: List[int],
        dropout_rate: float,
        positional_dropout_rate: float,
        attention_dropout_rate: float,
        pos_enc: Optional[str],
        ranks: Dict[str, int],
        masked: bool,
    ):
        super().__init__()
        if pos_enc == "sinusoidal":
            position = PositionalEncoding(att_unit, positional_dropout_rate)
        else:
            position = nn.Sequential()  # identity, as in TransformerLM
        self.embed = nn.Sequential(
            make_linear(idim, att_unit, ranks.get("encoder.embed.0"), masked),
            nn.LayerNorm(att_unit),
            nn.Dropout(dropout_rate),
            nn.ReLU(),
            position,
        )
        layers = []
        for i, (heads, units) in enumerate(zip(layer_heads, layer_units)):
            att_ranks = _sub_ranks(ranks, attention_prefix(i))
            ffn_ranks = _sub_ranks(ranks, feed_forward_prefix(i))
            layers.append(
                EncoderLayer(
                    att_unit,
                    PrunableMultiHeadedAttention(
                        att_unit, heads, d_k, attention_dropout_rate, att_ranks, masked
                    ),
                    PrunableFeedForward(att_unit, units, dropout_rate, ffn_ranks, masked),
                    dropout_rate,
                    normalize_before=True,
                    concat_after=False,
                )
            )
        self.encoders = nn.ModuleList(layers)
        self.after_norm = LayerNorm(att_unit)

    def forward(
        self, xs: torch.Tensor, masks: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(batch, time, idim), (batch, time, time) -> (batch, time, att_unit), masks."""
        xs = self.embed(xs)
        for layer in self.encoders:
            xs, masks = layer(xs, masks)
        return self.after_norm(xs), masks

    def forward_one_step(
        self,
        xs: torch.Tensor,
        masks: torch.Tensor,
        cache: Optional[List[torch.Tensor]] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor]]:
        """Incremental step, as ``Encoder.forward_one_step``.

        Args:
            xs: (batch, time, idim) embedded prefix.
            masks: (batch, time, time).
            cache: per layer (batch, time - 1, att_unit) outputs for the prefix, or None.

        Returns:
            (batch, time, att_unit) output (last frame is new), masks, new cache
            (per layer (batch, time, att_unit)).
        """
        xs = self.embed(xs)
        if cache is None:
            cache = [None] * len(self.encoders)
        new_cache = []
        for layer_cache, layer in zip(cache, self.encoders):
            xs, masks = layer(xs, masks, cache=layer_cache)
            new_cache.append(xs)
        return self.after_norm(xs), masks, new_cache


def _sub_ranks(ranks: Dict[str, int], prefix: str) -> Dict[str, int]:
    return {k[len(prefix) + 1 :]: v for k, v in ranks.items() if k.startswith(prefix + ".")}


class PrunedTransformerLM(AbsLM):
    """A Transformer LM that can be pruned and factorised (``lm: pruned_transformer``).

    YAML ``lm_conf`` contract (constructor keyword arguments; ``vocab_size`` comes from
    the token list). The first nine are those of ESPnet's ``lm: transformer`` with the
    same defaults and meaning; a dense ``transformer`` config is a valid
    ``pruned_transformer`` config.

    Args:
        vocab_size: number of tokens (set by ``LMTask``).
        pos_enc: ``"sinusoidal"`` or None (no positional encoding, as TransformerLM).
        embed_unit: width of the token embedding (structured pruning removes
            embedding dimensions, i.e. lowers this).
        att_unit: model (residual stream) width.
        head: number of heads of the *dense* model; fixes the head width
            ``d_k = att_unit // head``, which pruning never changes.
        unit: FFN width of the dense model (used for layers without ``layer_units``).
        layer: number of Transformer layers.
        dropout_rate: dropout on the residual branches, FFN hidden units and input layer.
        positional_dropout_rate: dropout after the positional encoding.
        attention_dropout_rate: dropout on attention weights.
        layer_heads: heads kept per layer (length ``layer``, each ``0..head``; 0 removes
            the attention sublayer except its output bias). None = ``head`` everywhere.
        layer_units: FFN width per layer (length ``layer``, each >= 0). None = ``unit``.
        ranks: low-rank factorisation ``W ≈ up · down`` of the named matrices
            (names from :func:`matrix_names`, e.g. ``{"decoder": 16,
            "encoder.encoders.0.feed_forward.w_1": 24}``); unnamed matrices are full.
        weight_masks: give every matrix (embedding, linears, decoder) a 0/1
            ``weight_mask`` buffer (unstructured pruning). Masks are saved with the
            model and applied in every forward pass, also while fine-tuning.
            Cannot be combined with ``ranks``.
    """

    @typechecked
    def __init__(
        self,
        vocab_size: int,
        pos_enc: Optional[str] = None,
        embed_unit: int = 128,
        att_unit: int = 256,
        head: int = 2,
        unit: int = 1024,
        layer: int = 4,
        dropout_rate: float = 0.1,
        positional_dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.1,
        layer_heads: Optional[List[int]] = None,
        layer_units: Optional[List[int]] = None,
        ranks: Optional[Dict[str, int]] = None,
        weight_masks: bool = False,
    ):
        super().__init__()
        if pos_enc not in (None, "sinusoidal"):
            raise ValueError(f"unknown pos_enc option: {pos_enc}")
        if head < 1 or att_unit % head != 0:
            raise ValueError(f"att_unit ({att_unit}) must be a multiple of head ({head})")
        layer_heads = [head] * layer if layer_heads is None else list(layer_heads)
        layer_units = [unit] * layer if layer_units is None else list(layer_units)
        if len(layer_heads) != layer or any(not 0 <= h <= head for h in layer_heads):
            raise ValueError(f"layer_heads must be {layer} values in [0, {head}]: {layer_heads}")
        if len(layer_units) != layer or any(u < 0 for u in layer_units):
            raise ValueError(f"layer_units must be {layer} values >= 0: {layer_units}")
        ranks = dict(ranks or {})
        unknown = sorted(set(ranks) - set(matrix_names(layer)))
        ranks = {name: ranks[name] for name in matrix_names(layer) if name in ranks}
        if unknown:
            raise ValueError(f"ranks name unknown matrices: {unknown}")
        if any(r < 1 for r in ranks.values()):
            raise ValueError(f"ranks must be >= 1: {ranks}")
        if ranks and weight_masks:
            raise ValueError("weight_masks and ranks (low-rank factorisation) cannot be combined")

        self.vocab_size = vocab_size
        self.conf = dict(
            pos_enc=pos_enc,
            embed_unit=embed_unit,
            att_unit=att_unit,
            head=head,
            unit=unit,
            layer=layer,
            dropout_rate=dropout_rate,
            positional_dropout_rate=positional_dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            layer_heads=layer_heads,
            layer_units=layer_units,
            ranks=ranks,
            weight_masks=weight_masks,
        )
        self.embed = make_embedding(vocab_size, embed_unit, ranks.get("embed"), weight_masks)
        self.encoder = PrunedTransformerEncoder(
            idim=embed_unit,
            att_unit=att_unit,
            d_k=att_unit // head,
            layer_heads=layer_heads,
            layer_units=layer_units,
            dropout_rate=dropout_rate,
            positional_dropout_rate=positional_dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            pos_enc=pos_enc,
            ranks=ranks,
            masked=weight_masks,
        )
        self.decoder = make_linear(att_unit, vocab_size, ranks.get("decoder"), weight_masks)

    # ------------------------------------------------------------------ structure
    @property
    def lm_conf(self) -> Dict[str, Any]:
        """The ``lm_conf`` that rebuilds this model (all keys explicit; a deep copy)."""
        conf = dict(self.conf)
        conf["layer_heads"] = list(conf["layer_heads"])
        conf["layer_units"] = list(conf["layer_units"])
        conf["ranks"] = dict(conf["ranks"])
        return conf

    @property
    def head_dim(self) -> int:
        return self.conf["att_unit"] // self.conf["head"]

    def matrices(self) -> Dict[str, nn.Module]:
        """``{name: module}`` for every prunable matrix (see :func:`matrix_names`)."""
        modules = dict(self.named_modules())
        return {name: modules[name] for name in matrix_names(self.conf["layer"])}

    def num_params(self) -> int:
        """Parameters that carry information: all of them, minus masked-out weights."""
        total = sum(p.numel() for p in self.parameters())
        for module in self.modules():
            if isinstance(module, (MaskedLinear, MaskedEmbedding)):
                total -= int((module.weight_mask == 0).sum())
        return total

    # ------------------------------------------------------------------ AbsLM
    def _target_mask(self, ys_in_pad: torch.Tensor) -> torch.Tensor:
        """(batch, time) ids -> (batch, time, time) causal mask that hides padding (id 0)."""
        ys_mask = ys_in_pad != 0
        causal = subsequent_mask(ys_mask.size(-1), device=ys_mask.device).unsqueeze(0)
        return ys_mask.unsqueeze(-2) & causal

    def forward(self, input: torch.Tensor, hidden: None) -> Tuple[torch.Tensor, None]:
        """Logits for every position.

        Args:
            input: (batch, time) token ids.
            hidden: unused (None).

        Returns:
            (batch, time, vocab) logits, None.
        """
        h, _ = self.encoder(self.embed(input), self._target_mask(input))
        return self.decoder(h), None

    def score(
        self, y: torch.Tensor, state: Any, x: torch.Tensor
    ) -> Tuple[torch.Tensor, Any]:
        """Log-probabilities of the next token for one hypothesis.

        Args:
            y: (time,) int64 prefix.
            state: per-layer cache of the prefix (from the previous call) or None.
            x: encoder output (unused).

        Returns:
            (vocab,) log-probabilities and the new state.
        """
        y = y.unsqueeze(0)
        h, _, cache = self.encoder.forward_one_step(
            self.embed(y), self._target_mask(y), cache=state
        )
        logp = self.decoder(h[:, -1]).log_softmax(dim=-1).squeeze(0)
        return logp, cache

    def batch_score(
        self, ys: torch.Tensor, states: List[Any], xs: torch.Tensor
    ) -> Tuple[torch.Tensor, List[Any]]:
        """Log-probabilities of the next token for a batch of hypotheses.

        Args:
            ys: (n_batch, time) int64 prefixes.
            states: per hypothesis, a per-layer list of (time - 1, att_unit) caches, or None.
            xs: encoder output (unused).

        Returns:
            (n_batch, vocab) log-probabilities and the new per-hypothesis states.
        """
        n_batch = len(ys)
        n_layers = len(self.encoder.encoders)
        if states[0] is None:
            batch_state = None
        else:
            batch_state = [
                torch.stack([states[b][i] for b in range(n_batch)]) for i in range(n_layers)
            ]
        h, _, cache = self.encoder.forward_one_step(
            self.embed(ys), self._target_mask(ys), cache=batch_state
        )
        logp = self.decoder(h[:, -1]).log_softmax(dim=-1)
        state_list = [[cache[i][b] for i in range(n_layers)] for b in range(n_batch)]
        return logp, state_list


def rebuild(
    lm: PrunedTransformerLM, state_dict: Dict[str, torch.Tensor], **conf_changes
) -> PrunedTransformerLM:
    """A new LM with ``lm``'s config updated by ``conf_changes`` and weights ``state_dict``.

    The new LM is on ``lm``'s device and in its train/eval mode.
    """
    conf = lm.lm_conf
    unknown = set(conf_changes) - set(conf)
    if unknown:
        raise ValueError(f"unknown lm_conf keys: {sorted(unknown)}")
    conf.update(conf_changes)
    new_lm = PrunedTransformerLM(lm.vocab_size, **conf)
    new_lm.load_state_dict(state_dict, strict=True)
    device = next(lm.parameters()).device
    return new_lm.to(device).train(lm.training)
