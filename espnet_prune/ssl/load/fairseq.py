"""fairseq checkpoints (wav2vec 2.0, HuBERT, fine-tuned CTC), the original WavLM repository's
checkpoints, and s3prl's converted checkpoints, which keep fairseq's key names (formats
``fairseq`` and ``s3prl`` of :mod:`espnet_prune.ssl.load`)."""

import ast
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from espnet_prune.ssl.config import EncoderConfig, has_relative_position_bias
from espnet_prune.ssl.load.common import (
    POS_CONV,
    POSITION_BIAS,
    PROJECTION,
    Arch,
    StateDict,
    build_encoder,
    load_file,
    make_config,
    plain,
    rename_keys,
    require_state_dict,
)
from espnet_prune.ssl.model import SSLEncoder

#: fairseq's defaults for the config fields the encoder needs (``Wav2Vec2Config``, ``WavLMConfig``).
_FAIRSEQ_DEFAULTS = dict(
    extractor_mode="default",
    conv_feature_layers="[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2",
    conv_bias=False,
    encoder_layers=12,
    encoder_embed_dim=768,
    encoder_ffn_embed_dim=3072,
    encoder_attention_heads=12,
    activation_fn="gelu",
    layer_type="transformer",
    layer_norm_first=False,
    conv_pos=128,
    conv_pos_groups=16,
    pos_conv_depth=1,
    quantize_input=False,
    crop_seq_to_multiple=1,
    dropout=0.1,
    attention_dropout=0.1,
    activation_dropout=0.0,
    encoder_layerdrop=0.0,
    dropout_input=0.0,
    relative_position_embedding=False,
    num_buckets=320,
    max_distance=1280,
    gru_rel_pos=False,
)

#: Fine-tuning config fields that fairseq's ``Wav2VecEncoder`` copies into the pretraining config.
_FINETUNE_OVERRIDES = dict(dropout="dropout", attention_dropout="attention_dropout",
                           activation_dropout="activation_dropout", dropout_input="dropout_input",
                           layerdrop="encoder_layerdrop")

#: Pretraining-only parameters (after removing a fine-tuning prefix).
_FAIRSEQ_IGNORED = re.compile(
    r"(mask_emb|label_embs_concat|quantizer\..+|project_q\..+|final_proj\..+|target_glu\..+)$")

_L = r"encoder\.layers\.(\d+)\."
_T = "encoder.transformer.layers.{0}."
_FAIRSEQ_RULES = [
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", "feature_extractor.conv_layers.{0}.conv.{1}"),
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.(weight|bias)", "feature_extractor.conv_layers.{0}.layer_norm.{1}"),
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)",
     "feature_extractor.conv_layers.{0}.layer_norm.{1}"),
    (r"layer_norm\.(weight|bias)", "encoder.feature_projection.layer_norm.{0}"),
    (r"post_extract_proj\.(weight|bias)", PROJECTION + ".{0}"),
    (r"encoder\.pos_conv\.0\.bias", POS_CONV + ".bias"),
    (r"encoder\.pos_conv\.0\.(?:weight_g|parametrizations\.weight\.original0)",
     POS_CONV + ".parametrizations.weight.original0"),
    (r"encoder\.pos_conv\.0\.(?:weight_v|parametrizations\.weight\.original1)",
     POS_CONV + ".parametrizations.weight.original1"),
    (r"encoder\.layer_norm\.(weight|bias)", "encoder.transformer.layer_norm.{0}"),
    (_L + r"self_attn\.(q_proj|k_proj|v_proj|out_proj)\.(weight|bias)", _T + "attention.{1}.{2}"),
    (_L + r"self_attn\.grep_linear\.(weight|bias)", _T + "attention.gru_rel_pos_linear.{1}"),
    (_L + r"self_attn\.grep_a", _T + "attention.gru_rel_pos_const"),
    (r"encoder\.layers\.0\.self_attn\.relative_attention_bias\.weight", POSITION_BIAS),
    (_L + r"self_attn_layer_norm\.(weight|bias)", _T + "layer_norm.{1}"),
    (_L + r"fc1\.(weight|bias)", _T + "feed_forward.intermediate_dense.{1}"),
    (_L + r"fc2\.(weight|bias)", _T + "feed_forward.output_dense.{1}"),
    (_L + r"final_layer_norm\.(weight|bias)", _T + "final_layer_norm.{1}"),
]
_FAIRSEQ_RULES = [(re.compile(pattern + "$"), template) for pattern, template in _FAIRSEQ_RULES]


