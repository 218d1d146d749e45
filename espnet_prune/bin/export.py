"""Turn a model trained with a pruning ``pruned_ssl`` frontend into its compact form.

As a standalone ESPnet experiment directory (what to ship and decode)::

    python -m espnet_prune.bin.export --train_config exp/X/config.yaml \\
        --model_file exp/X/valid.acc.ave.pth --output_dir exp/X_pruned

writes ``exp/X_pruned/config.yaml``, which describes the compact encoder itself
(``frontend_conf: {checkpoint: null, arch: <compact structure>}``, no ``pruning``) and so
names no pretrained weights, the compact model under the model file's name
(``exp/X_pruned/valid.acc.ave.pth``), the report beside it (``valid.acc.ave.json``) and a
copy of the training curves (``images/``, which asr.sh's packing stage includes).
``asr_inference`` / ``slu_inference`` (through ``python -m espnet_prune``), ``Speech2Text``
and ``espnet2.bin.pack asr`` take that directory as they take any ESPnet experiment; the
original SSL checkpoint is no longer needed. The other files decoding reads (BPE model,
normalisation statistics, non-linguistic symbols) keep the paths the training config gives
them, as in every ESPnet experiment, so that asr.sh's packing stage (``--option`` with those
same paths) bundles them and unpacking rewrites them; the report lists them (``files``).

As a single model file beside the gated one::

    python -m espnet_prune.bin.export --train_config exp/X/config.yaml \\
        --model_file exp/X/valid.acc.ave.pth --output exp/X/valid.acc.ave.pruned.pth

writes the compact checkpoint and its ``.json`` report; it loads with the unchanged training
``config.yaml`` (which still needs the original SSL checkpoint to build the model).

A run with several sizes (``frontend_conf.pruning.targets``, see
:mod:`espnet_prune.pruning.multisize`) is exported with ``--output_dir D`` to one such
experiment per size, ``D/target0.80/``, ``D/target0.60/`` ... (each size's model state comes
from its snapshot in the model file, the last size's from the model itself), plus the summary
of every size (params, MACs, their ratios), printed and written to ``D/summary.md`` and
``D/summary.json``.

The report gives parameters and MACs per component before and after, their ratios, the
compact structure, and the largest difference between the gated and the compact frontend's
features on a probe input (and, for ``--output_dir``, of the model rebuilt from the written
directory alone).
"""

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import yaml

from espnet_prune import register
from espnet_prune.pruning.metrics import METRICS, metric_cost
from espnet_prune.pruning.parts import SSLPart
from espnet_prune.pruning.reports import budget_summary
from espnet_prune.ssl import cost
from espnet_prune.ssl.calibration import DEFAULT_CALIBRATION
from espnet_prune.ssl.onnx_export import INT8_METHODS, INT8_TOLERANCE
from espnet_prune.utils.finite import NonFiniteError, check_finite, max_abs_diff
from espnet_prune.utils.output_dir import (
    OutputDirError,
    check_output_dir,
    claim_output_dir,
    refuse_symlink,
    replace_file,
)

TASKS = ("asr", "slu")
#: The name under which export claims its output directories (see espnet_prune.utils.output_dir).
COMMAND = "espnet_prune.bin.export"
#: Largest allowed difference between the gated and the compact frontend's features.
TOLERANCE = 1e-3
#: Config keys (``a.b`` for nested ones) whose value is a file that decoding reads.
DECODING_FILES = ("token_list", "transcript_token_list", "bpemodel", "non_linguistic_symbols",
                  "normalize_conf.stats_file")
#: ``frontend_conf`` keys the standalone config drops: the pretrained weights and the pruning.
_TRAINING_ONLY_FRONTEND_KEYS = ("checkpoint", "pruning")


def detect_task(train_config: Path) -> str:
    """``slu`` for configs written by slu_train (they have SLU-only keys), else ``asr``."""
    config = read_config(train_config)
    return "slu" if "deliberationencoder" in config or "postdecoder" in config else "asr"


