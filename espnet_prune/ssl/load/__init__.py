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
that preset. Overridden shapes that disagree with the weights are reported as errors; an
override that keeps every shape but changes what the weights compute (``num_heads``,
``layer_norm_first``, ``normalize_waveform``, ... :data:`espnet_prune.ssl.config.COMPUTATION_KEYS`)
is logged as a warning naming the key, its value and the checkpoint's.

Loading is strict. Parameters that only pretraining or a task head uses (quantizer, masked
embedding, label embeddings, CTC output layer, ...) are dropped by name; any other key of
the checkpoint that the encoder lacks, any parameter of the encoder that the checkpoint
lacks, and any shape mismatch raises :class:`ValueError` listing the keys. Only local files
are read, never a hub or URL. A ``.pt`` file is first read with ``weights_only=True``; if it
holds Python objects (fairseq's omegaconf or argparse configs) it is unpickled in full, so
load only checkpoints you trust.

One module per format holds its config reading and key renaming (:mod:`.fairseq` for fairseq,
WavLM and s3prl, :mod:`.huggingface`, :mod:`.torchaudio`); :mod:`.common` reads the files and
builds the encoder with the one strict check of keys and shapes.
"""

import os
from typing import Union

from espnet_prune.ssl.load.common import FORMATS, Arch, format_of, local_path, torch_load
from espnet_prune.ssl.load.fairseq import from_fairseq, from_s3prl, load_fairseq, load_s3prl
from espnet_prune.ssl.load.huggingface import huggingface_config, load_huggingface
from espnet_prune.ssl.load.torchaudio import from_torchaudio, load_torchaudio
from espnet_prune.ssl.model import SSLEncoder

#: The encoder from a checkpoint read from a file, by format (Hugging Face models are directories).
_FROM_CHECKPOINT = {"fairseq": from_fairseq, "s3prl": from_s3prl, "torchaudio": from_torchaudio}

__all__ = ["FORMATS", "Arch", "detect_format", "load_encoder", "load_fairseq", "load_s3prl", "load_huggingface",
           "load_torchaudio"]


def detect_format(path: Union[str, os.PathLike]) -> str:
    """Format of the checkpoint at local ``path``: one of :data:`FORMATS`.

    Raises:
        ValueError: hub name, URL, directory without ``config.json``, unreadable or unknown file.
        FileNotFoundError: nothing at ``path``.
    """
    local = local_path(path)
    if local.is_dir():
        huggingface_config(local)
        return "huggingface"
    return format_of(torch_load(local), local)


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
    local = local_path(path)
    if local.is_dir():
        return load_huggingface(local, arch)
    checkpoint = torch_load(local)
    return _FROM_CHECKPOINT[format_of(checkpoint, local)](checkpoint, local, arch)
