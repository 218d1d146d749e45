"""Load pretrained wav2vec 2.0 / HuBERT / WavLM weights into an :class:`SSLEncoder`.

:func:`load_encoder` takes a *local* path and detects its format (:func:`detect_format`):

``fairseq``
    A ``.pt`` file ``{"model": state_dict, "cfg": {"model": ..., "task": ...}}`` (``cfg`` a
    dict or an omegaconf ``DictConfig``) or, from older fairseq, ``{"model": ..., "args":
    Namespace}``, for wav2vec 2.0 and HuBERT, pretrained or fine-tuned with CTC (weights under
    ``w2v_encoder.w2v_model.``; the CTC projection ``w2v_encoder.proj`` is dropped). The
    original WavLM repository's checkpoints ``{"cfg": {flat WavLMConfig}, "model": ...}`` are
    fairseq checkpoints too.
``s3prl``
    ``{"task_cfg": ..., "model_cfg": ..., "model_weight": ...}`` as written by s3prl's
    ``wav2vec2`` / ``hubert`` checkpoint converters (fairseq key names).
``huggingface``
    A directory with ``config.json`` and ``model.safetensors`` (possibly sharded, with
    ``model.safetensors.index.json``) or ``pytorch_model.bin``, saved from ``Wav2Vec2Model``,
    ``HubertModel``, ``WavLMModel`` or their ``*ForCTC`` / ``Wav2Vec2ForPreTraining``
    classes (heads are dropped). ``preprocessor_config.json``, if present, gives the
    sampling rate and whether waveforms are normalised.
``torchaudio``
    A plain state dict with torchaudio's key names (``torch.save(model.state_dict())`` of
    ``wav2vec2_model``, ``wavlm_model`` or ``hubert_pretrain_model``), or of an
    :class:`SSLEncoder`. It does not say how many heads a layer has, so ``arch`` is required.

The encoder's :class:`EncoderConfig` is built from the checkpoint's own configuration,
including ``sample_rate`` and ``normalize_waveform``. ``arch`` (a preset name, a dict or an
:class:`EncoderConfig`, see :func:`espnet_prune.ssl.config.get_config`) then overrides it
field by field: a dict overrides only the fields it names (``{"encoder_dropout": 0.0,
"layer_drop": 0.05}``), a preset name or a dict naming ``preset`` overrides every field of
that preset. Overridden shapes that disagree with the weights are reported as errors.

Loading is strict. Parameters that only pretraining or a task head uses (quantizer, masked
embedding, label embeddings, CTC output layer, ...) are dropped by name; any other key of
the checkpoint that the encoder lacks, any parameter of the encoder that the checkpoint
lacks, and any shape mismatch raises :class:`ValueError` listing the keys. Only local files
are read, never a hub or URL. A ``.pt`` file is first read with ``weights_only=True``; if it
holds Python objects (fairseq's omegaconf or argparse configs) it is unpickled in full, so
load only checkpoints you trust.
"""

import argparse
import ast
import json
import os
import pickle
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from espnet_prune.ssl.config import MODEL_TYPES, EncoderConfig, get_config, has_relative_position_bias
from espnet_prune.ssl.model import SSLEncoder

Arch = Union[str, Dict[str, Any], EncoderConfig, None]
StateDict = Dict[str, Tensor]

FORMATS = ("fairseq", "s3prl", "huggingface", "torchaudio")

#: File name endings that mark a missing ``owner/name`` path as a file rather than a hub name.
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
_POS_CONV = "encoder.transformer.pos_conv_embed.conv"
_POSITION_BIAS = "encoder.transformer.position_bias.rel_attn_embed.weight"
_PROJECTION = "encoder.feature_projection.projection"

# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------


