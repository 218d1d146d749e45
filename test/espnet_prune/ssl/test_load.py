"""Format detection, config reading and error reporting of :mod:`espnet_prune.ssl.load`.

That the loaded encoders compute what the original implementations compute is tested in
``test_equivalence.py``; here the checkpoints are the same tiny ones (see ``conftest.py``).
"""

import json
import logging
import re

import pytest
import torch

from espnet_prune.ssl.config import get_config
from espnet_prune.ssl.load import (
    detect_format,
    load_encoder,
    load_fairseq,
    load_huggingface,
    load_s3prl,
    load_torchaudio,
)
from espnet_prune.ssl.model import SSLEncoder


def assert_same_encoder(first: SSLEncoder, second: SSLEncoder) -> None:
    assert first.config == second.config
    first_state, second_state = first.state_dict(), second.state_dict()
    assert first_state.keys() == second_state.keys()
    for key, value in first_state.items():
        assert torch.equal(value, second_state[key]), key


def rewrite(path, change) -> None:
    """Apply ``change`` to the checkpoint dict stored at ``path``."""
    checkpoint = torch.load(path, weights_only=False)
    change(checkpoint)
    torch.save(checkpoint, path)


# ---------------------------------------------------------------------------------------------
# Format detection
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("writer,options,expected", [
    ("torchaudio", {}, "torchaudio"),
    ("huggingface", {}, "huggingface"),
    ("s3prl", {}, "s3prl"),
    ("fairseq", {}, "fairseq"),
    ("fairseq", {"cfg_style": "omegaconf"}, "fairseq"),
    ("fairseq", {"cfg_style": "args"}, "fairseq"),
    ("fairseq", {"ctc": True}, "fairseq"),
])
def test_detect_format(writer, options, expected, make_config, checkpoints):
    path, _ = getattr(checkpoints, writer)(make_config(), **options)
    assert detect_format(path) == expected
    assert detect_format(str(path)) == expected


def test_original_wavlm_checkpoint_is_fairseq_format(make_config, checkpoints):
    config = make_config("wavlm")
    path, _ = checkpoints.s3prl(config)  # s3prl's wavlm upstream reads the original {"cfg", "model"} format
    assert detect_format(path) == "fairseq"
    assert load_fairseq(path).config.model_type == "wavlm"


@pytest.mark.parametrize("loader,writer", [
    (load_s3prl, "fairseq"), (load_fairseq, "s3prl"), (load_fairseq, "torchaudio"), (load_torchaudio, "s3prl"),
])
def test_format_specific_loader_rejects_other_formats(loader, writer, make_config, checkpoints):
    config = make_config()
    path, _ = getattr(checkpoints, writer)(config)
    with pytest.raises(ValueError, match=f"is a {detect_format(path)} checkpoint, not"):
        loader(path, arch=config.to_dict())


# ---------------------------------------------------------------------------------------------
# fairseq
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ctc", [False, True], ids=["pretrained", "ctc_fine_tuned"])
@pytest.mark.parametrize("cfg_style", ["omegaconf", "args"])
def test_fairseq_config_styles_give_the_same_encoder(cfg_style, ctc, make_config, checkpoints):
    config = make_config("hubert", layer_norm_first=True, normalize_waveform=True)
    reference_path, _ = checkpoints.fairseq(config)
    path, _ = checkpoints.fairseq(config, ctc=ctc, cfg_style=cfg_style)
    assert_same_encoder(load_encoder(path), load_encoder(reference_path))


def test_fairseq_ctc_checkpoint_drops_the_ctc_head(make_config, checkpoints):
    config = make_config("wav2vec2")
    path, _ = checkpoints.fairseq(config, ctc=True)
    state = torch.load(path, weights_only=False)["model"]
    assert "w2v_encoder.proj.weight" in state
    encoder = load_encoder(path)
    pretrained_path, _ = checkpoints.fairseq(config)
    assert_same_encoder(encoder, load_encoder(pretrained_path))
    weight = encoder.state_dict()["encoder.transformer.layers.1.feed_forward.output_dense.weight"]
    assert torch.equal(weight, state["w2v_encoder.w2v_model.encoder.layers.1.fc2.weight"])


