"""Hugging Face transformers model directories (``Wav2Vec2Model``, ``HubertModel``, ``WavLMModel``
and their heads; format ``huggingface`` of :mod:`espnet_prune.ssl.load`)."""

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, Optional, Union

from espnet_prune.ssl.config import MODEL_TYPES, has_relative_position_bias
from espnet_prune.ssl.load.common import (
    POS_CONV,
    POSITION_BIAS,
    WEIGHT_NORM_NAMES,
    Arch,
    StateDict,
    build_encoder,
    local_path,
    make_config,
    rename_keys,
    require_state_dict,
    torch_load,
)
from espnet_prune.ssl.model import SSLEncoder

#: transformers' defaults (``Wav2Vec2Config``, ``HubertConfig``, ``WavLMConfig``) for the fields we read.
_HF_DEFAULTS = dict(
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    hidden_act="gelu", feat_extract_activation="gelu", feat_extract_norm="group",
    conv_dim=[512] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
    conv_bias=False, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
    do_stable_layer_norm=False, hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.1,
    feat_proj_dropout=0.0, layerdrop=0.1, layer_norm_eps=1e-5, num_buckets=320, max_bucket_distance=800,
    feat_proj_layer_norm=True, conv_pos_batch_norm=False, add_adapter=False,
)
_HF_MODEL_TYPES = MODEL_TYPES
#: Parameters of heads and pretraining modules (after removing the base-model prefix).
_HF_IGNORED = re.compile(r"(masked_spec_embed|lm_head\..+|quantizer\..+|project_q\..+|project_hid\..+)$")
_HF_POS_CONV = re.compile(
    r"encoder\.pos_conv_embed\.conv\.(bias|weight_g|weight_v|parametrizations\.weight\.original[01])$")
#: ``torch.nn.utils.weight_norm`` names and their ``parametrizations.weight_norm`` equivalents.


def huggingface_config(directory: Path) -> Dict[str, Any]:
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ValueError(
            f"'{directory}' is a directory without config.json; expected a Hugging Face model directory "
            "(config.json + model.safetensors or pytorch_model.bin) or a checkpoint file")
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot read '{config_file}': {error}") from error


