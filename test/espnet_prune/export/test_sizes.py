"""``pruning_sizes``: whether a training config prunes, and to which sizes."""

import pytest
import yaml

from espnet_prune.export.sizes import no_pruning_reason, pruning_sizes, size_names


def config(pruning=None, frontend="pruned_ssl"):
    conf = {"frontend": frontend, "frontend_conf": {"arch": "wav2vec2_base"}}
    if pruning is not None:
        conf["frontend_conf"]["pruning"] = pruning
    return conf


def test_configs_without_pruning_have_no_sizes():
    assert pruning_sizes(config(frontend="s3prl", pruning={"target": 0.5})) == []
    assert pruning_sizes(config()) == [] and pruning_sizes(config({})) == []
    assert no_pruning_reason(config(frontend="s3prl")) == "frontend is 's3prl', not pruned_ssl"
    with pytest.raises(ValueError, match="neither frontend_conf nor model_conf has pruning; nothing to export"):
        pruning_sizes(config(), required=True)


def test_one_size_and_several():
    assert pruning_sizes(config({"target": 0.7})) == [{"total": 0.7}]
    assert size_names(config({"cnn_target": 0.5, "transformer_target": 0.7})) == ["cnn0.50_transformer0.70"]
    assert size_names(config({"targets": [0.8, 0.6]})) == ["target0.80", "target0.60"]


def test_a_whole_model_budget_prunes_and_null_is_its_baseline():
    """model_conf.pruning (the whole model) decides alone; ``--model_conf pruning=null`` turns it off."""
    whole = {**config(), "model": "pruned_espnet", "model_conf": {"ctc_weight": 0.3, "pruning": {"target": 0.5}}}
    assert pruning_sizes(whole) == [{"total": 0.5}] and no_pruning_reason(whole) is None
    whole["model_conf"]["pruning"] = {"preset": "hj_macs0.6", "targets": [0.8, 0.6]}
    assert size_names(whole) == ["target0.80", "target0.60"]
    whole["model_conf"]["pruning"] = {"frontend_targets": [0.8, 0.6], "decoder_targets": [0.9, 0.7]}
    assert size_names(whole) == ["frontend0.80_decoder0.90", "frontend0.60_decoder0.70"]
    whole["model_conf"]["pruning"] = None
    assert pruning_sizes(whole) == [] and no_pruning_reason(whole) == "neither frontend_conf nor model_conf has pruning"


def test_a_config_file_and_its_errors(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config({"targets": [0.8, 0.6]})))
    assert size_names(path) == ["target0.80", "target0.60"]
    path.write_text(yaml.safe_dump(config(frontend="default")))
    with pytest.raises(ValueError, match=rf"{path}: frontend is 'default', not pruned_ssl; nothing to export"):
        pruning_sizes(path, required=True)
    path.write_text("- a list\n")
    with pytest.raises(ValueError, match="not a YAML mapping"):
        pruning_sizes(path)