def test_fairseq_ctc_dropouts_override_pretraining_ones(make_config, checkpoints):
    path, _ = checkpoints.fairseq(make_config(), ctc=True)

    def set_finetune_dropouts(checkpoint):
        checkpoint["cfg"]["model"].update(dropout=0.05, attention_dropout=0.15, layerdrop=0.2)
        checkpoint["cfg"]["model"]["w2v_args"]["model"].update(dropout=0.3, encoder_layerdrop=0.4)

    rewrite(path, set_finetune_dropouts)
    config = load_encoder(path).config
    assert (config.encoder_dropout, config.attention_dropout, config.layer_drop) == (0.05, 0.15, 0.2)


def test_fairseq_task_config_gives_normalization_and_sample_rate(make_config, checkpoints):
    path, _ = checkpoints.fairseq(make_config(normalize_waveform=False))
    rewrite(path, lambda checkpoint: checkpoint["cfg"]["task"].update(normalize=True, sample_rate=8000))
    config = load_encoder(path).config
    assert config.normalize_waveform is True
    assert config.sample_rate == 8000


def test_fairseq_default_sample_rate_is_16k(make_config, checkpoints):
    path, _ = checkpoints.fairseq(make_config())
    rewrite(path, lambda checkpoint: checkpoint["cfg"]["task"].pop("sample_rate"))
    assert load_encoder(path).config.sample_rate == 16000


def test_fairseq_arch_overrides_dropouts(make_config, checkpoints):
    path, _ = checkpoints.fairseq(make_config())
    plain = load_encoder(path)
    overridden = load_encoder(path, arch={"encoder_dropout": 0.2, "layer_drop": 0.05})
    assert (overridden.config.encoder_dropout, overridden.config.layer_drop) == (0.2, 0.05)
    assert overridden.config.replace(encoder_dropout=0.0, layer_drop=0.0) == plain.config


def test_arch_override_that_changes_what_the_weights_compute_is_warned(make_config, checkpoints, caplog):
    path, _ = checkpoints.fairseq(make_config())  # post-LN, 4 heads, no waveform normalisation, eps 1e-5
    overrides = {"num_heads": 2, "layer_norm_first": True, "normalize_waveform": True, "encoder_dropout": 0.2,
                 "layer_norm_eps": "1e-5"}  # the last two: a dropout, and the checkpoint's own value
    with caplog.at_level(logging.WARNING):
        encoder = load_encoder(path, arch=overrides)
    assert (encoder.config.num_heads, encoder.config.head_dim, encoder.config.layer_norm_first) == ([2, 2], 24, True)
    warnings = sorted(record.getMessage() for record in caplog.records if record.levelno == logging.WARNING)
    assert len(warnings) == 3, warnings
    for warning, expected in zip(warnings, ["arch.layer_norm_first = True overrides False",
                                            "arch.normalize_waveform = True overrides False",
                                            "arch.num_heads = [2, 2] overrides [4, 4]"]):
        assert warning.startswith(f"{expected} of checkpoint '{path}'"), warning
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_encoder(path, arch={"encoder_dropout": 0.2, "layer_drop": 0.05, "num_heads": 4})
    assert not [record for record in caplog.records if record.levelno == logging.WARNING]


def test_arch_value_of_the_wrong_type_is_named_with_the_checkpoint(make_config, checkpoints):
    path, _ = checkpoints.fairseq(make_config())
    with pytest.raises(ValueError, match=rf"Invalid encoder configuration for '{re.escape(str(path))}': "
                                         r"arch\.encoder_dropout must be a number, got str 'high'"):
        load_encoder(path, arch={"encoder_dropout": "high"})


def test_fairseq_arch_preset_that_disagrees_with_weights_is_rejected(make_config, checkpoints):
    path, _ = checkpoints.fairseq(make_config())
    with pytest.raises(ValueError, match=r"does not match .* missing parameters \(\d+\): \[.*, \.\.\. and \d+ more\]"):
        load_encoder(path, arch="wav2vec2_base")


