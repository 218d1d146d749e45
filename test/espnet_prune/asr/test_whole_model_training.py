"""Acceptance of the whole-model budget (issue 24): a tiny pruned_ssl + pruned Conformer + pruned
Transformer decoder model trains through ESPnet's trainer (asr.sh stage 11 through the launcher)
with ``model_conf.pruning`` at 0.5 of the whole decode's MACs, lands within ``BUDGET_TOLERANCE`` of
it, and its compact standalone experiment decodes (asr_inference, beam search with CTC) exactly
what the gated model decodes."""

import pytest
import torch
import yaml

from espnet_prune import register
from espnet_prune.pruning.reports import BUDGET_TOLERANCE, RUN_LENGTH_PER_WARMUP
from test.espnet_prune.asr.recipe_steps import NO_PLOTS, collect_stats, decode, train, write_config
from test.espnet_prune.asr.test_whole_model import conformer_config

pytestmark = pytest.mark.slow

WARMUP = 60
STEPS = int(RUN_LENGTH_PER_WARMUP * WARMUP)
EPOCHS = 2
TARGET = 0.5
PRUNING = {"target": TARGET, "warmup_steps": WARMUP, "reg_lr": 0.2, "reference_seconds": 2,
           "decoding": {"beam_size": 2, "tokens_per_second": 8, "ctc_weight": 0.3}}


def test_a_whole_model_mac_budget_trains_to_its_target_and_the_compact_model_decodes_the_same(tmp_path, asr_corpus):
    register()
    from espnet2.tasks.asr import ASRTask
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    from espnet_prune.asr.whole_model import compact_model, compact_train_config

    config = conformer_config(PRUNING, batch_size=2, max_epoch=EPOCHS, num_iters_per_epoch=STEPS // EPOCHS,
                              **NO_PLOTS)
    config["model_conf"]["ctc_weight"] = 0.3
    config_path = write_config(tmp_path / "train.yaml", config)
    stats = collect_stats("asr", tmp_path, asr_corpus, config_path, ["text"])
    exp = train("asr", tmp_path, asr_corpus, config_path, stats, ["text"], tmp_path / "exp")
    model_file = exp / f"{EPOCHS}epoch.pth"
    model, _ = ASRTask.build_model_from_file(str(exp / "config.yaml"), str(model_file), "cpu")
    controller = model.controller
    assert int(controller.step) == STEPS
    assert [part.name for part in controller.part.parts] == ["frontend", "encoder", "decoder", "ctc"]
    ratio = controller.eval().deterministic_ratios()["total"]
    assert abs(ratio - TARGET) <= BUDGET_TOLERANCE, ratio

    model.eval()
    structures = compact_model(model)
    assert structures["encoder"]["after"] != structures["encoder"]["before"]
    compact_dir = tmp_path / "compact"
    compact_dir.mkdir()
    trained = yaml.safe_load((exp / "config.yaml").read_text(encoding="utf-8"))
    with open(compact_dir / "config.yaml", "w", encoding="utf-8") as f:
        yaml_no_alias_safe_dump(compact_train_config(trained, model.frontend.encoder.config.to_dict(), structures),
                                f, indent=4, sort_keys=False)
    torch.save(model.state_dict(), compact_dir / "model.pth")

    options = ["--ctc_weight", "0.3", "--beam_size", "2"]
    gated = decode("asr", tmp_path, asr_corpus["valid"], exp / "config.yaml", model_file, tmp_path / "gated", options)
    compact = decode("asr", tmp_path, asr_corpus["valid"], compact_dir / "config.yaml", compact_dir / "model.pth",
                     tmp_path / "compact_decode", options)
    assert compact == gated and any(gated.values())
