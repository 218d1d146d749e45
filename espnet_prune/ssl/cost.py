"""Parameter and multiply-accumulate (MAC) counts of an SSL encoder, exact or expected.

The cost of an encoder is a polynomial in its *unit counts* (:data:`UnitCounts`): the
output channels of every CNN layer, the heads and FFN units of every Transformer
layer, and whether each attention / FFN sublayer exists. Called with the exact counts
of a config (the default, :func:`structure_counts`) the functions return plain Python
numbers equal to what :class:`~espnet_prune.ssl.model.SSLEncoder` holds and computes.
Called with differentiable tensors -- expected counts under independent hard-concrete
gates, e.g. ``head[l] = sum of P(z_h != 0)`` and ``attn_layer[l] = P(z_l != 0)`` -- they
return the expected cost as a tensor through which gradients reach the gates. The
expectation is exact for independent gates, because every term is a product of counts
of different gates (``E[a_l * H_l] = E[a_l] * E[H_l]``, ``E[C_{i-1} C_i] = E[C_{i-1}] E[C_i]``).

Costs are split into ``cnn`` (feature extractor), ``pos_conv`` (convolutional positional
embedding), ``transformer`` (feature projection, all layers, the encoder LayerNorm and
WavLM's shared relative position embedding) and their ``total``.

MACs are those of one utterance (batch 1, no padding): convolutions, linear layers
(WavLM's ``gru_rel_pos_linear`` included) and the two attention products
(scores ``Q K^T`` and context ``A V``, ``T * T * H * head_dim`` each). Norms,
activations, softmax, biases and element-wise products are not counted.
"""

from typing import Dict, List, Optional, Sequence, Union

from torch import Tensor

from espnet_prune.ssl.config import EncoderConfig, receptive_field
from espnet_prune.ssl.units import UNIT_BY_NAME, UNIT_NAMES, UNITS

#: ``{"conv": [C_0, ...], "head": [H_0, ...], "attn_layer": [a_0, ...], "interm": [F_0, ...],
#: "ffn_layer": [f_0, ...]}``: one cost term per layer of each pruning unit, keyed by the unit
#: names of :mod:`espnet_prune.ssl.units` (the keys of the encoder's masks); Python numbers for
#: a concrete structure, scalar tensors for expectations.
UnitCounts = Dict[str, Sequence]
#: Keys of the dicts returned by :func:`count_params` and :func:`count_macs`.
COST_PARTS = ("cnn", "pos_conv", "transformer", "total")

Number = Union[int, float, Tensor]


def structure_counts(config: EncoderConfig) -> UnitCounts:
    """Exact unit counts of a (possibly pruned) config (:meth:`Unit.exact_counts` of every unit).

    ``head`` and ``interm`` list the config's widths even for layers whose sublayer is
    removed; the 0 in ``attn_layer`` / ``ffn_layer`` cancels them in every cost.
    """
    return {unit.name: unit.exact_counts(config) for unit in UNITS}


def _resolve_counts(config: EncoderConfig, counts: Optional[UnitCounts]) -> Dict[str, List[Number]]:
    """``counts`` completed with the config's exact counts for missing keys, as lists of scalars."""
    resolved = structure_counts(config)
    if counts is None:
        return resolved
    unknown = sorted(set(counts) - set(UNIT_NAMES))
    if unknown:
        raise ValueError(f"Unknown unit count keys {unknown}; expected keys among {list(UNIT_NAMES)}")
    for key, values in counts.items():
        unit = UNIT_BY_NAME[key]
        expected = unit.num_layers(config)
        values = list(values)
        if len(values) != expected:
            raise ValueError(f"counts['{key}'] has {len(values)} entries but the config has {expected} "
                             f"{unit.layer_kind} layers")
        for index, value in enumerate(values):
            if isinstance(value, Tensor) and value.numel() != 1:
                raise ValueError(f"counts['{key}'][{index}] must be a scalar count, got a tensor of shape "
                                 f"{tuple(value.shape)} (sum unit keep probabilities to get the expected count)")
        resolved[key] = values
    return resolved


def _samples_for(config: EncoderConfig, seconds: float) -> int:
    """Waveform samples in ``seconds`` of audio, checked against the CNN's receptive field."""
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    samples = int(round(seconds * config.sample_rate))
    shortest = receptive_field(config.conv_layers)
    if samples < shortest:
        raise ValueError(f"{seconds} s ({samples} samples at {config.sample_rate} Hz) is shorter than the "
                         f"encoder's receptive field of {shortest} samples")
    return samples


