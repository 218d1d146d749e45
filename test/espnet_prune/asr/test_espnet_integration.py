"""asr.sh stages 10-12 through the launcher: collect stats, train while pruning, resume,
export the compact model, and decode it with the unchanged config."""

import json
import re
import subprocess
import sys

import pytest
import torch

from espnet_prune import register
from test.espnet_prune.asr.recipe_steps import collect_stats, decode, train, training_config, write_config

#: End-to-end (ESPnet training runs): deselected by ``pytest -m "not slow"``, run by ``make test``.
pytestmark = pytest.mark.slow

TARGET = 0.6
EPOCHS_FIRST, EPOCHS_TOTAL = 2, 4
# 600 optimizer steps: the expected cost has settled at the target by then.
STEPS_PER_EPOCH = 150
PRUNING = {"units": ["conv", "head", "interm"], "metric": "macs", "target": TARGET, "warmup_steps": 300,
           "reference_seconds": 2, "reg_lr": 0.1}


@pytest.fixture(scope="module")
def asr_run(tmp_path_factory, asr_corpus):
    work = tmp_path_factory.mktemp("asr_run")
    config = write_config(work / "conf" / "train_asr_pruned.yaml",
                          training_config(PRUNING, batch_size=2, max_epoch=EPOCHS_FIRST,
                                          num_iters_per_epoch=STEPS_PER_EPOCH))
    stats = collect_stats("asr", work, asr_corpus, config, ["text"])
    exp = work / "exp" / "asr_pruned"
    train("asr", work, asr_corpus, config, stats, ["text"], exp)
    first_log = (work / "asr_pruned.log").read_text(encoding="utf-8")
    # Resume: the same command with more epochs continues from exp/checkpoint.pth.
    train("asr", work, asr_corpus, config, stats, ["text"], exp, extra=["--max_epoch", str(EPOCHS_TOTAL)])
    compact = exp / "valid.acc.ave.pruned.pth"
    subprocess.run([sys.executable, "-m", "espnet_prune.bin.export", "--train_config", exp / "config.yaml",
                    "--model_file", exp / "valid.acc.ave.pth", "--output", compact], check=True, cwd=work)
    return {"work": work, "exp": exp, "data": asr_corpus, "compact": compact, "first_log": first_log,
            "log": (work / "asr_pruned.log").read_text(encoding="utf-8")}


def load_model(exp, model_file):
    register()
    from espnet2.tasks.asr import ASRTask

    model, _ = ASRTask.build_model_from_file(str(exp / "config.yaml"), str(model_file), "cpu")
    return model.eval()


def test_train_log_reports_the_pruning_statistics(asr_run):
    for key in ("loss_prune", "loss_task", "prune_expected_total", "prune_target_total", "prune_lambda1_total",
                "prune_lambda2_total"):
        assert re.search(rf"{key}=[-0-9.e]+", asr_run["log"]), key


def test_tensorboard_has_the_pruning_statistics(asr_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(asr_run["exp"] / "tensorboard" / "train")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"prune_expected_total", "prune_lambda1_total", "loss_prune"} <= tags


def test_resume_continues_the_schedule_and_the_ratio_reaches_the_target(asr_run):
    model = load_model(asr_run["exp"], asr_run["exp"] / f"{EPOCHS_TOTAL}epoch.pth")
    controller = model.frontend.controller
    assert int(controller.step) == EPOCHS_TOTAL * STEPS_PER_EPOCH
    assert "resumed from" in asr_run["log"].lower() or f"{EPOCHS_FIRST + 1}epoch" in asr_run["log"]
    # The Lagrangian steers the structure export keeps (the deterministic mask) to the target.
    ratio = controller.deterministic_ratios()["total"]
    assert abs(ratio - TARGET) < 0.03, ratio


def test_export_writes_a_smaller_model_and_a_report(asr_run):
    report = json.loads(asr_run["compact"].with_suffix(".json").read_text(encoding="utf-8"))
    encoder = report["encoder"]
    assert encoder["after"]["macs"]["total"] < encoder["before"]["macs"]["total"]
    assert encoder["after"]["params"]["total"] < encoder["before"]["params"]["total"]
    assert abs(encoder["ratio"]["macs"]["total"] - TARGET) < 0.1
    assert set(encoder["before"]["macs"]) == {"cnn", "pos_conv", "transformer", "total"}
    assert report["model_params"]["after"] < report["model_params"]["before"]
    assert report["max_abs_diff_gated_vs_compact"] < 1e-4
    gated = load_model(asr_run["exp"], asr_run["exp"] / "valid.acc.ave.pth")
    compact = load_model(asr_run["exp"], asr_run["compact"])
    assert compact.frontend.controller is None
    assert sum(p.numel() for p in compact.parameters()) == report["model_params"]["after"]
    speech = torch.randn(2, 24000)
    lengths = torch.tensor([24000, 17000])
    with torch.no_grad():
        expected, expected_lengths = gated.encode(speech, lengths)
        actual, actual_lengths = compact.encode(speech, lengths)
    assert torch.equal(expected_lengths, actual_lengths)
    assert (expected - actual).abs().max() < 1e-3


def test_compact_model_decodes_what_the_gated_model_decodes(asr_run):
    work, exp, valid = asr_run["work"], asr_run["exp"], asr_run["data"]["valid"]
    gated = decode("asr", work, valid, exp / "config.yaml", exp / "valid.acc.ave.pth", work / "decode_gated")
    compact = decode("asr", work, valid, exp / "config.yaml", asr_run["compact"], work / "decode_compact")
    assert gated.keys() == compact.keys() and len(gated) == 4
    assert gated == compact


def test_pack_bundles_the_compact_model(asr_run):
    """asr.sh stage 15: ``espnet2.bin.pack`` through the launcher."""
    import zipfile

    from test.espnet_prune.asr.recipe_steps import launch

    work, exp = asr_run["work"], asr_run["exp"]
    packed = work / "asr_pruned_packed.zip"
    launch(["-m", "espnet2.bin.pack", "asr", "--asr_train_config", exp / "config.yaml",
            "--asr_model_file", asr_run["compact"], "--outpath", packed], work, work / "pack.log")
    with zipfile.ZipFile(packed) as archive:
        names = archive.namelist()
    assert any(name.endswith("valid.acc.ave.pruned.pth") for name in names), names
    assert any(name.endswith("config.yaml") for name in names), names
