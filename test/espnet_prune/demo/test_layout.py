"""Where the demo's files are, and the recipe's configs that the layout points to."""

import pytest
import yaml

from espnet_prune.demo import layout
from espnet_prune.demo.settings import System
from espnet_prune.pruning.config import PruningConfig


@pytest.mark.parametrize("task", ["asr", "slu"])
def test_fine_tuning_uses_the_stand_ins_architecture_and_sets_targets_per_system(task):
    conf = layout.RECIPES / f"{task}1" / "conf"
    standin = yaml.safe_load((conf / f"train_{task}_ssl_standin.yaml").read_text())
    finetune = yaml.safe_load((conf / f"train_{task}_pruned_ssl.yaml").read_text())
    assert standin["frontend"] == finetune["frontend"] == "pruned_ssl"
    assert standin["frontend_conf"]["arch"] == finetune["frontend_conf"]["arch"]
    assert "pruning" not in standin["frontend_conf"] and "checkpoint" not in standin["frontend_conf"]
    # run.sh writes the stand-in's encoder where the fine-tuning config loads it from.
    assert finetune["frontend_conf"]["checkpoint"] == f"exp/{task}_ssl_standin/ssl_encoder.pth"
    pruning = finetune["frontend_conf"]["pruning"]
    # The budget is a preset of the repository's conf/pruning; the config sets only the schedule.
    assert pruning["preset"] == "hj_macs0.6"
    assert not {"units", "metric", "target", "cnn_target", "transformer_target"} & set(pruning)
    resolved = PruningConfig.from_dict(pruning).to_dict()
    assert set(resolved["units"]) == {"conv", "head", "attn_layer", "interm", "ffn_layer"}
    assert (resolved["metric"], resolved["target"]) == ("macs", 0.6)
    # Every system's overrides give a valid budget on top of the preset.
    for system in (System("hj_params", 0.5), System("separate", 0.4),
                   System("transformer_only", 0.7)):
        overrides = dict(item.split("=", 1) for item in system.frontend_overrides(10))
        values = {key.split(".", 1)[1]: yaml.safe_load(value) for key, value in overrides.items()}
        resolved = PruningConfig.from_dict({**pruning, **values}).to_dict()
        assert (resolved["target"] is None) == (system.method == "separate")
        assert ("conv" in resolved["units"]) == (system.method != "transformer_only")
    for config in (standin, finetune):
        assert config["model"] == "pruned_espnet" and config["model_conf"]["ctc_weight"] == 1.0
        assert config["scheduler"] == "onecyclelr"
        assert config["best_model_criterion"] == [["valid", "cer_ctc", "min"]]
    decode = yaml.safe_load((conf / f"decode_{task}.yaml").read_text())
    assert decode["ctc_weight"] == 1.0
    for script in ("run.sh", "local/data.sh"):
        assert (conf.parent / script).stat().st_mode & 0o111
    assert (conf.parent / "path.sh").resolve() == layout.TEMPLATE_PRUNE / "path.sh"
    run_sh = (conf.parent / "run.sh").read_text()
    assert f"{task}_config=conf/train_{task}_pruned_ssl.yaml" in run_sh and "../run_recipe.sh" in run_sh


def test_each_model_is_decoded_from_the_trained_or_the_exported_experiment(tmp_path):
    paths = layout.DemoPaths(tmp_path, "slu")
    assert paths.decode_exp("dense") == tmp_path / "exp" / "slu_dense"
    assert paths.decode_exp("scratch") == tmp_path / "exp" / "slu_scratch"
    assert paths.decode_exp("hj_macs_0.50") == tmp_path / "exp" / "slu_hj_macs_0.50_pruned"
    # Another seed of an unpruned system is decoded from its own trained experiment too.
    assert paths.decode_exp(System("dense", seed=2).name) == tmp_path / "exp" / "slu_dense_seed2"
    assert paths.decode_exp(System("hj_macs", 0.5, seed=1).name) == tmp_path / "exp" / "slu_hj_macs_0.50_seed1_pruned"
    size = System("hj_macs_multi", targets=(0.8, 0.6)).sizes[1]
    assert paths.decode_dir(size.name, layout.INT8_TAG) == (
        tmp_path / "exp" / "slu_hj_macs_multi_0.80_0.60_pruned" / "target0.60" / "decode_int8" / "test")
    (tmp_path / "exp" / "slu_hj_macs_multi_0.80_0.60").mkdir(parents=True)
    with pytest.raises(layout.DemoError, match="latest.pth does not exist"):
        layout.decode_files(paths, size)
    (tmp_path / "exp" / "slu_hj_macs_multi_0.80_0.60" / "latest.pth").write_text("")
    assert layout.decode_files(paths, size) == (paths.decode_exp(size.name) / "config.yaml",
                                                paths.decode_exp(size.name) / "latest.pth")
