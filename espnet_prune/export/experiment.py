"""Write compact models: a standalone ESPnet experiment directory per size, or one model file.

:func:`export_experiment` writes every size of a run (:func:`~espnet_prune.export.sizes.pruning_sizes`)
as its own experiment: with one size ``output_dir`` itself, with several ``output_dir/target0.80/``,
``output_dir/target0.60/`` ... and the summary ``output_dir/summary.{json,md}``. Each directory
holds ``config.yaml`` (the compact encoder as ``frontend_conf.arch``, no pretrained checkpoint, no
pruning), the compact model under the model file's name, its report (``.json``) and a copy of the
training curves (``images/``, empty when training drew none: asr.sh's packing stage packs it); it
is rebuilt from its own files with ESPnet's ``build_model_from_file`` and checked against the
gated model before the report is written. The other files decoding reads (BPE model,
normalisation statistics, non-linguistic symbols) keep the paths the training config gives them,
as in every ESPnet experiment; the report lists them.

:func:`export_file` writes one compact model file (and its report) that loads with the unchanged
training config (which still needs the original SSL checkpoint to build the model).
"""

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from espnet_prune.export.compact import (
    TOLERANCE,
    Compacted,
    compact_model,
    compact_sizes,
    detect_task,
    probe,
    probe_output,
    task_class,
)
from espnet_prune.export.report import ExportReport, OnnxFile, SizesSummary, Structure
from espnet_prune.export.sizes import pruning_sizes, read_config
from espnet_prune.pruning.multisize import size_name
from espnet_prune.utils.finite import max_abs_diff
from espnet_prune.utils.output_dir import (
    OutputDirError,
    check_output_dir,
    claim_output_dir,
    refuse_symlink,
    replace_file,
)

#: The name under which export claims its output directories (see espnet_prune.utils.output_dir).
COMMAND = "espnet_prune.bin.export"
#: Config keys (``a.b`` for nested ones) whose value is a file that decoding reads.
DECODING_FILES = ("token_list", "transcript_token_list", "bpemodel", "non_linguistic_symbols",
                  "normalize_conf.stats_file")
#: ``frontend_conf`` keys the standalone config drops: the pretrained weights and the pruning.
_TRAINING_ONLY_FRONTEND_KEYS = ("checkpoint", "pruning")


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


def standalone_config(config: Dict[str, Any], structure: Dict[str, Any], output_dir: Path,
                      downstream: Optional[Dict[str, Structure]] = None) -> Dict[str, Any]:
    """The training ``config`` (a dict as read from config.yaml) for the compact model.

    ``frontend_conf`` loses ``checkpoint`` (set to ``null``) and ``pruning``, and gets the
    compact ``structure`` (an ``EncoderConfig`` dict) as ``arch``; ``init_param`` (weights
    for the start of training, of the dense shapes) is emptied and ``output_dir`` points at
    the new directory. With ``downstream`` (a whole-model export, ``{part: Structure}``),
    ``encoder_conf`` / ``decoder_conf`` get the compact ``pruned_structure`` and ``model_conf``
    loses ``pruning``. Everything else is kept as trained.
    """
    pruning_sizes(config, required=True)
    new = dict(config)
    frontend_conf = {k: v for k, v in (config.get("frontend_conf") or {}).items()
                     if k not in _TRAINING_ONLY_FRONTEND_KEYS}
    frontend_conf["checkpoint"] = None
    frontend_conf["arch"] = structure
    new["frontend_conf"] = frontend_conf
    if downstream is not None:
        new["model_conf"] = {k: v for k, v in (config.get("model_conf") or {}).items() if k != "pruning"}
        for name, part in downstream.items():
            new[f"{name}_conf"] = {**(config.get(f"{name}_conf") or {}), "pruned_structure": part.after}
    new["init_param"] = []
    new["output_dir"] = str(output_dir)
    return new


def _save_model(model: torch.nn.Module, path: Path) -> None:
    with replace_file(path) as f:
        torch.save(model.state_dict(), f)


