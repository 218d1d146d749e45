"""Save the SSL encoder of a trained ``pruned_ssl`` experiment as a checkpoint to fine-tune from.

    python -m espnet_prune.bin.extract_ssl --exp_dir exp/asr_ssl_standin \
        [--model_file valid.cer_ctc.best.pth] --output exp/asr_ssl_standin/ssl_encoder.pth

The ``frontend.encoder.*`` tensors of ``EXP_DIR/MODEL_FILE`` are written with torchaudio's
parameter names (a torchaudio-style state dict, which ``frontend_conf.checkpoint`` loads
together with ``frontend_conf.arch``), and the architecture (``frontend_conf.arch`` of
``EXP_DIR/config.yaml``) beside it as ``<output>.json`` without the ``.pth``. The espeak_demo
recipes and the demo use it for their SSL stand-in, which they train instead of downloading
a pretrained model.
"""

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

import torch
import yaml

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


def main(cmd: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp_dir", type=Path, required=True, help="ESPnet experiment directory")
    parser.add_argument("--model_file", default="valid.cer_ctc.best.pth",
                        help="model file in --exp_dir (default: valid.cer_ctc.best.pth)")
    parser.add_argument("--output", type=Path, required=True, help="checkpoint to write")
    args = parser.parse_args(cmd)
    try:
        count = extract_ssl(args.exp_dir, args.output, args.model_file)
    except (OSError, ValueError) as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    print(f"{args.exp_dir / args.model_file}: {count} tensors -> {args.output}")


if __name__ == "__main__":
    main()
