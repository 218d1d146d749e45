"""Gated and compact building blocks of the prunable downstream modules.

ESPnet's layers (``EncoderLayer`` of the Conformer and of the Transformer encoder,
``DecoderLayer``) are subclassed, keeping every parameter name, so that ESPnet's state dicts
load unchanged. What the subclasses add:

* masks (see :mod:`espnet_prune.asr.downstream.structure` for the units): a width mask is the
  ``input_mask`` of the sublayer's output map, applied by a forward pre-hook
  (:func:`add_input_mask`); a scalar mask scales the sublayer's output in the layer's
  ``forward``. Without masks nothing is multiplied.
* compact shapes: a sublayer can have fewer heads / FFN units / channels than ESPnet builds
  (:func:`shrink_sublayer`), none at all (:class:`EmptySublayer`, which outputs its output
  map's bias), or be removed (the attribute is ``None``; a pre-LN layer then drops its norm, a
  post-LN layer keeps it, as the residual sum still goes through it).
"""

import warnings
from typing import Dict, Optional, Tuple

import torch
from espnet.nets.pytorch_backend.conformer.encoder_layer import EncoderLayer as ConformerEncoderLayer
from espnet.nets.pytorch_backend.transformer.decoder_layer import DecoderLayer
from espnet.nets.pytorch_backend.transformer.encoder_layer import EncoderLayer as TransformerEncoderLayer
from espnet.nets.pytorch_backend.transformer.positionwise_feed_forward import PositionwiseFeedForward
from torch import Tensor, nn

from espnet_prune.asr.downstream.structure import (
    ATTENTION,
    CONFORMER_SUBLAYERS,
    DECODER_SUBLAYERS,
    FEED_FORWARD,
    OUTPUT_MAP,
    TRANSFORMER_ENCODER_SUBLAYERS,
    Sublayer,
)
from espnet_prune.ssl.model import EmptyLinear


def _scale_input(module: nn.Module, args: Tuple[Tensor, ...]) -> Optional[Tuple[Tensor, ...]]:
    """Forward pre-hook of an output map: its input scaled by ``module.input_mask`` when one is set."""
    mask = getattr(module, "input_mask", None)
    if mask is None:
        return None
    if isinstance(module, nn.Conv1d):  # (B, C, T): one value per input channel
        mask = mask[:, None]
    return (args[0] * mask,) + tuple(args[1:])


def add_input_mask(module: nn.Module) -> None:
    """Let ``module`` (an ``nn.Linear`` or ``nn.Conv1d``) scale its inputs by ``module.input_mask``
    (``(in_features,)`` or ``None``), with a forward pre-hook: its type and parameters stay ESPnet's
    (dynamic int8 quantization and ONNX export see a plain ``nn.Linear``)."""
    if not getattr(module, "has_input_mask", False):
        module.input_mask = None
        module.has_input_mask = True
        module.register_forward_pre_hook(_scale_input)


class EmptySublayer(nn.Module):
    """A sublayer with no head / FFN unit / channel left: it outputs its output map's bias.

    Args:
        output: the name of the output map (``linear_out``, ``w_2``, ``pointwise_conv2``), kept as
            an :class:`~espnet_prune.ssl.model.EmptyLinear` ``(0 -> size)`` so that its bias keeps
            ESPnet's parameter name.
        size: the model dimension D.
    """

    def __init__(self, output: str, size: int):
        super().__init__()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
            self.add_module(output, EmptyLinear(0, size))
        self.output = output

    def forward(self, query: Tensor, *args, **kwargs) -> Tensor:
        """``(B, T, D)`` (the query; other inputs are ignored) -> ``(B, T, D)``, the bias at every frame."""
        return getattr(self, self.output)(query.new_zeros((*query.shape[:-1], 0)))


def _shrink_attention(attention: nn.Module, heads: int) -> None:
    """Give ``attention`` (an ESPnet ``MultiHeadedAttention`` or relative-position variant) ``heads`` heads."""
    size, inner = attention.linear_q.in_features, heads * attention.d_k
    attention.h = heads
    attention.linear_q = nn.Linear(size, inner)
    attention.linear_k = nn.Linear(size, inner)
    attention.linear_v = nn.Linear(size, inner)
    attention.linear_out = nn.Linear(inner, size)
    if hasattr(attention, "linear_pos"):
        attention.linear_pos = nn.Linear(size, inner, bias=False)
        attention.pos_bias_u = nn.Parameter(torch.empty(heads, attention.d_k))
        attention.pos_bias_v = nn.Parameter(torch.empty(heads, attention.d_k))
        nn.init.xavier_uniform_(attention.pos_bias_u)
        nn.init.xavier_uniform_(attention.pos_bias_v)


