"""Tiny checkpoints in every supported format, written by independent implementations.

``checkpoints`` (a fixture) writes a random tiny model in one format into ``tmp_path`` and
returns the path together with an independent reference that computes hidden states from
the same weights: torchaudio, transformers or s3prl's own model classes (s3prl's
``wav2vec2_model.py`` / ``hubert_model.py`` / ``WavLM.py`` are copies of fairseq's and
Microsoft's code, so their state dicts are the real checkpoint formats).
"""

import argparse
import json
import os
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import pytest
import torch
from torch import Tensor, nn

from espnet_prune.ssl.config import EncoderConfig
from test.espnet_prune.ssl.tiny import tiny_config

if "PYTEST_XDIST_WORKER" in os.environ:
    # `make test` runs the suite in pytest-xdist workers, one per core: each worker, and the ESPnet
    # processes it starts, computes on one intra-op thread (OMP_NUM_THREADS, unless already set),
    # or the workers' thread pools oversubscribe the cores and spin-wait for each other.
    torch.set_num_threads(int(os.environ.setdefault("OMP_NUM_THREADS", "1")))

#: (B,) valid samples of the test batch: about 0.5 s at 16 kHz, all of unequal length.
LENGTHS = (8000, 6421, 4730)
CTC_VOCAB = 12


def small_config(model_type: str = "wav2vec2", layer_norm_first: bool = False, **overrides) -> EncoderConfig:
    """:func:`tiny_config` with a Transformer wider than the CNN (48 vs 32), as in released
    models, so that fairseq checkpoints carry a feature projection (``post_extract_proj``)."""
    values = dict(embed_dim=48, ffn_dims=80)
    values.update(overrides)
    return tiny_config(model_type, layer_norm_first=layer_norm_first, **values)


def make_batch(lengths: Sequence[int] = LENGTHS, seed: int = 0) -> Tuple[Tensor, Tensor]:
    """Zero-padded random waveforms ``(B, S)`` and their lengths ``(B,)``."""
    generator = torch.Generator().manual_seed(seed)
    waveforms = torch.zeros(len(lengths), max(lengths))
    for i, length in enumerate(lengths):
        waveforms[i, :length] = torch.randn(length, generator=generator)
    return waveforms, torch.tensor(lengths)


def perturb_(module: nn.Module, seed: int) -> nn.Module:
    """Add noise to every parameter (norm scales, biases and gates too), so that a parameter
    loaded into the wrong place changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return module.eval()


# ---------------------------------------------------------------------------------------------
# torchaudio
# ---------------------------------------------------------------------------------------------


def torchaudio_kwargs(config: EncoderConfig) -> dict:
    return dict(
        extractor_mode=config.extractor_mode,
        extractor_conv_layer_config=[tuple(layer) for layer in config.conv_layers],
        extractor_conv_bias=config.conv_bias,
        encoder_embed_dim=config.embed_dim,
        encoder_projection_dropout=0.0,
        encoder_pos_conv_kernel=config.pos_conv_kernel,
        encoder_pos_conv_groups=config.pos_conv_groups,
        encoder_num_layers=config.num_layers,
        encoder_num_heads=config.num_heads[0],
        encoder_attention_dropout=0.0,
        encoder_ff_interm_features=config.ffn_dims[0],
        encoder_ff_interm_dropout=0.0,
        encoder_dropout=0.0,
        encoder_layer_norm_first=config.layer_norm_first,
        encoder_layer_drop=0.0,
    )


def torchaudio_model(config: EncoderConfig, aux_num_out: Optional[int] = None) -> nn.Module:
    """torchaudio's ``wav2vec2_model`` / ``wavlm_model`` of the same shape (random init)."""
    from torchaudio.models import wav2vec2_model, wavlm_model

    kwargs = torchaudio_kwargs(config)
    if config.model_type == "wavlm":
        return wavlm_model(**kwargs, encoder_num_buckets=config.num_buckets,
                           encoder_max_distance=config.max_distance, aux_num_out=aux_num_out)
    return wav2vec2_model(**kwargs, aux_num_out=aux_num_out)


