"""Structure of a wav2vec 2.0 / HuBERT / WavLM encoder, dense or pruned.

:class:`EncoderConfig` is the single description of an encoder's shape. The dense
presets (:data:`PRESETS`) give every layer the same width; after physical pruning
each CNN layer, attention sublayer and FFN sublayer carries its own width, so the
per-layer fields are lists. A config serialises to a plain dict (``to_dict``) that
holds only YAML/JSON types and is rebuilt with ``from_dict``.
"""

import copy
import functools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional, Sequence, Union, get_type_hints

from espnet_prune.presets import presets
from espnet_prune.utils.config_values import typed

MODEL_TYPES = ("wav2vec2", "hubert", "wavlm")
#: The model types whose attention adds WavLM's bucketed relative position bias (shared by all
#: layers, indexed by head, optionally gated per head by ``gru_rel_pos``), the one architecture
#: difference between the model types; HuBERT shares wav2vec 2.0's encoder.
RELATIVE_POSITION_BIAS_TYPES = ("wavlm",)


def has_relative_position_bias(model_type: str) -> bool:
    """Whether encoders of ``model_type`` add WavLM's relative position bias (before a config exists)."""
    return model_type in RELATIVE_POSITION_BIAS_TYPES
EXTRACTOR_MODES = ("group_norm", "layer_norm")
#: The fields that are probabilities (the dropouts and LayerDrop), in [0, 1]; training-only, so an
#: ``arch`` override of them beside a checkpoint changes nothing the checkpoint computes.
PROBABILITY_KEYS = ("encoder_projection_dropout", "encoder_dropout", "attention_dropout", "activation_dropout",
                    "layer_drop")
#: The fields an ``arch`` override can change on a loaded checkpoint without changing any
#: parameter's name or shape, and that change what the encoder computes with the same weights
#: (CNN strides, the split into heads, WavLM's head order and relative distances, pre/post-LN,
#: waveform normalisation, the rate the input is taken for, LayerNorm epsilon). Loading warns
#: about each, naming both values (:func:`espnet_prune.ssl.load.common.make_config`); an override
#: of any other field but the dropouts changes a parameter's name or shape, which loading refuses.
COMPUTATION_KEYS = ("conv_layers", "num_heads", "head_dim", "kept_heads", "layer_norm_first", "max_distance",
                    "normalize_waveform", "sample_rate", "layer_norm_eps")
#: Prefix of the keys in error messages: the YAML key (``frontend_conf.arch``) that holds them.
WHERE = "arch"

_BASE_CONV = [[512, 10, 5]] + [[512, 3, 2]] * 4 + [[512, 2, 2]] * 2