def _local_path(path: Union[str, os.PathLike]) -> Path:
    """``path`` as an existing local :class:`Path`; hub names and URLs get a clear error."""
    text = os.fspath(path)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text):
        raise ValueError(
            f"'{text}' is a URL; espnet_prune never downloads. Download the checkpoint yourself and pass "
            "its local path")
    local = Path(text).expanduser()
    if local.exists():
        return local
    if re.fullmatch(r"[\w-][\w.-]*/[\w.-]+", text) and local.suffix not in _CHECKPOINT_SUFFIXES:
        raise ValueError(
            f"'{text}' is not an existing local path; it looks like a model hub name. espnet_prune never downloads: "
            "download the model (e.g. a Hugging Face model directory with config.json) and pass its local path")
    raise FileNotFoundError(f"No such checkpoint file or directory: '{text}'")


def _torch_load(path: Path) -> Any:
    """``torch.load`` on CPU: weights only if possible, in full for configs held as objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # holds Python objects (omegaconf / argparse configs): read it in full below
    except Exception as error:
        raise ValueError(f"Cannot read checkpoint '{path}': {type(error).__name__}: {error}") from error
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise ValueError(f"Cannot read checkpoint '{path}': {type(error).__name__}: {error}") from error


def _plain(value: Any) -> Any:
    """A config held as dict, omegaconf container or argparse Namespace, as plain dicts/lists."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, argparse.Namespace):
        return {k: _plain(v) for k, v in vars(value).items()}
    if type(value).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items())


def _format_of(checkpoint: Any, source: Path) -> str:
    """Format name of an object read from a ``.pt`` file."""
    if not isinstance(checkpoint, dict):
        raise ValueError(f"'{source}' holds a {type(checkpoint).__name__}, not a checkpoint dict")
    if {"task_cfg", "model_cfg", "model_weight"} <= set(checkpoint):
        return "s3prl"
    if "model" in checkpoint and (checkpoint.get("cfg") is not None or checkpoint.get("args") is not None):
        return "fairseq"
    if _is_state_dict(checkpoint):
        return "torchaudio"
    raise ValueError(
        f"Unrecognised checkpoint '{source}' with top-level keys {sorted(map(str, checkpoint))[:20]}; "
        "expected a fairseq checkpoint (model + cfg/args), an s3prl converted checkpoint "
        "(task_cfg, model_cfg, model_weight), a torchaudio state dict, or a Hugging Face model directory")


def detect_format(path: Union[str, os.PathLike]) -> str:
    """Format of the checkpoint at local ``path``: one of :data:`FORMATS`.

    Raises:
        ValueError: hub name, URL, directory without ``config.json``, unreadable or unknown file.
        FileNotFoundError: nothing at ``path``.
    """
    local = _local_path(path)
    if local.is_dir():
        _huggingface_config(local)
        return "huggingface"
    return _format_of(_torch_load(local), local)


# ---------------------------------------------------------------------------------------------
# Building the encoder
# ---------------------------------------------------------------------------------------------


def _arch_overrides(arch: Arch) -> Dict[str, Any]:
    """Config values that ``arch`` sets (module docstring)."""
    if arch is None:
        return {}
    if isinstance(arch, dict) and "preset" not in arch:
        return dict(arch)
    return get_config(arch).to_dict()


def _make_config(values: Dict[str, Any], arch: Arch, source: Path) -> EncoderConfig:
    values = {**values, **_arch_overrides(arch)}
    try:
        return EncoderConfig.from_dict(values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"Invalid encoder configuration for '{source}': {error}") from error


def _listing(items: Sequence[str], limit: int = 12) -> str:
    """``items`` for an error message, the first ``limit`` of them and how many more."""
    shown = ", ".join(repr(item) for item in items[:limit])
    more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"[{shown}{more}]"


def _require_state_dict(value: Any, what: str, source: Path) -> StateDict:
    if not _is_state_dict(value):
        raise ValueError(f"{what} of '{source}' is a {type(value).__name__}, not a dict of tensors")
    return value


def _rename(state: StateDict, rename: Callable[[str], Optional[str]]) -> Tuple[StateDict, List[str]]:
    """Apply ``rename`` (new name, ``""`` to drop, ``None`` if unknown) to every key.

    Returns:
        renamed state dict and the original names of the keys no rule knows.
    """
    renamed, unknown = {}, []
    for key, value in state.items():
        new_key = rename(key)
        if new_key is None:
            unknown.append(key)
        elif new_key:
            renamed[new_key] = value
    return renamed, unknown


