"""ESPnet's ``s3prl`` frontend as a ``pruned_ssl`` frontend: its configuration and its weights.

ESPnet's ``S3prlFrontend`` (``frontend: s3prl``, ESPnet 202511 with s3prl 0.4) wraps s3prl's
``S3PRLUpstream`` (the upstream named by ``frontend_conf.frontend_conf.upstream``, weights read
from ``path_or_url`` for the ``*_local`` / ``*_url`` / ``*_custom`` names) and a ``Featurizer``.
In an ESPnet model file the upstream's model is ``frontend.upstream.upstream.model.*`` under
fairseq's parameter names (s3prl's model classes are fairseq's), the featurizer's layer
weights ``frontend.featurizer.weights``. Its output is

* ``layer: k``: hidden state ``k`` (0 the Transformer's input, ``L`` the last);
* ``multilayer_feature: true``: ``softmax(featurizer.weights)``-weighted sum of all ``L + 1``
  hidden states;
* otherwise the last hidden state (the featurizer's weights are not used);

each hidden state first layer-normalised (no learned parameters) with
``frontend_conf: {normalize: true}``, and ``ceil(samples / 320)`` frames per utterance.
s3prl turns LayerDrop off in its upstreams, and ESPnet runs the CNN with full gradients.

:func:`convert_s3prl_frontend` gives the ``pruned_ssl`` ``frontend_conf`` that computes the
same (``checkpoint: null``, the encoder's complete structure as ``arch``, the same layer choice
or layer weights, ``normalize_hidden_states``, ``s3prl_lengths: true``, ``layer_drop: 0``) and
the frontend's state dict. The structure comes from the upstream: a named upstream's is
known (:data:`UPSTREAM_ARCHS`, the presets in ``conf/ssl/``), a ``*_local`` / ``*_url`` /
``*_custom`` upstream's is read from its checkpoint (``path_or_url``, or a local copy given as
``upstream_checkpoint``); the weights are the ones in the model file, checked strictly against
that structure.
"""

from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from torch import Tensor

from espnet_prune.asr.frontend.pruned_ssl import PrunedSSLFrontend
from espnet_prune.ssl.config import EncoderConfig, get_config
from espnet_prune.ssl.load import load_encoder
from espnet_prune.ssl.load.fairseq import from_fairseq_state
from espnet_prune.ssl.prune import keep_first_layers

#: Prefix of the upstream model's parameters in the state dict of ESPnet's ``S3prlFrontend``.
UPSTREAM_PREFIX = "upstream.upstream.model."
#: The featurizer's layer weights in the state dict of ESPnet's ``S3prlFrontend``.
FEATURIZER_WEIGHTS = "featurizer.weights"

#: s3prl upstream names with a released checkpoint, and the architecture of that checkpoint (a
#: ``conf/ssl`` preset, or a preset with overrides).
UPSTREAM_ARCHS: Dict[str, Union[str, Dict[str, Any]]] = {
    "wav2vec2": "wav2vec2_base",
    "wav2vec2_base_960": "wav2vec2_base",
    "wav2vec2_large_960": "wav2vec2_large",
    "wav2vec2_large_ll60k": "wav2vec2_large_lv60k",
    "wav2vec2_large_lv60_cv_swbd_fsh": "wav2vec2_large_lv60k",
    "xlsr_53": "wav2vec2_large_lv60k",
    "xls_r_300m": "wav2vec2_large_lv60k",
    "xls_r_1b": {"preset": "wav2vec2_large_lv60k", "embed_dim": 1280, "num_layers": 48, "ffn_dims": 5120},
    "xls_r_2b": {"preset": "wav2vec2_large_lv60k", "embed_dim": 1920, "num_layers": 48, "ffn_dims": 7680},
    "hubert": "hubert_base",
    "hubert_base": "hubert_base",
    "hubert_base_robust_mgr": "hubert_base",
    "hubert_large_ll60k": "hubert_large",
    "wavlm": "wavlm_base_plus",
    "wavlm_base": "wavlm_base",
    "wavlm_base_plus": "wavlm_base_plus",
    "wavlm_large": "wavlm_large",
}
#: s3prl upstream names whose checkpoint is ``path_or_url`` (its config gives the architecture).
CHECKPOINT_UPSTREAMS = ("wav2vec2_local", "wav2vec2_url", "wav2vec2_custom", "hubert_local", "hubert_url",
                        "hubert_custom", "wavlm_local", "wavlm_url")
