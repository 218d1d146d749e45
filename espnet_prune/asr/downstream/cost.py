"""Parameter and multiply-accumulate (MAC) counts of the prunable downstream modules, exact or expected.

As for the SSL encoder (:mod:`espnet_prune.ssl.cost`), a cost is a polynomial in the *unit
counts* (``{unit name: [count of layer 0, ...]}``, the units of
:mod:`espnet_prune.asr.downstream.structure`): Python numbers give the exact cost of a structure
(the default: the structure's own counts), tensors -- expected counts under independent
hard-concrete gates, e.g. ``head[l] = sum of P(z_h != 0)``, ``attn_layer[l] = P(z_l != 0)`` --
give the expected cost, differentiable in the gates' parameters. Every term is a product of
counts of different gates (a sublayer's presence times its width), so the expectation is exact.

What is counted (batch 1, no padding): linear maps and convolutions (weights, not biases), and the
attention products (scores and context, ``T_q * T_k * head_dim`` per head each; with relative
positions also the position projection and the position scores over ESPnet's ``2T - 1``
(``rel_pos``) or ``T`` (``legacy_rel_pos``) relative positions). Norms, activations, softmax and
element-wise products are not. The counts equal ``torch.utils.flop_counter`` / 2 on these modules.

* Encoder (:func:`encoder_macs`): one utterance of ``input_frames`` frames at the encoder's input
  (the frontend's output frames), through ``input_layer`` (ESPnet's ``conv2d*`` subsampling or
  ``linear``) and every block at the subsampled length :func:`encoder_output_frames`.
  :func:`encoder_macs_per_second` divides by the duration at the input frame rate.
* Decoder (:func:`decoder_step_macs`, :func:`decoder_macs`): ESPnet's incremental decoding
  (``forward_one_step`` with its cache, what ``batch_score`` runs for each hypothesis): at prefix
  length ``n`` every layer projects the query of the last token, keys and values of all ``n``
  prefix tokens (ESPnet caches layer outputs, not keys and values) and of all encoder frames for
  the source attention, then the FFN of the last token and the output layer.

Parts (keys of the returned dicts, for parameters and MACs alike): encoder ``embed``,
``attention``, ``feed_forward`` (both FFNs of a Conformer block), ``conv_module``, ``norms``,
``total``; decoder ``embed``, ``self_attn``, ``src_attn``, ``feed_forward``, ``output_layer``,
``norms``, ``total``.
"""

from typing import Dict, List, Optional, Sequence, Tuple, Union

from torch import Tensor

from espnet_prune.asr.downstream.structure import (
    CONFORMER_UNITS,
    DECODER_UNITS,
    DecoderStructure,
    EncoderStructure,
)

Number = Union[int, float, Tensor]
#: ``{unit name: [count of layer 0, ...]}``.
UnitCounts = Dict[str, Sequence[Number]]
ENCODER_PARTS = ("embed", "attention", "feed_forward", "conv_module", "norms", "total")
DECODER_PARTS = ("embed", "self_attn", "src_attn", "feed_forward", "output_layer", "norms", "total")
#: ``(kernel, stride)`` of the 2-D convolutions of ESPnet's ``Conv2dSubsampling*`` input layers.
SUBSAMPLING = {
    "conv2d": ((3, 2), (3, 2)),
    "conv2d1": ((3, 1), (3, 1)),
    "conv2d2": ((3, 2), (3, 1)),
    "conv2d6": ((3, 2), (5, 3)),
    "conv2d8": ((3, 2), (3, 2), (3, 2)),
}
POSITIONAL_ENCODINGS = ("abs_pos", "scaled_abs_pos", "rel_pos", "legacy_rel_pos")


def _resolve(structure, units, counts: Optional[UnitCounts]) -> Dict[str, List[Number]]:
    """Unit counts of ``structure``, overridden by ``counts`` (checked: known keys, one per layer)."""
    resolved = {unit.name: unit.exact_counts(structure) for unit in units}
    for name, values in (counts or {}).items():
        if name not in resolved:
            raise ValueError(f"Unknown unit count key '{name}'; expected keys among {list(resolved)}")
        values = list(values)
        if len(values) != structure.num_layers:
            raise ValueError(f"counts['{name}'] has {len(values)} entries for {structure.num_layers} layers")
        for index, value in enumerate(values):
            if isinstance(value, Tensor) and value.numel() != 1:
                raise ValueError(f"counts['{name}'][{index}] must be a scalar count, got shape {tuple(value.shape)}")
        resolved[name] = values
    return resolved


