"""Save the SSL encoder of a trained ``pruned_ssl`` experiment as a checkpoint to fine-tune from.

    python -m espnet_prune.bin.extract_ssl --exp_dir exp/asr_ssl_standin \
        [--model_file valid.cer_ctc.best.pth] --output exp/asr_ssl_standin/ssl_encoder.pth

The ``frontend.encoder.*`` tensors of ``EXP_DIR/MODEL_FILE`` are written with torchaudio's
parameter names (a torchaudio-style state dict, which ``frontend_conf.checkpoint`` loads
together with ``frontend_conf.arch``), and the architecture (``frontend_conf.arch`` of
``EXP_DIR/config.yaml``) beside it as ``<output>.json`` without the ``.pth``. The espeak_demo
recipes and the demo use it for their SSL stand-in, which they train instead of downloading
a pretrained model (see :mod:`espnet_prune.ssl.extract`).
"""

import argparse
from pathlib import Path
from typing import Optional, Sequence

from espnet_prune.ssl.extract import extract_ssl


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