def test_fairseq_missing_post_extract_proj_is_identity(make_config, checkpoints, batch):
    """fairseq has no feature projection when the CNN is as wide as the Transformer."""
    config = make_config("wav2vec2", embed_dim=32)
    path, expert = checkpoints.s3prl(config)
    assert not any(k.startswith("post_extract_proj") for k in torch.load(path)["model_weight"])
    encoder = load_encoder(path)
    assert torch.equal(encoder.encoder.feature_projection.projection.weight, torch.eye(32))
    waveforms, lengths = batch
    with torch.no_grad():
        ours, frames = encoder(waveforms, lengths)
        theirs = expert([w[:n] for w, n in zip(waveforms, lengths.tolist())])["hidden_states"]
    for utterance, count in enumerate(frames.tolist()):
        assert torch.allclose(ours[-1][utterance, :count], theirs[-1][utterance, :count], atol=1e-4)


def test_fine_tuned_checkpoint_without_pretraining_config_is_rejected(make_config, checkpoints):
    path, _ = checkpoints.fairseq(make_config(), ctc=True)
    rewrite(path, lambda checkpoint: checkpoint["cfg"]["model"].update(w2v_args=None))
    with pytest.raises(ValueError, match="w2v_args"):
        load_encoder(path)


@pytest.mark.parametrize("option,value", [("layer_type", "conformer"), ("activation_fn", "relu"),
                                          ("pos_conv_depth", 5), ("extractor_mode", "conv2d")])
def test_fairseq_unsupported_model_option_is_named(option, value, make_config, checkpoints):
    path, _ = checkpoints.fairseq(make_config())
    rewrite(path, lambda checkpoint: checkpoint["cfg"]["model"].update({option: value}))
    with pytest.raises(ValueError, match=f"does not implement.*{option}"):
        load_encoder(path)


@pytest.mark.parametrize("name", ["data2vec_audio", "wav2vec"])
def test_fairseq_unknown_model_name_is_rejected(name, make_config, checkpoints):
    path, _ = checkpoints.fairseq(make_config())
    rewrite(path, lambda checkpoint: checkpoint["cfg"]["model"].update(_name=name))
    with pytest.raises(ValueError, match=f"is a fairseq '{name}' model"):
        load_encoder(path)


def test_missing_key_is_listed(make_config, checkpoints):
    path, _ = checkpoints.fairseq(make_config())
    rewrite(path, lambda checkpoint: checkpoint["model"].pop("encoder.layers.1.fc2.weight"))
    with pytest.raises(ValueError, match=r"missing parameters \(1\): \['encoder\.transformer\.layers\.1\.feed_forward"
                                         r"\.output_dense\.weight'\]") as error:
        load_encoder(path)
    assert str(path) in str(error.value)


def test_unexpected_key_is_listed(make_config, checkpoints):
    path, _ = checkpoints.s3prl(make_config("hubert"))
    extra = "encoder.layers.0.self_attn.extra_scale"
    rewrite(path, lambda checkpoint: checkpoint["model_weight"].update({extra: torch.ones(3)}))
    with pytest.raises(ValueError, match=rf"unexpected keys \(1\): \['{re.escape(extra)}'\]") as error:
        load_encoder(path)
    assert str(path) in str(error.value)


def test_pretraining_only_keys_are_ignored(make_config, checkpoints):
    path, _ = checkpoints.fairseq(make_config("wav2vec2"))
    keys = torch.load(path, weights_only=False)["model"].keys()
    assert {"mask_emb", "quantizer.vars", "project_q.weight", "final_proj.weight"} <= set(keys)
    load_encoder(path)  # strict: any key neither mapped nor ignored would raise


# ---------------------------------------------------------------------------------------------
# Hugging Face
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["wav2vec2", "hubert", "wavlm"])
def test_huggingface_for_ctc_directory_drops_lm_head(model_type, make_config, checkpoints):
    config = make_config(model_type)
    path, model = checkpoints.huggingface(config, head="ctc")
    assert any(k.startswith("lm_head.") for k in model.state_dict())
    encoder = load_huggingface(path)
    base = getattr(model, model.base_model_prefix)
    assert torch.equal(encoder.encoder.transformer.layers[1].attention.v_proj.weight,
                       base.encoder.layers[1].attention.v_proj.weight)
    assert not encoder.training