def write_onnx(frontend, onnx: Path, check_seconds: float, int8: Optional[Dict[str, Any]] = None) -> OnnxFile:
    """Write ``frontend`` (compact) to the ONNX file ``onnx``, and with ``int8`` (keyword arguments of
    :func:`~espnet_prune.asr.frontend.onnx_export.export_int8`: ``method``, ``calibration``, ``tolerance``)
    its int8 copy ``F.int8.onnx``; their entry of the report."""
    from espnet_prune.asr.frontend.onnx_export import export_int8, export_onnx, max_feature_diff

    export_onnx(frontend, refuse_symlink(onnx))
    diff = max_feature_diff(frontend, onnx, [probe(frontend, check_seconds)])
    if not diff <= TOLERANCE:
        raise RuntimeError(f"{onnx}: onnxruntime's features differ from PyTorch's by {diff:.3g} "
                           f"(tolerance {TOLERANCE:g})")
    entry = OnnxFile(path=str(onnx), max_abs_diff_torch_vs_onnxruntime=diff)
    if int8 is not None:
        entry.int8 = export_int8(frontend, onnx, refuse_symlink(onnx.with_suffix(".int8.onnx")), **int8)
        logging.info("wrote %s (%s int8: %s)", entry.int8["path"], entry.int8["method"], entry.int8["reason"])
    return entry


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


