"""The ``pruned_ssl`` frontend: equivalence with ESPnet's ``s3prl`` frontend, layer selection,
compact round trip, and the configuration errors raised before any training step."""

import pytest
import torch

from espnet_prune import register
from espnet_prune.asr.frontend.pruned_ssl import PrunedSSLFrontend
from test.espnet_prune.asr.recipe_steps import TINY_ARCH, training_config
from test.espnet_prune.ssl.tiny import tiny_config


@pytest.fixture
def batch():
    torch.manual_seed(0)
    return torch.randn(2, 8000), torch.tensor([8000, 5600])


def valid(features, lengths):
    """Features of valid frames only, as a list per utterance."""
    return [features[i, :n] for i, n in enumerate(lengths.tolist())]


@pytest.mark.parametrize("multilayer_feature", [False, True])
def test_matches_espnets_s3prl_frontend_on_the_same_checkpoint(checkpoints, multilayer_feature):
    from espnet2.asr.frontend.s3prl import S3prlFrontend

    config = tiny_config("wav2vec2")
    path, _ = checkpoints.s3prl(config)
    ours = PrunedSSLFrontend(fs="16k", checkpoint=str(path), multilayer_feature=multilayer_feature).eval()
    theirs = S3prlFrontend(fs=16000, frontend_conf={"upstream": "wav2vec2_local", "path_or_url": str(path)},
                           multilayer_feature=multilayer_feature).eval()
    assert ours.output_size() == theirs.output_size()
    # One utterance at a time: s3prl derives fairseq's padding mask from samples (see test_equivalence).
    for length in (8000, 5600):
        speech = torch.randn(1, length)
        with torch.no_grad():
            expected, expected_lengths = theirs(speech, torch.tensor([length]))
            actual, actual_lengths = ours(speech, torch.tensor([length]))
        frames = int(actual_lengths)
        assert frames == actual.shape[1] == ours.encoder.feature_extractor(speech, None)[0].shape[1]
        assert (actual - expected[:, :frames]).abs().max() < 1e-4
        # s3prl reports ceil(samples / hop) frames, repeating the last computed frame to get there.
        assert int(expected_lengths) == -(-length // ours.hop_length)
        assert torch.equal(expected[:, frames:], expected[:, frames - 1:frames].expand_as(expected[:, frames:]))


def test_layer_selects_a_hidden_state(batch):
    frontend = PrunedSSLFrontend(arch=TINY_ARCH, layer=1).eval()
    with torch.no_grad():
        features, lengths = frontend(*batch)
        hidden, frames = frontend.encoder(*batch)
    assert torch.equal(features, hidden[1]) and torch.equal(lengths, frames)
    assert frontend.output_size() == TINY_ARCH["embed_dim"]


def test_compact_frontend_matches_gated_and_reloads_from_its_state_dict(batch):
    torch.manual_seed(0)
    pruning = {"units": ["conv", "head", "interm", "ffn_layer"], "target": 0.5}
    frontend = PrunedSSLFrontend(arch=TINY_ARCH, pruning=pruning)
    with torch.no_grad():
        for p in frontend.controller.gate_parameters():
            p.normal_(0.0, 3.0)
    frontend.eval()
    with torch.no_grad():
        gated, _ = frontend(*batch)
    structures = frontend.make_compact()
    assert structures["after"] != structures["before"]
    with torch.no_grad():
        compact, lengths = frontend(*batch)
    for g, c in zip(valid(gated, lengths), valid(compact, lengths)):
        assert (g - c).abs().max() < 1e-4

    # A frontend built from the unchanged config rebuilds the compact structure on load.
    fresh = PrunedSSLFrontend(arch=TINY_ARCH, pruning=pruning)
    fresh.load_state_dict(frontend.state_dict())
    fresh.eval()
    assert fresh.controller is None
    assert fresh.encoder.config == frontend.encoder.config
    with torch.no_grad():
        reloaded, _ = fresh(*batch)
    assert torch.equal(reloaded, compact)


def test_a_state_dict_that_does_not_fit_is_refused():
    frontend = PrunedSSLFrontend(arch=TINY_ARCH)
    state = frontend.state_dict()
    del state["encoder.encoder.feature_projection.projection.weight"]
    with pytest.raises(RuntimeError, match="missing keys.*feature_projection.projection.weight"):
        frontend.load_state_dict(state, strict=False)


def test_a_gated_checkpoint_of_an_older_version_without_the_previous_gaps_loads():
    frontend = PrunedSSLFrontend(arch=TINY_ARCH, pruning={"target": 0.8})
    state = frontend.state_dict()
    del state["controller.previous_expected_gaps"]  # not saved before the controller kept it
    frontend.load_state_dict(state, strict=False)  # as ESPnet loads model files
    assert torch.isnan(frontend.controller.previous_expected_gaps).all()
    state = frontend.state_dict()
    del state["controller.lambda_1.total"]  # other missing controller keys are still refused
    with pytest.raises(RuntimeError, match=r"missing keys \['controller.lambda_1.total'\]"):
        frontend.load_state_dict(state, strict=False)


@pytest.mark.parametrize("kwargs, message", [
    (dict(pruning={"units": ["conv", "channels"], "target": 0.5}), "Unknown pruning unit"),
    (dict(pruning={"target": 1.2}), r"\(0, 1\]"),
    (dict(pruning={"target": 0.0}), r"\(0, 1\]"),
    (dict(pruning={"target": 0.5, "cnn_target": 0.5}), "exclusive"),
    (dict(pruning={"units": ["head"]}), "needs a budget"),
    (dict(pruning={"target": 0.5, "taget": 0.3}), "Unknown key.*taget"),
    (dict(pruning={"target": 0.5, "reg_lr": 0}), "reg_lr"),
    (dict(pruning={"target": 0.5, "lambda2_lr_scale": -1}), "lambda2_lr_scale"),
    (dict(fs="8k"), "16000 Hz"),
    (dict(layer=5), "out of range"),
    (dict(layer=1, multilayer_feature=True), "multilayer_feature"),
])
def test_bad_frontend_config_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PrunedSSLFrontend(arch=TINY_ARCH, **kwargs)


def test_arch_values_are_typed_when_the_frontend_is_built(batch):
    """What PyYAML gives for ``layer_norm_eps: 1e-5`` (the string '1e-5') is the number; a quoted
    number is refused by name (it used to fail in the first forward pass, or in nn.Dropout)."""
    frontend = PrunedSSLFrontend(arch={**TINY_ARCH, "layer_norm_eps": "1e-5", "encoder_dropout": "1e-1"})
    assert (frontend.encoder.config.layer_norm_eps, frontend.encoder.config.encoder_dropout) == (1e-5, 0.1)
    features, _ = frontend(*batch)
    assert torch.isfinite(features).all()
    with pytest.raises(ValueError, match=r"arch\.encoder_dropout must be a number, got str '0\.1' \(a quoted number"):
        PrunedSSLFrontend(arch={**TINY_ARCH, "encoder_dropout": "0.1"})


def test_missing_checkpoint_and_missing_arch_are_rejected(tmp_path):
    with pytest.raises((ValueError, FileNotFoundError), match="No such checkpoint.*wav2vec_small.pt"):
        PrunedSSLFrontend(checkpoint=str(tmp_path / "wav2vec_small.pt"))
    with pytest.raises(ValueError, match="'checkpoint'.*'arch'"):
        PrunedSSLFrontend()


def build_asr_model(config):
    """ESPnet's own ``ASRTask.build_model`` on a training config (defaults for the rest)."""
    import argparse

    register()
    from espnet2.tasks.asr import ASRTask

    args = vars(ASRTask.get_parser().parse_args([]))
    args.update(config)
    args.update(token_list=["<blank>", "<unk>", "a", "b", "<sos/eos>"], input_size=None)
    return ASRTask.build_model(argparse.Namespace(**args))


def test_pruning_with_a_model_that_ignores_the_loss_is_refused_before_training():
    register()
    from espnet2.tasks.asr import ASRTask

    model = build_asr_model(training_config({"target": 0.5}, model="espnet"))
    args = ASRTask.get_parser().parse_args(["--output_dir", "unused"])
    with pytest.raises(ValueError, match="model: pruned_espnet"):
        ASRTask.build_optimizers(args, model)


def test_optimizer_gives_the_gates_their_own_learning_rate():
    register()
    from espnet2.tasks.asr import ASRTask

    model = build_asr_model(training_config({"target": 0.5, "reg_lr": 0.07, "lambda2_lr_scale": 3, "warmup_steps": 0}))
    args = ASRTask.get_parser().parse_args(["--output_dir", "unused", "--optim", "adamw", "--optim_conf", "lr=0.001",
                                            "--optim_conf", "weight_decay=0.01"])
    (optimizer,) = ASRTask.build_optimizers(args, model)
    weights, gates = optimizer.param_groups
    controller = model.frontend.controller
    assert {id(p) for p in gates["params"]} == {id(p) for p in controller.gate_parameters()}
    assert gates["lr"] == 0.07 and gates["weight_decay"] == 0.0
    assert weights["lr"] == 0.001 and weights["weight_decay"] == 0.01
    # The multipliers are in no group: the step hook moves them.
    multipliers = controller.lagrangian_parameters()
    assert len(weights["params"]) + len(gates["params"]) + len(multipliers) == len(list(model.parameters()))
    # Each real optimizer step moves the multipliers (at reg_lr, lambda2 3 times faster, for a
    # gap above GAP_SCALE) and the pruning schedule by one, and a scheduler that rescales
    # learning rates leaves the gates at theirs.
    for group in optimizer.param_groups:
        group["lr"] *= 0.5
    loss, _ = controller.regularization()
    (loss + sum(p.sum() for p in controller.gate_parameters())).backward()
    optimizer.step()
    assert int(controller.step) == 1
    assert gates["lr"] == 0.07 and weights["lr"] == 0.0005
    assert float(controller.lambda_1["total"]) == pytest.approx(0.07)
    assert float(controller.lambda_2["total"]) == pytest.approx(0.21)
    # Models without pruning get ESPnet's optimizer unchanged.
    plain = build_asr_model(training_config(None, model="espnet"))
    (optimizer,) = ASRTask.build_optimizers(args, plain)
    assert len(optimizer.param_groups) == 1


@pytest.mark.parametrize("layer_norm_first", [False, True])
def test_layers_above_the_chosen_one_are_not_built_computed_or_counted(batch, layer_norm_first):
    from espnet_prune.ssl import cost
    from espnet_prune.ssl.model import SSLEncoder

    arch = dict(TINY_ARCH, num_layers=3, layer_norm_first=layer_norm_first)
    torch.manual_seed(0)
    full = PrunedSSLFrontend(arch=arch).eval()
    frontend = PrunedSSLFrontend(arch=arch, layer=1, pruning={"target": 0.5}).eval()
    assert frontend.encoder.config.num_layers == 1
    assert not any(".layers.1." in name or ".layers.2." in name for name in frontend.state_dict())
    # Same weights as the full encoder's first layer: the output is the full encoder's hidden state 1.
    frontend.encoder.load_state_dict({k: v for k, v in full.encoder.state_dict().items()
                                      if k in frontend.encoder.state_dict()})
    frontend.controller = None
    with torch.no_grad():
        hidden, _ = full.encoder(*batch)
        features, _ = frontend(*batch)
    assert torch.equal(features, hidden[1])
    # The pruning cost is that of the one layer that exists.
    controller = PrunedSSLFrontend(arch=arch, layer=1, pruning={"target": 0.5}).controller
    assert controller.dense_cost["total"] == pytest.approx(cost.count_macs(frontend.encoder.config, 10.0)["total"])
    assert controller.dense_cost["total"] < cost.count_macs(full.encoder.config, 10.0)["total"]
    assert set(controller.gates["head"]) == {"0"}
    assert isinstance(frontend.encoder, SSLEncoder)


def test_layer_zero_with_transformer_units_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"layer=0.*use units: \[conv\]"):
        PrunedSSLFrontend(arch=TINY_ARCH, layer=0, pruning={"target": 0.5})
    frontend = PrunedSSLFrontend(arch=TINY_ARCH, layer=0, pruning={"target": 0.5, "units": ["conv"]})
    assert frontend.encoder.config.num_layers == 0


