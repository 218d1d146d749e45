"""``model_conf.pruning``: one budget over the model's parts, priced for its decoding."""

import copy

import pytest
import torch

from espnet_prune.pruning.config import DecodingConfig, ModelPruningConfig
from test.espnet_prune.asr.recipe_steps import training_config
from test.espnet_prune.asr.test_pruned_ssl_frontend import build_asr_model


def whole_config(pruning, **overrides):
    config = training_config(None, **overrides)
    config["model_conf"] = {**config["model_conf"], "pruning": pruning}
    return config


def test_a_budget_on_the_frontend_alone_behaves_as_frontend_conf_pruning():
    """Given the same gates and weights: same state keys (under ``frontend.``), costs, ratios,
    Lagrangian and deterministic structure."""
    budget = {"target": 0.5, "units": ["conv", "head", "interm"], "warmup_steps": 0}
    torch.manual_seed(0)
    frontend_only = build_asr_model(training_config(budget))
    torch.manual_seed(0)
    whole = build_asr_model(whole_config({**budget, "parts": ["frontend"]}))
    old, new = frontend_only.frontend.controller, whole.controller
    assert whole.frontend.controller is None
    renamed = {name.replace("gates.", "gates.frontend.", 1): value for name, value in old.state_dict().items()}
    assert list(new.state_dict()) == list(renamed)
    with torch.no_grad():
        for gate in old.gate_parameters():  # gates that differ from their initial value
            gate.normal_(generator=torch.Generator().manual_seed(2))
    new.load_state_dict({name.replace("gates.", "gates.frontend.", 1): value
                         for name, value in old.state_dict().items()})
    assert new.dense_cost["total"] == old.dense_cost["total"]
    old_loss, old_stats = old.regularization()
    new_loss, new_stats = new.regularization()
    assert float(new_loss.detach()) == float(old_loss.detach()) and new_stats == old_stats
    # the same weights decode the same deterministic structure
    whole.load_state_dict({key: value for key, value in frontend_only.state_dict().items()
                           if not key.startswith("frontend.controller.")}, strict=False)
    speech = torch.randn(1, 4000, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([4000])
    with torch.no_grad():
        expected, _ = frontend_only.eval().encode(speech, lengths)
        found, _ = whole.eval().encode(speech, lengths)
    torch.testing.assert_close(found, expected, rtol=0, atol=0)


def test_the_decode_cost_adds_the_ctc_layer_and_its_prefix_scoring_as_fixed_cost():
    model = build_asr_model(whole_config({"target": 0.8, "decoding": {"beam_size": 4, "tokens_per_second": 2.0,
                                                                        "ctc_weight": 0.3},
                                          "reference_seconds": 2.0}))
    controller = model.controller
    assert [part.name for part in controller.part.parts] == ["frontend", "ctc"]
    from espnet_prune.ssl import cost

    config = model.frontend.encoder.config
    frames = cost.frames_for(config, 2.0)  # the transformer encoder with input_layer linear keeps them
    vocab, dim = model.ctc.ctc_lo.out_features, model.ctc.ctc_lo.in_features
    ctc = frames * dim * vocab + 2 * (2.0 * 2.0) * 4 * min(vocab, 6) * frames
    frontend = cost.count_macs(config, 2.0)["total"]
    assert controller.dense_cost["ctc"] == pytest.approx(ctc)
    assert controller.dense_cost["total"] == pytest.approx(frontend + ctc)
    # the floor of a budget over both parts: the CTC cost stays
    assert controller.minimum_ratios()["total"] > ctc / (frontend + ctc) - 1e-9


@pytest.mark.parametrize("pruning, match", [
    ({"target": 0.5, "parts": ["frontend", "joiner"]}, r"model_conf.pruning.parts: Unknown part\(s\) \['joiner'\]"),
    ({"target": 0.5, "decoding": {"beam": 4}}, r"Unknown key\(s\) \['beam'\] in model_conf.pruning.decoding"),
    ({"target": 0.5, "decoding": {"ctc_weight": 1.5}}, r"model_conf.pruning.decoding.ctc_weight must lie in"),
    ({"target": 0.5, "decoding": {"beam_size": 0}}, r"model_conf.pruning.decoding.beam_size must be >= 1"),
    ({"target": 0.5, "target_typo": 1}, r"Unknown key\(s\) \['target_typo'\] in model_conf.pruning"),
    ({"target": 0.5, "units": {"frontend": ["conv", "bogus"]}}, r"units.frontend: Unknown pruning unit"),
    ({"encoder_target": 0.5, "parts": ["frontend"]}, r"encoder_target budgets part 'encoder'"),
    ({"target": 0.5, "frontend_target": 0.5}, r"'target' \(joint budget\) is exclusive"),
])
def test_bad_model_pruning_keys_are_named_before_the_model_is_built(pruning, match):
    with pytest.raises(ValueError, match=match):
        ModelPruningConfig.from_dict(pruning, "model_conf.pruning")


def test_parts_the_model_cannot_prune_and_both_budgets_at_once_are_named_errors():
    with pytest.raises(ValueError, match=r"parts names \['encoder'\], which this model does not have"):
        build_asr_model(whole_config({"target": 0.5, "parts": ["frontend", "encoder"]}))
    both = whole_config({"target": 0.5})
    both["frontend_conf"]["pruning"] = {"target": 0.5}
    with pytest.raises(ValueError, match="model_conf.pruning and frontend_conf.pruning are both set"):
        build_asr_model(both)


def test_separate_budgets_per_part_and_several_sizes():
    config = ModelPruningConfig.from_dict({"frontend_targets": [0.8, 0.6], "encoder_targets": [0.9, 0.7]},
                                          "model_conf.pruning")
    assert config.sizes() == [{"frontend": 0.8, "encoder": 0.9}, {"frontend": 0.6, "encoder": 0.7}]
    assert ModelPruningConfig.from_dict({"target": 0.5}, "m").decoding == DecodingConfig()
    model = build_asr_model(whole_config({"frontend_target": 0.6, "parts": ["frontend", "ctc"]}))
    assert set(model.controller.deterministic_ratios()) == {"frontend"}
    copy.deepcopy(model)