def _shrink_convolution(module: nn.Module, channels: int) -> None:
    """Give an ESPnet ``ConvolutionModule`` ``channels`` depthwise channels."""
    size = module.pointwise_conv1.in_channels
    kernel = module.depthwise_conv.kernel_size[0]
    bias = module.depthwise_conv.bias is not None
    module.pointwise_conv1 = nn.Conv1d(size, 2 * channels, 1, bias=bias)
    module.depthwise_conv = nn.Conv1d(channels, channels, kernel, padding=(kernel - 1) // 2, groups=channels,
                                      bias=bias)
    module.norm = nn.BatchNorm1d(channels)
    module.pointwise_conv2 = nn.Conv1d(channels, size, 1, bias=bias)


def shrink_sublayer(module: nn.Module, sublayer: Sublayer, width: int) -> nn.Module:
    """``module`` (ESPnet's dense sublayer) with ``width`` heads / FFN units / channels.

    Returns the module itself, changed in place (new, freshly initialised maps of the new
    width), or an :class:`EmptySublayer` for ``width == 0``.
    """
    size = module.linear_out.out_features if sublayer.kind == ATTENTION else (
        module.w_2.out_features if sublayer.kind == FEED_FORWARD else module.pointwise_conv2.out_channels)
    if width == 0:
        return EmptySublayer(OUTPUT_MAP[sublayer.kind], size)
    if sublayer.kind == ATTENTION:
        _shrink_attention(module, width)
    elif sublayer.kind == FEED_FORWARD:
        return PositionwiseFeedForward(size, width, module.dropout.p, module.activation)
    else:
        _shrink_convolution(module, width)
    return module


def make_maskable(module: nn.Module, sublayer: Sublayer) -> None:
    """Give the output map of ``module`` (a sublayer) an input mask (:func:`add_input_mask`)."""
    if not isinstance(module, EmptySublayer):
        add_input_mask(getattr(module, OUTPUT_MAP[sublayer.kind]))


