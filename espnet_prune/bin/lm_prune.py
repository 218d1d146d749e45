#!/usr/bin/env python3
"""Prune an ESPnet Transformer LM to several sizes and report perplexity and latency.

    python -m espnet_prune.bin.lm_prune \\
        --lm_train_config exp/lm/config.yaml --lm_file exp/lm/valid.loss.ave.pth \\
        --train_text dump/raw/lm_train.txt --valid_text dump/raw/dev/text \\
        --criterion data --method lowrank --scheduler incremental \\
        --targets 0.75,0.5,0.25 --output_dir exp/lm_pruned

Targets are ratios of the input LM's parameter count — all of it, token embedding and
output layer included (the whole LM is pruned); for ``--method unstructured`` the
count is of non-zero (unmasked) parameters. Writes, per target T:

    DIR/target<T>/config.yaml, DIR/target<T>/model.pth   (e.g. DIR/target0.50/)

an ESPnet LM experiment (``lm: pruned_transformer``) that the plugin launcher loads
like any other, e.g. for perplexity and shallow fusion:

    python -m espnet_prune -m espnet2.bin.lm_calc_perplexity \\
        --train_config DIR/target0.50/config.yaml --model_file DIR/target0.50/model.pth ...
    python -m espnet_prune -m espnet2.bin.asr_inference \\
        --lm_train_config DIR/target0.50/config.yaml --lm_file DIR/target0.50/model.pth ...

and ``DIR/report.json`` + ``DIR/report.md``: parameters, valid perplexity and CPU
beam-search scoring latency of the dense LM and every target, timed in one run.
Fine-tuning between steps (``--finetune_steps`` > 0) runs ESPnet's LM trainer; its
configs and outputs are kept under ``DIR/finetune/``.
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from espnet_prune import register
from espnet_prune.lm.choices import CRITERIA, METHODS, SCHEDULERS, target_name
from espnet_prune.lm.data import UNK_CHECK_SENTENCES, check_text_file, text_batches, unknown_token_rate
from espnet_prune.lm.experiment import load_lm_experiment, read_lm_config, save_lm_experiment
from espnet_prune.lm.finetune import EspnetFinetuner
from espnet_prune.lm.latency import time_lms
from espnet_prune.lm.methods import minimum_params, prune_step
from espnet_prune.lm.report import perplexity, write_report
from espnet_prune.lm.schedulers import plan_schedule, run_schedule
from espnet_prune.utils.finite import NonFiniteError, check_finite
from espnet_prune.utils.output_dir import check_output_dir, claim_output_dir

#: The name under which lm_prune claims its output directory (see espnet_prune.utils.output_dir).
COMMAND = "espnet_prune.bin.lm_prune"


def parse_targets(value: str) -> List[float]:
    """``"0.75,0.5"`` -> ``[0.75, 0.5]``; each strictly between 0 and 1, no repeats."""
    targets = []
    for item in value.split(","):
        try:
            target = float(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"target '{item}' is not a number")
        if not 0.0 < target < 1.0:
            raise argparse.ArgumentTypeError(
                f"target {item} must be a ratio of the dense parameter count in (0, 1)"
            )
        if target in targets:
            raise argparse.ArgumentTypeError(f"target {item} is given twice")
        targets.append(target)
    return targets


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return number


def non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value} is not >= 0")
    return number


def positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"{value} is not > 0")
    return number


def ratio(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not in [0, 1]")
    return number


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Prune an ESPnet Transformer LM (criterion x method x scheduler).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    group = parser.add_argument_group("input and output")
    group.add_argument("--lm_train_config", required=True, help="LM experiment's config.yaml")
    group.add_argument("--lm_file", required=True, help="LM weights, e.g. valid.loss.ave.pth")
    group.add_argument("--train_text", required=True, help="'<key> <sentence>' text for statistics and fine-tuning")
    group.add_argument("--valid_text", required=True, help="'<key> <sentence>' text for validation and perplexity")
    group.add_argument("--output_dir", required=True)

    group = parser.add_argument_group("pruning")
    group.add_argument("--criterion", choices=CRITERIA, default="data")
    group.add_argument("--method", choices=METHODS, default="lowrank")
    group.add_argument("--scheduler", choices=SCHEDULERS, default="incremental")
    group.add_argument(
        "--targets",
        type=parse_targets,
        required=True,
        help="comma-separated ratios of the dense parameter count, e.g. 0.75,0.5,0.25",
    )
    group.add_argument(
        "--num_increments", type=positive_int, default=2,
        help="pruning steps per target (incremental scheduler)",
    )
    group.add_argument(
        "--stat_batches", type=positive_int, default=100,
        help="training-text batches for data-driven statistics (from the start of the file)",
    )
    group.add_argument("--stat_batch_size", type=positive_int, default=32)
    group.add_argument(
        "--max_unk_rate", type=ratio, default=0.05,
        help="refuse text of which a larger share of tokens is <unk> under the LM's token list "
             f"(checked on the first {UNK_CHECK_SENTENCES} sentences of --train_text and --valid_text; "
             "1 disables the check)",
    )

    group = parser.add_argument_group("fine-tuning (ESPnet's LM trainer, after every step)")
    group.add_argument(
        "--finetune_steps", type=non_negative_int, default=500,
        help="training iterations after each pruning step; 0 disables fine-tuning",
    )
    group.add_argument("--finetune_lr", type=positive_float, default=1e-4, help="constant learning rate")
    group.add_argument(
        "--finetune_batch_size", type=positive_int, default=None,
        help="sentences per batch (default: the LM config's batch settings)",
    )

    group = parser.add_argument_group("latency")
    group.add_argument("--beam_size", type=positive_int, default=10)
    group.add_argument("--latency_steps", type=positive_int, default=30, help="beam-search steps per timing")
    group.add_argument("--latency_repeats", type=positive_int, default=5)
    group.add_argument("--latency_threads", type=positive_int, default=1)

    group = parser.add_argument_group("general")
    group.add_argument("--ngpu", type=int, choices=(0, 1), default=0, help="device for statistics and fine-tuning")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument(
        "--log_level", type=lambda x: x.upper(), default="INFO",
        choices=("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"),
    )
    return parser


def check_inputs(args: argparse.Namespace) -> None:
    """Everything that can be checked before loading the LM; raises ``ValueError``."""
    check_output_dir(args.output_dir, COMMAND)
    read_lm_config(args.lm_train_config)
    if not Path(args.lm_file).is_file():
        raise ValueError(f"lm_file: no such file: {args.lm_file}")
    check_text_file(args.train_text, "train_text")
    check_text_file(args.valid_text, "valid_text")


def load_dense_lm(args: argparse.Namespace):
    """Load the input LM and check that every target is reachable by the method.

    Returns:
        (ESPnet LM, its training args, its config dict); raises ``ValueError``.
    """
    register()
    device = "cuda" if args.ngpu > 0 else "cpu"
    dense, train_args, config = load_lm_experiment(args.lm_train_config, args.lm_file, device)
    check_finite(dense, f"lm_file {args.lm_file}")
    dense_params = dense.lm.num_params()
    minimum = minimum_params(dense.lm, args.method)
    smallest = min(args.targets)
    if round(smallest * dense_params) < minimum:
        raise ValueError(
            f"target {smallest} is below what {args.method} pruning can reach: "
            f"{minimum / dense_params:.3f} of the {dense_params} parameters"
        )
    return dense, train_args, config


def check_unknown_tokens(args: argparse.Namespace, train_args) -> Dict[str, float]:
    """Log each text's ``<unk>`` rate under the LM's tokenisation; raise ``ValueError`` above
    ``--max_unk_rate``.

    Returns:
        ``{"train_text": rate, "valid_text": rate}``.
    """
    rates = {}
    for option in ("train_text", "valid_text"):
        path = getattr(args, option)
        unknown, total = unknown_token_rate(train_args, path)
        rate = unknown / total if total else 0.0
        rates[option] = rate
        logging.info(f"{option}: {unknown} of {total} tokens ({100 * rate:.2f} %) are <unk> for the LM's token list")
        if rate > args.max_unk_rate:
            raise ValueError(
                f"{option}: {100 * rate:.1f} % of the tokens of {path} ({unknown} of {total}, first "
                f"{UNK_CHECK_SENTENCES} sentences) are not in the LM's token list and become <unk>, above "
                f"--max_unk_rate {args.max_unk_rate}; is it the text (and token type) the LM was trained on?")
    return rates


def prune_lm(args: argparse.Namespace, dense, train_args, config) -> Dict:
    """Run the pruning job described by ``args`` on the loaded dense LM; return the report."""
    torch.manual_seed(args.seed)
    output_dir = claim_output_dir(args.output_dir, COMMAND)
    dense_params = dense.lm.num_params()
    logging.info(f"dense LM: {dense_params} parameters; targets {sorted(args.targets, reverse=True)}")

    def train_batches():
        return text_batches(train_args, args.train_text, args.stat_batch_size, args.stat_batches)

    def prune(model, target_params):
        return prune_step(model, args.method, args.criterion, target_params, train_batches)

    finetune: Optional[EspnetFinetuner] = None
    if args.finetune_steps > 0:
        finetune = EspnetFinetuner(
            base_config=config,
            train_args=train_args,
            train_text=args.train_text,
            valid_text=args.valid_text,
            work_dir=output_dir / "finetune",
            steps=args.finetune_steps,
            lr=args.finetune_lr,
            batch_size=args.finetune_batch_size,
            ngpu=args.ngpu,
            seed=args.seed,
        )

    systems = {"dense": dict(model=dense, target=1.0, config=args.lm_train_config, model_file=args.lm_file)}

    def emit(target, model):
        name = target_name(target)
        check_finite(model, f"the LM pruned to {name}")
        config_path, model_path = save_lm_experiment(model, config, output_dir / name)
        logging.info(f"{name}: {model.lm.num_params()} parameters -> {config_path.parent}")
        systems[name] = dict(model=model, target=target, config=str(config_path), model_file=str(model_path))

    chains = plan_schedule(args.targets, args.scheduler, args.num_increments)
    run_schedule(dense, dense_params, chains, prune, finetune, emit)

    logging.info("evaluating perplexity and latency")
    for system in systems.values():
        system["perplexity"] = perplexity(
            system["model"], text_batches(train_args, args.valid_text, args.stat_batch_size)
        )
    latencies = time_lms(
        {name: system["model"].lm for name, system in systems.items()},
        beam_size=args.beam_size,
        num_steps=args.latency_steps,
        repeats=args.latency_repeats,
        num_threads=args.latency_threads,
        seed=args.seed,
    )
    rows = []
    for name, system in systems.items():
        params = system["model"].lm.num_params()
        rows.append(
            dict(
                name=name,
                target=system["target"],
                params=params,
                param_ratio=params / dense_params,
                perplexity=system["perplexity"],
                latency_ms_per_step=1000 * latencies[name],
                latency_ratio=latencies[name] / latencies["dense"],
                config=system["config"],
                model_file=system["model_file"],
                lm_conf=system["model"].lm.lm_conf,
            )
        )
    settings = {
        key: getattr(args, key)
        for key in (
            "lm_train_config", "lm_file", "train_text", "valid_text", "criterion", "method",
            "scheduler", "targets", "num_increments", "stat_batches", "stat_batch_size",
            "finetune_steps", "finetune_lr", "finetune_batch_size", "seed", "max_unk_rate",
        )
    }
    report = dict(
        settings=settings,
        dense_params=dense_params,
        latency=dict(
            device="cpu",
            beam_size=args.beam_size,
            num_steps=args.latency_steps,
            repeats=args.latency_repeats,
            num_threads=args.latency_threads,
        ),
        systems=rows,
    )
    if getattr(args, "unknown_token_rates", None) is not None:
        report["unknown_token_rate"] = args.unknown_token_rates
    json_path, md_path = write_report(output_dir, report)
    logging.info(f"report: {json_path}, {md_path}\n{md_path.read_text(encoding='utf-8')}")
    return report


def main(cmd: Optional[Sequence[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s",
    )
    try:
        check_inputs(args)
        dense, train_args, config = load_dense_lm(args)
        args.unknown_token_rates = check_unknown_tokens(args, train_args)
    except ValueError as e:
        parser.error(str(e))
    try:
        prune_lm(args, dense, train_args, config)
    except NonFiniteError as e:
        sys.exit(f"lm_prune: {e}")


if __name__ == "__main__":
    main(sys.argv[1:])