def export_file(train_config: Path, model_file: Path, output: Path, task: Optional[str] = None,
                check_seconds: float = 1.0, onnx: Optional[Path] = None,
                onnx_int8: Optional[Dict[str, Any]] = None) -> ExportReport:
    """Write the compact model file ``output`` and its report ``output.with_suffix(".json")``
    (and the compact frontend to the ONNX file ``onnx`` if given, with its int8 copy if
    ``onnx_int8`` gives :func:`write_onnx`'s options), for a run with one size.

    The model file loads with the unchanged ``train_config``; ``output`` is replaced as a file
    of its own (never written through a symlink) and may not be one of the inputs.
    """
    _refuse_inputs_as_outputs({output: "--output", output.with_suffix(".json"): "--output's report"},
                              train_config, model_file)
    done = compact_model(train_config, model_file, task, check_seconds)
    report = done.report
    report.output = str(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    _save_model(done.model, output)
    if onnx is not None:
        report.onnx = write_onnx(done.model.frontend, onnx, check_seconds, onnx_int8)
    report.write(output.with_suffix(".json"))
    return report


def _write_experiment(done: Compacted, config: Dict[str, Any], train_config: Path, model_file: Path,
                      output_dir: Path, check_seconds: float, onnx: Optional[Path],
                      onnx_int8: Optional[Dict[str, Any]]) -> ExportReport:
    """Write the standalone experiment ``output_dir`` of one compacted size and check it (module docstring)."""
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    report, model_name = done.report, model_file.name
    new_config = standalone_config(config, report.structure.after, output_dir, report.downstream)
    claim_output_dir(output_dir, COMMAND)
    with replace_file(output_dir / "config.yaml", "w") as f:
        yaml_no_alias_safe_dump(new_config, f, indent=4, sort_keys=False)
    _save_model(done.model, output_dir / model_name)
    images = train_config.parent / "images"
    if images.is_dir():
        _copy_images(images, output_dir / "images")
    else:  # asr.sh's packing stage always packs EXP/images, which use_matplotlib: false never writes
        (output_dir / "images").mkdir(exist_ok=True)

    rebuilt, _ = task_class(report.task).build_model_from_file(
        str(output_dir / "config.yaml"), str(output_dir / model_name), "cpu")
    rebuilt.eval()
    with torch.no_grad():
        rebuilt_features = probe_output(rebuilt, report.downstream is not None, check_seconds)
    diff = max_abs_diff(done.gated_features, rebuilt_features)
    if not diff <= TOLERANCE:
        raise RuntimeError(f"the model rebuilt from {output_dir} differs from the gated one by {diff:.3g}")

    files = decoding_files(new_config)
    for key, path in files.items():
        if not Path(path).exists():
            logging.warning("%s names %s = %s, which does not exist here; decoding needs it", train_config,
                            key, path)
    report.output_dir, report.config = str(output_dir), str(output_dir / "config.yaml")
    report.output, report.files, report.max_abs_diff_gated_vs_exported = str(output_dir / model_name), files, diff
    if onnx is not None:
        report.onnx = write_onnx(done.model.frontend, onnx, check_seconds, onnx_int8)
    report.write((output_dir / model_name).with_suffix(".json"))
    return report


@dataclass
class Exported:
    """What :func:`export_experiment` wrote.

    Args:
        reports: the report of every size, largest first (one for a run with one size).
        summary: the summary of every size (``None`` for a run with one size).
    """

    reports: List[ExportReport]
    summary: Optional[SizesSummary] = None

    def table(self) -> Optional[str]:
        """The summary as a markdown table (``None`` for a run with one size)."""
        return None if self.summary is None else self.summary.table(self.reports[0].reference_seconds)


def export_experiment(train_config: Path, model_file: Path, output_dir: Path, task: Optional[str] = None,
                      check_seconds: float = 1.0, onnx: Optional[Path] = None,
                      onnx_int8: Optional[Dict[str, Any]] = None) -> Exported:
    """Every size of the run as a standalone experiment (module docstring), from one build of the
    gated model. With several sizes each size's model state comes from its snapshot in
    ``model_file`` (the last size's from the model itself), and the ONNX file ``F.onnx`` becomes
    ``F.target0.80.onnx`` ...; ``onnx_int8``: as for :func:`write_onnx`.
    """
    model_name = model_file.name
    _refuse_inputs_as_outputs({output_dir / "config.yaml": "--output_dir", output_dir / model_name: "--output_dir"},
                              train_config, model_file)
    check_output_dir(output_dir, COMMAND)
    config = read_config(train_config)
    sizes = pruning_sizes(config, required=True)
    task = task or detect_task(config)
    several = len(sizes) > 1
    names = [size_name(size) for size in sizes]
    directories = [output_dir / name for name in names] if several else [output_dir]
    if several:
        for directory in directories:
            _refuse_inputs_as_outputs({directory / "config.yaml": "--output_dir",
                                       directory / model_name: "--output_dir"}, train_config, model_file)
            check_output_dir(directory, COMMAND)
        claim_output_dir(output_dir, COMMAND)
    reports = []
    for index, done in enumerate(compact_sizes(train_config, model_file, task, len(sizes), check_seconds)):
        size_onnx = onnx
        if several:
            logging.info("size %d of %d: %s -> %s", index + 1, len(sizes), names[index], directories[index])
            if onnx is not None:
                size_onnx = onnx.with_name(f"{onnx.stem}.{names[index]}{onnx.suffix}")
        reports.append(_write_experiment(done, config, train_config, model_file, directories[index], check_seconds,
                                         size_onnx, onnx_int8))
    if not several:
        return Exported(reports)
    summary = SizesSummary.of(train_config, model_file, reports)
    summary.write(output_dir / "summary.json")
    exported = Exported(reports, summary)
    with replace_file(output_dir / "summary.md", "w") as f:
        f.write(exported.table() + "\n")
    return exported


def pack_command(report: ExportReport) -> List[str]:
    """``python -m espnet2.bin.pack asr ...``: the command that bundles an exported directory
    (its report from :func:`export_experiment`) with the files it names, as asr.sh's packing
    stage would; paths as the report gives them, so run it from the same directory as export."""
    output_dir, model = Path(report.output_dir), Path(report.output)
    command = ["python", "-m", "espnet2.bin.pack", "asr",
               "--asr_train_config", report.config, "--asr_model_file", report.output]
    for path in report.files.values():
        if Path(path).is_file():
            command += ["--option", path]
    for extra in ("RESULTS.md", "images"):  # as asr.sh's packing stage adds them, once they exist
        if (output_dir / extra).exists():
            command += ["--option", str(output_dir / extra)]
    # asr.sh's name for the archive: EXP/EXPNAME_MODELSTEM.zip
    return command + ["--outpath", str(output_dir / f"{output_dir.name}_{model.stem}.zip")]