def _huggingface_state(directory: Path) -> StateDict:
    """All tensors of a Hugging Face model directory (single or sharded safetensors, or .bin)."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        files = [directory / shard for shard in shards]
    elif (directory / "model.safetensors").is_file():
        files = [directory / "model.safetensors"]
    elif (directory / "pytorch_model.bin").is_file():
        return require_state_dict(torch_load(directory / "pytorch_model.bin"), "pytorch_model.bin", directory)
    else:
        raise ValueError(f"Hugging Face model directory '{directory}' has no model.safetensors or pytorch_model.bin")
    try:
        from safetensors.torch import load_file
    except ImportError as error:
        raise ImportError(f"Reading '{files[0]}' needs the safetensors package: pip install safetensors") from error
    state = {}
    for file in files:
        try:
            state.update(load_file(str(file), device="cpu"))
        except Exception as error:
            raise ValueError(f"Cannot read '{file}': {type(error).__name__}: {error}") from error
    return state


def _huggingface_values(hf_cfg: Dict[str, Any], preprocessor: Optional[Dict[str, Any]],
                        source: Path) -> Dict[str, Any]:
    """EncoderConfig values from ``config.json`` (and ``preprocessor_config.json``)."""

    def get(name: str) -> Any:
        value = hf_cfg.get(name)
        return _HF_DEFAULTS[name] if value is None else value

    model_type = hf_cfg.get("model_type")
    if model_type not in _HF_MODEL_TYPES:
        raise ValueError(f"'{source}' holds a Hugging Face '{model_type}' model; supported: {_HF_MODEL_TYPES}")
    unsupported = []
    for name in ("hidden_act", "feat_extract_activation"):
        if get(name) != "gelu":
            unsupported.append(f"{name}={get(name)!r}")
    if get("feat_extract_norm") not in ("group", "layer"):
        unsupported.append(f"feat_extract_norm={get('feat_extract_norm')!r}")
    if not get("feat_proj_layer_norm"):
        unsupported.append("feat_proj_layer_norm=False")
    if get("conv_pos_batch_norm"):
        unsupported.append("conv_pos_batch_norm=True")
    if get("add_adapter"):
        unsupported.append("add_adapter=True")
    if unsupported:
        raise ValueError(f"'{source}' uses model options the encoder does not implement: {unsupported}")
    conv = list(zip(get("conv_dim"), get("conv_kernel"), get("conv_stride")))
    if preprocessor is None:
        # Without a feature-extractor config, follow fairseq: layer-norm CNNs were trained on normalised audio.
        normalize = get("feat_extract_norm") == "layer"
        sample_rate = 16000
    else:
        normalize = bool(preprocessor.get("do_normalize", False))
        sample_rate = int(preprocessor.get("sampling_rate", 16000))
    values = dict(
        model_type=model_type,
        extractor_mode=f"{get('feat_extract_norm')}_norm",
        conv_layers=[list(layer) for layer in conv],
        conv_bias=bool(get("conv_bias")),
        embed_dim=int(get("hidden_size")),
        num_layers=int(get("num_hidden_layers")),
        num_heads=int(get("num_attention_heads")),
        ffn_dims=int(get("intermediate_size")),
        layer_norm_first=bool(get("do_stable_layer_norm")),
        pos_conv_kernel=int(get("num_conv_pos_embeddings")),
        pos_conv_groups=int(get("num_conv_pos_embedding_groups")),
        normalize_waveform=normalize,
        sample_rate=sample_rate,
        encoder_projection_dropout=float(get("feat_proj_dropout")),
        encoder_dropout=float(get("hidden_dropout")),
        attention_dropout=float(get("attention_dropout")),
        activation_dropout=float(get("activation_dropout")),
        layer_drop=float(get("layerdrop")),
        layer_norm_eps=float(get("layer_norm_eps")),
    )
    if has_relative_position_bias(model_type):  # transformers' WavLM always gates its relative position bias
        values.update(num_buckets=int(get("num_buckets")), max_distance=int(get("max_bucket_distance")),
                      gru_rel_pos=True)
    return values


def _huggingface_key(key: str, prefix: str) -> Optional[str]:
    """Our name for transformers parameter ``key`` (``""`` to drop it, ``None`` if unknown)."""
    if key.startswith(prefix):
        key = key[len(prefix):]
    if _HF_IGNORED.match(key):
        return ""
    match = _HF_POS_CONV.match(key)
    if match:
        return f"{POS_CONV}.{WEIGHT_NORM_NAMES.get(match.group(1), match.group(1))}"
    if key == "encoder.layers.0.attention.rel_attn_embed.weight":
        return POSITION_BIAS
    if key.startswith("feature_extractor."):
        return key
    if key.startswith("feature_projection."):
        return "encoder." + key
    if key.startswith("encoder."):
        return "encoder.transformer." + key[len("encoder."):]
    return None


def load_huggingface(path: Union[str, os.PathLike], arch: Arch = None) -> SSLEncoder:
    """Encoder from a Hugging Face model directory (module docstring); ``arch`` overrides its config."""
    directory = local_path(path)
    if not directory.is_dir():
        raise ValueError(f"'{directory}' is a file; a Hugging Face model is a directory with config.json")
    hf_cfg = huggingface_config(directory)
    preprocessor_file = directory / "preprocessor_config.json"
    preprocessor = None
    if preprocessor_file.is_file():
        try:
            preprocessor = json.loads(preprocessor_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"Cannot read '{preprocessor_file}': {error}") from error
    config = make_config(_huggingface_values(hf_cfg, preprocessor, directory), arch, directory)
    prefix = f"{hf_cfg['model_type']}."
    state, unknown = rename_keys(_huggingface_state(directory), lambda key: _huggingface_key(key, prefix))
    return build_encoder(config, state, unknown, directory, "huggingface")
