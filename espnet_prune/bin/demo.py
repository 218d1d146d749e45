#!/usr/bin/env python3
"""The offline demo (``make demo``): HJ-Pruning and LM pruning end to end on a synthetic corpus.

    python -m espnet_prune.bin.demo --output_dir demo            # ASR, about 20 min on 2 CPU cores
    python -m espnet_prune.bin.demo --output_dir demo_paper --size paper   # the paper's comparison, seeds
    python -m espnet_prune.bin.demo --output_dir demo_slu --task slu
    python -m espnet_prune.bin.demo --output_dir demo_tiny --size tiny   # every stage in minutes
    python -m espnet_prune.bin.demo --output_dir demo_multisize \
        --systems dense,hj_macs:0.8,hj_macs:0.6,hj_macs:0.4,hj_macs_multi:0.8/0.6/0.4   # one run vs three

It synthesises an English voice-command corpus with eSpeak NG, takes a small
wav2vec2-architecture model as the stand-in for a pretrained SSL model (by default the CTC one
committed by ``make standin``), fine-tunes from it the dense baseline and the pruned systems
(HJ-Pruning by MACs, by size, separate CNN/Transformer budgets, Transformer-only, one MAC budget
over the whole decode, a budget of the frontend's latency profiled on this machine; ``--size
paper``: the first four at three MAC ratios with several seeds, and a verdict on the paper's claims),
exports the compact models, trains and prunes a Transformer LM (ASR), decodes (with shallow
fusion of every LM for one system), scores, times every system on CPU, and writes
``OUTPUT_DIR/results.json``, ``results.png`` and ``RESULTS.md``. The last line printed is
``RESULTS: <path of results.json>``.

Without ``ESPNET_ROOT`` (ESPnet from PyPI has no egs2 TEMPLATE) the stages run ESPnet's
binaries directly in asr.sh's order; with ``--espnet_root`` / ``ESPNET_ROOT`` naming an ESPnet
checkout, ESPnet's own asr.sh / slu.sh run them. Rerunning with the same settings skips
finished steps; a different setting needs a new ``--output_dir``.
"""

import argparse
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

from espnet_prune.demo.layout import DemoPaths
from espnet_prune.demo.pipeline import run_demo
from espnet_prune.demo.recipe import DemoRecipe, save_standin
from espnet_prune.demo.settings import (
    METHODS,
    MULTI_SIZE_METHODS,
    SIZES,
    STANDINS,
    UNPRUNED_METHODS,
    DemoError,
    DemoSettings,
    parse_lm_pruning,
    parse_system,
)
from espnet_prune.demo.steps import Progress
from espnet_prune.utils.output_dir import OutputDirError, check_output_dir


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return number


def comma_list(parse):
    def parse_list(value: str):
        try:
            return tuple(parse(item.strip()) for item in value.split(",") if item.strip())
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error))

    return parse_list


def ratio(value: str) -> float:
    number = float(value)
    if not 0.0 < number < 1.0:
        raise ValueError(f"{value} is not a ratio in (0, 1)")
    return number


DEFAULTS = DemoSettings()
#: How ``--systems`` spells each method of METHODS.
SYSTEM_SPELLINGS = ", ".join(method if method in UNPRUNED_METHODS else
                             f"{method}:T1/T2/..." if method in MULTI_SIZE_METHODS else f"{method}:T"
                             for method in METHODS)