def read_config(train_config: Path) -> Dict[str, Any]:
    with open(train_config, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ValueError(f"{train_config} is not an ESPnet training config (not a YAML mapping)")
    return config


def task_class(task: str):
    if task == "asr":
        from espnet2.tasks.asr import ASRTask

        return ASRTask
    if task == "slu":
        from espnet2.tasks.slu import SLUTask

        return SLUTask
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def encoder_cost(config, seconds: float) -> Dict[str, Dict[str, float]]:
    """``{metric: {"cnn", "pos_conv", "transformer", "total"}}`` of ``config`` in every metric."""
    part = SSLPart(config, seconds)
    return {metric: {k: float(v) for k, v in metric_cost(metric, part).items()} for metric in METRICS}


def _probe(frontend, check_seconds: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """A fixed random waveform ``(1, S)`` and its length ``(1,)``, at least one CNN frame long."""
    generator = torch.Generator().manual_seed(0)
    samples = max(int(check_seconds * frontend.encoder.config.sample_rate), frontend.encoder.receptive_field)
    return torch.randn(1, samples, generator=generator), torch.tensor([samples])


def compact_model(train_config: Path, model_file: Path, task: Optional[str] = None,
                  check_seconds: float = 1.0, size: Optional[int] = None
                  ) -> Tuple[torch.nn.Module, Dict[str, Any], torch.Tensor]:
    """Load the gated model, prune its frontend physically and check it against the gated one.

    ``size``: for a run with several sizes (``targets``), which one (0 = the largest), required
    there; the model state of that size comes from its snapshot (the last size: the model).

    Returns:
        the compact model (eval mode), the report (without output paths) and the gated
        frontend's features ``(1, T, D)`` on the probe input.
    """
    register()
    task = task or detect_task(train_config)
    from espnet_prune.asr.frontend.pruned_ssl import PrunedSSLFrontend

    model, _ = task_class(task).build_model_from_file(str(train_config), str(model_file), "cpu")
    model.eval()
    # The controller's buffers hold NaN on purpose ("no earlier value"); its gates are parameters.
    check_finite([*model.named_parameters(), *((name, buffer) for name, buffer in model.named_buffers()
                                              if ".controller." not in name)], f"{model_file} cannot be exported")
    frontend = model.frontend
    if not isinstance(frontend, PrunedSSLFrontend) or frontend.controller is None:
        raise ValueError(f"{train_config} does not describe a pruning frontend "
                         "(frontend: pruned_ssl with frontend_conf.pruning); nothing to export")
    size_report = select_size(model, model_file, size)
    frontend = model.frontend
    seconds = frontend.controller.reference_seconds
    model_params_before = sum(p.numel() for p in model.parameters())
    dense = encoder_cost(frontend.encoder.config, seconds)

    probe, probe_lengths = _probe(frontend, check_seconds)
    controller = frontend.controller
    with torch.no_grad():
        gated_features, _ = frontend(probe, probe_lengths)
        structures = frontend.make_compact()
        compact_features, _ = frontend(probe, probe_lengths)
    check_finite([("features", gated_features)], f"the gated frontend of {model_file} on a probe input")
    max_diff = max_abs_diff(gated_features, compact_features)
    if not max_diff <= TOLERANCE:
        raise RuntimeError(f"compact frontend differs from the gated one by {max_diff:.3g}; nothing written")

    compact = encoder_cost(frontend.encoder.config, seconds)
    report = {
        "train_config": str(train_config),
        "model_file": str(model_file),
        "task": task,
        "reference_seconds": seconds,
        "encoder": {"before": dense, "after": compact,
                    "ratio": {metric: {k: compact[metric][k] / dense[metric][k] for k in dense[metric]
                                       if dense[metric][k]}
                              for metric in dense}},
        "model_params": {"before": model_params_before, "after": sum(p.numel() for p in model.parameters())},
        "structure": structures,
        "max_abs_diff_gated_vs_compact": max_diff,
        "pruning": budget_summary(controller, frontend.encoder.config),
    }
    if size_report is not None:
        report["size"] = size_report
    return model, report, gated_features


def select_size(model: torch.nn.Module, model_file: Path, size: Optional[int]) -> Optional[Dict[str, Any]]:
    """Put the model state of ``size`` of a run with several sizes into ``model`` (gated).

    Sizes but the last come from their snapshots; the last is the model file's own state, which
    is that size only if the file was saved after every snapshot. Returns ``{"index", "name",
    "targets", "step"}``, or ``None`` for a run with one size (where ``size`` must be ``None``).
    """
    from espnet_prune.pruning.multisize import size_label, size_name

    controller = model.frontend.controller
    schedule = controller.size_schedule
    if schedule is None:
        if size is not None:
            raise ValueError("size is only for a run with several sizes (frontend_conf.pruning.targets)")
        return None
    count = len(controller.sizes)
    if size is None or not 0 <= size < count:
        raise ValueError(f"this run has {count} sizes ({[size_label(s) for s in controller.sizes]}); give the "
                         f"index of one (0 to {count - 1}), got {size!r}")
    # The last size is the model itself: it is that size only once every snapshot was taken.
    needed = size if size < count - 1 else count - 2
    stage = schedule.stages[needed]
    taken = controller.snapshots.taken(needed)
    if taken != 1.0:
        what = ("was saved before that step" if taken == 0.0 else
                f"averages checkpoints from before and after that step (taken = {taken:g})")
        subject = (f"the model state of size {size + 1} (target {size_label(controller.sizes[size])})" if size == needed
                   else f"the last size (target {size_label(controller.sizes[size])}): the model is that size only "
                        f"after the snapshot of size {needed + 1}")
        last = stage.hold_end + schedule.max_extension
        raise ValueError(f"{model_file} does not hold {subject}, which is kept at the end of that size's hold (step "
                         f"{stage.hold_end}, or up to {last} if the hold is extended); {model_file} {what}. Export a "
                         f"model file saved after step {last}: the last epoch's (latest.pth, or NNepoch.pth), or an "
                         "average of epochs after it")
    step = int(controller.step)
    if size < count - 1:
        model.load_state_dict(controller.snapshots.model_state(size))
        controller = model.frontend.controller
        step = int(controller.snapshots.info(size)["step"])
        controller.step.fill_(step)
    controller.select_size(size)
    return {"index": size, "name": size_name(controller.sizes[size]), "targets": dict(controller.sizes[size]),
            "step": step}


def _write_report(report: Dict[str, Any], path: Path) -> None:
    with replace_file(path, "w") as f:
        json.dump(report, f, indent=2)


def _save_model(model: torch.nn.Module, path: Path) -> None:
    with replace_file(path) as f:
        torch.save(model.state_dict(), f)


def _write_onnx(frontend, onnx: Path, check_seconds: float, int8: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Write ``frontend`` (compact) to the ONNX file ``onnx``, and with ``int8`` (keyword arguments of
    :func:`~espnet_prune.ssl.onnx_export.export_int8`: ``method``, ``calibration``, ``tolerance``) its
    int8 copy ``F.int8.onnx``; their entry of the report."""
    from espnet_prune.ssl.onnx_export import export_int8, export_onnx, max_feature_diff

    export_onnx(frontend, refuse_symlink(onnx))
    probe = _probe(frontend, check_seconds)
    diff = max_feature_diff(frontend, onnx, [probe])
    if not diff <= TOLERANCE:
        raise RuntimeError(f"{onnx}: onnxruntime's features differ from PyTorch's by {diff:.3g} "
                           f"(tolerance {TOLERANCE:g})")
    entry = {"path": str(onnx), "max_abs_diff_torch_vs_onnxruntime": diff}
    if int8 is not None:
        entry["int8"] = export_int8(frontend, onnx, refuse_symlink(onnx.with_suffix(".int8.onnx")), **int8)
        logging.info("wrote %s (%s int8: %s)", entry["int8"]["path"], entry["int8"]["method"], entry["int8"]["reason"])
    return entry


def export(train_config: Path, model_file: Path, output: Path, task: Optional[str] = None,
           check_seconds: float = 1.0, onnx: Optional[Path] = None,
           onnx_int8: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Write the compact model file ``output`` and its report ``output.with_suffix(".json")``
    (and the compact frontend to the ONNX file ``onnx`` if given, with its int8 copy if
    ``onnx_int8`` gives :func:`~espnet_prune.ssl.onnx_export.export_int8`'s options).

    The model file loads with the unchanged ``train_config``; ``output`` is replaced as a file
    of its own (never written through a symlink) and may not be one of the inputs. Returns the
    report.
    """
    _refuse_inputs_as_outputs({output: "--output", output.with_suffix(".json"): "--output's report"},
                              train_config, model_file)
    model, report, _ = compact_model(train_config, model_file, task, check_seconds)
    report["output"] = str(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    _save_model(model, output)
    if onnx is not None:
        report["onnx"] = _write_onnx(model.frontend, onnx, check_seconds, onnx_int8)
    _write_report(report, output.with_suffix(".json"))
    return report


def _get(config: Dict[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def decoding_files(config: Dict[str, Any]) -> Dict[str, str]:
    """The files among :data:`DECODING_FILES` that ``config`` names (``none`` and inline token
    lists are no files), as ``{"normalize_conf.stats_file": "exp/asr_stats/train/feats_stats.npz"}``."""
    files = {}
    for key in DECODING_FILES:
        value = _get(config, key)
        if isinstance(value, str) and value.lower() not in ("none", "null", ""):
            files[key] = value
    return files


def standalone_config(config: Dict[str, Any], structure: Dict[str, Any], output_dir: Path) -> Dict[str, Any]:
    """The training ``config`` (a dict as read from config.yaml) for the compact model.

    ``frontend_conf`` loses ``checkpoint`` (set to ``null``) and ``pruning``, and gets the
    compact ``structure`` (an ``EncoderConfig`` dict) as ``arch``; ``init_param`` (weights
    for the start of training, of the dense shapes) is emptied and ``output_dir`` points at
    the new directory. Everything else is kept as trained.
    """
    if config.get("frontend") != "pruned_ssl":
        raise ValueError(f"frontend is {config.get('frontend')!r}, not pruned_ssl; nothing to export")
    new = dict(config)
    frontend_conf = {k: v for k, v in (config.get("frontend_conf") or {}).items()
                     if k not in _TRAINING_ONLY_FRONTEND_KEYS}
    frontend_conf["checkpoint"] = None
    frontend_conf["arch"] = structure
    new["frontend_conf"] = frontend_conf
    new["init_param"] = []
    new["output_dir"] = str(output_dir)
    return new


def export_experiment(train_config: Path, model_file: Path, output_dir: Path, task: Optional[str] = None,
                      check_seconds: float = 1.0, onnx: Optional[Path] = None,
                      size: Optional[int] = None, onnx_int8: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Write the standalone experiment directory ``output_dir`` (see the module docstring),
    and the compact frontend to the ONNX file ``onnx`` if given (``onnx_int8``: as for
    :func:`export`); ``size``: which size of a run
    with several sizes (see :func:`compact_model`).

    The directory is rebuilt from its own files (with ESPnet's ``build_model_from_file``)
    and checked against the gated model before this returns. Returns the report.
    """
    model_name = model_file.name
    _refuse_inputs_as_outputs({output_dir / "config.yaml": "--output_dir", output_dir / model_name: "--output_dir"},
                              train_config, model_file)
    check_output_dir(output_dir, COMMAND)
    config = read_config(train_config)
    model, report, gated_features = compact_model(train_config, model_file, task, check_seconds, size)
    new_config = standalone_config(config, report["structure"]["after"], output_dir)

    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    claim_output_dir(output_dir, COMMAND)
    with replace_file(output_dir / "config.yaml", "w") as f:
        yaml_no_alias_safe_dump(new_config, f, indent=4, sort_keys=False)
    _save_model(model, output_dir / model_name)
    images = train_config.parent / "images"
    if images.is_dir():
        _copy_images(images, output_dir / "images")

    rebuilt, _ = task_class(report["task"]).build_model_from_file(
        str(output_dir / "config.yaml"), str(output_dir / model_name), "cpu")
    rebuilt.eval()
    probe, probe_lengths = _probe(rebuilt.frontend, check_seconds)
    with torch.no_grad():
        rebuilt_features, _ = rebuilt.frontend(probe, probe_lengths)
    max_diff = max_abs_diff(gated_features, rebuilt_features)
    if not max_diff <= TOLERANCE:
        raise RuntimeError(f"the model rebuilt from {output_dir} differs from the gated one by {max_diff:.3g}")

    files = decoding_files(new_config)
    for key, path in files.items():
        if not Path(path).exists():
            logging.warning("%s names %s = %s, which does not exist here; decoding needs it", train_config,
                            key, path)
    report.update(output_dir=str(output_dir), config=str(output_dir / "config.yaml"),
                  output=str(output_dir / model_name), files=files, max_abs_diff_gated_vs_exported=max_diff)
    if onnx is not None:
        report["onnx"] = _write_onnx(model.frontend, onnx, check_seconds, onnx_int8)
    _write_report(report, (output_dir / model_name).with_suffix(".json"))
    return report


def _refuse_inputs_as_outputs(outputs: Dict[Path, str], train_config: Path, model_file: Path) -> None:
    """Refuse outputs that are the training config or the model file (through any link)."""
    for output, option in outputs.items():
        for source in (train_config, model_file):
            if output.resolve() == source.resolve():
                raise OutputDirError(f"{option} would overwrite {source}; choose another output")


def _copy_images(source: Path, target: Path) -> None:
    """Copy the training curves ``source`` (a directory) to ``target``, replacing an earlier copy."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise OutputDirError(f"refusing to replace {target}: it is not a directory that export wrote")
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, symlinks=True)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)


def pruning_sizes(train_config: Path) -> List[Dict[str, float]]:
    """The sizes a training config's pruning yields (one entry for a single target, none without pruning)."""
    from espnet_prune.pruning.config import PruningConfig

    config = read_config(train_config)
    pruning = (config.get("frontend_conf") or {}).get("pruning")
    if config.get("frontend") != "pruned_ssl" or pruning is None:
        return []
    return PruningConfig.from_dict(pruning, where="frontend_conf.pruning").sizes()


def export_sizes(train_config: Path, model_file: Path, output_dir: Path, task: Optional[str] = None,
                 check_seconds: float = 1.0, onnx: Optional[Path] = None,
                 onnx_int8: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Every size of a run with several sizes as its own standalone experiment,
    ``output_dir/target0.80/``, ``output_dir/target0.60/`` ... (each as :func:`export_experiment`
    writes it; ``onnx`` ``F.onnx`` becomes ``F.target0.80.onnx`` ...), and the summary of every
    size, ``output_dir/summary.json`` and ``output_dir/summary.md``.

    Returns:
        ``{"sizes": [report of each size], "summary": [row of each size], "table": markdown}``.
    """
    from espnet_prune.pruning.multisize import size_name

    sizes = pruning_sizes(train_config)
    if len(sizes) < 2:
        raise ValueError(f"{train_config} prunes to one size; export it with export_experiment")
    claim_output_dir(output_dir, COMMAND)
    reports = []
    for index, size in enumerate(sizes):
        name = size_name(size)
        size_onnx = None if onnx is None else onnx.with_name(f"{onnx.stem}.{name}{onnx.suffix}")
        logging.info("size %d of %d: %s -> %s", index + 1, len(sizes), name, output_dir / name)
        reports.append(export_experiment(train_config, model_file, output_dir / name, task, check_seconds,
                                         size_onnx, size=index, onnx_int8=onnx_int8))
    rows = summary_rows(reports)
    table = summary_table(rows, reports[0]["reference_seconds"])
    _write_report({"train_config": str(train_config), "model_file": str(model_file), "sizes": rows},
                  output_dir / "summary.json")
    with replace_file(output_dir / "summary.md", "w") as f:
        f.write(table + "\n")
    return {"sizes": reports, "summary": rows, "table": table}


def summary_rows(reports: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per size: directory, targets, encoder params and MACs after export and their
    ratios to the dense encoder, the exported budget ratios and whether each is reached."""
    rows = []
    for report in reports:
        encoder = report["encoder"]
        rows.append({
            "size": report["size"]["name"], "output_dir": report["output_dir"], "targets": report["size"]["targets"],
            "step": report["size"]["step"],
            "params": encoder["after"]["params"]["total"], "params_ratio": encoder["ratio"]["params"]["total"],
            "macs": encoder["after"]["macs"]["total"], "macs_ratio": encoder["ratio"]["macs"]["total"],
            "dense_params": encoder["before"]["params"]["total"], "dense_macs": encoder["before"]["macs"]["total"],
            "exported": {name: b["exported"] for name, b in report["pruning"]["budgets"].items()},
            "reached": all(b["reached"] for b in report["pruning"]["budgets"].values()),
        })
    return rows


def summary_table(rows: List[Dict[str, Any]], seconds: float) -> str:
    """The summary rows as a markdown table (dense encoder first)."""
    fmt = cost.format_cost
    lines = [f"| size | target | step | params | params ratio | MACs ({seconds:g} s) | MACs ratio | exported "
             "| reached |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    if rows:
        lines.append(f"| dense | – | – | {fmt(rows[0]['dense_params'])} | 1.000 | {fmt(rows[0]['dense_macs'])} "
                     "| 1.000 | – | – |")
    for row in rows:
        targets = ", ".join(f"{name} {value:.2f}" for name, value in row["targets"].items())
        exported = ", ".join(f"{name} {value:.3f}" for name, value in row["exported"].items())
        lines.append(f"| {row['size']} | {targets} | {row['step']} | {fmt(row['params'])} | "
                     f"{row['params_ratio']:.3f} | {fmt(row['macs'])} | {row['macs_ratio']:.3f} | {exported} | "
                     f"{'yes' if row['reached'] else 'no'} |")
    return "\n".join(lines)


def pack_command(report: Dict[str, Any]) -> List[str]:
    """``python -m espnet2.bin.pack asr ...``: the command that bundles an exported directory
    (its report from :func:`export_experiment`) with the files it names, as asr.sh's packing
    stage would; paths as the report gives them, so run it from the same directory as export."""
    output_dir, model = Path(report["output_dir"]), Path(report["output"])
    command = ["python", "-m", "espnet2.bin.pack", "asr",
               "--asr_train_config", report["config"], "--asr_model_file", report["output"]]
    for path in report["files"].values():
        if Path(path).is_file():
            command += ["--option", path]
    for extra in ("RESULTS.md", "images"):  # as asr.sh's packing stage adds them, once they exist
        if (output_dir / extra).exists():
            command += ["--option", str(output_dir / extra)]
    # asr.sh's name for the archive: EXP/EXPNAME_MODELSTEM.zip
    return command + ["--outpath", str(output_dir / f"{output_dir.name}_{model.stem}.zip")]


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_config", type=Path, required=True, help="config.yaml of the training run")
    parser.add_argument("--model_file", type=Path, required=True, help="trained (gated) model file")
    parser.add_argument("--task", choices=TASKS, default=None, help="default: detected from the config")
    output = parser.add_argument_group("output (exactly one)")
    targets = output.add_mutually_exclusive_group(required=True)
    targets.add_argument("--output_dir", type=Path, default=None,
                         help="write a standalone experiment directory: config.yaml without the pretrained "
                              "weights, the compact model under the model file's name, the .json report")
    targets.add_argument("--output", type=Path, default=None,
                         help="write only the compact model file (and its .json report beside it); it "
                              "loads with the unchanged training config")
    parser.add_argument("--onnx", type=Path, default=None,
                        help="also write the compact frontend to this ONNX file (see espnet_prune.ssl.onnx_export)")
    int8 = parser.add_argument_group("int8 copy of the ONNX file (F.int8.onnx beside --onnx F.onnx)")
    int8.add_argument("--onnx_int8", choices=INT8_METHODS, default=None,
                      help="dynamic: onnxruntime's dynamic int8; static: int8 calibrated on --calibration speech "
                           "(convolutions included); fastest: both, timed here, the faster one within "
                           "--int8_tolerance is written (the report says which and why)")
    int8.add_argument("--calibration", default=DEFAULT_CALIBRATION,
                      help="speech that calibrates static int8: synth:N (N utterances synthesised offline with "
                           "eSpeak NG) or a Kaldi wav.scp (e.g. data/train/wav.scp)")
    int8.add_argument("--int8_tolerance", type=float, default=INT8_TOLERANCE,
                      help="largest relative L2 distance of the int8 features from fp32 on held-out speech")
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    for path in (args.train_config, args.model_file):
        if not path.is_file():
            sys.exit(f"export: {path} does not exist")
    onnx_int8 = None
    if args.onnx_int8 is not None:
        if args.onnx is None:
            sys.exit("export: --onnx_int8 writes the int8 copy of the --onnx file; give --onnx F.onnx too")
        if not args.calibration.startswith("synth:") and not Path(args.calibration).is_file():
            sys.exit(f"export: --calibration {args.calibration} is neither synth:N nor an existing wav.scp")
        onnx_int8 = {"method": args.onnx_int8, "calibration": args.calibration, "tolerance": args.int8_tolerance}
    try:
        _export(args, onnx_int8)
    except (OutputDirError, NonFiniteError) as error:
        sys.exit(f"export: {error}")


def _export(args: argparse.Namespace, onnx_int8: Optional[Dict[str, Any]]) -> None:
    """Export as ``args`` (parsed by :func:`get_parser`) says, with ``onnx_int8`` the int8 copy's options; log
    the reports."""
    if len(pruning_sizes(args.train_config)) > 1:
        if args.output_dir is None:
            sys.exit(f"export: {args.train_config} yields several sizes (frontend_conf.pruning.targets): export "
                     "them with --output_dir D, one standalone experiment per size in D/target0.80/ ...")
        result = export_sizes(args.train_config, args.model_file, args.output_dir, args.task, onnx=args.onnx,
                              onnx_int8=onnx_int8)
        for report in result["sizes"]:
            _log_report(report, args)
        print(result["table"])
        logging.info("wrote %s and %s", args.output_dir / "summary.md", args.output_dir / "summary.json")
        return
    if args.output_dir is not None:
        report = export_experiment(args.train_config, args.model_file, args.output_dir, args.task,
                                   onnx=args.onnx, onnx_int8=onnx_int8)
    else:
        report = export(args.train_config, args.model_file, args.output, args.task, onnx=args.onnx,
                        onnx_int8=onnx_int8)
    _log_report(report, args)


def _log_report(report: Dict[str, Any], args: argparse.Namespace) -> None:
    """Log the sizes, budgets, warnings and written files of one export."""
    enc = report["encoder"]
    logging.info("encoder params %s -> %s (%.1f%%), MACs for %.0f s %s -> %s (%.1f%%)",
                 cost.format_cost(enc["before"]["params"]["total"]),
                 cost.format_cost(enc["after"]["params"]["total"]),
                 100 * enc["ratio"]["params"]["total"], report["reference_seconds"],
                 cost.format_cost(enc["before"]["macs"]["total"]), cost.format_cost(enc["after"]["macs"]["total"]),
                 100 * enc["ratio"]["macs"]["total"])
    pruning = report["pruning"]
    for name, budget in pruning["budgets"].items():
        logging.info("pruning budget '%s' (%s): target %.3f, exported %.3f, expected under the gates %.3f",
                     name, pruning["metric"], budget["target"], budget["exported"], budget["expected"])
    if pruning["explanation"]:
        logging.info(pruning["explanation"])
    for warning in pruning["warnings"]:
        logging.warning(warning)
    written = Path(report["output"])
    if args.output_dir is not None:
        logging.info("wrote %s, %s and %s", report["config"], written, written.with_suffix(".json"))
        if report["task"] == "asr":
            logging.info("pack it with: %s", " ".join(pack_command(report)))
    else:
        logging.info("wrote %s and %s", written, written.with_suffix(".json"))


if __name__ == "__main__":
    main()
