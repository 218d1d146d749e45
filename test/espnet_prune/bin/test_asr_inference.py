"""``ctc_greedy``: the CTC best path against ESPnet's own beam-1 CTC-only decode, and the options it refuses."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from espnet_prune.bin import asr_inference
from espnet_prune.inference import shapes
from espnet_prune.inference.ctc_greedy import best_path
from espnet_prune.utils.kaldi_data import Utterance, read_table, write_data_dir
from test.espnet_prune.ssl.tiny import tiny_config


def test_best_path_merges_repeats_then_drops_blanks_and_sums_the_chosen_log_probs():
    frames = [1, 1, 0, 1, 3, 3, 0, 0, 2, 4]  # 4 plays <sos/eos>, dropped
    log_probs = torch.full((len(frames), 5), -5.0)
    for t, token in enumerate(frames):
        log_probs[t, token] = -0.1 * (t + 1)
    ids, score = best_path(log_probs, blank=0, drop=(4,))
    assert ids == [1, 1, 3, 2]
    assert abs(score - (-0.1 * sum(range(1, 11)))) < 1e-5


@pytest.fixture(scope="module")
def tiny_experiment(tmp_path_factory):
    """A random tiny CTC-only ASR experiment made to look trained: its CTC layer scaled up, so that
    every frame's posterior is peaked, and ``<sos/eos>`` (never a CTC label in training) given no
    probability; and a data directory of four utterances."""
    from espnet2.tasks.asr import ASRTask

    root = tmp_path_factory.mktemp("ctc_greedy")
    config = shapes.train_config("ctc", tiny_config().to_dict(), vocabulary=12, small=True)
    train_config = shapes.write_train_config(config, root / "exp" / "config.yaml")
    torch.manual_seed(0)
    model, _ = ASRTask.build_model_from_file(str(train_config), None, "cpu")
    with torch.no_grad():
        model.ctc.ctc_lo.weight.mul_(100.0)
        model.ctc.ctc_lo.bias[model.eos] = -1e4
    torch.save(model.state_dict(), root / "exp" / "model.pth")
    rng = np.random.default_rng(0)
    utterances = [Utterance(f"spk-{i}", "spk", (0.3 * rng.standard_normal(4000 + 1500 * i)).clip(-1, 1), "x")
                  for i in range(4)]
    data = write_data_dir(root / "data", utterances)
    return root, train_config, root / "exp" / "model.pth", data


def decode(module, root, train_config, model_file, data, name, *extra):
    output = root / name
    args = ["-m", module, "--output_dir", str(output), "--data_path_and_name_and_type",
            f"{data}/wav.scp,speech,sound", "--asr_train_config", str(train_config), "--asr_model_file",
            str(model_file), "--beam_size", "1", "--ctc_weight", "1.0", "--lm_weight", "0.0", "--batch_size", "1",
            "--ngpu", "0", *extra]
    result = subprocess.run([sys.executable, "-m", "espnet_prune", *args], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return output / "1best_recog", result.stderr


@pytest.mark.slow  # two asr_inference subprocesses
def test_greedy_decode_writes_what_beam_1_writes(tiny_experiment):
    root, train_config, model_file, data = tiny_experiment
    # The launcher runs espnet_prune.bin.asr_inference in place of ESPnet's tool; without
    # ctc_greedy that is ESPnet's beam search.
    beam, beam_log = decode("espnet2.bin.asr_inference", root, train_config, model_file, data, "beam")
    # As the LibriSpeech recipe asks for it: a key of the decode config (asr.sh's --inference_config).
    (root / "decode.yaml").write_text("ctc_greedy: true\nbeam_size: 1\nctc_weight: 1.0\n", encoding="utf-8")
    greedy, greedy_log = decode("espnet2.bin.asr_inference", root, train_config, model_file, data, "greedy",
                                "--config", str(root / "decode.yaml"))
    assert "best path of the CTC posteriors" in greedy_log and "BatchBeamSearch" not in greedy_log.split(
        "best path of the CTC posteriors")[1]
    assert "best path of the CTC posteriors" not in beam_log
    for name in ("text", "token", "token_int"):
        beam_table, greedy_table = read_table(beam / name), read_table(greedy / name)
        assert len(beam_table) == 4
        assert greedy_table == beam_table, name
    assert any(len(value.split()) >= 3 for value in read_table(beam / "token_int").values())
    scores = {key: float(value) for key, value in read_table(greedy / "score").items()}
    assert all(score <= 0.0 for score in scores.values()), scores


@pytest.mark.parametrize("option, value", [("beam_size", 4), ("ctc_weight", 0.3), ("lm_file", "lm.pth"),
                                           ("nbest", 2)])
def test_greedy_refuses_options_it_cannot_honour(option, value):
    kwargs = dict(asr_inference.REQUIRED)
    kwargs[option] = value
    with pytest.raises(ValueError, match=f"ctc_greedy: {option}="):
        asr_inference.check_greedy_options(kwargs)
    asr_inference.check_greedy_options(dict(asr_inference.REQUIRED))


def test_parser_is_espnets_plus_ctc_greedy():
    from espnet2.bin.asr_inference import get_parser as espnet_parser

    ours = {action.dest for action in asr_inference.get_parser()._actions}
    theirs = {action.dest for action in espnet_parser()._actions}
    assert ours - theirs == {"ctc_greedy"}
    assert theirs <= ours