def _build_encoder(config: EncoderConfig, state: StateDict, unknown: Sequence[str], source: Path,
                   file_format: str) -> SSLEncoder:
    """An encoder for ``config`` holding ``state``; strict about keys and shapes.

    A missing feature projection is taken as the identity when the CNN and the Transformer
    have the same width: fairseq then has no ``post_extract_proj``.
    """
    encoder = SSLEncoder(config)
    expected = encoder.state_dict()
    state = dict(state)
    width_in, width_out = config.conv_layers[-1][0], config.embed_dim
    if f"{_PROJECTION}.weight" not in state and f"{_PROJECTION}.bias" not in state and width_in == width_out:
        state[f"{_PROJECTION}.weight"] = torch.eye(width_out)
        state[f"{_PROJECTION}.bias"] = torch.zeros(width_out)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(unknown) | (set(state) - set(expected)))
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"missing parameters ({len(missing)}): {_listing(missing)}")
        if unexpected:
            problems.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        raise ValueError(
            f"{file_format} checkpoint '{source}' does not match the {config.model_type} encoder built from its "
            f"configuration: {'; '.join(problems)}")
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs encoder {tuple(v.shape)}"
                  for k, v in expected.items() if state[k].shape != v.shape]
    if mismatched:
        raise ValueError(
            f"{file_format} checkpoint '{source}' has parameters whose shapes do not match the encoder's "
            f"configuration: {_listing(mismatched)}")
    encoder.load_state_dict(state, strict=True)
    return encoder.eval()


# ---------------------------------------------------------------------------------------------
# fairseq (wav2vec 2.0, HuBERT, fine-tuned CTC) and the original WavLM checkpoints
# ---------------------------------------------------------------------------------------------

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
    (r"post_extract_proj\.(weight|bias)", _PROJECTION + ".{0}"),
    (r"encoder\.pos_conv\.0\.bias", _POS_CONV + ".bias"),
    (r"encoder\.pos_conv\.0\.(?:weight_g|parametrizations\.weight\.original0)",
     _POS_CONV + ".parametrizations.weight.original0"),
    (r"encoder\.pos_conv\.0\.(?:weight_v|parametrizations\.weight\.original1)",
     _POS_CONV + ".parametrizations.weight.original1"),
    (r"encoder\.layer_norm\.(weight|bias)", "encoder.transformer.layer_norm.{0}"),
    (_L + r"self_attn\.(q_proj|k_proj|v_proj|out_proj)\.(weight|bias)", _T + "attention.{1}.{2}"),
    (_L + r"self_attn\.grep_linear\.(weight|bias)", _T + "attention.gru_rel_pos_linear.{1}"),
    (_L + r"self_attn\.grep_a", _T + "attention.gru_rel_pos_const"),
    (r"encoder\.layers\.0\.self_attn\.relative_attention_bias\.weight", _POSITION_BIAS),
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
        layers = evaluate(ast.parse(spec, mode="eval").body) if isinstance(spec, str) else _plain(spec)
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
    state = _require_state_dict(checkpoint["model"], "The 'model' entry", source)
    cfg = _plain(checkpoint.get("cfg"))
    if cfg is None:
        cfg = _plain(checkpoint["args"])
    if not isinstance(cfg, dict):
        raise ValueError(f"'{source}' has a config of type {type(cfg).__name__}, expected a dict")
    model_cfg, task_cfg = _split_fairseq_config(cfg)
    fine_tuned = "w2v_args" in model_cfg or any(k.startswith("w2v_encoder.") for k in state)
    if fine_tuned:
        pretrain_cfg = _plain(model_cfg.get("w2v_args"))
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


