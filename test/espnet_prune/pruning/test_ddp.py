"""Distributed training through ESPnet's own code path: ``torchrun`` (env init) of the launcher,
two CPU ranks with gloo, ESPnet's trainer and DDP; and the shapes ESPnet's ``ngpu > 1``
gather path needs.

The DDP run uses an encoder with LayerDrop (ranks skip different layers) and ``layer`` below the
last (layers above it are not built), the two cases that break DDP when parameters get no gradient.
"""

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from espnet_prune import register
from test.espnet_prune.asr.recipe_steps import TINY_ARCH, token_args, training_config, write_config

REPO = Path(__file__).parents[3]
CHARS = "abcde"
PRUNING = {"units": ["conv", "head", "interm"], "target": 0.5, "warmup_steps": 4, "reference_seconds": 1,
           "reg_lr": 0.1}
#: Three layers; the frontend outputs layer 2 (layer 3 is not built); LayerDrop on what is left.
ARCH = dict(TINY_ARCH, num_layers=3, layer_drop=0.5)
ITERS, FIRST_EPOCHS, TOTAL_EPOCHS = 3, 2, 3
SHORT = 200  # samples


def write_corpus(root: Path, num_utts: int, seed: int, num_short: int = 2):
    """Noise waveforms (0.3-0.5 s) with random character transcripts, in ESPnet's data layout; the
    first ``num_short`` utterances have 200 samples (below the CNN's 400-sample receptive field)."""
    import soundfile

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    wav_scp, text = [], []
    for i in range(num_utts):
        key = f"utt{i:02d}"
        path = root / f"{key}.wav"
        samples = SHORT if i < num_short else int(rng.integers(4800, 8000))
        soundfile.write(path, 0.1 * rng.standard_normal(samples).astype(np.float32), 16000)
        wav_scp.append(f"{key} {path}")
        text.append(f"{key} " + "".join(rng.choice(list(CHARS), size=int(rng.integers(2, 5)))))
    (root / "wav.scp").write_text("\n".join(wav_scp) + "\n")
    (root / "text").write_text("\n".join(text) + "\n")
    return root


