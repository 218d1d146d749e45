"""Measure the decode latency table of a whole model on this machine (``model_conf.pruning.latency_table``).

    python -m espnet_prune.bin.profile_decode_latency --config exp/asr_whole/config.yaml \\
        --threads 1 --output exp/latency/decode_cpu1.json

``--config`` is the training YAML (with ``--token_list``, as asr.sh passes it to ``asr_train``) or
an experiment's ``config.yaml``, with ``model_conf.pruning`` of ``model: pruned_espnet``: the model
is built from it with random weights, pruned to MAC ratios from dense (``--points`` 1) to near the
smallest its gated units allow (0), and each structure decodes one ``reference_seconds`` utterance
with ESPnet's ``Speech2Text`` (batch 1), the budget's ``decoding`` (beam size, CTC weight,
``tokens_per_second x reference_seconds`` steps), interleaved over ``--rounds`` rounds; the time
inside the frontend, the encoder and the decoder's ``batch_score`` is recorded per structure and
fitted per part as a fixed time plus a time per MAC; the rest of the decode (CTC prefix scoring, the
beam search's own work) is a fixed cost (:mod:`espnet_prune.pruning.decode_latency`). Progress goes
to stderr; the last line gives the fit's largest error at a measured structure. Run it on the device
and with the thread count the model will decode with: the table is a latency there. """

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from espnet_prune.inference.decode_profile import DEFAULT_POINTS, profile_decode
from espnet_prune.pruning.decode_latency import describe, save_table
from espnet_prune.utils.device_options import add_device_arguments, apply_device_arguments


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True,
                        help="experiment config.yaml with model_conf.pruning (model: pruned_espnet)")
    parser.add_argument("--token_list", type=Path, default=None,
                        help="the token list (asr.sh's --token_list), for a training YAML that does not name one")
    parser.add_argument("--task", choices=("asr", "slu"), default=None,
                        help="which ESPnet task the config trains (default: what the config says, asr unless it "
                             "has SLU-only keys)")
    add_device_arguments(parser)
    parser.add_argument("--points", type=float, nargs="+", default=list(DEFAULT_POINTS),
                        help="where the profiled structures lie between the dense model (1) and the smallest the "
                             "gated units allow (0), the first 1 (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="timed rounds (each decodes every structure once; default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--output", type=Path, required=True, help="table file (JSON) to write")
    return parser


def main(cmd: Optional[Sequence[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    apply_device_arguments(parser, args)
    if args.rounds < 1 or args.warmup < 0:
        parser.error(f"--rounds must be >= 1 and --warmup >= 0, got {args.rounds} and {args.warmup}")
    if not args.config.is_file():
        parser.error(f"--config {args.config} does not exist")
    try:
        with tempfile.TemporaryDirectory() as work_dir:
            table = profile_decode(args.config, Path(work_dir), args.points, args.rounds, args.warmup, args.device,
                                   progress=lambda line: print(line, file=sys.stderr, flush=True),
                                   token_list=args.token_list, task=args.task)
    except (OSError, ValueError) as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_table(table, args.output)
    print(f"{args.output}: {describe(table)}")


if __name__ == "__main__":
    main()