def _from_fairseq(checkpoint: Dict[str, Any], source: Path, arch: Arch) -> SSLEncoder:
    values, prefix = _fairseq_config_and_prefix(checkpoint, source)
    config = _make_config(values, arch, source)
    state, unknown = _rename(checkpoint["model"], lambda key: _fairseq_key(key, prefix))
    return _build_encoder(config, state, unknown, source, "fairseq")


def _from_s3prl(checkpoint: Dict[str, Any], source: Path, arch: Arch) -> SSLEncoder:
    model_cfg = _plain(checkpoint["model_cfg"])
    task_cfg = _plain(checkpoint["task_cfg"]) or {}
    state = _require_state_dict(checkpoint["model_weight"], "The 'model_weight' entry", source)
    name = model_cfg.get("_name")
    if name is None and ("dictionaries_symbols" in checkpoint or "label_rate" in model_cfg):
        name = "hubert"
    model_type = _fairseq_model_type(name, state, source)
    config = _make_config(_fairseq_values(model_cfg, task_cfg, model_type, source), arch, source)
    renamed, unknown = _rename(state, _fairseq_key)
    return _build_encoder(config, renamed, unknown, source, "s3prl")


# ---------------------------------------------------------------------------------------------
# Hugging Face transformers
# ---------------------------------------------------------------------------------------------

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
_WEIGHT_NORM_NAMES = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}


def _huggingface_config(directory: Path) -> Dict[str, Any]:
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
        return _require_state_dict(_torch_load(directory / "pytorch_model.bin"), "pytorch_model.bin", directory)
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
        return f"{_POS_CONV}.{_WEIGHT_NORM_NAMES.get(match.group(1), match.group(1))}"
    if key == "encoder.layers.0.attention.rel_attn_embed.weight":
        return _POSITION_BIAS
    if key.startswith("feature_extractor."):
        return key
    if key.startswith("feature_projection."):
        return "encoder." + key
    if key.startswith("encoder."):
        return "encoder.transformer." + key[len("encoder."):]
    return None


def load_huggingface(path: Union[str, os.PathLike], arch: Arch = None) -> SSLEncoder:
    """Encoder from a Hugging Face model directory (module docstring); ``arch`` overrides its config."""
    directory = _local_path(path)
    if not directory.is_dir():
        raise ValueError(f"'{directory}' is a file; a Hugging Face model is a directory with config.json")
    hf_cfg = _huggingface_config(directory)
    preprocessor_file = directory / "preprocessor_config.json"
    preprocessor = None
    if preprocessor_file.is_file():
        try:
            preprocessor = json.loads(preprocessor_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"Cannot read '{preprocessor_file}': {error}") from error
    config = _make_config(_huggingface_values(hf_cfg, preprocessor, directory), arch, directory)
    prefix = f"{hf_cfg['model_type']}."
    state, unknown = _rename(_huggingface_state(directory), lambda key: _huggingface_key(key, prefix))
    return _build_encoder(config, state, unknown, directory, "huggingface")


# ---------------------------------------------------------------------------------------------
# torchaudio
# ---------------------------------------------------------------------------------------------

#: torchaudio's WavLM attention wraps ``nn.MultiheadAttention``: packed ``in_proj`` and ``out_proj``.
_TA_ATTENTION = re.compile(
    r"(encoder\.transformer\.layers\.\d+\.attention)\.attention\.(in_proj_|out_proj\.)(weight|bias)$")
_TA_IGNORED = re.compile(r"(aux\..+|mask_generator\..+|logit_generator\..+)$")
#: Older torchaudio used ``torch.nn.utils.weight_norm`` (``weight_g`` / ``weight_v``).
_TA_LEGACY_WEIGHT_NORM = {f"{_POS_CONV}.{old}": f"{_POS_CONV}.{new}" for old, new in _WEIGHT_NORM_NAMES.items()}