def torchaudio_hubert_pretrain_model(config: EncoderConfig) -> nn.Module:
    """torchaudio's ``hubert_pretrain_model`` (its ``wav2vec2`` part is the encoder)."""
    from torchaudio.models import hubert_pretrain_model

    return hubert_pretrain_model(
        **torchaudio_kwargs(config), mask_prob=0.0, mask_selection="static", mask_other=0.0, mask_length=10,
        no_mask_overlap=False, mask_min_space=1, mask_channel_prob=0.0, mask_channel_selection="static",
        mask_channel_other=0.0, mask_channel_length=10, no_mask_channel_overlap=False, mask_channel_min_space=1,
        skip_masked=False, skip_nomask=False, num_classes=10, final_dim=16, feature_grad_mult=None)


# ---------------------------------------------------------------------------------------------
# transformers
# ---------------------------------------------------------------------------------------------


def huggingface_model(config: EncoderConfig, head: Optional[str] = None) -> nn.Module:
    """transformers model of the same shape; ``head="ctc"`` gives the ``*ForCTC`` class."""
    import transformers

    names = {"wav2vec2": "Wav2Vec2", "hubert": "Hubert", "wavlm": "WavLM"}[config.model_type]
    kwargs = dict(
        hidden_size=config.embed_dim, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads[0], intermediate_size=config.ffn_dims[0],
        conv_dim=config.conv_channels, conv_kernel=[k for _, k, _ in config.conv_layers],
        conv_stride=[s for _, _, s in config.conv_layers], num_feat_extract_layers=len(config.conv_layers),
        feat_extract_norm=config.extractor_mode.split("_")[0], conv_bias=config.conv_bias,
        do_stable_layer_norm=config.layer_norm_first, num_conv_pos_embeddings=config.pos_conv_kernel,
        num_conv_pos_embedding_groups=config.pos_conv_groups, hidden_dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0, layerdrop=0.0, vocab_size=CTC_VOCAB)
    if config.model_type == "wavlm":
        kwargs.update(num_buckets=config.num_buckets, max_bucket_distance=config.max_distance)
    hf_config = getattr(transformers, f"{names}Config")(**kwargs)
    model_class = getattr(transformers, f"{names}ForCTC" if head == "ctc" else f"{names}Model")
    return model_class(hf_config)


# ---------------------------------------------------------------------------------------------
# fairseq configs and s3prl's copies of the fairseq / WavLM model classes
# ---------------------------------------------------------------------------------------------


def fairseq_model_cfg(config: EncoderConfig) -> dict:
    """The fairseq model config (``cfg["model"]``) of ``config``; a flat ``WavLMConfig`` for WavLM."""
    values = dict(
        extractor_mode="default" if config.extractor_mode == "group_norm" else "layer_norm",
        conv_feature_layers=str([tuple(layer) for layer in config.conv_layers]),
        conv_bias=config.conv_bias,
        encoder_layers=config.num_layers,
        encoder_embed_dim=config.embed_dim,
        encoder_ffn_embed_dim=config.ffn_dims[0],
        encoder_attention_heads=config.num_heads[0],
        activation_fn="gelu",
        layer_norm_first=config.layer_norm_first,
        conv_pos=config.pos_conv_kernel,
        conv_pos_groups=config.pos_conv_groups,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.0,
        dropout_input=0.0, dropout_features=0.0, final_dim=16,
    )
    if config.model_type == "wavlm":
        values.update(relative_position_embedding=True, num_buckets=config.num_buckets,
                      max_distance=config.max_distance, gru_rel_pos=config.gru_rel_pos,
                      normalize=config.normalize_waveform)
    elif config.model_type == "hubert":
        values.update(_name="hubert", label_rate=50.0)
    else:
        values.update(_name="wav2vec2", quantize_targets=True, latent_vars=8, latent_groups=2, latent_dim=0)
    return values


def fairseq_task_cfg(config: EncoderConfig) -> dict:
    return {"_name": "audio_pretraining", "normalize": config.normalize_waveform,
            "sample_rate": config.sample_rate}


HUBERT_DICTIONARIES = [["<s>", "<pad>", "</s>", "<unk>"] + [str(i) for i in range(6)]]


