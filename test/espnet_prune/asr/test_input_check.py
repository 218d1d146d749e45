"""Utterances with NaN or Inf samples: named in ESPnet's statistics, training and decoding logs,
left out of training batches (the loss is that of the batch without them), and no other
utterance's hypothesis changes."""

import contextlib
import math
import shutil

import numpy as np
import pytest
import soundfile
import torch

from espnet_prune import register
from espnet_prune.asr.input_check import FiniteInputReport, empty_batch_loss, non_finite_rows, split_finite
from test.espnet_prune.asr.recipe_steps import NO_PLOTS, collect_stats, decode, train, training_config, write_config

BAD = "bad-nan-0000"


def test_non_finite_rows_look_only_at_valid_samples():
    speech = torch.zeros(4, 10)
    speech[0, 2] = math.nan
    speech[1, 9] = math.inf  # in the padding of row 1
    speech[3, 0] = -math.inf
    lengths = torch.tensor([10, 5, 10, 10])
    assert non_finite_rows(speech, lengths) == [0, 3]
    assert non_finite_rows(speech, None) == [0, 1, 3]


def test_split_finite_indexes_every_per_utterance_entry():
    speech = torch.arange(12, dtype=torch.float32).view(3, 4)
    speech[1, 0] = math.nan
    batch = dict(speech=speech, speech_lengths=torch.tensor([4, 4, 3]), text=torch.tensor([[1, 2], [3, 4], [5, -1]]),
                 text_lengths=torch.tensor([2, 2, 1]), utt_id=["a", "b", "c"], scalar=torch.tensor(7))
    kept, skipped = split_finite(batch)
    assert skipped == ["b"] and kept["utt_id"] == ["a", "c"] and int(kept["scalar"]) == 7
    assert torch.equal(kept["speech"], speech[[0, 2]]) and kept["text"].tolist() == [[1, 2], [5, -1]]
    assert kept["speech_lengths"].tolist() == [4, 3] and kept["text_lengths"].tolist() == [2, 1]
    same, none = split_finite(dict(speech=torch.zeros(2, 3)))
    assert none == [] and same["speech"].shape == (2, 3)


def test_a_batch_of_only_bad_utterances_gives_a_zero_loss_of_zero_weight():
    model = torch.nn.Linear(3, 2)
    loss, stats, weight = empty_batch_loss(model)
    loss.sum().backward()
    assert float(loss.detach().sum()) == 0.0 and float(weight.sum()) == 0.0 and set(stats) == {"loss"}
    assert torch.equal(model.weight.grad, torch.zeros(2, 3))


def test_the_loader_report_names_the_utterances(caplog):
    good, bad = torch.zeros(1, 8), torch.zeros(1, 8)
    bad[0, 3] = math.nan
    batches = [(["u1"], {"speech": good, "speech_lengths": torch.tensor([8])}),
               (["u2"], {"speech": bad, "speech_lengths": torch.tensor([8])})]
    with caplog.at_level("WARNING"):
        assert list(FiniteInputReport(batches)) == batches
    assert "u2" in caplog.text and "u1" not in caplog.text and "1 utterance(s) had NaN or Inf" in caplog.text


def add_bad_utterance(source, target, samples: int = 16000):
    """Copy the data dir ``source`` to ``target`` with one more utterance, ``BAD``, whose audio
    has a NaN sample (a float WAV can hold one)."""
    shutil.copytree(source, target)
    waveform = np.random.default_rng(0).normal(scale=0.1, size=samples).astype(np.float32)
    waveform[samples // 2] = np.nan
    soundfile.write(target / f"{BAD}.wav", waveform, 16000, subtype="FLOAT")
    text = (target / "text").read_text(encoding="utf-8").splitlines()[0].split(maxsplit=1)[1]
    with open(target / "wav.scp", "a", encoding="utf-8") as f:
        f.write(f"{BAD} {target / f'{BAD}.wav'}\n")
    with open(target / "text", "a", encoding="utf-8") as f:
        f.write(f"{BAD} {text}\n")
    return target


@pytest.mark.slow
def test_espnet_names_and_skips_the_bad_utterance(tmp_path, asr_corpus):
    work = tmp_path
    data = dict(asr_corpus, train=add_bad_utterance(asr_corpus["train"], work / "train"),
                valid=add_bad_utterance(asr_corpus["valid"], work / "valid"))
    config = write_config(work / "conf" / "train.yaml", training_config(
        {"units": ["conv", "head", "interm"], "target": 0.8, "warmup_steps": 4, "reference_seconds": 1},
        max_epoch=1, **NO_PLOTS))
    stats = collect_stats("asr", work, data, config, ["text"])
    assert BAD in (work / "asr_stats.log").read_text(encoding="utf-8")
    exp = train("asr", work, data, config, stats, ["text"], work / "exp")
    log = (work / "exp.log").read_text(encoding="utf-8")
    assert f"whose audio has NaN or Inf samples: {BAD}" in log
    assert "loss=nan" not in log and "acc=nan" not in log  # neither training nor validation statistics

    # The batch's loss is that of the batch without the bad utterance.
    register()
    from espnet2.tasks.asr import ASRTask

    with contextlib.chdir(work):
        model, _ = ASRTask.build_model_from_file(str(exp / "config.yaml"), str(exp / "1epoch.pth"), "cpu")
    model.eval()
    speech, lengths = torch.randn(3, 16000), torch.tensor([16000, 16000, 12000])
    text, text_lengths = torch.tensor([[3, 4, 5], [6, 7, -1], [8, 9, 10]]), torch.tensor([3, 2, 3])
    clean = model(speech[[0, 2]], lengths[[0, 2]], text[[0, 2]], text_lengths[[0, 2]], utt_id=["a", "c"])
    speech[1, 100] = math.nan
    mixed = model(speech, lengths, text, text_lengths, utt_id=["a", "b", "c"])
    assert torch.isfinite(mixed[0]).all() and torch.allclose(mixed[0], clean[0])
    assert float(mixed[2].sum()) == 2

    # Decoding: the bad utterance is named; every other hypothesis is the one without it.
    decoded = decode("asr", work, data["valid"], exp / "config.yaml", exp / "1epoch.pth", work / "decode_bad")
    assert BAD in (work / "decode_bad.log").read_text(encoding="utf-8")
    clean_decode = decode("asr", work, asr_corpus["valid"], exp / "config.yaml", exp / "1epoch.pth",
                          work / "decode_clean")
    assert {key: value for key, value in decoded.items() if key != BAD} == clean_decode and BAD in decoded