#: ``S3prlFrontend`` arguments (``frontend_conf``) and s3prl ``extra_conf`` keys that do not
#: change what the frontend computes.
_IGNORED_FRONTEND_KEYS = ("download_dir",)
_KNOWN_FRONTEND_KEYS = ("fs", "frontend_conf", "multilayer_feature", "layer") + _IGNORED_FRONTEND_KEYS
_NEUTRAL_EXTRA_CONF = ("legacy", "fairseq", "refresh")


def upstream_names() -> Tuple[str, ...]:
    """Every s3prl upstream name that :func:`convert_s3prl_frontend` maps."""
    return tuple(UPSTREAM_ARCHS) + CHECKPOINT_UPSTREAMS


def s3prl_encoder_config(upstream: str, path_or_url: Optional[str],
                         upstream_checkpoint: Optional[Union[str, Path]] = None) -> EncoderConfig:
    """The encoder structure of s3prl upstream ``upstream`` (LayerDrop off, as in s3prl).

    Args:
        upstream: the s3prl upstream name (``frontend_conf.frontend_conf.upstream``).
        path_or_url: its ``path_or_url`` (the checkpoint of ``*_local`` / ``*_url`` / ``*_custom``).
        upstream_checkpoint: a local copy of the upstream's checkpoint, read instead of
            ``path_or_url`` or of the built-in architecture of a named upstream.
    Raises:
        ValueError: an upstream name that cannot be mapped, or a checkpoint that cannot be read.
    """
    if upstream_checkpoint is None and upstream in UPSTREAM_ARCHS:
        return get_config(UPSTREAM_ARCHS[upstream], layer_drop=0.0)
    if upstream_checkpoint is None and upstream in CHECKPOINT_UPSTREAMS:
        if not path_or_url:
            raise ValueError(f"s3prl upstream '{upstream}' needs frontend_conf.frontend_conf.path_or_url")
        if "://" in path_or_url or not Path(path_or_url).is_file():
            raise ValueError(
                f"s3prl upstream '{upstream}' reads its architecture from path_or_url '{path_or_url}', which is "
                "not a local file here; pass a local copy of that checkpoint with --upstream_checkpoint")
        upstream_checkpoint = path_or_url
    if upstream_checkpoint is None:
        raise ValueError(
            f"s3prl upstream '{upstream}' cannot be converted: pruned_ssl implements wav2vec 2.0, HuBERT and WavLM, "
            f"and maps the s3prl upstreams {sorted(upstream_names())}")
    try:
        config = load_encoder(upstream_checkpoint).config
    except (ValueError, FileNotFoundError) as error:
        raise ValueError(f"Cannot read the architecture of s3prl upstream '{upstream}': {error}") from error
    return config.replace(layer_drop=0.0)