class GatedLayerMixin:
    """What the three gated layers share: the sublayer table, masks and the residual sum.

    A subclass sets ``SUBLAYERS`` and calls :meth:`_init_gates` after ESPnet's ``__init__``.
    """

    SUBLAYERS = ()

    def _init_gates(self) -> None:
        #: ``{sublayer module: scalar mask or None}``, the scalar masks of :meth:`set_layer_masks`.
        self.sublayer_masks: Dict[str, Optional[Tensor]] = {s.module: None for s in self.SUBLAYERS}
        self._norms = {s.module: s.norm for s in self.SUBLAYERS}
        for sublayer in self.SUBLAYERS:
            module = getattr(self, sublayer.module)
            if module is not None:
                make_maskable(module, sublayer)

    def compact(self, sublayer: Sublayer, width: int, present: bool) -> None:
        """Give ``sublayer`` ``width`` units, or remove it (``present`` false)."""
        if not present:
            setattr(self, sublayer.module, None)
            if self.normalize_before:  # its norm only fed it
                setattr(self, sublayer.norm, None)
            return
        module = shrink_sublayer(getattr(self, sublayer.module), sublayer, width)
        make_maskable(module, sublayer)
        setattr(self, sublayer.module, module)

    def set_layer_masks(self, masks: Dict[str, Optional[Tensor]]) -> None:
        """Set this layer's masks: ``{unit name: mask or None}`` (missing units: no mask).

        A width mask ``(width,)`` goes to the sublayer's output map (repeated over a head's
        ``d_k`` columns for heads); a scalar mask ``()`` scales the sublayer's output. Masks of a
        removed or empty sublayer are ignored.
        """
        for sublayer in self.SUBLAYERS:
            module = getattr(self, sublayer.module)
            scalar = masks.get(sublayer.layer_unit)
            self.sublayer_masks[sublayer.module] = None if module is None else scalar
            if module is None or isinstance(module, EmptySublayer):
                continue
            width_mask = masks.get(sublayer.width_unit)
            if width_mask is not None and sublayer.kind == ATTENTION:
                width_mask = width_mask.repeat_interleave(module.d_k)
            getattr(module, OUTPUT_MAP[sublayer.kind]).input_mask = width_mask

    def _pre(self, name: str, x: Tensor) -> Tensor:
        """The input of sublayer ``name``: ``x``, normalised first in a pre-LN layer."""
        if self.normalize_before and getattr(self, name) is not None:
            return getattr(self, self._norms[name])(x)
        return x

    def _post(self, name: str, residual: Tensor, out: Optional[Tensor], coeff: float, scale: float = 1.0) -> Tensor:
        """ESPnet's residual sum ``residual + coeff * scale * dropout(out)`` (``out`` scaled by the
        sublayer's scalar mask; ``None`` for a removed sublayer), normalised after in a post-LN layer."""
        if out is not None:
            mask = self.sublayer_masks[name]
            if mask is not None:
                out = out * mask
            residual = residual + coeff * scale * self.dropout(out)
        if not self.normalize_before:
            residual = getattr(self, self._norms[name])(residual)
        return residual

    def _self_attention_inputs(self, x: Tensor, mask: Optional[Tensor], cache: Optional[Tensor]):
        """``(x, x_q, residual, mask)`` of an encoder layer's self-attention, as ESPnet's layers form
        them: ``x`` ``(B, T, D)`` normalised first in a pre-LN layer; with a ``cache`` ``(B, T - 1, D)``
        only the last frame is queried (``x_q``, ``residual`` ``(B, 1, D)``, ``mask`` its last row)."""
        residual = x
        x = self._pre("self_attn", x)
        if cache is None:
            return x, x, residual, mask
        assert cache.shape == (x.shape[0], x.shape[1] - 1, self.size)
        return x, x[:, -1:, :], residual[:, -1:, :], None if mask is None else mask[:, -1:, :]

    def _stochastic_depth(self):
        """``(skip, coeff)`` as ESPnet's layers draw them."""
        if self.training and self.stochastic_depth_rate > 0:
            return torch.rand(1).item() < self.stochastic_depth_rate, 1.0 / (1 - self.stochastic_depth_rate)
        return False, 1.0


class GatedConformerLayer(GatedLayerMixin, ConformerEncoderLayer):
    """ESPnet's Conformer block with masks and compact shapes (same arguments as ESPnet's ``EncoderLayer``).

    ``macaron_style`` / ``use_cnn_module`` (whether the block was built with a macaron FFN / a
    convolution module) are read from the arguments, so ``ff_scale`` and ``norm_final`` stay when
    pruning removes those sublayers.
    """

    SUBLAYERS = CONFORMER_SUBLAYERS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.macaron_style = self.feed_forward_macaron is not None
        self.use_cnn_module = self.conv_module is not None
        self._init_gates()

    def forward(self, x_input, mask, cache=None):
        """As ESPnet's ``EncoderLayer.forward``: ``x_input`` is ``(B, T, D)`` or ``((B, T, D), pos_emb)``,
        ``mask`` ``(B, 1, T)``, ``cache`` ``(B, T - 1, D)``; returns the output like it and ``mask``."""
        if isinstance(x_input, tuple):
            x, pos_emb = x_input[0], x_input[1]
        else:
            x, pos_emb = x_input, None
        skip, coeff = self._stochastic_depth()
        if skip:
            if cache is not None:
                x = torch.cat([cache, x], dim=1)
            return ((x, pos_emb), mask) if pos_emb is not None else (x, mask)

        if self.macaron_style:
            out = None if self.feed_forward_macaron is None else self.feed_forward_macaron(
                self._pre("feed_forward_macaron", x))
            x = self._post("feed_forward_macaron", x, out, coeff, self.ff_scale)

        x, x_q, residual, mask = self._self_attention_inputs(x, mask, cache)
        out = None
        if self.self_attn is not None:
            out = (self.self_attn(x_q, x, x, pos_emb, mask) if pos_emb is not None
                   else self.self_attn(x_q, x, x, mask))
        x = self._post("self_attn", residual, out, coeff)

        if self.use_cnn_module:
            out = None if self.conv_module is None else self.conv_module(self._pre("conv_module", x))
            x = self._post("conv_module", x, out, coeff)

        out = None if self.feed_forward is None else self.feed_forward(self._pre("feed_forward", x))
        x = self._post("feed_forward", x, out, coeff, self.ff_scale)
        if self.use_cnn_module:
            x = self.norm_final(x)
        if cache is not None:
            x = torch.cat([cache, x], dim=1)
        return ((x, pos_emb), mask) if pos_emb is not None else (x, mask)