def s3prl_model(config: EncoderConfig) -> nn.Module:
    """s3prl's (i.e. fairseq's / Microsoft's) model class built from the fairseq config."""
    model_cfg = fairseq_model_cfg(config)
    if config.model_type == "wavlm":
        from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

        return WavLM(WavLMConfig(model_cfg))
    from s3prl.upstream.utils import merge_with_parent

    if config.model_type == "hubert":
        from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

        return HubertModel(merge_with_parent(HubertConfig, model_cfg),
                           merge_with_parent(HubertPretrainingConfig, fairseq_task_cfg(config)),
                           HUBERT_DICTIONARIES)
    from s3prl.upstream.wav2vec2.wav2vec2_model import Wav2Vec2Config, Wav2Vec2Model

    return Wav2Vec2Model(merge_with_parent(Wav2Vec2Config, model_cfg))


def s3prl_expert(config: EncoderConfig, path: Path) -> nn.Module:
    """s3prl's upstream expert (what ``S3PRLUpstream("<name>_local", path)`` wraps) for ``path``."""
    if config.model_type == "wavlm":
        from s3prl.upstream.wavlm.expert import UpstreamExpert
    elif config.model_type == "hubert":
        from s3prl.upstream.hubert.expert import UpstreamExpert
    else:
        from s3prl.upstream.wav2vec2.expert import UpstreamExpert
    return UpstreamExpert(str(path)).eval()


# ---------------------------------------------------------------------------------------------
# Writing checkpoints
# ---------------------------------------------------------------------------------------------


def legacy_args(model_cfg: dict, task_cfg: dict) -> argparse.Namespace:
    """Old fairseq's flat ``args``: model and task options together, the model name as ``arch``."""
    values = {k: v for k, v in {**task_cfg, **model_cfg}.items() if k != "_name"}
    return argparse.Namespace(arch=model_cfg["_name"], task=task_cfg["_name"], **values)