@dataclass
class EncoderConfig:
    """Shape and hyper-parameters of an SSL speech encoder.

    Args:
        model_type: ``wav2vec2``, ``hubert`` or ``wavlm``. HuBERT shares wav2vec 2.0's
            encoder; WavLM adds a gated relative position bias to the attention.
        extractor_mode: ``group_norm`` (base models: GroupNorm on the first CNN layer
            only) or ``layer_norm`` (large models: LayerNorm over channels on every layer).
        conv_layers: ``[out_channels, kernel_size, stride]`` for every CNN layer.
        conv_bias: whether CNN convolutions have a bias.
        embed_dim: Transformer width D.
        num_layers: number of Transformer layers L.
        num_heads: attention heads per layer, a list of L ints (an int is broadcast).
        head_dim: width of one attention head; ``None`` means ``embed_dim // num_heads``.
        ffn_dims: FFN intermediate width per layer, a list of L ints (an int is broadcast).
        use_attention: whether each layer still has its attention sublayer.
        use_ffn: whether each layer still has its FFN sublayer.
        kept_heads: for each layer, the original indices of the heads it keeps. Needed by
            WavLM, whose relative position bias and gate are indexed by head; ``None``
            means heads ``0 .. num_heads[l] - 1``.
        layer_norm_first: pre-LN Transformer (large models) instead of post-LN (base).
        pos_conv_kernel: kernel size of the convolutional positional embedding.
        pos_conv_groups: groups of the convolutional positional embedding.
        num_buckets: WavLM relative position buckets.
        max_distance: WavLM maximum relative distance.
        gru_rel_pos: WavLM gated relative position bias.
        normalize_waveform: normalise each waveform to zero mean, unit variance over its
            valid samples before the CNN (fairseq's ``normalize``, true for large models).
        sample_rate: sampling rate in Hz the model was trained for.
        encoder_projection_dropout: dropout after the feature projection.
        encoder_dropout: dropout on the Transformer input and after each sublayer.
        attention_dropout: dropout on attention weights.
        activation_dropout: dropout after the FFN activation.
        layer_drop: probability of skipping a whole layer in training (LayerDrop).
        layer_norm_eps: epsilon of every LayerNorm.
        final_layer_norm: pre-LN models only: whether the Transformer ends with its LayerNorm.
            ``False`` for an encoder cut below its last layer (``pruned_ssl``'s ``layer: k``),
            whose hidden state k has none; post-LN models always keep theirs (applied to the
            Transformer's input).

    Every field is checked against its declared type when the config is built, so that a wrong
    value fails before a model exists, with a ``ValueError`` naming the key (``arch.<key>``), the
    value and the expected type (:func:`espnet_prune.utils.config_values.typed`): numbers that
    PyYAML leaves as strings (``layer_norm_eps: 1e-5`` arrives as ``'1e-5'``) are taken as
    numbers; a quoted number, a bool where a number belongs or a number where a bool belongs is
    refused. The dropouts and ``layer_drop`` must lie in [0, 1], ``layer_norm_eps`` above 0.
    """

    model_type: str = "wav2vec2"
    extractor_mode: str = "group_norm"
    conv_layers: List[List[int]] = field(default_factory=lambda: copy.deepcopy(_BASE_CONV))
    conv_bias: bool = False
    embed_dim: int = 768
    num_layers: int = 12
    num_heads: Union[int, List[int]] = 12
    head_dim: Optional[int] = None
    ffn_dims: Union[int, List[int]] = 3072
    use_attention: Union[bool, List[bool]] = True
    use_ffn: Union[bool, List[bool]] = True
    kept_heads: Optional[List[List[int]]] = None
    layer_norm_first: bool = False
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    num_buckets: int = 320
    max_distance: int = 800
    gru_rel_pos: bool = True
    normalize_waveform: bool = False
    sample_rate: int = 16000
    encoder_projection_dropout: float = 0.1
    encoder_dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    layer_drop: float = 0.0
    layer_norm_eps: float = 1e-5
    final_layer_norm: bool = True

    def __post_init__(self):
        for name, hint in _field_types().items():
            setattr(self, name, typed(f"{WHERE}.{name}", getattr(self, name), hint))
        for name in PROBABILITY_KEYS:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{WHERE}.{name} must lie in [0, 1], got {getattr(self, name)!r}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"{WHERE}.layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"Unknown model_type '{self.model_type}'; expected one of {MODEL_TYPES}")
        if self.extractor_mode not in EXTRACTOR_MODES:
            raise ValueError(
                f"Unknown extractor_mode '{self.extractor_mode}'; expected one of {EXTRACTOR_MODES}"
            )
        if not self.layer_norm_first and not self.final_layer_norm:
            raise ValueError("final_layer_norm: false is only possible for pre-LN models (layer_norm_first: true)")
        for layer in self.conv_layers:
            if len(layer) != 3 or min(layer) < 1:
                raise ValueError(f"conv_layers entries must be [channels, kernel, stride] >= 1, got {layer}")
        dense_heads = self.num_heads if isinstance(self.num_heads, int) else None
        if self.head_dim is None:
            if dense_heads is None:
                raise ValueError("head_dim is required when num_heads is given per layer")
            if self.embed_dim % dense_heads:
                raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {dense_heads}")
            self.head_dim = self.embed_dim // dense_heads
        self.num_heads = self._per_layer("num_heads", self.num_heads)
        self.ffn_dims = self._per_layer("ffn_dims", self.ffn_dims)
        self.use_attention = self._per_layer("use_attention", self.use_attention)
        self.use_ffn = self._per_layer("use_ffn", self.use_ffn)
        if self.kept_heads is not None and [len(h) for h in self.kept_heads] != self.num_heads:
            raise ValueError("kept_heads must list exactly num_heads[l] indices for every layer")

    def _per_layer(self, name: str, value: Any) -> list:
        """A per-layer field (already typed) as a list of ``num_layers`` entries."""
        if isinstance(value, list):
            if len(value) != self.num_layers:
                raise ValueError(f"{name} has {len(value)} entries but num_layers is {self.num_layers}")
            return list(value)
        return [value] * self.num_layers

    @property
    def relative_position_bias(self) -> bool:
        """Whether the attention adds WavLM's relative position bias (see ``kept_heads``)."""
        return has_relative_position_bias(self.model_type)

    @property
    def position_bias_table(self) -> bool:
        """Whether the encoder holds the shared relative position bias table (WavLM with layers)."""
        return self.relative_position_bias and self.num_layers > 0

    @property
    def gated_position_bias(self) -> bool:
        """Whether every attention layer gates its position bias per head (WavLM's ``gru_rel_pos``)."""
        return self.relative_position_bias and self.gru_rel_pos

    @property
    def total_heads(self) -> int:
        """Number of heads per layer the relative position bias is defined for (WavLM)."""
        if self.kept_heads is None:
            return max(self.num_heads) if self.num_heads else 0
        return 1 + max((max(h) for h in self.kept_heads if h), default=-1)

    def head_indices(self, layer: int) -> List[int]:
        """Original indices of the heads that ``layer`` keeps."""
        if self.kept_heads is None:
            return list(range(self.num_heads[layer]))
        return list(self.kept_heads[layer])

    @property
    def conv_channels(self) -> List[int]:
        return [layer[0] for layer in self.conv_layers]

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict (YAML/JSON types only) from which ``from_dict`` rebuilds the config."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "EncoderConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown EncoderConfig keys: {unknown}; known keys are {sorted(known)}")
        return cls(**copy.deepcopy(dict(values)))

    def replace(self, **changes) -> "EncoderConfig":
        values = self.to_dict()
        values.update(changes)
        return EncoderConfig.from_dict(values)


