"""The SSL encoder of a trained ``pruned_ssl`` experiment, as a checkpoint to fine-tune from.

:func:`extract_ssl` writes the ``frontend.encoder.*`` tensors of an ESPnet experiment's model
file with torchaudio's parameter names (a torchaudio-style state dict, which
``frontend_conf.checkpoint`` loads together with ``frontend_conf.arch``), and the architecture
(``frontend_conf.arch`` of the experiment's ``config.yaml``) beside it as ``<output>.json``.
``python -m espnet_prune.bin.extract_ssl`` is its command line; the espeak_demo recipes and the
demo use it for their SSL stand-in, which they train instead of downloading a pretrained model.
"""

import json
from pathlib import Path

import torch
import yaml

#: The prefix of the encoder's tensors in an ESPnet model file with a ``pruned_ssl`` frontend.
PREFIX = "frontend.encoder."


def extract_ssl(exp_dir: Path, output: Path, model_file: str = "valid.cer_ctc.best.pth") -> int:
    """Write ``output`` (and its ``.json``) from ``exp_dir``; returns the number of tensors."""
    model_path = exp_dir / model_file
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path} does not exist: the training did not finish")
    config_path = exp_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} does not exist: not an ESPnet experiment directory")
    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    if config.get("frontend") != "pruned_ssl":
        raise ValueError(f"{config_path}: frontend is {config.get('frontend')!r}, not pruned_ssl")
    state = torch.load(model_path, map_location="cpu", weights_only=True)
    encoder = {key[len(PREFIX):]: value for key, value in state.items() if key.startswith(PREFIX)}
    if not encoder:
        raise ValueError(f"{model_path} has no {PREFIX}* parameters")
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(encoder, output)
    arch = (config.get("frontend_conf") or {}).get("arch")
    output.with_suffix(".json").write_text(json.dumps(arch, indent=2) + "\n", encoding="utf-8")
    return len(encoder)