def _conv_frames(config: EncoderConfig, samples: int) -> List[int]:
    """Output frames of every CNN layer for ``samples`` input samples."""
    frames = []
    for _, kernel, stride in config.conv_layers:
        samples = (samples - kernel) // stride + 1
        frames.append(samples)
    return frames


def frames_for(config: EncoderConfig, seconds: float) -> int:
    """Transformer frames T that ``seconds`` of audio at ``config.sample_rate`` produce."""
    return _conv_frames(config, _samples_for(config, seconds))[-1]


def _total(parts: Dict[str, Number]) -> Dict[str, Number]:
    return {**parts, "total": parts["cnn"] + parts["pos_conv"] + parts["transformer"]}


def count_params(config: EncoderConfig, counts: Optional[UnitCounts] = None) -> Dict[str, Number]:
    """Number of parameters of the encoder, exact or expected.

    Args:
        config: the architecture; gives every size that is not a unit count.
        counts: unit counts (:data:`UnitCounts`); missing keys, or ``None``, take the
            config's exact counts.
    Returns:
        ``{"cnn", "pos_conv", "transformer", "total"}``: Python numbers for numeric counts
        (ints equal to ``SSLEncoder(config)``'s parameter count), scalar tensors for
        tensor counts (``pos_conv``, which no unit count changes, stays a number).
    """
    counts = _resolve_counts(config, counts)
    dim, head_dim = config.embed_dim, config.head_dim
    pre_ln = config.layer_norm_first
    layer_norm = 2 * dim

    cnn: Number = 0
    in_channels: Number = 1
    for index, ((_, kernel, _), out_channels) in enumerate(zip(config.conv_layers, counts["conv"])):
        cnn = cnn + in_channels * out_channels * kernel
        if config.conv_bias:
            cnn = cnn + out_channels
        if config.extractor_mode == "layer_norm" or index == 0:  # LayerNorm everywhere / GroupNorm first
            cnn = cnn + 2 * out_channels
        in_channels = out_channels

    pos_conv = dim * (dim // config.pos_conv_groups) * config.pos_conv_kernel  # weight-norm direction v
    pos_conv += config.pos_conv_kernel + dim  # weight-norm magnitude g (one per tap) and bias

    last_channels = counts["conv"][-1]
    transformer: Number = 2 * last_channels + last_channels * dim + dim  # feature projection
    if config.final_layer_norm:  # the encoder LN (post-LN: on the input; pre-LN: after the last layer)
        transformer = transformer + layer_norm
    if config.position_bias_table:
        transformer += config.num_buckets * config.total_heads
    for heads, attn_used, interm, ffn_used in zip(counts["head"], counts["attn_layer"], counts["interm"],
                                                  counts["ffn_layer"]):
        # q, k, v: weight and bias per head; out_proj: weight per head, bias always.
        attention = heads * (4 * dim * head_dim + 3 * head_dim) + dim
        if config.gated_position_bias:
            attention = attention + heads + 8 * head_dim + 8  # gru_rel_pos_const, gru_rel_pos_linear
        feed_forward = interm * (2 * dim + 1) + dim
        if pre_ln:  # a pre-LN sublayer owns its LayerNorm
            transformer = transformer + attn_used * (attention + layer_norm) + ffn_used * (feed_forward + layer_norm)
        else:  # post-LN layers keep both LayerNorms whatever is removed
            transformer = transformer + attn_used * attention + ffn_used * feed_forward + 2 * layer_norm
    return _total({"cnn": cnn, "pos_conv": pos_conv, "transformer": transformer})


def attention_product_macs(config: EncoderConfig, seconds: float,
                           counts: Optional[UnitCounts] = None) -> Number:
    """MACs of the two attention products (``Q K^T`` and ``A V``) of all layers.

    This is the part of ``count_macs(...)["transformer"]`` that grows with ``T^2``;
    arguments as for :func:`count_macs`.
    """
    counts = _resolve_counts(config, counts)
    frames = frames_for(config, seconds)
    kept_heads: Number = 0
    for heads, attn_used in zip(counts["head"], counts["attn_layer"]):
        kept_heads = kept_heads + attn_used * heads
    return 2 * frames * frames * config.head_dim * kept_heads


def count_macs(config: EncoderConfig, seconds: float, counts: Optional[UnitCounts] = None) -> Dict[str, Number]:
    """Multiply-accumulates to encode one utterance of ``seconds`` seconds, exact or expected.

    Args:
        config: the architecture.
        seconds: utterance duration; the waveform has ``round(seconds * sample_rate)`` samples.
        counts: unit counts (:data:`UnitCounts`); missing keys, or ``None``, take the
            config's exact counts.
    Returns:
        ``{"cnn", "pos_conv", "transformer", "total"}`` (see the module docstring for what
        is counted), numbers or scalar tensors as for :func:`count_params`;
        ``transformer`` includes :func:`attention_product_macs`.
    """
    conv_frames = _conv_frames(config, _samples_for(config, seconds))
    counts = _resolve_counts(config, counts)
    dim, head_dim = config.embed_dim, config.head_dim

    cnn: Number = 0
    in_channels: Number = 1
    for (_, kernel, _), out_channels, frames in zip(config.conv_layers, counts["conv"], conv_frames):
        cnn = cnn + frames * in_channels * out_channels * kernel
        in_channels = out_channels

    frames = conv_frames[-1]
    kernel = config.pos_conv_kernel
    # The conv is padded by kernel // 2 on both sides; an even kernel yields one extra frame, dropped after.
    pos_frames = frames + 2 * (kernel // 2) - kernel + 1
    pos_conv = pos_frames * dim * (dim // config.pos_conv_groups) * kernel

    transformer: Number = frames * counts["conv"][-1] * dim  # feature projection
    for heads, attn_used, interm, ffn_used in zip(counts["head"], counts["attn_layer"], counts["interm"],
                                                  counts["ffn_layer"]):
        per_head = 4 * frames * dim * head_dim  # q, k, v and out_proj
        if config.gated_position_bias:
            per_head += 8 * frames * head_dim  # gru_rel_pos_linear
        transformer = transformer + attn_used * heads * per_head + ffn_used * interm * 2 * frames * dim
    transformer = transformer + attention_product_macs(config, seconds, counts)
    return _total({"cnn": cnn, "pos_conv": pos_conv, "transformer": transformer})


#: Decimal prefixes of cost numbers, largest first.
_PREFIXES = (("G", 1e9), ("M", 1e6), ("k", 1e3))


def format_cost(value: Number, prefix: Optional[str] = None, width: int = 0, sep: str = "") -> str:
    """A parameter or MAC count as text, the one formatter of cost numbers.

    Args:
        value: a number or scalar tensor.
        prefix: ``"G"``, ``"M"`` or ``"k"``; ``None`` picks the largest one that ``value``
            reaches (whole numbers below 1000, without prefix).
        width: minimum width of the number (right-aligned).
        sep: text between the number and the prefix.
    Returns:
        e.g. ``format_cost(94.37e6) == "94.37M"``, ``format_cost(2.45e9, "G", 6, " ") == "  2.45 G"``.
    """
    value = float(value)
    scales = dict(_PREFIXES)
    if prefix is None:
        prefix = next((name for name, scale in _PREFIXES if value >= scale), None)
        if prefix is None:
            return f"{value:>{width}.0f}"
    elif prefix not in scales:
        raise ValueError(f"Unknown prefix {prefix!r}; expected one of {list(scales)}")
    return f"{value / scales[prefix]:>{width}.2f}{sep}{prefix}"


def describe_cost(params: Dict[str, Number], macs: Dict[str, Number]) -> str:
    """A small fixed-width table of parameters (millions) and MACs (billions) per part.

    Args:
        params: as returned by :func:`count_params`.
        macs: as returned by :func:`count_macs`.
    Returns:
        One header line and one line per part in :data:`COST_PARTS`, e.g.
        ``"cnn            4.20 M params   2.44 GMACs"``.
    """
    missing = [part for part in COST_PARTS if part not in params or part not in macs]
    if missing:
        raise ValueError(f"params and macs must both have the parts {list(COST_PARTS)}; missing {missing}")
    lines = [f"{'part':<12}{'params':>15}{'MACs':>15}"]
    for part in COST_PARTS:
        lines.append(f"{part:<12}{format_cost(params[part], 'M', 8, ' ')} params"
                     f"{format_cost(macs[part], 'G', 9, ' ')}MACs")
    return "\n".join(lines)
