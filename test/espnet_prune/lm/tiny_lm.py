"""A tiny character-level ESPnet Transformer LM experiment for the LM pruning tests.

:func:`make_lm_corpus` writes a synthetic corpus (sentences from a small grammar) in
the layout ``asr.sh`` gives an LM stage::

    root/data/token_list/char/tokens.txt     # <blank>, <unk>, <space>, a-z, <sos/eos>
    root/data/lm_train.txt, root/data/dev/text, root/data/test/text   # "<key> <sentence>"
    root/data/lm_stats/{train,dev}/text_shape.char                    # "<key> <len>,<vocab>"

:func:`train_tiny_lm` trains ``lm: transformer`` (2 layers, 32 units, 4 heads, FFN 128)
with ESPnet's own ``lm_train`` through the plugin launcher, as a recipe would, giving
``root/exp/lm/config.yaml`` and ``valid.loss.ave.pth``. ``tiny_lm`` is the
session-scoped pytest fixture over them (trained once per run); the experiment must not be modified.
``one_torch_thread`` runs a test module with one torch thread.
"""

import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from test.espnet_prune.fixtures import build_once

REPO_ROOT = Path(__file__).resolve().parents[3]
TOKENS = ["<blank>", "<unk>", "<space>"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["<sos/eos>"]
LM_CONF = '{"pos_enc": null, "embed_unit": 32, "att_unit": 32, "head": 4, "unit": 128, "layer": 2}'

_DETERMINERS = ["the", "a", "my", "this"]
_ADJECTIVES = ["big", "red", "small", "quick", "lazy", "blue", ""]
_NOUNS = ["cat", "dog", "fox", "bird", "house", "car", "mat", "tree"]
_VERBS = ["sat", "ran", "jumped", "slept", "looked"]
_PREPOSITIONS = ["on", "under", "near", "over"]


@dataclass
class TinyLM:
    root: Path
    config: Path  # exp/lm/config.yaml
    model_file: Path  # exp/lm/valid.loss.ave.pth
    train_text: Path
    valid_text: Path
    test_text: Path  # held out from both training and pruning


def subprocess_env() -> dict:
    """Environment for child Pythons: this checkout importable, one thread each."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_DETERMINERS), rng.choice(_ADJECTIVES), rng.choice(_NOUNS), rng.choice(_VERBS)]
    if rng.random() < 0.7:
        words += [rng.choice(_PREPOSITIONS), rng.choice(_DETERMINERS), rng.choice(_NOUNS)]
    return " ".join(w for w in words if w)


def _write_text(path: Path, prefix: str, sentences) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for i, sentence in enumerate(sentences):
            f.write(f"{prefix}{i:04d} {sentence}\n")


def _write_shape(text: Path, shape: Path) -> None:
    shape.parent.mkdir(parents=True, exist_ok=True)
    with text.open(encoding="utf-8") as src, shape.open("w", encoding="utf-8") as dst:
        for line in src:
            key, sentence = line.rstrip("\n").split(maxsplit=1)
            dst.write(f"{key} {len(sentence)},{len(TOKENS)}\n")


def make_lm_corpus(root: Path, num_train: int = 400, num_dev: int = 60, seed: int = 0) -> dict:
    """Write the corpus under ``root/data``; returns the paths by name."""
    rng = random.Random(seed)
    data = root / "data"
    paths = dict(
        tokens=data / "token_list" / "char" / "tokens.txt",
        train=data / "lm_train.txt",
        dev=data / "dev" / "text",
        test=data / "test" / "text",
        train_shape=data / "lm_stats" / "train" / "text_shape.char",
        dev_shape=data / "lm_stats" / "dev" / "text_shape.char",
    )
    paths["tokens"].parent.mkdir(parents=True, exist_ok=True)
    paths["tokens"].write_text("\n".join(TOKENS) + "\n", encoding="utf-8")
    _write_text(paths["train"], "train", [_sentence(rng) for _ in range(num_train)])
    _write_text(paths["dev"], "dev", [_sentence(rng) for _ in range(num_dev)])
    _write_text(paths["test"], "test", [_sentence(rng) for _ in range(num_dev)])
    _write_shape(paths["train"], paths["train_shape"])
    _write_shape(paths["dev"], paths["dev_shape"])
    return paths


def train_tiny_lm(root: Path) -> TinyLM:
    """Write the corpus and train the LM with ``python -m espnet_prune -m espnet2.bin.lm_train``."""
    paths = make_lm_corpus(root)
    exp = root / "exp" / "lm"
    cmd = [
        sys.executable, "-m", "espnet_prune", "-m", "espnet2.bin.lm_train",
        "--token_list", str(paths["tokens"]), "--token_type", "char",
        "--lm", "transformer", "--lm_conf", LM_CONF,
        "--train_data_path_and_name_and_type", f"{paths['train']},text,text",
        "--valid_data_path_and_name_and_type", f"{paths['dev']},text,text",
        "--train_shape_file", str(paths["train_shape"]),
        "--valid_shape_file", str(paths["dev_shape"]),
        "--fold_length", "150", "--batch_size", "16",
        "--optim", "adam", "--optim_conf", "lr=0.005",
        "--max_epoch", "1", "--num_iters_per_epoch", "60",
        "--num_workers", "0", "--use_matplotlib", "false", "--use_tensorboard", "false",
        "--output_dir", str(exp),
    ]
    result = subprocess.run(cmd, cwd=root, env=subprocess_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return TinyLM(
        root=root,
        config=exp / "config.yaml",
        model_file=exp / "valid.loss.ave.pth",
        train_text=paths["train"],
        valid_text=paths["dev"],
        test_text=paths["test"],
    )


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine their spin
    waits make the tests many times slower; restored after the module."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


_trained = {}


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> TinyLM:
    """The trained experiment, trained once per test run (test modules in other
    directories import this fixture too; they share the one experiment, and so do the
    pytest-xdist workers, see :func:`build_once`)."""
    if "experiment" not in _trained:
        _trained["experiment"] = build_once(tmp_path_factory, "tiny_lm", train_tiny_lm)
    return _trained["experiment"]