class GatedTransformerEncoderLayer(GatedLayerMixin, TransformerEncoderLayer):
    """ESPnet's Transformer encoder layer with masks and compact shapes (same arguments)."""

    SUBLAYERS = TRANSFORMER_ENCODER_SUBLAYERS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_gates()

    def forward(self, x, mask, cache=None):
        """As ESPnet's: ``x`` ``(B, T, D)``, ``mask`` ``(B, 1, T)``, ``cache`` ``(B, T - 1, D)`` ->
        ``(B, T, D)``, ``mask``."""
        skip, coeff = self._stochastic_depth()
        if skip:
            if cache is not None:
                x = torch.cat([cache, x], dim=1)
            return x, mask
        x, x_q, residual, mask = self._self_attention_inputs(x, mask, cache)
        out = None if self.self_attn is None else self.self_attn(x_q, x, x, mask)
        x = self._post("self_attn", residual, out, coeff)
        out = None if self.feed_forward is None else self.feed_forward(self._pre("feed_forward", x))
        x = self._post("feed_forward", x, out, coeff)
        if cache is not None:
            x = torch.cat([cache, x], dim=1)
        return x, mask


class GatedDecoderLayer(GatedLayerMixin, DecoderLayer):
    """ESPnet's Transformer decoder layer with masks and compact shapes (same arguments;
    ``sequential_attn``, which ``TransformerDecoder`` never sets, is not supported)."""

    SUBLAYERS = DECODER_SUBLAYERS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.sequential_attn is not None:
            raise ValueError("GatedDecoderLayer does not support sequential_attn")
        self._init_gates()

    def forward(self, tgt, tgt_mask, memory, memory_mask, cache=None):
        """As ESPnet's ``DecoderLayer.forward``: ``tgt`` ``(B, L, D)``, ``tgt_mask`` ``(B, L, L)``,
        ``memory`` ``(B, T, D)``, ``memory_mask`` ``(B, 1, T)``, ``cache`` ``(B, L - 1, D)``;
        returns ``(B, L, D)`` and the three other inputs."""
        residual = tgt
        tgt = self._pre("self_attn", tgt)
        if cache is None:
            tgt_q, tgt_q_mask = tgt, tgt_mask
        else:
            assert cache.shape == (tgt.shape[0], tgt.shape[1] - 1, self.size)
            tgt_q = tgt[:, -1:, :]
            residual = residual[:, -1:, :]
            tgt_q_mask = None if tgt_mask is None else tgt_mask[:, -1:, :]
        out = None if self.self_attn is None else self.self_attn(tgt_q, tgt, tgt, tgt_q_mask)
        x = self._post("self_attn", residual, out, 1.0)
        out = None if self.src_attn is None else self.src_attn(self._pre("src_attn", x), memory, memory, memory_mask)
        x = self._post("src_attn", x, out, 1.0)
        out = None if self.feed_forward is None else self.feed_forward(self._pre("feed_forward", x))
        x = self._post("feed_forward", x, out, 1.0)
        if cache is not None:
            x = torch.cat([cache, x], dim=1)
        return x, tgt_mask, memory, memory_mask

    def forward_partially_AR(self, *args, **kwargs):
        """ESPnet's partially autoregressive step (Mask-CTC decoding), which runs every sublayer itself:
        refused where a sublayer is removed or scaled by a sublayer mask (width masks and shrunk
        widths act inside the sublayers and are honoured)."""
        if any(getattr(self, s.module) is None or self.sublayer_masks[s.module] is not None for s in self.SUBLAYERS):
            raise ValueError("partially autoregressive decoding is not supported by a pruned_transformer decoder "
                             "with removed or masked sublayers")
        return super().forward_partially_AR(*args, **kwargs)
