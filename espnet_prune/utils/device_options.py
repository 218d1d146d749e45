"""The ``--device`` / ``--threads`` options of the commands that measure latency on this machine."""

import argparse

import torch


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device {cpu,cuda}`` (default cpu) and ``--threads N`` (torch's CPU threads)."""
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (torch.set_num_threads; default: torch's own choice)")


def apply_device_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse ``--device cuda`` without a visible GPU and ``--threads`` below 1 (``parser.error``),
    then set torch's thread count."""
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
