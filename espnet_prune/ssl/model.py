"""A prunable wav2vec 2.0 / HuBERT / WavLM encoder.

The modules take masks; they own no gates. A mask multiplies a pruning unit's output
where the next linear map reads it, so physical pruning can fold kept mask values into
that map's weights and drop the zero units (see :mod:`espnet_prune.ssl.prune`). The units
are described once in :mod:`espnet_prune.ssl.units`; this is where their masks apply:

* ``conv`` (one ``(C_i,)`` mask per CNN layer): scales channel ``c`` of layer ``i``
  after its activation. For the last CNN layer it scales the feature projection's
  input after that LayerNorm. Every channel-wise LayerNorm takes its statistics over the
  channels whose mask is non-zero, so removing the zero channels changes nothing.
* ``head`` (``(H_l,)`` per layer): scales each head's attention context.
* ``attn_layer`` (scalar per layer): scales the attention sublayer's output.
* ``interm`` (``(F_l,)`` per layer): scales FFN intermediate units after the activation.
* ``ffn_layer`` (scalar per layer): scales the FFN sublayer's output.

Where the algebra allows, a gated forward applies a mask to a weight rather than to the
activations, which are far larger in training (the gradients are the same by the chain
rule): a CNN layer's channel mask scales the input channels of the next layer's
convolution weight (``C_out x C_i x k`` values instead of ``B x C_i x S_i``), and a
sublayer's scalar is multiplied into the head or intermediate mask and into the output
projection's bias (one multiplication of the context or intermediate activations instead
of two).

Module and parameter names follow torchaudio's ``wav2vec2_model`` so that its state
dicts load directly.
"""

import math
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from espnet_prune.ssl.config import EncoderConfig, receptive_field
from espnet_prune.ssl.units import LAYER_UNITS

#: ``{"conv": [C_0 mask, ...], "head": [H_0 mask, ...], "attn_layer": [...], ...}``: one mask per
#: layer of each unit, shaped as :meth:`espnet_prune.ssl.units.Unit.mask_shape` says.
Masks = Dict[str, Sequence[Tensor]]


class EmptyLinear(nn.Linear):
    """A linear map with zero inputs or zero outputs (a fully pruned head set or FFN).

    It computes what ``nn.Linear`` computes (the bias, or an empty tensor) without a
    zero-size matmul. Being its own class, it is left alone by dynamic int8 quantization,
    which matches module types exactly (``quantize_dynamic`` on a zero-size ``nn.Linear``
    returns NaN or wrong values).
    """

    def forward(self, input: Tensor) -> Tensor:
        """``(..., in_features)`` -> ``(..., out_features)``."""
        output = input.new_zeros((*input.shape[:-1], self.out_features))
        return output if self.bias is None else output + self.bias


def linear(in_features: int, out_features: int) -> nn.Linear:
    """``nn.Linear``, or an :class:`EmptyLinear` when it has zero inputs or outputs."""
    if in_features and out_features:
        return nn.Linear(in_features, out_features)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        return EmptyLinear(in_features, out_features)


def padding_mask(lengths: Tensor, length: int) -> Tensor:
    """``(B,)`` valid lengths -> ``(B, length)`` bool, True at padded positions."""
    return torch.arange(length, device=lengths.device)[None, :] >= lengths[:, None]


def gated_layer_norm(x: Tensor, norm: nn.LayerNorm, mask: Optional[Tensor]) -> Tensor:
    """LayerNorm over the last dim, with statistics over the channels where ``mask != 0``.

    Args:
        x: ``(..., C)``.
        norm: a LayerNorm of width C.
        mask: ``(C,)`` or ``None`` (all channels).
    Returns:
        ``(..., C)``; channels with a zero mask are zero.
    """
    if mask is None:
        return norm(x)
    kept = mask.nonzero().squeeze(1)
    if kept.numel() == x.shape[-1]:
        return norm(x)
    normed = F.layer_norm(x.index_select(-1, kept), (kept.numel(),),
                          norm.weight.index_select(0, kept), norm.bias.index_select(0, kept), norm.eps)
    return torch.zeros_like(x).index_copy(-1, kept, normed)


