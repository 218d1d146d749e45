"""``frontend_conf`` values as a user writes them, through ESPnet's own ``asr_train`` (asr.sh
stages 10-11 via the launcher): numbers PyYAML leaves as strings train, a wrong type fails by
name before the first step."""

import pytest
import torch
import yaml

from espnet_prune import register
from espnet_prune.utils.recipe_steps import LaunchError
from test.espnet_prune.asr.recipe_steps import NO_PLOTS, TINY_ARCH, collect_stats, train, training_config

#: ESPnet training runs: deselected by ``pytest -m "not slow"``, run by ``make test``.
pytestmark = pytest.mark.slow

PRUNING = {"units": ["conv", "head", "interm"], "target": 0.8, "warmup_steps": 2, "reference_seconds": 2,
           "reg_lr": 0.05}


def config_text(**arch_literals: str) -> str:
    """A tiny training config whose ``arch`` holds ``key: literal`` as a user writes YAML
    (``yaml.safe_dump`` would quote a string, and give a float a dot and an exponent sign)."""
    arch = {**TINY_ARCH, **{key: f"@{key}@" for key in arch_literals}}
    config = training_config({**PRUNING}, batch_size=2, max_epoch=1, num_iters_per_epoch=2, **NO_PLOTS)
    config["frontend_conf"]["arch"] = arch
    text = yaml.safe_dump(config).replace("reg_lr: 0.05", "reg_lr: 5e-2")
    for key, literal in arch_literals.items():
        text = text.replace(f"'@{key}@'", literal)
    return text


def test_numbers_pyyaml_leaves_as_strings_train(tmp_path, asr_corpus):
    text = config_text(layer_norm_eps="1e-5", layer_drop="1e-1")
    loaded = yaml.safe_load(text)["frontend_conf"]
    assert loaded["arch"]["layer_norm_eps"] == "1e-5" and loaded["pruning"]["reg_lr"] == "5e-2"  # what ESPnet gets
    config = tmp_path / "train.yaml"
    config.write_text(text, encoding="utf-8")
    stats = collect_stats("asr", tmp_path, asr_corpus, config, ["text"])
    exp = train("asr", tmp_path, asr_corpus, config, stats, ["text"], tmp_path / "exp")
    assert (exp / "1epoch.pth").is_file()
    register()
    from espnet2.tasks.asr import ASRTask

    model, _ = ASRTask.build_model_from_file(str(exp / "config.yaml"), str(exp / "1epoch.pth"), "cpu")
    encoder_config = model.frontend.encoder.config
    assert (encoder_config.layer_norm_eps, encoder_config.layer_drop) == (1e-5, 0.1)
    assert model.frontend.controller.pruning.reg_lr == 0.05
    assert int(model.frontend.controller.step) == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_wrong_type_fails_by_name_before_the_first_step(tmp_path, asr_corpus):
    config = tmp_path / "train.yaml"
    config.write_text(config_text(encoder_dropout="'0.1'"), encoding="utf-8")
    # The model is built before the data are read: no stage 10 needed to reach the check.
    with pytest.raises(LaunchError, match="failed"):
        train("asr", tmp_path, asr_corpus, config, tmp_path / "no_stats", ["text"], tmp_path / "exp")
    log = (tmp_path / "exp.log").read_text(encoding="utf-8")
    assert ("ValueError: arch.encoder_dropout must be a number, got str '0.1' (a quoted number is a string: "
            "remove the quotes)") in log, log[-3000:]
    assert "1epoch" not in log and not (tmp_path / "exp" / "1epoch.pth").exists()
