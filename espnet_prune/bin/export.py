"""Turn a model trained with a pruning ``pruned_ssl`` frontend into its compact form.

    python -m espnet_prune.bin.export --train_config exp/X/config.yaml \\
        --model_file exp/X/valid.acc.ave.pth --output exp/X/valid.acc.ave.pruned.pth

writes the compact checkpoint and, beside it (``.json``), a report of parameters and
MACs per component before and after. ``espnet2.bin.asr_inference`` / ``slu_inference``
load the compact checkpoint with the unchanged ``config.yaml`` (through
``python -m espnet_prune``).
"""

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import yaml

from espnet_prune import register
from espnet_prune.ssl import cost

TASKS = ("asr", "slu")


def detect_task(train_config: Path) -> str:
    """``slu`` for configs written by slu_train (they have SLU-only keys), else ``asr``."""
    with open(train_config, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ValueError(f"{train_config} is not an ESPnet training config (not a YAML mapping)")
    return "slu" if "deliberationencoder" in config or "postdecoder" in config else "asr"


def encoder_cost(config, seconds: float) -> Dict[str, Dict[str, float]]:
    return {"params": {k: float(v) for k, v in cost.count_params(config).items()},
            "macs": {k: float(v) for k, v in cost.count_macs(config, seconds).items()}}


def budget_summary(controller, compact_config) -> Dict[str, Any]:
    """Where the controller's budgets stand for the model being exported.

    ``budgets[name]`` holds the final ``target``, the ``expected`` ratio under the gates, the
    ratio of the ``exported`` structure, ``reached`` (exported within
    ``BUDGET_TOLERANCE`` of the target) and ``advice``; ``explanation`` says why exported and
    expected ratios differ by more than 0.01 (``None`` otherwise); ``warnings`` repeats the
    end-of-training warning of each missed budget.
    """
    from espnet_prune.pruning.controller import UNDECIDED

    report = controller.budget_report()
    if controller.metric == "macs":
        compact = cost.count_macs(compact_config, controller.reference_seconds)
    else:
        compact = cost.count_params(compact_config)
    exported = controller.budget_ratios({k: float(v) for k, v in compact.items()})
    budgets, differ = {}, []
    for name, entry in report.items():
        budgets[name] = {"target": entry["target"], "expected": entry["expected"], "exported": exported[name],
                         "reached": entry["reached"], "advice": entry["advice"]}
        if abs(exported[name] - entry["expected"]) > 0.01:
            differ.append(f"{name}: exported {exported[name]:.3f}, expected {entry['expected']:.3f}")
    undecided = controller.undecided_units()
    explanation = None
    if differ:
        where = ", ".join(f"{gate} {count}" for gate, count in undecided.items()) or "none"
        explanation = (f"exported and expected {controller.metric} ratios differ ({'; '.join(differ)}): the "
                       "deterministic mask keeps, per gate, the rounded expected number of units, and units with "
                       f"keep probabilities between {UNDECIDED[0]} and {UNDECIDED[1]} (undecided: {where}) count "
                       "fractionally in the expectation but wholly or not at all in the structure; the training "
                       "steers the exported structure, not the expectation, to the target")
    return {"metric": controller.metric, "steps": int(controller.step), "warmup_steps": controller.warmup_steps,
            "budgets": budgets, "undecided_units": undecided, "explanation": explanation,
            "warnings": controller.budget_warnings()}


def export(train_config: Path, model_file: Path, output: Path, task: Optional[str] = None,
           check_seconds: float = 1.0) -> Dict[str, Any]:
    """Export the compact model; returns the report that is also written beside ``output``."""
    register()
    task = task or detect_task(train_config)
    if task == "asr":
        from espnet2.tasks.asr import ASRTask as Task
    else:
        from espnet2.tasks.slu import SLUTask as Task
    from espnet_prune.asr.frontend.pruned_ssl import PrunedSSLFrontend

    model, args = Task.build_model_from_file(str(train_config), str(model_file), "cpu")
    model.eval()
    frontend = model.frontend
    if not isinstance(frontend, PrunedSSLFrontend) or frontend.controller is None:
        raise ValueError(f"{train_config} does not describe a pruning frontend "
                         "(frontend: pruned_ssl with frontend_conf.pruning); nothing to export")
    seconds = frontend.controller.reference_seconds
    model_params_before = sum(p.numel() for p in model.parameters())
    dense = encoder_cost(frontend.encoder.config, seconds)

    generator = torch.Generator().manual_seed(0)
    samples = max(int(check_seconds * frontend.encoder.config.sample_rate), frontend.encoder.receptive_field)
    probe = torch.randn(1, samples, generator=generator)
    probe_lengths = torch.tensor([samples])
    controller = frontend.controller
    with torch.no_grad():
        gated_features, _ = frontend(probe, probe_lengths)
        structures = frontend.make_compact()
        compact_features, _ = frontend(probe, probe_lengths)
    max_diff = float((gated_features - compact_features).abs().max())
    if max_diff > 1e-3:
        raise RuntimeError(f"compact frontend differs from the gated one by {max_diff:.3g}; not writing {output}")

    compact = encoder_cost(frontend.encoder.config, seconds)
    report = {
        "train_config": str(train_config),
        "model_file": str(model_file),
        "output": str(output),
        "task": task,
        "reference_seconds": seconds,
        "encoder": {"before": dense, "after": compact,
                    "ratio": {metric: {k: compact[metric][k] / dense[metric][k] for k in dense[metric]
                                       if dense[metric][k]}
                              for metric in ("params", "macs")}},
        "model_params": {"before": model_params_before, "after": sum(p.numel() for p in model.parameters())},
        "structure": structures,
        "max_abs_diff_gated_vs_compact": max_diff,
        "pruning": budget_summary(controller, frontend.encoder.config),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), output)
    with open(output.with_suffix(".json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    return report


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_config", type=Path, required=True, help="config.yaml of the training run")
    parser.add_argument("--model_file", type=Path, required=True, help="trained (gated) model file")
    parser.add_argument("--output", type=Path, required=True, help="where to write the compact model file")
    parser.add_argument("--task", choices=TASKS, default=None, help="default: detected from the config")
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    for path in (args.train_config, args.model_file):
        if not path.is_file():
            sys.exit(f"export: {path} does not exist")
    report = export(args.train_config, args.model_file, args.output, args.task)
    enc = report["encoder"]
    logging.info("encoder params %s -> %s (%.1f%%), MACs for %.0f s %s -> %s (%.1f%%)",
                 cost_str(enc["before"]["params"]["total"]), cost_str(enc["after"]["params"]["total"]),
                 100 * enc["ratio"]["params"]["total"], report["reference_seconds"],
                 cost_str(enc["before"]["macs"]["total"]), cost_str(enc["after"]["macs"]["total"]),
                 100 * enc["ratio"]["macs"]["total"])
    pruning = report["pruning"]
    for name, budget in pruning["budgets"].items():
        logging.info("pruning budget '%s' (%s): target %.3f, exported %.3f, expected under the gates %.3f",
                     name, pruning["metric"], budget["target"], budget["exported"], budget["expected"])
    if pruning["explanation"]:
        logging.info(pruning["explanation"])
    for warning in pruning["warnings"]:
        logging.warning(warning)
    logging.info("wrote %s and %s", args.output, args.output.with_suffix(".json"))


def cost_str(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


if __name__ == "__main__":
    main()