class ConvLayerBlock(nn.Module):
    """Conv1d -> optional norm -> GELU.

    Args:
        in_channels, out_channels, kernel_size, stride, bias: of the Conv1d.
        norm: ``"group"`` (per-channel GroupNorm), ``"layer"`` (LayerNorm over channels) or ``None``.
        eps: epsilon of the norm.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 bias: bool, norm: Optional[str], eps: float = 1e-5):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
        if norm == "group":
            self.layer_norm = nn.GroupNorm(out_channels, out_channels, eps=eps, affine=True)
        elif norm == "layer":
            self.layer_norm = nn.LayerNorm(out_channels, eps=eps)
        elif norm is None:
            self.layer_norm = None
        else:
            raise ValueError(f"Unknown conv norm '{norm}'")

    def forward(self, x: Tensor, mask: Optional[Tensor] = None, input_mask: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            x: ``(B, C_in, S)``, not yet multiplied by the previous layer's channel mask.
            mask: ``(C_out,)`` channel mask or ``None``: the statistics of a LayerNorm over the
                channels ignore its zeros. It is not multiplied into the output (the next layer's
                ``input_mask``, or the feature projection, does that).
            input_mask: ``(C_in,)`` mask of the input channels or ``None``; scales the input
                channels of the convolution weight, which equals scaling ``x``.
        Returns:
            ``(B, C_out, S')`` with ``S' = (S - kernel) // stride + 1``.
        """
        if input_mask is None:
            x = self.conv(x)
        else:
            x = F.conv1d(x, self.conv.weight * input_mask[None, :, None], self.conv.bias, self.conv.stride)
        if isinstance(self.layer_norm, nn.LayerNorm):
            x = gated_layer_norm(x.transpose(1, 2), self.layer_norm, mask).transpose(1, 2)
        elif self.layer_norm is not None:
            x = self.layer_norm(x)
        return F.gelu(x)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Valid output frames for ``lengths`` valid input samples, ``(B,)``."""
        lengths = torch.div(lengths - self.kernel_size, self.stride, rounding_mode="floor") + 1
        return lengths.clamp(min=0)


class FeatureExtractor(nn.Module):
    """The CNN that turns waveforms into frames (20 ms hop for the released models)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        layers = []
        in_channels = 1
        for i, (out_channels, kernel, stride) in enumerate(config.conv_layers):
            if config.extractor_mode == "layer_norm":
                norm = "layer"
            else:
                norm = "group" if i == 0 else None
            layers.append(ConvLayerBlock(in_channels, out_channels, kernel, stride, config.conv_bias, norm,
                                         config.layer_norm_eps))
            in_channels = out_channels
        self.conv_layers = nn.ModuleList(layers)
        self.receptive_field = receptive_field(config.conv_layers)

    def forward(self, waveforms: Tensor, lengths: Optional[Tensor],
                masks: Optional[Sequence[Tensor]] = None) -> Tuple[Tensor, Optional[Tensor]]:
        """
        Args:
            waveforms: ``(B, S)``.
            lengths: ``(B,)`` valid samples, or ``None``.
            masks: one ``(C_i,)`` mask per layer, or ``None``. Layer ``i``'s mask enters layer
                ``i + 1``'s convolution weight; the last layer's is applied by the feature projection.
        Returns:
            features ``(B, T, C_last)`` (not multiplied by the last mask) and valid frames ``(B,)``
            (or ``None``).
        """
        x = waveforms.unsqueeze(1)
        for i, layer in enumerate(self.conv_layers):
            x = layer(x, None if masks is None else masks[i], None if masks is None or i == 0 else masks[i - 1])
            if lengths is not None:
                lengths = layer.output_lengths(lengths)
        return x.transpose(1, 2), lengths


class FeatureProjection(nn.Module):
    """LayerNorm over CNN channels -> Linear to the Transformer width -> dropout."""

    def __init__(self, in_features: int, out_features: int, dropout: float, eps: float = 1e-5):
        super().__init__()
        self.layer_norm = nn.LayerNorm(in_features, eps=eps)
        self.projection = nn.Linear(in_features, out_features)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, channel_mask: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            x: ``(B, T, C)`` CNN features.
            channel_mask: ``(C,)`` mask of the last CNN layer's channels, or ``None``.
        Returns:
            ``(B, T, D)``.
        """
        x = gated_layer_norm(x, self.layer_norm, channel_mask)
        if channel_mask is not None:
            x = x * channel_mask
        return self.dropout(self.projection(x))


class ConvolutionalPositionalEmbedding(nn.Module):
    """Grouped, weight-normalised Conv1d over time whose GELU output is added to the input."""

    def __init__(self, embed_dim: int, kernel_size: int, groups: int):
        super().__init__()
        conv = nn.Conv1d(embed_dim, embed_dim, kernel_size, padding=kernel_size // 2, groups=groups)
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.num_remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, D)`` -> ``(B, T, D)``."""
        x = self.conv(x.transpose(1, 2))
        if self.num_remove:
            x = x[..., : -self.num_remove]
        return F.gelu(x).transpose(1, 2)