@functools.lru_cache(maxsize=None)
def _field_types() -> Dict[str, Any]:
    """``{field: declared type}`` of :class:`EncoderConfig`."""
    hints = get_type_hints(EncoderConfig)
    return {f.name: hints[f.name] for f in fields(EncoderConfig)}


class _Presets(Mapping):
    """Read-only ``{name: values}`` view of ``conf/ssl/*.yaml`` (:mod:`espnet_prune.presets`)."""

    def __getitem__(self, name: str) -> Dict[str, Any]:
        return presets("ssl")[name]

    def __iter__(self):
        return iter(presets("ssl"))

    def __len__(self) -> int:
        return len(presets("ssl"))


#: Architectures of the released checkpoints, by name (the YAML ``arch`` key); their one home
#: is ``conf/ssl/<name>.yaml``.
PRESETS: Mapping[str, Dict[str, Any]] = _Presets()


def get_config(arch: Union[str, Dict[str, Any], EncoderConfig], **overrides) -> EncoderConfig:
    """Resolve ``arch`` (a preset name, a dict of config values, or a config) to a config.

    A dict may name a preset under ``preset`` and override some of its values.
    """
    if isinstance(arch, EncoderConfig):
        values = arch.to_dict()
    elif isinstance(arch, str):
        if arch not in PRESETS:
            raise ValueError(f"Unknown architecture '{arch}'; known presets: {sorted(PRESETS)}")
        values = dict(PRESETS[arch])
    elif isinstance(arch, dict):
        values = dict(arch)
        preset = values.pop("preset", None)
        if preset is not None:
            if preset not in PRESETS:
                raise ValueError(f"Unknown architecture preset '{preset}'; known presets: {sorted(PRESETS)}")
            values = {**PRESETS[preset], **values}
    else:
        raise TypeError(f"arch must be a preset name, a dict or an EncoderConfig, got {type(arch).__name__}")
    values.update(overrides)
    return EncoderConfig.from_dict(values)


def receptive_field(conv_layers: Sequence[Sequence[int]]) -> int:
    """Number of input samples one output frame of the CNN sees (the shortest valid input)."""
    field_size = 1
    for _, kernel, stride in reversed(conv_layers):
        field_size = (field_size - 1) * stride + kernel
    return field_size