def test_huggingface_wavlm_relative_position_embedding_is_shared(make_config, checkpoints):
    path, model = checkpoints.huggingface(make_config("wavlm"))
    encoder = load_encoder(path)
    assert torch.equal(encoder.encoder.transformer.position_bias.rel_attn_embed.weight,
                       model.encoder.layers[0].attention.rel_attn_embed.weight)
    assert torch.equal(encoder.encoder.transformer.layers[1].attention.gru_rel_pos_const,
                       model.encoder.layers[1].attention.gru_rel_pos_const)


def test_huggingface_legacy_weight_norm_names_and_bin_file(make_config, checkpoints):
    """Older transformers saved the positional convolution as ``weight_g`` / ``weight_v`` in
    ``pytorch_model.bin``."""
    path, model = checkpoints.huggingface(make_config())
    reference = load_encoder(path)
    legacy = {}
    for key, value in model.state_dict().items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        legacy[key.replace("parametrizations.weight.original1", "weight_v")] = value
    assert "encoder.pos_conv_embed.conv.weight_g" in legacy
    (path / "model.safetensors").unlink()
    torch.save(legacy, path / "pytorch_model.bin")
    assert_same_encoder(load_encoder(path), reference)


def test_huggingface_sharded_safetensors(make_config, checkpoints):
    from safetensors.torch import load_file, save_file

    path, _ = checkpoints.huggingface(make_config())
    reference = load_encoder(path)
    state = load_file(str(path / "model.safetensors"))
    (path / "model.safetensors").unlink()
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, shard_keys in shards.items():
        save_file({k: state[k].contiguous() for k in shard_keys}, str(path / name))
    weight_map = {k: name for name, shard_keys in shards.items() for k in shard_keys}
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert_same_encoder(load_encoder(path), reference)


@pytest.mark.parametrize("layer_norm_first,preprocessor,normalize,sample_rate", [
    (False, None, False, 16000),
    (True, None, True, 16000),
    (False, {"do_normalize": True, "sampling_rate": 16000}, True, 16000),
    (True, {"do_normalize": False, "sampling_rate": 8000}, False, 8000),
])
def test_huggingface_normalization_and_sample_rate(layer_norm_first, preprocessor, normalize, sample_rate,
                                                   make_config, checkpoints):
    path, _ = checkpoints.huggingface(make_config("wav2vec2", layer_norm_first), preprocessor=preprocessor)
    config = load_encoder(path).config
    assert config.normalize_waveform is normalize
    assert config.sample_rate == sample_rate


def test_huggingface_head_other_than_ctc_is_rejected(make_config, checkpoints):
    from safetensors.torch import load_file, save_file

    path, _ = checkpoints.huggingface(make_config(), head="ctc")
    state = load_file(str(path / "model.safetensors"))
    state["classifier.weight"] = torch.zeros(2, 48)
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"unexpected keys \(1\): \['classifier\.weight'\]"):
        load_encoder(path)


@pytest.mark.parametrize("change,named", [
    ({"hidden_act": "relu"}, "hidden_act"),
    ({"feat_proj_layer_norm": False}, "feat_proj_layer_norm"),
    ({"model_type": "data2vec-audio"}, "data2vec-audio"),
])
def test_huggingface_unsupported_config_is_named(change, named, make_config, checkpoints):
    path, _ = checkpoints.huggingface(make_config())
    config = json.loads((path / "config.json").read_text())
    config.update(change)
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=named):
        load_encoder(path)


def test_huggingface_directory_without_weights(make_config, checkpoints):
    path, _ = checkpoints.huggingface(make_config())
    (path / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="no model.safetensors or pytorch_model.bin"):
        load_encoder(path)


# ---------------------------------------------------------------------------------------------
# torchaudio
# ---------------------------------------------------------------------------------------------


