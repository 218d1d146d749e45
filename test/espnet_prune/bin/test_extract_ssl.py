"""extract_ssl: the SSL encoder of a trained pruned_ssl experiment, saved to fine-tune from."""

import json

import pytest
import torch
import yaml

from espnet_prune.bin.extract_ssl import main
from espnet_prune.ssl.extract import extract_ssl
from espnet_prune.ssl.load import load_encoder
from espnet_prune.ssl.model import SSLEncoder
from test.espnet_prune.ssl.tiny import tiny_config


def experiment(tmp_path, frontend="pruned_ssl"):
    torch.manual_seed(0)
    encoder = SSLEncoder(tiny_config())
    arch = tiny_config().to_dict()
    state = {f"frontend.encoder.{key}": value for key, value in encoder.state_dict().items()}
    state["ctc.ctc_lo.weight"] = torch.zeros(3, 4)
    torch.save(state, tmp_path / "valid.cer_ctc.best.pth")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"frontend": frontend, "frontend_conf": {"arch": arch}}))
    return encoder, arch


def test_the_encoder_is_saved_and_loads_as_a_checkpoint(tmp_path):
    encoder, arch = experiment(tmp_path)
    output = tmp_path / "ssl" / "ssl_encoder.pth"
    assert extract_ssl(tmp_path, output) == len(encoder.state_dict())
    assert json.loads(output.with_suffix(".json").read_text()) == arch
    loaded = load_encoder(str(output), arch=arch)
    for key, value in encoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_errors_name_the_problem(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="valid.cer_ctc.best.pth does not exist"):
        extract_ssl(tmp_path, tmp_path / "out.pth")
    experiment(tmp_path, frontend="s3prl")
    with pytest.raises(ValueError, match="frontend is 's3prl', not pruned_ssl"):
        extract_ssl(tmp_path, tmp_path / "out.pth")
    with pytest.raises(SystemExit) as exit_info:
        main(["--exp_dir", str(tmp_path), "--output", str(tmp_path / "out.pth")])
    assert exit_info.value.code == 1 and "not pruned_ssl" in capsys.readouterr().err
