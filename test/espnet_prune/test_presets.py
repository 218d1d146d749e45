"""The shared presets' one home, the top-level conf/: read by the package from a checkout, and
carried by a non-editable install (setup.py copies conf/ into the built package)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from espnet_prune import presets
from espnet_prune.ssl.config import PRESETS, get_config

REPO = Path(__file__).resolve().parents[2]


def test_ssl_presets_are_the_yaml_files_of_conf_ssl():
    files = {path.stem: yaml.safe_load(path.read_text()) for path in (REPO / "conf" / "ssl").glob("*.yaml")}
    assert set(files) == {"wav2vec2_base", "wav2vec2_large", "wav2vec2_large_lv60k", "hubert_base", "hubert_large",
                          "wavlm_base", "wavlm_base_plus", "wavlm_large"}
    assert dict(PRESETS) == files
    assert get_config("wav2vec2_large_lv60k").layer_norm_first and get_config("wav2vec2_large_lv60k").num_layers == 24
    assert not get_config("wav2vec2_base").layer_norm_first


def test_unknown_presets_list_the_known_ones():
    with pytest.raises(ValueError, match=r"Unknown pruning preset 'hj'; known presets: \['hj_macs0.4'.*conf/pruning"):
        presets.preset("pruning", "hj")
    with pytest.raises(ValueError, match="Unknown architecture 'wav2vec3'"):
        get_config("wav2vec3")
    with pytest.raises(ValueError, match="unknown preset kind"):
        presets.presets("lm")


def test_presets_are_copies():
    presets.preset("pruning", "hj_macs0.5")["target"] = 0.1
    assert presets.preset("pruning", "hj_macs0.5")["target"] == 0.5


def test_a_non_editable_install_carries_and_finds_the_presets(tmp_path):
    """pip install --no-deps --target (no build isolation: nothing to download) of a copy of the
    checkout; the installed package, imported from elsewhere, reads its own conf/."""
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "egs2", "test", "demo", "exp",
                                                                "build", "*.egg-info", "__pycache__"))
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              "--target", str(target), str(source)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    installed = target / "espnet_prune" / "conf"
    for kind in ("ssl", "pruning"):
        assert sorted(p.name for p in (installed / kind).iterdir()) == sorted(
            p.name for p in (REPO / "conf" / kind).glob("*.yaml"))
    shutil.rmtree(source)  # the checkout's conf/ is gone: only the installed copy can answer
    code = ("import espnet_prune.presets as p, espnet_prune.ssl.config as c; "
            "print(p.__file__); print(p.conf_dir()); print(len(c.PRESETS), p.preset('pruning', 'hj_macs0.5'))")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    module, conf, summary = result.stdout.splitlines()
    assert module == str(target / "espnet_prune" / "presets.py")
    assert conf == str(installed)
    assert summary == ("8 {'units': ['conv', 'head', 'attn_layer', 'interm', 'ffn_layer'], 'metric': 'macs', "
                       "'target': 0.5}")
