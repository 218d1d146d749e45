"""Acceptance of the whole-model budget (issue 24): a tiny pruned_ssl + pruned Conformer + pruned
Transformer decoder model trains through ESPnet's trainer (asr.sh stage 11 through the launcher)
with ``model_conf.pruning`` at 0.5 of the whole decode's MACs, lands within ``BUDGET_TOLERANCE`` of
it, exports (``espnet_prune.bin.export --output_dir``), and its compact standalone experiment
decodes (asr_inference, beam search with CTC) exactly what the gated model decodes."""

import contextlib

import pytest
import yaml

from espnet_prune import register
from espnet_prune.bin import export as export_cli
from espnet_prune.export.report import ExportReport
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

    compact_dir = tmp_path / "compact"
    with contextlib.chdir(tmp_path):
        export_cli.main(["--train_config", str(exp / "config.yaml"), "--model_file", str(model_file),
                         "--output_dir", str(compact_dir)])
    report = ExportReport.read(compact_dir / model_file.with_suffix(".json").name)
    assert set(report.downstream) == {"encoder", "decoder"}
    assert report.downstream["encoder"].after != report.downstream["encoder"].before
    assert abs(report.pruning.budgets["total"].exported - TARGET) <= BUDGET_TOLERANCE
    exported = yaml.safe_load((compact_dir / "config.yaml").read_text(encoding="utf-8"))
    assert "pruning" not in exported["model_conf"] and exported["frontend_conf"]["checkpoint"] is None

    options = ["--ctc_weight", "0.3", "--beam_size", "2"]
    gated = decode("asr", tmp_path, asr_corpus["valid"], exp / "config.yaml", model_file, tmp_path / "gated", options)
    compact = decode("asr", tmp_path, asr_corpus["valid"], compact_dir / "config.yaml", compact_dir / model_file.name,
                     tmp_path / "compact_decode", options)
    assert compact == gated and any(gated.values())