def test_an_utterance_shorter_than_the_receptive_field_is_padded_with_a_counted_warning(caplog):
    torch.manual_seed(0)
    frontend = PrunedSSLFrontend(arch=TINY_ARCH, pruning={"target": 0.5}).train()
    field = frontend.encoder.receptive_field
    assert field == 400
    speech = torch.randn(3, 6000)
    speech[1, 200:] = 0.0
    speech[2, 300:] = 7.0  # whatever the batch was padded with, the short utterance gets silence
    lengths = torch.tensor([6000, 200, 300])
    with caplog.at_level("WARNING"):
        features, frames = frontend(speech, lengths)
    assert frames.tolist()[1:] == [1, 1] and frames[0] > 1
    features.sum().backward()
    assert frontend.num_padded_utterances == 2
    assert "2 utterance(s) so far were shorter than the encoder's receptive field of 400 samples" in caplog.text
    # The short utterances are computed as if padded with zeros to the receptive field.
    frontend.eval()
    with torch.no_grad():
        alone, _ = frontend(speech[2:, :300], torch.tensor([300]))
        padded = torch.zeros(1, 400)
        padded[0, :300] = speech[2, :300]
        expected, _ = frontend.encoder(padded, torch.tensor([400]), frontend.controller())
    assert torch.equal(alone, expected[-1])
    # A whole batch shorter than the receptive field (no lengths) works too.
    with torch.no_grad():
        features, frames = frontend(torch.randn(2, 250), None)
    assert features.shape[1] == 1 and frames is None