class CheckpointWriter:
    """Writes tiny random checkpoints under ``directory``; each method returns ``(path, reference)``."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.count = 0

    def _path(self, suffix: str) -> Path:
        self.count += 1
        return self.directory / f"checkpoint{self.count}{suffix}"

    def torchaudio(self, config: EncoderConfig, seed: int = 1) -> Tuple[Path, nn.Module]:
        """``torch.save(state_dict())`` of a torchaudio model; HuBERT as ``hubert_pretrain_model``.
        The reference is the torchaudio ``Wav2Vec2Model``."""
        torch.manual_seed(seed)
        if config.model_type == "hubert":
            pretrain = perturb_(torchaudio_hubert_pretrain_model(config), seed)
            state, reference = pretrain.state_dict(), pretrain.wav2vec2
        else:
            reference = perturb_(torchaudio_model(config), seed)
            state = reference.state_dict()
        path = self._path(".pth")
        torch.save(state, path)
        return path, reference

    def huggingface(self, config: EncoderConfig, head: Optional[str] = None, seed: int = 2,
                    preprocessor: Optional[dict] = None) -> Tuple[Path, nn.Module]:
        """``save_pretrained`` directory (plus ``preprocessor_config.json`` if given)."""
        torch.manual_seed(seed)
        model = perturb_(huggingface_model(config, head), seed)
        path = self._path("")
        model.save_pretrained(path)
        if preprocessor is not None:
            (path / "preprocessor_config.json").write_text(json.dumps(preprocessor))
        return path, model

    def s3prl_model(self, config: EncoderConfig, seed: int = 3) -> nn.Module:
        torch.manual_seed(seed)
        return perturb_(s3prl_model(config), seed)

    def s3prl(self, config: EncoderConfig, seed: int = 3) -> Tuple[Path, nn.Module]:
        """s3prl's converted format for wav2vec 2.0 / HuBERT, the original WavLM format for WavLM
        (what ``wavlm_local`` reads). The reference is s3prl's upstream expert for the file."""
        model = self.s3prl_model(config, seed)
        path = self._path(".pt")
        if config.model_type == "wavlm":
            torch.save({"cfg": fairseq_model_cfg(config), "model": model.state_dict()}, path)
        else:
            checkpoint = {"task_cfg": fairseq_task_cfg(config), "model_cfg": fairseq_model_cfg(config),
                          "model_weight": model.state_dict()}
            if config.model_type == "hubert":
                checkpoint["dictionaries_symbols"] = HUBERT_DICTIONARIES
            torch.save(checkpoint, path)
        return path, s3prl_expert(config, path)

    def fairseq(self, config: EncoderConfig, ctc: bool = False, cfg_style: str = "dict",
                seed: int = 4) -> Tuple[Path, nn.Module]:
        """A fairseq checkpoint of wav2vec 2.0 / HuBERT (pretrained, or fine-tuned with a CTC
        head under ``w2v_encoder``) whose config is a dict, an omegaconf ``DictConfig``
        (``cfg_style="omegaconf"``) or a legacy argparse ``args`` namespace (``"args"``).
        The reference is a torchaudio model holding the same weights, mapped by torchaudio's
        own fairseq importer."""
        from torchaudio.models.wav2vec2.utils.import_fairseq import _convert_state_dict

        state = self.s3prl_model(config, seed).state_dict()
        model_cfg, task_cfg = fairseq_model_cfg(config), fairseq_task_cfg(config)
        if ctc:
            generator = torch.Generator().manual_seed(seed)
            state = {f"w2v_encoder.w2v_model.{k}": v for k, v in state.items()}
            state["w2v_encoder.proj.weight"] = torch.randn(CTC_VOCAB, config.embed_dim, generator=generator)
            state["w2v_encoder.proj.bias"] = torch.randn(CTC_VOCAB, generator=generator)
            name = "hubert_ctc" if config.model_type == "hubert" else "wav2vec_ctc"
            if cfg_style == "args":
                model_cfg = {"_name": name, "w2v_args": legacy_args(model_cfg, task_cfg)}
            else:
                model_cfg = {"_name": name, "w2v_args": {"model": model_cfg, "task": task_cfg},
                             "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0,
                             "dropout_input": 0.0, "layerdrop": 0.0}
            task_cfg = {"_name": "audio_finetuning", "normalize": config.normalize_waveform,
                        "sample_rate": config.sample_rate}
        if cfg_style == "args":
            checkpoint = {"args": legacy_args(model_cfg, task_cfg), "model": state}
        else:
            cfg = {"model": model_cfg, "task": task_cfg}
            if cfg_style == "omegaconf":
                from omegaconf import OmegaConf

                cfg = OmegaConf.create(cfg)
            checkpoint = {"cfg": cfg, "model": state}
        path = self._path(".pt")
        torch.save(checkpoint, path)
        # torchaudio's importer reads the state dict of fairseq's ``Wav2VecEncoder`` (w2v_model., proj.)
        importer_state = {k[len("w2v_encoder."):] if k.startswith("w2v_encoder.") else k: v for k, v in state.items()}
        converted = _convert_state_dict(importer_state)
        converted.pop("label_embs_concat", None)
        reference = torchaudio_model(config, aux_num_out=CTC_VOCAB if ctc else None)
        reference.load_state_dict(converted, strict=True)
        return path, reference.eval()


@pytest.fixture
def checkpoints(tmp_path) -> CheckpointWriter:
    return CheckpointWriter(tmp_path)


@pytest.fixture
def make_config() -> Callable[..., EncoderConfig]:
    return small_config


@pytest.fixture
def batch() -> Tuple[Tensor, Tensor]:
    return make_batch()


# Synthesised-speech corpora (session scoped), shared by the ESPnet end-to-end and data tests.
from test.espnet_prune.fixtures import asr_corpus, slu_corpus  # noqa: E402,F401


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist: test files with end-to-end tests (marked ``slow``) first, in collection
    order, then the rest; each file's own tests keep their order. ``make test``'s workers take
    whole files in this order (``--dist loadfile --no-loadscope-reorder``): the long files start
    first and the many short ones fill in at the end, instead of one worker finishing a long file
    alone. A run in one process keeps pytest's order."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: False (slow file) first