#: The settings of a run, in its output directory; a directory holding it is a demo run's.
SETTINGS_FILE = "settings.json"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, default=Path("demo"), help="working directory (default: demo)")
    parser.add_argument("--task", choices=("asr", "slu"), default="asr")
    parser.add_argument("--size", choices=sorted(SIZES), default="default",
                        help="preset of corpus sizes and training lengths; the options below override it")
    parser.add_argument("--jobs", type=positive_int, default=2, help="steps run at the same time (default: 2)")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="CPU threads of each ESPnet process and of the latency timing (default: 1)")
    parser.add_argument("--espnet_root", type=Path, default=os.environ.get("ESPNET_ROOT") or None,
                        help="ESPnet checkout whose asr.sh / slu.sh run the stages (default: $ESPNET_ROOT; "
                             "without it ESPnet's binaries run directly)")
    group = parser.add_argument_group("settings (default: from --size)")
    for name in ("num_train", "num_dev", "num_test", "num_lm_sentences", "num_dev_voices", "num_test_voices",
                 "pretrain_steps", "finetune_steps", "prune_warmup_steps", "multisize_warmup_steps",
                 "steps_per_epoch", "batch_size",
                 "lm_steps", "lm_finetune_steps", "beam_size", "latency_rounds"):
        group.add_argument(f"--{name}", type=positive_int, default=None)
    group.add_argument("--seed", type=int, default=None)
    group.add_argument("--standin", choices=STANDINS, default=None,
                       help="the SSL stand-in the systems fine-tune from: ctc (trained in the run with CTC on the "
                            "training set, --pretrain_steps), ctc_committed (that stand-in of the default corpus, "
                            "committed by 'make standin'), or pretrained (self-supervised, committed by "
                            "'make pretrain') (default: ctc_committed; tiny: ctc)")
    group.add_argument("--int8", action=argparse.BooleanOptionalAction, default=None,
                       help="decode every compact pruned model again with ESPnet's dynamic int8 quantization "
                            "and compare (default: off; tiny: on)")
    group.add_argument("--reference_seconds", type=float, default=None,
                       help="audio duration the MACs budgets, costs and latency are for")
    group.add_argument("--systems", type=comma_list(parse_system), default=None,
                       help=f"comma-separated systems: {SYSTEM_SPELLINGS} (scratch: dense from random init; "
                            "whole_model: one MAC budget over the whole decode; hj_latency: a budget of the "
                            "frontend's latency, its table profiled in the run; a multi-size method: several "
                            "sizes from one run, strictly decreasing, compared with the single runs at those "
                            "targets), each optionally with @SEED (another fine-tuning seed: hj_macs:0.7@1) "
                            f"(default: {','.join(system.spelling for system in DEFAULTS.systems)})")
    group.add_argument("--lm_prunings", type=comma_list(parse_lm_pruning), default=None,
                       help="comma-separated criterion/method/scheduler of lm_prune "
                            f"(default: {','.join(p.name.replace('_', '/') for p in DEFAULTS.lm_prunings)})")
    group.add_argument("--lm_targets", type=comma_list(ratio), default=None,
                       help=f"LM parameter ratios (default: {','.join(f'{t:g}' for t in DEFAULTS.lm_targets)})")
    group.add_argument("--fusion_system", default=None, help="system decoded with every LM (default: dense)")
    group.add_argument("--lm_weight", type=float, default=None, help="shallow fusion weight (default: 0.3)")
    parser.add_argument("--save_standin", type=Path, default=None,
                        help="after the run, copy its CTC stand-in (--standin ctc) with a standin.json record "
                             "into this directory ('make standin' commits the default corpus's)")
    return parser


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    """:class:`DemoSettings` of ``--size`` with every given option on top."""
    values = dict(SIZES[args.size], task=args.task)
    for name in DemoSettings.__dataclass_fields__:
        given = getattr(args, name, None)
        if given is not None and name != "task":
            values[name] = given
    return DemoSettings(**values)


def check_settings_file(output_dir: Path, settings: DemoSettings, espnet_root: Optional[Path]) -> None:
    """Record the settings in ``settings.json``; a rerun must use the same ones."""
    record = dict(settings.as_dict(), espnet_root=None if espnet_root is None else str(espnet_root.resolve()))
    path = output_dir / SETTINGS_FILE
    try:
        check_output_dir(output_dir, "espnet_prune.bin.demo", marker=SETTINGS_FILE)
    except OutputDirError as error:
        raise DemoError(str(error)) from None
    if path.exists():
        previous = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(key for key in set(previous) | set(record) if previous.get(key) != record.get(key))
        if changed:
            raise DemoError(f"{output_dir} holds a demo run with other settings ({', '.join(changed)} differ); "
                            "use another --output_dir, or delete this one")
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def main(cmd: Optional[List[str]] = None) -> Path:
    parser = get_parser()
    args = parser.parse_args(cmd)
    try:
        settings = settings_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    if args.espnet_root is not None and not (args.espnet_root / "egs2" / "TEMPLATE" / "asr1").is_dir():
        parser.error(f"--espnet_root / ESPNET_ROOT={args.espnet_root} is not an ESPnet checkout "
                     "(it has no egs2/TEMPLATE/asr1)")
    progress = Progress()
    paths = DemoPaths(args.output_dir / f"{settings.task}1" if args.espnet_root else args.output_dir, settings.task)
    recipe = DemoRecipe(settings, paths, lanes=args.jobs, threads=args.threads, espnet_root=args.espnet_root,
                        progress=progress)
    systems = ", ".join(system.name for system in settings.systems)
    print(f"espnet_prune demo: {settings.task.upper()} on a synthetic eSpeak NG corpus in {args.output_dir} "
          f"(size {args.size}; systems {systems}; {args.jobs} lanes x {args.threads} thread)")
    if args.espnet_root is None:
        print(f"ESPnet's egs2 TEMPLATE is absent (ESPNET_ROOT is not set): running ESPnet's binaries directly, "
              f"in {settings.task}.sh's stage order (stages 1-13, plus the demo's own steps).")
    else:
        print(f"ESPNET_ROOT={args.espnet_root}: running ESPnet's {settings.task}.sh in {paths.root}.")
    try:
        check_settings_file(args.output_dir, settings, args.espnet_root)
        results = run_demo(recipe)
        if args.save_standin is not None:
            print(f"stand-in saved in {save_standin(settings, paths, args.save_standin)}")
    except DemoError as error:
        print(f"\ndemo failed:\n{error}", file=sys.stderr)
        sys.exit(1)
    print(f"RESULTS: {results}")
    return results


if __name__ == "__main__":
    main()
