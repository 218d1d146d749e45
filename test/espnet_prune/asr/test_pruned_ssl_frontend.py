"""The ``pruned_ssl`` frontend: equivalence with ESPnet's ``s3prl`` frontend, layer selection,
compact round trip, and the configuration errors raised before any training step."""

import pytest
import torch

from espnet_prune import register
from espnet_prune.asr.frontend.pruned_ssl import PrunedSSLFrontend
from espnet_prune.ssl.config import tiny_config
from test.espnet_prune.asr.recipe_steps import TINY_ARCH, training_config


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
