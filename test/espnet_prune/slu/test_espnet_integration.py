"""slu.sh stages 10-12 through the launcher with separate CNN/Transformer budgets, size as the
metric and gradient accumulation: train, export, and decode the compact model."""

import json
import re
import subprocess
import sys

import pytest

from espnet_prune import register
from test.espnet_prune.asr.recipe_steps import NO_PLOTS, collect_stats, decode, train, training_config, write_config

EPOCHS, STEPS_PER_EPOCH, ACCUM_GRAD = 2, 100, 2  # 100 optimizer steps
#: End-to-end (ESPnet training runs): deselected by ``pytest -m "not slow"``, run by ``make test``.
pytestmark = pytest.mark.slow

PRUNING = {"units": ["conv", "head", "interm", "ffn_layer"], "metric": "params", "cnn_target": 0.7,
           "transformer_target": 0.5, "warmup_steps": 40, "reference_seconds": 2, "reg_lr": 0.1}


@pytest.fixture(scope="module")
def slu_run(tmp_path_factory, slu_corpus):
    work = tmp_path_factory.mktemp("slu_run")
    config = write_config(work / "conf" / "train_slu_pruned.yaml",
                          training_config(PRUNING, batch_size=2, max_epoch=EPOCHS, accum_grad=ACCUM_GRAD,
                                          num_iters_per_epoch=STEPS_PER_EPOCH, **NO_PLOTS))
    stats = collect_stats("slu", work, slu_corpus, config, ["text"])
    exp = work / "exp" / "slu_pruned"
    train("slu", work, slu_corpus, config, stats, ["text"], exp)
    compact = exp / "valid.acc.ave.pruned.pth"
    subprocess.run([sys.executable, "-m", "espnet_prune.bin.export", "--train_config", exp / "config.yaml",
                    "--model_file", exp / "valid.acc.ave.pth", "--output", compact], check=True, cwd=work)
    return {"work": work, "exp": exp, "data": slu_corpus, "compact": compact,
            "log": (work / "slu_pruned.log").read_text(encoding="utf-8")}


def test_train_log_reports_both_budgets(slu_run):
    for budget in ("cnn", "transformer"):
        for key in ("expected", "target", "lambda1", "lambda2"):
            assert re.search(rf"prune_{key}_{budget}=[-0-9.e]+", slu_run["log"]), (key, budget)


def test_schedule_counts_optimizer_steps_not_batches(slu_run):
    register()
    from espnet2.tasks.slu import SLUTask

    model, _ = SLUTask.build_model_from_file(str(slu_run["exp"] / "config.yaml"),
                                             str(slu_run["exp"] / f"{EPOCHS}epoch.pth"), "cpu")
    assert int(model.frontend.controller.step) == EPOCHS * STEPS_PER_EPOCH // ACCUM_GRAD


def test_export_detects_the_slu_task_and_shrinks_both_parts(slu_run):
    report = json.loads(slu_run["compact"].with_suffix(".json").read_text(encoding="utf-8"))
    assert report["task"] == "slu"
    ratio = report["encoder"]["ratio"]["params"]
    assert ratio["cnn"] < 1.0 and ratio["transformer"] < 1.0


def test_compact_model_decodes_what_the_gated_model_decodes(slu_run):
    work, exp, valid = slu_run["work"], slu_run["exp"], slu_run["data"]["valid"]
    gated = decode("slu", work, valid, exp / "config.yaml", exp / "valid.acc.ave.pth", work / "decode_gated")
    compact = decode("slu", work, valid, exp / "config.yaml", slu_run["compact"], work / "decode_compact")
    assert len(gated) == 4 and gated == compact