def test_torchaudio_state_dict_requires_arch(make_config, checkpoints):
    path, _ = checkpoints.torchaudio(make_config())
    with pytest.raises(ValueError, match="arch="):
        load_encoder(path)


def test_torchaudio_unknown_arch_name(make_config, checkpoints):
    path, _ = checkpoints.torchaudio(make_config())
    with pytest.raises(ValueError, match="Unknown architecture 'wav2vec2_tiny'"):
        load_encoder(path, arch="wav2vec2_tiny")


def test_torchaudio_arch_of_wrong_width_reports_shapes(make_config, checkpoints):
    config = make_config()
    path, _ = checkpoints.torchaudio(config)
    with pytest.raises(ValueError, match=r"intermediate_dense\.weight: checkpoint \(80, 48\) vs encoder \(96, 48\)"):
        load_encoder(path, arch=config.replace(ffn_dims=96).to_dict())


def test_torchaudio_legacy_weight_norm_names(make_config, checkpoints):
    config = make_config("hubert")
    path, _ = checkpoints.torchaudio(config)
    reference = load_encoder(path, arch=config)

    def to_legacy_names(state):
        for new, old in (("original0", "weight_g"), ("original1", "weight_v")):
            state[f"wav2vec2.encoder.transformer.pos_conv_embed.conv.{old}"] = state.pop(
                f"wav2vec2.encoder.transformer.pos_conv_embed.conv.parametrizations.weight.{new}")

    rewrite(path, to_legacy_names)
    assert_same_encoder(load_encoder(path, arch=config), reference)


@pytest.mark.parametrize("model_type", ["wav2vec2", "wavlm"])
def test_own_state_dict_round_trip(model_type, make_config, tmp_path):
    config = make_config(model_type)
    encoder = SSLEncoder(config).eval()
    torch.save(encoder.state_dict(), tmp_path / "encoder.pth")
    assert detect_format(tmp_path / "encoder.pth") == "torchaudio"
    assert_same_encoder(load_torchaudio(tmp_path / "encoder.pth", arch=config), encoder)


def test_torchaudio_arch_preset_with_overrides(make_config, checkpoints):
    config = make_config()
    path, _ = checkpoints.torchaudio(config)
    encoder = load_encoder(path, arch={"preset": "wav2vec2_base", **{
        k: v for k, v in config.to_dict().items() if k != "encoder_dropout"}})
    assert encoder.config.encoder_dropout == get_config("wav2vec2_base").encoder_dropout


# ---------------------------------------------------------------------------------------------
# Paths that are not checkpoints
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path,message", [
    ("facebook/wav2vec2-base", "hub name"),
    ("https://dl.fbaipublicfiles.com/fairseq/wav2vec/wav2vec_small.pt", "is a URL"),
    ("hf://facebook/hubert-base-ls960", "is a URL"),
])
def test_hub_names_and_urls_are_refused(path, message):
    with pytest.raises(ValueError, match=message):
        load_encoder(path)
    with pytest.raises(ValueError, match=message):
        detect_format(path)


@pytest.mark.parametrize("relative", ["missing/model.pt", "exp/wav2vec_small.pth"])
def test_nonexistent_path(relative, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"No such checkpoint file or directory: '{relative}'"):
        load_encoder(relative)
    with pytest.raises(FileNotFoundError, match="No such checkpoint"):
        load_encoder(tmp_path / relative)


def test_directory_without_config_json(tmp_path):
    with pytest.raises(ValueError, match="without config.json"):
        load_encoder(tmp_path)


def test_unreadable_file(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"this is not a torch checkpoint")
    with pytest.raises(ValueError, match="Cannot read checkpoint"):
        load_encoder(path)


@pytest.mark.parametrize("content", [{"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, [torch.zeros(2)]])
def test_unrecognised_content(content, tmp_path):
    path = tmp_path / "other.pt"
    torch.save(content, path)
    with pytest.raises(ValueError, match="Unrecognised checkpoint|not a checkpoint dict"):
        load_encoder(path)
