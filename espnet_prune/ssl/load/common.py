"""What every checkpoint format shares: reading local files, telling the formats apart by
their top-level keys, and building the encoder with the one strict check of keys and shapes
(:func:`build_encoder`)."""

import argparse
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from espnet_prune.ssl.config import COMPUTATION_KEYS, WHERE, EncoderConfig, get_config
from espnet_prune.ssl.model import SSLEncoder

Arch = Union[str, Dict[str, Any], EncoderConfig, None]
StateDict = Dict[str, Tensor]

FORMATS = ("fairseq", "s3prl", "huggingface", "torchaudio")

#: File name endings that mark a missing ``owner/name`` path as a file rather than a hub name.
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
POS_CONV = "encoder.transformer.pos_conv_embed.conv"
POSITION_BIAS = "encoder.transformer.position_bias.rel_attn_embed.weight"
PROJECTION = "encoder.feature_projection.projection"
#: ``torch.nn.utils.weight_norm`` names and their ``parametrizations.weight_norm`` equivalents.
WEIGHT_NORM_NAMES = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}

# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------


def local_path(path: Union[str, os.PathLike]) -> Path:
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


def torch_load(path: Path) -> Any:
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


def plain(value: Any) -> Any:
    """A config held as dict, omegaconf container or argparse Namespace, as plain dicts/lists."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, argparse.Namespace):
        return {k: plain(v) for k, v in vars(value).items()}
    if type(value).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def is_state_dict(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items())


def format_of(checkpoint: Any, source: Path) -> str:
    """Format name of an object read from a ``.pt`` file."""
    if not isinstance(checkpoint, dict):
        raise ValueError(f"'{source}' holds a {type(checkpoint).__name__}, not a checkpoint dict")
    if {"task_cfg", "model_cfg", "model_weight"} <= set(checkpoint):
        return "s3prl"
    if "model" in checkpoint and (checkpoint.get("cfg") is not None or checkpoint.get("args") is not None):
        return "fairseq"
    if is_state_dict(checkpoint):
        return "torchaudio"
    raise ValueError(
        f"Unrecognised checkpoint '{source}' with top-level keys {sorted(map(str, checkpoint))[:20]}; "
        "expected a fairseq checkpoint (model + cfg/args), an s3prl converted checkpoint "
        "(task_cfg, model_cfg, model_weight), a torchaudio state dict, or a Hugging Face model directory")


# ---------------------------------------------------------------------------------------------
# Building the encoder
# ---------------------------------------------------------------------------------------------


def arch_overrides(arch: Arch) -> Dict[str, Any]:
    """Config values that ``arch`` sets (module docstring)."""
    if arch is None:
        return {}
    if isinstance(arch, dict) and "preset" not in arch:
        return dict(arch)
    return get_config(arch).to_dict()


def make_config(values: Dict[str, Any], arch: Arch, source: Path) -> EncoderConfig:
    """The config of the checkpoint at ``source`` (``values``, read from it) with ``arch``'s
    overrides; a warning for each override of :data:`~espnet_prune.ssl.config.COMPUTATION_KEYS`
    that differs from the checkpoint's value."""
    overrides = arch_overrides(arch)
    try:
        config = EncoderConfig.from_dict({**values, **overrides})
    except (TypeError, ValueError) as error:
        raise ValueError(f"Invalid encoder configuration for '{source}': {error}") from error
    try:
        own = EncoderConfig.from_dict(values).to_dict()
    except (TypeError, ValueError):
        own = values  # valid only with the overrides: compare with the values as read
    for key in COMPUTATION_KEYS:
        if key in overrides and key in own and own[key] != getattr(config, key):
            logging.warning(
                "%s.%s = %r overrides %r of checkpoint '%s': the same weights now compute something else than "
                "they were trained for", WHERE, key, getattr(config, key), own[key], source)
    return config


def listing(items: Sequence[str], limit: int = 12) -> str:
    """``items`` for an error message, the first ``limit`` of them and how many more."""
    shown = ", ".join(repr(item) for item in items[:limit])
    more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"[{shown}{more}]"


def require_state_dict(value: Any, what: str, source: Path) -> StateDict:
    if not is_state_dict(value):
        raise ValueError(f"{what} of '{source}' is a {type(value).__name__}, not a dict of tensors")
    return value


def rename_keys(state: StateDict, rename: Callable[[str], Optional[str]]) -> Tuple[StateDict, List[str]]:
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


def build_encoder(config: EncoderConfig, state: StateDict, unknown: Sequence[str], source: Path,
                   file_format: str) -> SSLEncoder:
    """An encoder for ``config`` holding ``state``; strict about keys and shapes.

    A missing feature projection is taken as the identity when the CNN and the Transformer
    have the same width: fairseq then has no ``post_extract_proj``.
    """
    encoder = SSLEncoder(config)
    expected = encoder.state_dict()
    state = dict(state)
    width_in, width_out = config.conv_layers[-1][0], config.embed_dim
    if f"{PROJECTION}.weight" not in state and f"{PROJECTION}.bias" not in state and width_in == width_out:
        state[f"{PROJECTION}.weight"] = torch.eye(width_out)
        state[f"{PROJECTION}.bias"] = torch.zeros(width_out)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(unknown) | (set(state) - set(expected)))
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"missing parameters ({len(missing)}): {listing(missing)}")
        if unexpected:
            problems.append(f"unexpected keys ({len(unexpected)}): {listing(unexpected)}")
        raise ValueError(
            f"{file_format} checkpoint '{source}' does not match the {config.model_type} encoder built from its "
            f"configuration: {'; '.join(problems)}")
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs encoder {tuple(v.shape)}"
                  for k, v in expected.items() if state[k].shape != v.shape]
    if mismatched:
        raise ValueError(
            f"{file_format} checkpoint '{source}' has parameters whose shapes do not match the encoder's "
            f"configuration: {listing(mismatched)}")
    encoder.load_state_dict(state, strict=True)
    return encoder.eval()


def load_file(path: Union[str, os.PathLike], file_format: str) -> Tuple[Any, Path]:
    local = local_path(path)
    if local.is_dir():
        raise ValueError(f"'{local}' is a directory; a {file_format} checkpoint is a file")
    checkpoint = torch_load(local)
    found = format_of(checkpoint, local)
    if found != file_format:
        raise ValueError(f"'{local}' is a {found} checkpoint, not {file_format}")
    return checkpoint, local