def torchrun(work: Path, config: Path, output_dir: Path, max_epoch: int) -> str:
    train, valid = work / "train", work / "valid"
    args = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "espnet_prune", "-m", "test.espnet_prune.pruning.ddp_probe",
        "--ngpu", "0", "--multiprocessing_distributed", "false", "--dist_backend", "gloo",
        *map(str, token_args(work / "tokens.txt")),
        "--train_data_path_and_name_and_type", f"{train}/wav.scp,speech,sound",
        "--train_data_path_and_name_and_type", f"{train}/text,text,text",
        "--valid_data_path_and_name_and_type", f"{valid}/wav.scp,speech,sound",
        "--valid_data_path_and_name_and_type", f"{valid}/text,text,text",
        "--train_shape_file", f"{train}/wav.scp", "--valid_shape_file", f"{valid}/wav.scp",
        "--config", str(config), "--output_dir", str(output_dir), "--resume", "true",
        "--max_epoch", str(max_epoch), "--frontend_conf", "fs=16k",
        # Per-epoch plots take seconds each on a loaded CPU; they are not what is tested.
        "--use_matplotlib", "false", "--use_tensorboard", "false",
    ]
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    import os

    result = subprocess.run(args, cwd=work, env={**os.environ, **env}, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    (output_dir.parent / f"{output_dir.name}.{max_epoch}.log").write_text(output)
    assert result.returncode == 0, output[-6000:]
    return output


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    work = tmp_path_factory.mktemp("ddp")
    write_corpus(work / "train", 8, seed=0)
    write_corpus(work / "valid", 4, seed=1)
    (work / "tokens.txt").write_text("\n".join(["<blank>", "<unk>", *CHARS, "<sos/eos>"]) + "\n")
    conf = training_config(PRUNING, batch_size=4, num_iters_per_epoch=ITERS, normalize=None)
    conf["frontend_conf"].update(arch=ARCH, layer=2)
    config = write_config(work / "train_ddp.yaml", conf)
    exp = work / "exp"
    start = time.perf_counter()
    first = torchrun(work, config, exp, FIRST_EPOCHS)
    first_ranks = [torch.load(exp / f"rank{r}.pt") for r in range(2)]
    resumed_from = torch.load(exp / "checkpoint.pth", weights_only=False)  # what the next run resumes from
    first_seconds = time.perf_counter() - start
    second = torchrun(work, config, exp, TOTAL_EPOCHS)
    ranks = [torch.load(exp / f"rank{r}.pt") for r in range(2)]
    print(f"\nDDP runs: {first_seconds:.1f} s for {FIRST_EPOCHS} epochs, "
          f"{time.perf_counter() - start - first_seconds:.1f} s for the resumed epoch")
    return {"exp": exp, "first": first, "second": second, "first_ranks": first_ranks, "ranks": ranks,
            "resumed_from": resumed_from, "work": work}


@pytest.mark.slow
def test_both_ranks_end_with_identical_controller_and_model_state(ddp_run):
    for ranks in (ddp_run["first_ranks"], ddp_run["ranks"]):
        zero, one = ranks
        assert zero["world_size"] == one["world_size"] == 2
        assert set(zero["controller"]) == set(one["controller"])
        names = [k for k in zero["controller"] if "log_alpha" in k or "lambda" in k or k == "step"]
        assert any("log_alpha" in k for k in names) and "lambda_1.total" in names and "lambda_2.total" in names
        for name, value in zero["controller"].items():
            assert torch.equal(value, one["controller"][name]), name
        for name, value in zero["model"].items():
            assert torch.equal(value, one["model"][name]), name
    # The gates and multipliers moved: the equality is not that of an untouched initial state.
    zero = ddp_run["ranks"][0]["controller"]
    assert float(zero["lambda_1.total"]) != 0.0 and float(zero["lambda_2.total"]) != 0.0


@pytest.mark.slow
def test_layerdrop_runs_with_espnets_unused_parameters_option_and_layers_above_are_not_built(ddp_run):
    for rank in ddp_run["ranks"]:
        assert rank["unused_parameters"] is True
        assert rank["num_layers"] == 2
        assert not any(".layers.2." in k for k in rank["model"])
    import yaml

    assert yaml.safe_load((ddp_run["exp"] / "config.yaml").read_text())["unused_parameters"] is True
    assert "setting --unused_parameters true" in ddp_run["first"]


def epoch_losses(log: str):
    return {int(e): float(v) for e, v in re.findall(r"(\d+)epoch results: \[train\] .*?\bloss=([-0-9.e+]+)", log)}


@pytest.mark.slow
def test_loss_is_finite_and_decreases(ddp_run):
    losses = {**epoch_losses(ddp_run["first"]), **epoch_losses(ddp_run["second"])}
    assert sorted(losses) == list(range(1, TOTAL_EPOCHS + 1)), losses
    assert all(np.isfinite(v) for v in losses.values())
    assert losses[TOTAL_EPOCHS] < losses[1], losses


@pytest.mark.slow
def test_resume_continues_the_schedule_on_every_rank(ddp_run):
    assert "The training was resumed" in ddp_run["second"] or "resumed from" in ddp_run["second"].lower()
    first_steps = [int(r["controller"]["step"]) for r in ddp_run["first_ranks"]]
    steps = [int(r["controller"]["step"]) for r in ddp_run["ranks"]]
    assert first_steps == [FIRST_EPOCHS * ITERS] * 2
    assert steps == [TOTAL_EPOCHS * ITERS] * 2
    # The resumed run started from the first run's final state (the checkpoint ESPnet resumes
    # from holds it, with the optimizer's state) and moved on from there.
    checkpoint = ddp_run["resumed_from"]
    first = ddp_run["first_ranks"][0]["model"]
    assert all(torch.equal(checkpoint["model"][k].cpu(), first[k]) for k in first)
    assert checkpoint["reporter"]["epoch"] == FIRST_EPOCHS
    assert len(checkpoint["optimizers"][0]["param_groups"]) == 2  # weights, gates (the multipliers are state)
    last = ddp_run["ranks"][0]["controller"]
    assert not torch.equal(last["lambda_1.total"], ddp_run["first_ranks"][0]["controller"]["lambda_1.total"])


@pytest.mark.slow
def test_short_utterances_neither_stop_training_nor_decoding(ddp_run):
    from test.espnet_prune.asr.recipe_steps import decode

    assert "were shorter than the encoder's receptive field of 400 samples" in ddp_run["first"]
    work, exp = ddp_run["work"], ddp_run["exp"]
    hypotheses = decode("asr", work, work / "valid", exp / "config.yaml", exp / "valid.acc.best.pth",
                        work / "decode_valid")
    log = (work / "decode_valid.log").read_text()
    assert "were shorter than the encoder's receptive field" in log
    # Every utterance has a hypothesis, the short ones (one encoder frame) included.
    assert set(hypotheses) == {"utt00", "utt01", "utt02", "utt03"}, hypotheses


def test_pruning_stats_have_the_shape_of_espnets_own_for_the_ngpu_gather_path():
    """``ngpu > 1``: DataParallel gathers each replica's ``(1,)`` stats to ``(ngpu,)`` and ESPnet's
    ``recursive_average`` weights them with the ``(ngpu,)`` batch sizes; every stat must fit."""
    register()
    from espnet2.tasks.asr import ASRTask
    from espnet2.torch_utils.recursive_op import recursive_average

    args = vars(ASRTask.get_parser().parse_args([]))
    args.update(training_config(PRUNING))
    args.update(token_list=["<blank>", "<unk>", *CHARS, "<sos/eos>"], input_size=None)
    model = ASRTask.build_model(argparse.Namespace(**args)).train()
    torch.manual_seed(0)
    replicas = []
    for batch in (2, 3):  # two "GPUs" with unequal shares of the batch
        speech = torch.randn(batch, 6000)
        text = torch.randint(2, 2 + len(CHARS), (batch, 3))
        loss, stats, weight = model(speech, torch.full((batch,), 6000), text, torch.full((batch,), 3))
        assert loss.shape == weight.shape == (1,)
        for name in ("loss_prune", "loss_task", "prune_expected_total", "prune_lambda1_total"):
            assert stats[name].shape == (1,), (name, stats[name].shape)
        assert {v.shape for v in stats.values() if v is not None} == {torch.Size([1])}
        replicas.append((loss, stats, weight))
    # What DataParallel's gather returns, then ESPnet's trainer's own averaging.
    stats = {k: torch.cat([r[1][k] for r in replicas]) for k in replicas[0][1] if replicas[0][1][k] is not None}
    weight = torch.cat([r[2] for r in replicas])
    averaged, total = recursive_average(stats, weight, distributed=False)
    assert int(total) == 5
    expected = sum(float(r[1]["loss_task"]) * int(r[2]) for r in replicas) / 5
    assert float(averaged["loss_task"]) == pytest.approx(expected)


@pytest.mark.parametrize("layer_drop, distributed, expected", [(0.1, True, True), (0.0, True, False),
                                                               (0.1, False, False)])
def test_unused_parameters_is_set_only_for_layerdrop_under_ddp(layer_drop, distributed, expected):
    register()
    from espnet2.tasks.asr import ASRTask

    args = vars(ASRTask.get_parser().parse_args([]))
    args.update(training_config(PRUNING))
    args["frontend_conf"] = dict(args["frontend_conf"], arch=dict(TINY_ARCH, layer_drop=layer_drop))
    args.update(token_list=["<blank>", "<unk>", *CHARS, "<sos/eos>"], input_size=None)
    args = argparse.Namespace(**args)
    model = ASRTask.build_model(args)
    args.distributed = distributed
    ASRTask.build_optimizers(args, model)
    assert args.unused_parameters is expected