def _fairseq_key(key: str, prefix: str = "") -> Optional[str]:
    """Our name for fairseq parameter ``key`` (``""`` to drop it, ``None`` if unknown).

    Args:
        key: fairseq parameter name.
        prefix: prefix of the pretrained model's parameters (``w2v_encoder.w2v_model.`` in a
            fine-tuned checkpoint, whose other keys are its task head).
    """
    if prefix:
        if key.startswith("w2v_encoder.proj."):
            return ""
        if not key.startswith(prefix):
            return None
        key = key[len(prefix):]
    if _FAIRSEQ_IGNORED.match(key):
        return ""
    for pattern, template in _FAIRSEQ_RULES:
        match = pattern.match(key)
        if match:
            return template.format(*match.groups())
    return None


def _parse_conv_layers(spec: Any, source: Path) -> List[List[int]]:
    """fairseq's ``conv_feature_layers`` (a Python expression such as ``"[(512, 10, 5)] * 2"``
    or an already evaluated list) as ``[[channels, kernel, stride], ...]``, without ``eval``."""

    def evaluate(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            return [evaluate(element) for element in node.elts]
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = evaluate(node.left), evaluate(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(f"unsupported expression {ast.dump(node)}")

    try:
        layers = evaluate(ast.parse(spec, mode="eval").body) if isinstance(spec, str) else plain(spec)
        layers = [[int(v) for v in layer] for layer in layers]
        if not layers or any(len(layer) != 3 for layer in layers):
            raise ValueError("expected a list of (dim, kernel, stride)")
    except (SyntaxError, TypeError, ValueError) as error:
        raise ValueError(f"Cannot parse conv_feature_layers {spec!r} of '{source}': {error}") from error
    return layers


def _fairseq_values(model_cfg: Dict[str, Any], task_cfg: Dict[str, Any], model_type: str,
                    source: Path) -> Dict[str, Any]:
    """EncoderConfig values from a fairseq model config and task config."""

    def get(name: str) -> Any:
        value = model_cfg.get(name)
        return _FAIRSEQ_DEFAULTS[name] if value is None else value

    unsupported = []
    if get("activation_fn") != "gelu":
        unsupported.append(f"activation_fn={get('activation_fn')!r}")
    if get("layer_type") != "transformer":
        unsupported.append(f"layer_type={get('layer_type')!r}")
    if int(get("pos_conv_depth")) != 1:
        unsupported.append(f"pos_conv_depth={get('pos_conv_depth')}")
    if get("quantize_input"):
        unsupported.append("quantize_input=True")
    if int(get("crop_seq_to_multiple")) != 1:
        unsupported.append(f"crop_seq_to_multiple={get('crop_seq_to_multiple')}")
    if get("extractor_mode") not in ("default", "layer_norm"):
        unsupported.append(f"extractor_mode={get('extractor_mode')!r}")
    if has_relative_position_bias(model_type) and not get("relative_position_embedding"):
        unsupported.append("WavLM without relative_position_embedding")
    if unsupported:
        raise ValueError(f"'{source}' uses model options the encoder does not implement: {unsupported}")
    values = dict(
        model_type=model_type,
        extractor_mode="group_norm" if get("extractor_mode") == "default" else "layer_norm",
        conv_layers=_parse_conv_layers(get("conv_feature_layers"), source),
        conv_bias=bool(get("conv_bias")),
        embed_dim=int(get("encoder_embed_dim")),
        num_layers=int(get("encoder_layers")),
        num_heads=int(get("encoder_attention_heads")),
        ffn_dims=int(get("encoder_ffn_embed_dim")),
        layer_norm_first=bool(get("layer_norm_first")),
        pos_conv_kernel=int(get("conv_pos")),
        pos_conv_groups=int(get("conv_pos_groups")),
        normalize_waveform=bool(task_cfg.get("normalize") or False),
        sample_rate=int(task_cfg.get("sample_rate") or 16000),
        encoder_projection_dropout=float(get("dropout_input")),
        encoder_dropout=float(get("dropout")),
        attention_dropout=float(get("attention_dropout")),
        activation_dropout=float(get("activation_dropout")),
        layer_drop=float(get("encoder_layerdrop")),
    )
    if has_relative_position_bias(model_type):
        values.update(num_buckets=int(get("num_buckets")), max_distance=int(get("max_distance")),
                      gru_rel_pos=bool(get("gru_rel_pos")))
    return values


def _fairseq_model_type(name: Optional[str], state: StateDict, source: Path) -> str:
    """``wav2vec2`` or ``hubert`` from fairseq's registered model name (``_name`` / ``arch``)."""
    if name is None:
        return "hubert" if any(k.endswith("label_embs_concat") for k in state) else "wav2vec2"
    if name.startswith("hubert"):
        return "hubert"
    if name.startswith("wav2vec2"):
        return "wav2vec2"
    raise ValueError(f"'{source}' is a fairseq '{name}' model; supported: wav2vec 2.0, HuBERT, WavLM")


def _split_fairseq_config(cfg: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(model config, task config) of a fairseq config: nested ``{"model", "task"}`` or flat."""
    if isinstance(cfg.get("model"), dict):
        return cfg["model"], cfg.get("task") or {}
    return cfg, cfg


def _fairseq_config_and_prefix(checkpoint: Dict[str, Any], source: Path) -> Tuple[Dict[str, Any], str]:
    """EncoderConfig values of a fairseq / WavLM checkpoint and the prefix of its encoder's keys."""
    state = require_state_dict(checkpoint["model"], "The 'model' entry", source)
    cfg = plain(checkpoint.get("cfg"))
    if cfg is None:
        cfg = plain(checkpoint["args"])
    if not isinstance(cfg, dict):
        raise ValueError(f"'{source}' has a config of type {type(cfg).__name__}, expected a dict")
    model_cfg, task_cfg = _split_fairseq_config(cfg)
    fine_tuned = "w2v_args" in model_cfg or any(k.startswith("w2v_encoder.") for k in state)
    if fine_tuned:
        pretrain_cfg = plain(model_cfg.get("w2v_args"))
        if not isinstance(pretrain_cfg, dict):
            raise ValueError(
                f"Fine-tuned checkpoint '{source}' does not embed its pretraining config (w2v_args); "
                "load the pretrained checkpoint it was fine-tuned from instead")
        inner_model_cfg, inner_task_cfg = _split_fairseq_config(pretrain_cfg)
        inner_model_cfg = dict(inner_model_cfg)
        for finetune_name, pretrain_name in _FINETUNE_OVERRIDES.items():
            if model_cfg.get(finetune_name) is not None:
                inner_model_cfg[pretrain_name] = model_cfg[finetune_name]
        task = {**inner_task_cfg, **{k: v for k, v in task_cfg.items() if v is not None}}
        name = inner_model_cfg.get("_name") or inner_model_cfg.get("arch")
        model_type = _fairseq_model_type(name, state, source)
        return _fairseq_values(inner_model_cfg, task, model_type, source), "w2v_encoder.w2v_model."
    is_wavlm = "relative_position_embedding" in model_cfg or any("relative_attention_bias" in k for k in state)
    if is_wavlm:
        model_type = "wavlm"
    else:
        model_type = _fairseq_model_type(model_cfg.get("_name") or model_cfg.get("arch"), state, source)
    return _fairseq_values(model_cfg, task_cfg, model_type, source), ""


def from_fairseq(checkpoint: Dict[str, Any], source: Path, arch: Arch) -> SSLEncoder:
    values, prefix = _fairseq_config_and_prefix(checkpoint, source)
    config = make_config(values, arch, source)
    state, unknown = rename_keys(checkpoint["model"], lambda key: _fairseq_key(key, prefix))
    return build_encoder(config, state, unknown, source, "fairseq")


def from_s3prl(checkpoint: Dict[str, Any], source: Path, arch: Arch) -> SSLEncoder:
    model_cfg = plain(checkpoint["model_cfg"])
    task_cfg = plain(checkpoint["task_cfg"]) or {}
    state = require_state_dict(checkpoint["model_weight"], "The 'model_weight' entry", source)
    name = model_cfg.get("_name")
    if name is None and ("dictionaries_symbols" in checkpoint or "label_rate" in model_cfg):
        name = "hubert"
    model_type = _fairseq_model_type(name, state, source)
    config = make_config(_fairseq_values(model_cfg, task_cfg, model_type, source), arch, source)
    return from_fairseq_state(config, state, source, "s3prl")


def from_fairseq_state(config: EncoderConfig, state: StateDict, source: Path, what: str) -> SSLEncoder:
    """An encoder for ``config`` holding ``state``, a pretrained model's parameters under
    fairseq's names (as s3prl's model classes, and so ESPnet's ``s3prl`` frontend, hold them).

    Args:
        config: the encoder's structure.
        state: fairseq-named parameters; pretraining-only ones are dropped.
        source: the file they come from, for error messages.
        what: what the file is, for error messages (e.g. ``"s3prl"``).
    Raises:
        ValueError: keys or shapes that do not match ``config`` (listed).
    """
    renamed, unknown = rename_keys(state, _fairseq_key)
    return build_encoder(config, renamed, unknown, source, what)


def load_fairseq(path: Union[str, os.PathLike], arch: Arch = None) -> SSLEncoder:
    """Encoder from a fairseq or original WavLM checkpoint; ``arch`` overrides its config."""
    checkpoint, local = load_file(path, "fairseq")
    return from_fairseq(checkpoint, local, arch)


def load_s3prl(path: Union[str, os.PathLike], arch: Arch = None) -> SSLEncoder:
    """Encoder from an s3prl converted checkpoint; ``arch`` overrides its config."""
    checkpoint, local = load_file(path, "s3prl")
    return from_s3prl(checkpoint, local, arch)
