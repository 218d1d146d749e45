"""Plain torchaudio state dicts (``wav2vec2_model``, ``wavlm_model``, ``hubert_pretrain_model``)
or of an :class:`SSLEncoder` (format ``torchaudio`` of :mod:`espnet_prune.ssl.load`)."""

import os
import re
from pathlib import Path
from typing import List, Tuple, Union

from espnet_prune.ssl.config import get_config
from espnet_prune.ssl.load.common import (
    POS_CONV,
    POSITION_BIAS,
    WEIGHT_NORM_NAMES,
    Arch,
    StateDict,
    build_encoder,
    load_file,
)
from espnet_prune.ssl.model import SSLEncoder

#: torchaudio's WavLM attention wraps ``nn.MultiheadAttention``: packed ``in_proj`` and ``out_proj``.
_TA_ATTENTION = re.compile(
    r"(encoder\.transformer\.layers\.\d+\.attention)\.attention\.(in_proj_|out_proj\.)(weight|bias)$")
_TA_IGNORED = re.compile(r"(aux\..+|mask_generator\..+|logit_generator\..+)$")
#: Older torchaudio used ``torch.nn.utils.weight_norm`` (``weight_g`` / ``weight_v``).
_TA_LEGACY_WEIGHT_NORM = {f"{POS_CONV}.{old}": f"{POS_CONV}.{new}" for old, new in WEIGHT_NORM_NAMES.items()}


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
            name = POSITION_BIAS
        elif name in _TA_LEGACY_WEIGHT_NORM:
            name = _TA_LEGACY_WEIGHT_NORM[name]
        renamed[name] = value
    return renamed, unknown


def from_torchaudio(state: StateDict, source: Path, arch: Arch) -> SSLEncoder:
    if arch is None:
        raise ValueError(
            f"'{source}' is a plain torchaudio state dict, which does not record the architecture (e.g. the number "
            "of attention heads); pass arch= a preset name (e.g. 'wav2vec2_base') or a config dict")
    try:
        config = get_config(arch)
    except (TypeError, ValueError) as error:
        raise ValueError(f"Invalid arch for '{source}': {error}") from error
    renamed, unknown = _torchaudio_state(state)
    return build_encoder(config, renamed, unknown, source, "torchaudio")


def load_torchaudio(path: Union[str, os.PathLike], arch: Arch) -> SSLEncoder:
    """Encoder of architecture ``arch`` (required) from a torchaudio state dict."""
    checkpoint, local = load_file(path, "torchaudio")
    return from_torchaudio(checkpoint, local, arch)
