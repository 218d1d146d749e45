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


def export(train_config: Path, model_file: Path, output: Path, task: Optional[str] = None,
           check_seconds: float = 1.0, onnx: Optional[Path] = None) -> Dict[str, Any]:
    """Export the compact model (its frontend also to ONNX at ``onnx`` if given); returns the
    report that is also written beside ``output``."""
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
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), output)
    if onnx is not None:
        from espnet_prune.ssl.onnx_export import export_onnx, max_feature_diff
        export_onnx(frontend, onnx)
        report["onnx"] = {"path": str(onnx), "max_abs_diff_torch_vs_onnxruntime": max_feature_diff(
            frontend, onnx, [(probe, probe_lengths)])}
    with open(output.with_suffix(".json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    return report


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_config", type=Path, required=True, help="config.yaml of the training run")
    parser.add_argument("--model_file", type=Path, required=True, help="trained (gated) model file")
    parser.add_argument("--output", type=Path, required=True, help="where to write the compact model file")
    parser.add_argument("--task", choices=TASKS, default=None, help="default: detected from the config")
    parser.add_argument("--onnx", type=Path, default=None, help="also write the compact frontend to this ONNX file")
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    for path in (args.train_config, args.model_file):
        if not path.is_file():
            sys.exit(f"export: {path} does not exist")
    report = export(args.train_config, args.model_file, args.output, args.task, onnx=args.onnx)
    enc = report["encoder"]
    logging.info("encoder params %s -> %s (%.1f%%), MACs for %.0f s %s -> %s (%.1f%%)",
                 cost_str(enc["before"]["params"]["total"]), cost_str(enc["after"]["params"]["total"]),
                 100 * enc["ratio"]["params"]["total"], report["reference_seconds"],
                 cost_str(enc["before"]["macs"]["total"]), cost_str(enc["after"]["macs"]["total"]),
                 100 * enc["ratio"]["macs"]["total"])
    logging.info("wrote %s and %s", args.output, args.output.with_suffix(".json"))


def cost_str(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


if __name__ == "__main__":
    main()
