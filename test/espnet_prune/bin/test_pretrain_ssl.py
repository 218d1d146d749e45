"""pretrain_ssl: from Kaldi data dirs to a checkpoint that pruned_ssl fine-tunes from."""

import json

import pytest
import torch
import yaml

from espnet_prune.asr.frontend.pruned_ssl import PrunedSSLFrontend
from espnet_prune.bin.pretrain_ssl import main
from espnet_prune.utils.kaldi_data import Utterance, write_data_dir
from test.espnet_prune.ssl.test_pretrain import tone_sequences
from test.espnet_prune.ssl.tiny import tiny_config


def test_the_checkpoint_loads_into_the_frontend(tmp_path, capsys):
    data = write_data_dir(tmp_path / "audio", [Utterance(f"spk-{i:02d}", "spk", wave, "unused")
                                               for i, wave in enumerate(tone_sequences(8))])
    arch = tiny_config().to_dict()
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({"frontend": "pruned_ssl", "frontend_conf": {"arch": arch}}))
    main(["--arch", str(tmp_path / "train.yaml"), "--data_dir", str(data), "--output_dir", str(tmp_path / "out"),
          "--steps", "4", "--batch_size", "4", "--num_clusters", "6", "--log_every", "2"])
    assert "final masked-prediction loss" in capsys.readouterr().out
    record = json.loads((tmp_path / "out" / "pretrain.json").read_text())
    assert [point["step"] for point in record["curve"]] == [2, 4] and record["num_utterances"] == 8
    assert json.loads((tmp_path / "out" / "ssl_encoder.json").read_text()) == arch
    state = torch.load(tmp_path / "out" / "ssl_encoder.pth", weights_only=True)
    frontend = PrunedSSLFrontend(checkpoint=str(tmp_path / "out" / "ssl_encoder.pth"), arch=arch)
    for key, value in frontend.encoder.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_errors_name_the_problem(tmp_path, capsys):
    data = write_data_dir(tmp_path / "audio", [Utterance("spk-1", "spk", tone_sequences(1)[0], "unused")])
    (data / "wav.scp").write_text("spk-1 sox x.wav -t wav - |\n")
    with pytest.raises(SystemExit):
        main(["--arch", "wav2vec2_base", "--data_dir", str(data), "--output_dir", str(tmp_path / "out")])
    assert "is a piped command" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--arch", "no_such_arch", "--data_dir", str(data), "--output_dir", str(tmp_path / "out")])
    assert "Unknown architecture 'no_such_arch'" in capsys.readouterr().err