def _torchaudio_state(state: StateDict) -> Tuple[StateDict, List[str]]:
    """Our names for a torchaudio state dict; WavLM's packed q/k/v projection is split."""
    renamed, unknown = {}, []
    for key, value in state.items():
        name = key[len("wav2vec2."):] if key.startswith("wav2vec2.") else key
        if _TA_IGNORED.match(name):
            continue
        attention = _TA_ATTENTION.match(name)
        if attention and attention.group(2) == "in_proj_":
            if value.shape[0] % 3:
                unknown.append(key)
                continue
            for projection, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                renamed[f"{attention.group(1)}.{projection}.{attention.group(3)}"] = part
            continue
        if attention:
            name = f"{attention.group(1)}.out_proj.{attention.group(3)}"
        elif name == "encoder.transformer.layers.0.attention.rel_attn_embed.weight":
            name = _POSITION_BIAS
        elif name in _TA_LEGACY_WEIGHT_NORM:
            name = _TA_LEGACY_WEIGHT_NORM[name]
        renamed[name] = value
    return renamed, unknown


def _from_torchaudio(state: StateDict, source: Path, arch: Arch) -> SSLEncoder:
    if arch is None:
        raise ValueError(
            f"'{source}' is a plain torchaudio state dict, which does not record the architecture (e.g. the number "
            "of attention heads); pass arch= a preset name (e.g. 'wav2vec2_base') or a config dict")
    try:
        config = get_config(arch)
    except (TypeError, ValueError) as error:
        raise ValueError(f"Invalid arch for '{source}': {error}") from error
    renamed, unknown = _torchaudio_state(state)
    return _build_encoder(config, renamed, unknown, source, "torchaudio")


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def _load_file(path: Union[str, os.PathLike], file_format: str) -> Tuple[Any, Path]:
    local = _local_path(path)
    if local.is_dir():
        raise ValueError(f"'{local}' is a directory; a {file_format} checkpoint is a file")
    checkpoint = _torch_load(local)
    found = _format_of(checkpoint, local)
    if found != file_format:
        raise ValueError(f"'{local}' is a {found} checkpoint, not {file_format}")
    return checkpoint, local


def load_fairseq(path: Union[str, os.PathLike], arch: Arch = None) -> SSLEncoder:
    """Encoder from a fairseq or original WavLM checkpoint; ``arch`` overrides its config."""
    checkpoint, local = _load_file(path, "fairseq")
    return _from_fairseq(checkpoint, local, arch)


def load_s3prl(path: Union[str, os.PathLike], arch: Arch = None) -> SSLEncoder:
    """Encoder from an s3prl converted checkpoint; ``arch`` overrides its config."""
    checkpoint, local = _load_file(path, "s3prl")
    return _from_s3prl(checkpoint, local, arch)


def load_torchaudio(path: Union[str, os.PathLike], arch: Arch) -> SSLEncoder:
    """Encoder of architecture ``arch`` (required) from a torchaudio state dict."""
    checkpoint, local = _load_file(path, "torchaudio")
    return _from_torchaudio(checkpoint, local, arch)


def load_encoder(path: Union[str, os.PathLike], arch: Arch = None) -> SSLEncoder:
    """Encoder holding the pretrained weights at local ``path``, whose format is detected.

    Args:
        path: fairseq / WavLM / s3prl checkpoint file, torchaudio state dict file, or Hugging
            Face model directory (see the module docstring).
        arch: required for torchaudio state dicts (preset name, dict or config); for the other
            formats optional overrides of the checkpoint's own config (module docstring).
    Returns:
        The encoder in eval mode; ``encoder.config`` describes it, including ``sample_rate``.
    Raises:
        ValueError: hub name or URL, unreadable or unrecognised file, unsupported model options,
            keys or shapes that do not match, missing ``arch`` for a torchaudio state dict.
        FileNotFoundError: nothing at ``path``.
    """
    local = _local_path(path)
    if local.is_dir():
        return load_huggingface(local, arch)
    checkpoint = _torch_load(local)
    file_format = _format_of(checkpoint, local)
    if file_format == "s3prl":
        return _from_s3prl(checkpoint, local, arch)
    if file_format == "fairseq":
        return _from_fairseq(checkpoint, local, arch)
    return _from_torchaudio(checkpoint, local, arch)