def _check_encoder(structure: EncoderStructure) -> None:
    if structure.input_layer not in SUBSAMPLING and structure.input_layer not in ("linear", None):
        raise ValueError(f"The cost model supports input_layer {sorted(SUBSAMPLING)}, 'linear' or null, "
                         f"not '{structure.input_layer}'")
    if structure.pos_enc not in POSITIONAL_ENCODINGS:
        raise ValueError(f"The cost model supports pos_enc_layer_type {list(POSITIONAL_ENCODINGS)}, "
                         f"not '{structure.pos_enc}'")


def _subsampling_shapes(structure: EncoderStructure, input_frames: int) -> List[Tuple[int, int]]:
    """``(frames, features)`` after each convolution of the ``conv2d*`` input layer."""
    frames, features, shapes = input_frames, structure.input_size, []
    for kernel, stride in SUBSAMPLING[structure.input_layer]:
        frames, features = (frames - kernel) // stride + 1, (features - kernel) // stride + 1
        shapes.append((frames, features))
    return shapes


def encoder_output_frames(structure: EncoderStructure, input_frames: int) -> int:
    """Frames T the blocks run on (and the decoder attends to) for ``input_frames`` input frames."""
    _check_encoder(structure)
    if structure.input_layer not in SUBSAMPLING:
        return input_frames
    frames = _subsampling_shapes(structure, input_frames)[-1][0]
    if frames < 1:
        raise ValueError(f"{input_frames} input frames are too short for input_layer '{structure.input_layer}'")
    return frames


def _relative(structure: EncoderStructure, frames: int) -> int:
    """Relative positions the attention projects and scores: 0 for absolute positions."""
    return {"rel_pos": 2 * frames - 1, "legacy_rel_pos": frames}.get(structure.pos_enc, 0)


def _embed_params(structure: EncoderStructure) -> int:
    size = structure.size
    if structure.input_layer == "linear":
        return structure.input_size * size + size + 2 * size
    if structure.input_layer is None:
        return 0
    params, channels, features = 0, 1, structure.input_size
    for kernel, stride in SUBSAMPLING[structure.input_layer]:
        params += channels * size * kernel * kernel + size
        channels, features = size, (features - kernel) // stride + 1
    return params + size * features * size + size


def _attention_params(heads: Number, size: int, head_dim: int, relative: bool) -> Number:
    """q/k/v weights and biases per head, ``linear_out`` (its bias always); relative: ``linear_pos``
    and the two position biases per head."""
    per_head = 4 * size * head_dim + 3 * head_dim
    if relative:
        per_head += size * head_dim + 2 * head_dim
    return heads * per_head + size


def _ffn_params(units: Number, size: int) -> Number:
    return units * (2 * size + 1) + size


def encoder_params(structure: EncoderStructure, counts: Optional[UnitCounts] = None) -> Dict[str, Number]:
    """Parameters of the encoder, exact or expected (parts: ``ENCODER_PARTS``)."""
    _check_encoder(structure)
    counts = _resolve(structure, CONFORMER_UNITS, counts)
    size, head_dim = structure.size, structure.head_dim
    relative = structure.pos_enc in ("rel_pos", "legacy_rel_pos")
    norm = 2 * size
    attention: Number = 0
    feed_forward: Number = 0
    conv_module: Number = 0
    norms: Number = norm if structure.normalize_before else 0  # after_norm
    for layer in range(structure.num_layers):
        sublayers = [(counts["attn_layer"][layer], True),
                     (counts["ffn_layer"][layer], True),
                     (counts["macaron_ffn_layer"][layer], structure.macaron_style),
                     (counts["conv_layer"][layer], structure.use_cnn_module)]
        for present, built in sublayers:
            if built:
                norms = norms + (present * norm if structure.normalize_before else norm)
        if structure.use_cnn_module:
            norms = norms + norm  # norm_final
        attention = attention + counts["attn_layer"][layer] * _attention_params(
            counts["head"][layer], size, head_dim, relative)
        feed_forward = feed_forward + counts["ffn_layer"][layer] * _ffn_params(counts["interm"][layer], size)
        if structure.macaron_style:
            feed_forward = feed_forward + counts["macaron_ffn_layer"][layer] * _ffn_params(
                counts["macaron_interm"][layer], size)
        if structure.use_cnn_module:
            channels = counts["conv_channel"][layer]
            # pointwise_conv1 (2C outputs), depthwise conv, BatchNorm affine, pointwise_conv2 (its bias always)
            per_channel = 2 * (size + 1) + structure.cnn_module_kernel + 1 + 2 + size
            conv_module = conv_module + counts["conv_layer"][layer] * (channels * per_channel + size)
    return _total({"embed": _embed_params(structure), "attention": attention, "feed_forward": feed_forward,
                   "conv_module": conv_module, "norms": norms}, ENCODER_PARTS)


