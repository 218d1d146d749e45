"""Measure the latency table of an SSL encoder on this machine (``pruning.latency_table``).

    python -m espnet_prune.bin.profile_latency --arch wav2vec2_base --device cpu --threads 2 \\
        --batch 1 --seconds 10 --rounds 5 --output exp/latency/wav2vec2_base_cpu2.json
    python -m espnet_prune.bin.profile_latency --checkpoint exp/compact/ssl_encoder.pth \\
        --device cuda --dtype bf16 --batch 8 --seconds 10 --output table.json

Each prunable piece of the encoder (every CNN layer over its kept input and output channels,
the attention sublayer over kept heads with its T^2 products, the FFN over kept units, the
feature projection, the positional convolution and the fixed rest) is timed at a handful of
widths with random weights; the table records the device, threads, dtype, batch, duration,
torch version and the fit (:mod:`espnet_prune.ssl.latency`). Progress goes to stderr, one
line per piece; the last line compares the dense encoder's measured latency with the sum of
its pieces, and the calibration through it and a half-width encoder.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from espnet_prune.ssl.config import get_config
from espnet_prune.ssl.latency import DTYPES, profile, save_table
from espnet_prune.ssl.prune import load_compact
from espnet_prune.utils.device_options import add_device_arguments, apply_device_arguments


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--arch", help="architecture preset (conf/ssl/<name>.yaml), e.g. wav2vec2_base, or an "
                       "architecture file (JSON: EncoderConfig's keys, e.g. the ssl_encoder.json that "
                       "espnet_prune.bin.extract_ssl writes beside an encoder)")
    model.add_argument("--checkpoint", type=Path,
                       help="a compact encoder file (export's ssl_encoder.pth); its architecture is profiled")
    add_device_arguments(parser)
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32",
                        help="weights and inputs (bf16 / float16 for --device cuda)")
    parser.add_argument("--batch", type=int, default=1, help="utterances per call (default 1)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="utterance duration; must equal pruning.reference_seconds (default 10)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per piece, median taken (default 5)")
    parser.add_argument("--output", type=Path, required=True, help="table file (JSON) to write")
    return parser


def read_arch(arch: str) -> Union[str, Dict[str, Any]]:
    """``--arch``: a preset name as it is, or the values of an architecture file (``*.json``)."""
    if not arch.endswith(".json"):
        return arch
    path = Path(arch)
    if not path.is_file():
        raise ValueError(f"--arch: architecture file {path} does not exist")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"--arch: {path} is not JSON: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"--arch: {path} must hold a mapping of architecture keys, got {type(values).__name__}")
    return values


def main(cmd: Optional[Sequence[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    apply_device_arguments(parser, args)
    if args.device == "cpu" and args.dtype != "float32":
        parser.error("--dtype: CPU tables are measured in float32")
    for name in ("batch", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    try:
        config = get_config(read_arch(args.arch)) if args.arch else load_compact(args.checkpoint).config
        table = profile(config, args.device, args.dtype, args.batch, args.seconds, args.rounds,
                        progress=lambda line: print(line, file=sys.stderr, flush=True))
    except (OSError, ValueError) as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_table(table, args.output)
    print(f"{args.output}: latency table of {args.arch or args.checkpoint} on {table['measured_on']['device_name']}")


if __name__ == "__main__":
    main()