class SelfAttention(nn.Module):
    """Multi-head self-attention with an arbitrary number of heads (possibly zero).

    Args:
        embed_dim: model width D.
        num_heads: heads H kept in this layer.
        head_dim: width of one head.
        dropout: dropout on attention weights.
        head_index: original indices of the kept heads (WavLM's position bias is indexed by them).
        gru_rel_pos: WavLM's gated relative position bias (needs ``embed_dim = H_orig * head_dim``).
    """

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, dropout: float = 0.0,
                 head_index: Optional[Sequence[int]] = None, gru_rel_pos: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.dropout = dropout
        inner = num_heads * head_dim
        self.q_proj = linear(embed_dim, inner)
        self.k_proj = linear(embed_dim, inner)
        self.v_proj = linear(embed_dim, inner)
        self.out_proj = linear(inner, embed_dim)
        head_index = list(range(num_heads)) if head_index is None else list(head_index)
        self.register_buffer("head_index", torch.tensor(head_index, dtype=torch.long), persistent=False)
        self.gru_rel_pos = gru_rel_pos
        if gru_rel_pos:
            self.gru_rel_pos_linear = nn.Linear(head_dim, 8)
            self.gru_rel_pos_const = nn.Parameter(torch.ones(1, num_heads, 1, 1))

    def _gated_position_bias(self, x: Tensor, position_bias: Tensor) -> Tensor:
        """WavLM's gate on the relative position bias of this layer's heads.

        Args:
            x: ``(B, T, D)`` layer input.
            position_bias: ``(1, H_orig, T, T)``.
        Returns:
            ``(B, H, T, T)`` (``(1, H, T, T)`` without the gate).
        """
        bias = position_bias.index_select(1, self.head_index)
        if not self.gru_rel_pos:
            return bias
        batch, frames, dim = x.shape
        chunks = x.view(batch, frames, dim // self.head_dim, self.head_dim).index_select(2, self.head_index)
        gates = self.gru_rel_pos_linear(chunks.transpose(1, 2))  # (B, H, T, 8)
        gate_a, gate_b = torch.sigmoid(gates.view(batch, self.num_heads, frames, 2, 4).sum(-1)).chunk(2, dim=-1)
        return (gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0) * bias

    def forward(self, x: Tensor, attention_bias: Optional[Tensor] = None,
                position_bias: Optional[Tensor] = None, head_mask: Optional[Tensor] = None,
                scale: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            x: ``(B, T, D)``.
            attention_bias: additive ``(B, 1, 1, T)`` bias that hides padded keys, or ``None``.
            position_bias: WavLM's ``(1, H_orig, T, T)`` relative position bias, or ``None``.
            head_mask: ``(H,)`` or ``None``.
            scale: ``()`` factor of the whole output (the ``attn_layer`` mask) or ``None``; it is
                multiplied into the head mask and the output bias.
        Returns:
            ``(B, T, D)``.
        """
        batch, frames, _ = x.shape
        if self.num_heads == 0:
            output = self.out_proj(x.new_zeros(batch, frames, 0))
            return output if scale is None else output * scale
        shape = (batch, frames, self.num_heads, self.head_dim)
        q = self.q_proj(x).view(shape).transpose(1, 2)
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        bias = attention_bias
        if position_bias is not None:
            gated = self._gated_position_bias(x, position_bias)
            bias = gated if bias is None else gated + bias
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                                 dropout_p=self.dropout if self.training else 0.0)
        context_mask = scaled_mask(head_mask, scale, self.num_heads, context.dtype)
        if context_mask is not None:
            context = context * context_mask[None, :, None, None]
        return scaled_linear(context.transpose(1, 2).reshape(batch, frames, -1), self.out_proj, scale)


class FeedForward(nn.Module):
    """Linear -> GELU -> dropout -> (mask) -> Linear -> dropout, with any width (possibly zero)."""

    def __init__(self, embed_dim: int, ffn_dim: int, activation_dropout: float, dropout: float):
        super().__init__()
        self.intermediate_dense = linear(embed_dim, ffn_dim)
        self.intermediate_dropout = nn.Dropout(activation_dropout)
        self.output_dense = linear(ffn_dim, embed_dim)
        self.output_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, interm_mask: Optional[Tensor] = None, scale: Optional[Tensor] = None) -> Tensor:
        """``(B, T, D)`` -> ``(B, T, D)``; ``interm_mask`` is ``(F,)`` or ``None``; ``scale`` is a
        ``()`` factor of the whole output (the ``ffn_layer`` mask) or ``None``."""
        x = self.intermediate_dropout(F.gelu(self.intermediate_dense(x)))
        if interm_mask is None:
            # Scaling the (B, T, D) output is cheaper than the (B, T, F) intermediate units.
            x = self.output_dropout(self.output_dense(x))
            return x if scale is None else x * scale
        x = x * scaled_mask(interm_mask, scale, interm_mask.shape[0], x.dtype)
        return self.output_dropout(scaled_linear(x, self.output_dense, scale))


def scaled_mask(mask: Optional[Tensor], scale: Optional[Tensor], size: int, dtype: torch.dtype) -> Optional[Tensor]:
    """``mask * scale`` as a ``(size,)`` vector (either may be ``None``; ``None`` if both are),
    computed in the type that multiplying activations of ``dtype`` by each would give."""
    if scale is None:
        return mask
    if mask is None:
        return scale.expand(size)
    common = torch.promote_types(dtype, torch.promote_types(mask.dtype, scale.dtype))
    return mask.to(common) * scale.to(common)


def scaled_linear(x: Tensor, layer: nn.Linear, scale: Optional[Tensor]) -> Tensor:
    """``layer(x)`` with the bias multiplied by ``scale`` (``None``: 1); with ``x`` already scaled,
    this is ``layer(x / scale) * scale``."""
    if scale is None or layer.bias is None:
        return layer(x)
    if isinstance(layer, EmptyLinear):
        return layer(x) * scale  # the bias alone, or nothing
    return F.linear(x, layer.weight, layer.bias * scale)


class EncoderLayer(nn.Module):
    """One Transformer layer, post-LN (base models) or pre-LN (large models).

    A removed sublayer (``attention`` or ``feed_forward`` is ``None``) adds nothing; in a
    post-LN layer its LayerNorm stays, in a pre-LN layer its LayerNorm goes with it.
    """

    def __init__(self, config: EncoderConfig, index: int):
        super().__init__()
        self.layer_norm_first = config.layer_norm_first
        eps = config.layer_norm_eps
        dim = config.embed_dim
        self.attention = None
        if config.use_attention[index]:
            self.attention = SelfAttention(dim, config.num_heads[index], config.head_dim, config.attention_dropout,
                                           head_index=config.head_indices(index),
                                           gru_rel_pos=config.gated_position_bias)
        self.dropout = nn.Dropout(config.encoder_dropout)
        self.layer_norm = nn.LayerNorm(dim, eps=eps) if (self.attention or not self.layer_norm_first) else None
        self.feed_forward = None
        if config.use_ffn[index]:
            self.feed_forward = FeedForward(dim, config.ffn_dims[index], config.activation_dropout,
                                            config.encoder_dropout)
        self.final_layer_norm = (nn.LayerNorm(dim, eps=eps)
                                 if (self.feed_forward or not self.layer_norm_first) else None)

    def forward(self, x: Tensor, attention_bias: Optional[Tensor], position_bias: Optional[Tensor],
                masks: Dict[str, Tensor]) -> Tensor:
        """
        Args:
            x: ``(B, T, D)``.
            attention_bias: ``(B, 1, 1, T)`` or ``None``.
            position_bias: ``(1, H_orig, T, T)`` (WavLM) or ``None``.
            masks: this layer's masks, any of ``head`` ``(H,)``, ``attn_layer`` ``()``,
                ``interm`` ``(F,)``, ``ffn_layer`` ``()``.
        Returns:
            ``(B, T, D)``.
        """
        # The sublayer scalars go inside the sublayers (dropout commutes with a scalar factor).
        if self.attention is not None:
            y = self.layer_norm(x) if self.layer_norm_first else x
            x = x + self.dropout(self.attention(y, attention_bias, position_bias, masks.get("head"),
                                                masks.get("attn_layer")))
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        if self.feed_forward is not None:
            x = x + self.feed_forward(self.final_layer_norm(x) if self.layer_norm_first else x, masks.get("interm"),
                                      masks.get("ffn_layer"))
        if not self.layer_norm_first:
            x = self.final_layer_norm(x)
        return x


class RelativePositionBias(nn.Module):
    """WavLM's bucketed relative position bias, shared by all layers.

    Args:
        num_heads: heads of the original model (layers index into them).
        num_buckets: number of buckets (half for each direction).
        max_distance: distance at which the log-spaced buckets end.
    """

    def __init__(self, num_heads: int, num_buckets: int, max_distance: int):
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.rel_attn_embed = nn.Embedding(num_buckets, num_heads)

    def buckets(self, frames: int, device: torch.device) -> Tensor:
        """Bucket of every (query, key) offset, ``(T, T)`` long."""
        positions = torch.arange(frames, device=device)
        offset = positions[None, :] - positions[:, None]
        half = self.num_buckets // 2
        exact = half // 2
        bucket = (offset > 0).long() * half
        distance = offset.abs()
        log_ratio = torch.log(distance.float().clamp(min=1) / exact) / math.log(self.max_distance / exact)
        far = (exact + (log_ratio * (half - exact)).long()).clamp(max=half - 1)
        return bucket + torch.where(distance < exact, distance, far)

    def forward(self, frames: int) -> Tensor:
        """Bias ``(1, H_orig, T, T)``."""
        return self.rel_attn_embed(self.buckets(frames, self.rel_attn_embed.weight.device)).permute(2, 0, 1)[None]


class Transformer(nn.Module):
    """Positional convolution, layers, and the LayerNorm before (post-LN) or after (pre-LN) them."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.layer_norm_first = config.layer_norm_first
        self.layer_drop = config.layer_drop
        self.pos_conv_embed = ConvolutionalPositionalEmbedding(config.embed_dim, config.pos_conv_kernel,
                                                               config.pos_conv_groups)
        # Pre-LN: the LayerNorm after the last layer, absent in an encoder cut below its last layer.
        self.layer_norm = (nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
                           if config.final_layer_norm else None)
        self.dropout = nn.Dropout(config.encoder_dropout)
        self.layers = nn.ModuleList(EncoderLayer(config, i) for i in range(config.num_layers))
        self.position_bias = None
        if config.position_bias_table:
            self.position_bias = RelativePositionBias(config.total_heads, config.num_buckets, config.max_distance)

    def forward(self, x: Tensor, attention_bias: Optional[Tensor],
                masks: Optional[Masks] = None) -> List[Tensor]:
        """
        Args:
            x: ``(B, T, D)`` projected features.
            attention_bias: ``(B, 1, 1, T)`` or ``None``.
            masks: unit masks (see module docstring) or ``None``.
        Returns:
            ``L + 1`` hidden states ``(B, T, D)``: the layers' input, then every layer's output;
            in a pre-LN model the last one has the final LayerNorm applied.
        """
        x = x + self.pos_conv_embed(x)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        position_bias = None if self.position_bias is None else self.position_bias(x.shape[1])
        hidden_states = [x]
        for index, layer in enumerate(self.layers):
            skip = self.training and self.layer_drop > 0 and torch.rand(()).item() < self.layer_drop
            if not skip:
                layer_masks = {}
                if masks:
                    layer_masks = {unit: masks[unit][index] for unit in LAYER_UNITS if unit in masks}
                x = layer(x, attention_bias, position_bias, layer_masks)
            hidden_states.append(x)
        if self.layer_norm_first and self.layer_norm is not None:
            hidden_states[-1] = self.layer_norm(x)
        return hidden_states


class Encoder(nn.Module):
    """Feature projection followed by the Transformer (torchaudio's ``encoder`` naming)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.feature_projection = FeatureProjection(config.conv_layers[-1][0], config.embed_dim,
                                                    config.encoder_projection_dropout, config.layer_norm_eps)
        self.transformer = Transformer(config)


class SSLEncoder(nn.Module):
    """wav2vec 2.0 / HuBERT / WavLM encoder that consumes pruning masks.

    Args:
        config: the architecture (dense preset or pruned structure).
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.feature_extractor = FeatureExtractor(config)
        self.encoder = Encoder(config)

    @property
    def receptive_field(self) -> int:
        return self.feature_extractor.receptive_field

    def _check_input(self, waveforms: Tensor, lengths: Optional[Tensor]) -> None:
        if waveforms.ndim != 2:
            raise ValueError(f"Expected waveforms of shape (batch, samples), got {tuple(waveforms.shape)}")
        if lengths is not None and torch.jit.is_tracing():
            return  # ONNX export traces with example inputs; the lengths are data there
        shortest = waveforms.shape[1] if lengths is None else int(lengths.min())
        if shortest < self.receptive_field:
            raise ValueError(
                f"A waveform of {shortest} samples is shorter than the encoder's receptive field of "
                f"{self.receptive_field} samples ({self.receptive_field / self.config.sample_rate * 1000:.0f} ms "
                f"at {self.config.sample_rate} Hz); pad or drop such utterances")

    def _normalize(self, waveforms: Tensor, lengths: Optional[Tensor]) -> Tensor:
        """Zero mean, unit variance per utterance over its valid samples; padding stays zero."""
        if lengths is None:
            return F.layer_norm(waveforms, waveforms.shape[1:])
        valid = (torch.arange(waveforms.shape[1], device=waveforms.device)[None, :] < lengths[:, None]).to(
            waveforms.dtype)
        count = lengths.to(waveforms.dtype)[:, None]
        mean = (waveforms * valid).sum(1, keepdim=True) / count
        var = (((waveforms - mean) * valid) ** 2).sum(1, keepdim=True) / count
        return (waveforms - mean) / torch.sqrt(var + 1e-5) * valid

    def forward(self, waveforms: Tensor, lengths: Optional[Tensor] = None,
                masks: Optional[Masks] = None) -> Tuple[List[Tensor], Optional[Tensor]]:
        """
        Args:
            waveforms: ``(B, S)`` at ``config.sample_rate``, zero-padded.
            lengths: ``(B,)`` valid samples per utterance, or ``None`` if none is padded.
            masks: unit masks (module docstring) or ``None`` for the ungated model.
        Returns:
            ``(hidden_states, frame_lengths)``: ``L + 1`` tensors ``(B, T, D)`` (see
            :meth:`Transformer.forward`) and ``(B,)`` valid frames (``None`` if ``lengths`` is).
        """
        x, frame_lengths = self.project(waveforms, lengths, masks)
        return self.contextualize(x, frame_lengths, masks), frame_lengths

    def project(self, waveforms: Tensor, lengths: Optional[Tensor] = None,
                masks: Optional[Masks] = None) -> Tuple[Tensor, Optional[Tensor]]:
        """The first half of :meth:`forward`: CNN and feature projection.

        Returns:
            ``(features, frame_lengths)``: ``(B, T, D)`` projected features (zero at padded
            frames) and ``(B,)`` valid frames (``None`` if ``lengths`` is).
        """
        self._check_input(waveforms, lengths)
        if self.config.normalize_waveform:
            waveforms = self._normalize(waveforms, lengths)
        conv_masks = None if masks is None else masks.get("conv")
        features, frame_lengths = self.feature_extractor(waveforms, lengths, conv_masks)
        x = self.encoder.feature_projection(features, None if conv_masks is None else conv_masks[-1])
        if frame_lengths is not None:
            x = x.masked_fill(padding_mask(frame_lengths, x.shape[1])[:, :, None], 0.0)
        return x, frame_lengths

    def contextualize(self, features: Tensor, frame_lengths: Optional[Tensor] = None,
                      masks: Optional[Masks] = None) -> List[Tensor]:
        """The second half of :meth:`forward`: the Transformer over projected features.

        Self-supervised pretraining (:mod:`espnet_prune.ssl.pretrain`) replaces some frames of
        :meth:`project`'s output by a mask embedding in between.

        Args:
            features: ``(B, T, D)``.
            frame_lengths: ``(B,)`` valid frames, or ``None`` if none is padded.
            masks: unit masks (module docstring) or ``None``.
        Returns:
            ``L + 1`` hidden states ``(B, T, D)`` (see :meth:`Transformer.forward`).
        """
        attention_bias = None
        if frame_lengths is not None:
            padded = padding_mask(frame_lengths, features.shape[1])
            attention_bias = (padded.to(features.dtype) * -10000.0)[:, None, None, :]
        return self.encoder.transformer(features, attention_bias, masks)