def _total(parts: Dict[str, Number], keys: Tuple[str, ...]) -> Dict[str, Number]:
    total: Number = 0
    for key in keys[:-1]:
        total = total + parts[key]
    return {**parts, "total": total}


def _embed_macs(structure: EncoderStructure, input_frames: int) -> int:
    size = structure.size
    if structure.input_layer == "linear":
        return input_frames * structure.input_size * size
    if structure.input_layer is None:
        return 0
    macs, channels = 0, 1
    shapes = _subsampling_shapes(structure, input_frames)
    for (kernel, _), (frames, features) in zip(SUBSAMPLING[structure.input_layer], shapes):
        macs += frames * features * channels * size * kernel * kernel
        channels = size
    frames, features = shapes[-1]
    return macs + frames * size * features * size


def encoder_macs(structure: EncoderStructure, input_frames: int,
                 counts: Optional[UnitCounts] = None) -> Dict[str, Number]:
    """MACs to encode one utterance of ``input_frames`` frames, exact or expected.

    Args:
        structure: the encoder's shape.
        input_frames: frames at the encoder's input (the frontend's output frames).
        counts: unit counts (missing keys, or ``None``: the structure's own).
    Returns:
        ``ENCODER_PARTS`` -> MACs (numbers, or tensors for tensor counts).
    """
    frames = encoder_output_frames(structure, input_frames)
    counts = _resolve(structure, CONFORMER_UNITS, counts)
    size, head_dim = structure.size, structure.head_dim
    relative = _relative(structure, frames)
    # per head: q, k, v, out projections, position projection, scores (content + position), context
    per_head = head_dim * (4 * frames * size + relative * size + frames * frames + frames * relative
                           + frames * frames)
    attention: Number = 0
    feed_forward: Number = 0
    conv_module: Number = 0
    for layer in range(structure.num_layers):
        attention = attention + counts["attn_layer"][layer] * counts["head"][layer] * per_head
        feed_forward = feed_forward + counts["ffn_layer"][layer] * counts["interm"][layer] * 2 * frames * size
        if structure.macaron_style:
            feed_forward = feed_forward + (counts["macaron_ffn_layer"][layer] * counts["macaron_interm"][layer]
                                           * 2 * frames * size)
        if structure.use_cnn_module:
            per_channel = frames * (2 * size + structure.cnn_module_kernel + size)
            conv_module = conv_module + counts["conv_layer"][layer] * counts["conv_channel"][layer] * per_channel
    return _total({"embed": _embed_macs(structure, input_frames), "attention": attention,
                   "feed_forward": feed_forward, "conv_module": conv_module, "norms": 0}, ENCODER_PARTS)


def encoder_macs_per_second(structure: EncoderStructure, input_frame_rate: float, seconds: float,
                            counts: Optional[UnitCounts] = None) -> Dict[str, Number]:
    """MACs per second of audio for an utterance of ``seconds`` seconds whose encoder input has
    ``input_frame_rate`` frames per second (e.g. 50 after a wav2vec 2.0 frontend): the attention's
    ``T^2`` terms make it grow with the utterance length."""
    if seconds <= 0 or input_frame_rate <= 0:
        raise ValueError(f"seconds and input_frame_rate must be positive, got {seconds} and {input_frame_rate}")
    macs = encoder_macs(structure, int(round(seconds * input_frame_rate)), counts)
    return {key: value / seconds for key, value in macs.items()}