def convert_s3prl_frontend(
    frontend_conf: Dict[str, Any],
    state: Dict[str, Tensor],
    source: Path,
    upstream_checkpoint: Optional[Union[str, Path]] = None,
    pruning: Optional[Dict[str, Any]] = None,
) -> Tuple[Dict[str, Any], Dict[str, Tensor]]:
    """The ``pruned_ssl`` equivalent of an ESPnet ``s3prl`` frontend.

    Args:
        frontend_conf: the ``frontend_conf`` of the ESPnet config (``fs``, ``frontend_conf:
            {upstream, path_or_url, normalize, extra_conf, tile_factor}``, ``multilayer_feature``,
            ``layer``, ``download_dir``).
        state: the frontend's parameters (the model file's ``frontend.*`` keys without ``frontend.``).
        source: the model file, for error messages.
        upstream_checkpoint: see :func:`s3prl_encoder_config`.
        pruning: ``frontend_conf.pruning`` of the result, or ``None``.
    Returns:
        ``(pruned_ssl frontend_conf, its state dict)``; the state dict holds the same weights
        (the layers above a chosen ``layer`` dropped) and, with ``pruning``, the gates' initial state.
    Raises:
        ValueError: settings that cannot be reproduced, an upstream that cannot be mapped, or
            weights that do not match the upstream's architecture (all named).
    """
    unknown = sorted(set(frontend_conf) - set(_KNOWN_FRONTEND_KEYS))
    if unknown:
        raise ValueError(f"frontend_conf of the s3prl frontend has keys convert does not know: {unknown}")
    inner = frontend_conf.get("frontend_conf") or {}
    upstream = inner.get("upstream")
    if not upstream:
        raise ValueError("frontend_conf.frontend_conf.upstream (the s3prl upstream name) is missing")
    if int(inner.get("tile_factor", 1)) != 1:
        raise ValueError(f"frontend_conf.frontend_conf.tile_factor={inner['tile_factor']} is not supported by "
                         "pruned_ssl (it repeats frames); only tile_factor 1 can be converted")
    extra = sorted(set(inner.get("extra_conf") or {}) - set(_NEUTRAL_EXTRA_CONF))
    if extra:
        raise ValueError(f"frontend_conf.frontend_conf.extra_conf keys {extra} of s3prl upstream '{upstream}' change "
                         f"its hidden states and cannot be converted (only {list(_NEUTRAL_EXTRA_CONF)} can)")
    config = s3prl_encoder_config(upstream, inner.get("path_or_url"), upstream_checkpoint)
    layer = int(frontend_conf.get("layer", -1))
    multilayer = bool(frontend_conf.get("multilayer_feature", False))
    if layer != -1 and multilayer:
        raise ValueError("frontend_conf has both multilayer_feature: true and layer != -1; ESPnet's s3prl frontend "
                         "rejects that too")
    if not -1 <= layer <= config.num_layers:
        raise ValueError(f"frontend_conf.layer={layer} is out of range for s3prl upstream '{upstream}' with "
                         f"{config.num_layers} layers (hidden states 0..{config.num_layers})")

    upstream_state = {k[len(UPSTREAM_PREFIX):]: v for k, v in state.items() if k.startswith(UPSTREAM_PREFIX)}
    other = sorted(k for k in state if not k.startswith(UPSTREAM_PREFIX) and k != FEATURIZER_WEIGHTS)
    if not upstream_state:
        raise ValueError(f"'{source}' has no frontend.{UPSTREAM_PREFIX}* parameters: it is not a model with an s3prl "
                         "frontend around a wav2vec 2.0 / HuBERT / WavLM upstream")
    if other:
        raise ValueError(f"'{source}' has frontend parameters an s3prl wav2vec 2.0 / HuBERT / WavLM frontend does not "
                         f"have: {['frontend.' + k for k in other[:8]]}")
    try:
        encoder = from_fairseq_state(config, upstream_state, source, f"ESPnet s3prl frontend ('{upstream}')")
    except ValueError as error:
        raise ValueError(f"The model file does not match its config's s3prl upstream: {error}") from error

    converted = {"fs": frontend_conf.get("fs", 16000), "checkpoint": None, "arch": config.to_dict(),
                 "layer": layer, "multilayer_feature": multilayer,
                 "normalize_hidden_states": bool(inner.get("normalize", False)), "s3prl_lengths": True}
    if pruning is not None:
        converted["pruning"] = pruning
    frontend = PrunedSSLFrontend(**converted)
    if 0 <= layer < config.num_layers:
        encoder = keep_first_layers(encoder, layer)
    frontend.encoder.load_state_dict(encoder.state_dict(), strict=True)
    if multilayer:
        weights = state.get(FEATURIZER_WEIGHTS)
        if weights is None or tuple(weights.shape) != (config.num_layers + 1,):
            found = "none" if weights is None else f"shape {tuple(weights.shape)}"
            raise ValueError(f"'{source}': multilayer_feature needs frontend.{FEATURIZER_WEIGHTS} of shape "
                             f"({config.num_layers + 1},) for {config.num_layers} layers; found {found}")
        frontend.layer_weights.data.copy_(weights)
    return converted, {k: v.detach().clone() for k, v in frontend.state_dict().items()}