def decoder_params(structure: DecoderStructure, counts: Optional[UnitCounts] = None) -> Dict[str, Number]:
    """Parameters of the decoder, exact or expected (parts: ``DECODER_PARTS``)."""
    counts = _resolve(structure, DECODER_UNITS, counts)
    size, vocab = structure.size, structure.vocab_size
    norm = 2 * size
    embed = vocab * size if structure.input_layer == "embed" else vocab * size + size + norm
    self_attn: Number = 0
    src_attn: Number = 0
    feed_forward: Number = 0
    norms: Number = norm if structure.normalize_before else 0
    for layer in range(structure.num_layers):
        presences = (counts["self_attn_layer"][layer], counts["src_attn_layer"][layer], counts["ffn_layer"][layer])
        for present in presences:
            norms = norms + (present * norm if structure.normalize_before else norm)
        self_attn = self_attn + presences[0] * _attention_params(counts["self_head"][layer], size,
                                                                 structure.head_dim, False)
        src_attn = src_attn + presences[1] * _attention_params(counts["src_head"][layer], size, structure.head_dim,
                                                               False)
        feed_forward = feed_forward + presences[2] * _ffn_params(counts["interm"][layer], size)
    output_layer = size * vocab + vocab if structure.use_output_layer else 0
    return _total({"embed": embed, "self_attn": self_attn, "src_attn": src_attn, "feed_forward": feed_forward,
                   "output_layer": output_layer, "norms": norms}, DECODER_PARTS)


def _decoder_macs(structure: DecoderStructure, encoder_frames: int, steps: int, prefix_sum: int,
                  counts: Optional[UnitCounts]) -> Dict[str, Number]:
    """MACs of ``steps`` incremental steps whose prefix lengths sum to ``prefix_sum``."""
    counts = _resolve(structure, DECODER_UNITS, counts)
    size, head_dim, vocab = structure.size, structure.head_dim, structure.vocab_size
    # per head: q and out projections of the last token; k and v projections, scores and context over the keys
    self_per_head = head_dim * (2 * size * steps + 2 * size * prefix_sum + 2 * prefix_sum)
    src_per_head = head_dim * steps * (2 * size + 2 * encoder_frames * size + 2 * encoder_frames)
    self_attn: Number = 0
    src_attn: Number = 0
    feed_forward: Number = 0
    for layer in range(structure.num_layers):
        self_attn = self_attn + counts["self_attn_layer"][layer] * counts["self_head"][layer] * self_per_head
        src_attn = src_attn + counts["src_attn_layer"][layer] * counts["src_head"][layer] * src_per_head
        feed_forward = feed_forward + counts["ffn_layer"][layer] * counts["interm"][layer] * 2 * size * steps
    embed = 0 if structure.input_layer == "embed" else prefix_sum * vocab * size
    output_layer = steps * size * vocab if structure.use_output_layer else 0
    return _total({"embed": embed, "self_attn": self_attn, "src_attn": src_attn, "feed_forward": feed_forward,
                   "output_layer": output_layer, "norms": 0}, DECODER_PARTS)


def _check_lengths(encoder_frames: int, tokens: int, what: str) -> None:
    if encoder_frames < 1 or tokens < 1:
        raise ValueError(f"encoder_frames and {what} must be at least 1, got {encoder_frames} and {tokens}")


def decoder_step_macs(structure: DecoderStructure, encoder_frames: int, prefix_length: int,
                      counts: Optional[UnitCounts] = None) -> Dict[str, Number]:
    """MACs of one ``forward_one_step`` for one hypothesis whose prefix (the ``ys`` it is given, start
    symbol included) has ``prefix_length`` tokens, attending to ``encoder_frames`` encoder frames."""
    _check_lengths(encoder_frames, prefix_length, "prefix_length")
    return _decoder_macs(structure, encoder_frames, 1, prefix_length, counts)


def decoder_macs(structure: DecoderStructure, encoder_frames: int, tokens: int,
                 counts: Optional[UnitCounts] = None) -> Dict[str, Number]:
    """MACs to decode ``tokens`` tokens for one hypothesis (prefix lengths 1 .. ``tokens``); divide by
    ``tokens`` for the cost per decoded token, multiply by the beam for a beam search."""
    _check_lengths(encoder_frames, tokens, "tokens")
    return _decoder_macs(structure, encoder_frames, tokens, tokens * (tokens + 1) // 2, counts)
