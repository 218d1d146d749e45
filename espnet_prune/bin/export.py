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

A run with several sizes (``frontend_conf.pruning.targets`` or ``model_conf.pruning.targets``, see
:mod:`espnet_prune.pruning.multisize`) is exported with ``--output_dir D`` to one such
experiment per size, ``D/target0.80/``, ``D/target0.60/`` ... (each size's model state comes
from its snapshot in the model file, the last size's from the model itself), plus the summary
of every size (params, MACs, their ratios), printed and written to ``D/summary.md`` and
``D/summary.json``.

The report gives parameters and MACs per component before and after, their ratios, the
compact structure, and the largest difference between the gated and the compact frontend's
features on a probe input (and, for ``--output_dir``, of the model rebuilt from the written
directory alone); ``doc/export.md`` lists its fields. The work is done by :mod:`espnet_prune.export`
(this is its command line).
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from espnet_prune.asr.frontend.calibration import DEFAULT_CALIBRATION
from espnet_prune.asr.frontend.onnx_export import INT8_METHODS, INT8_TOLERANCE
from espnet_prune.export.compact import TASKS
from espnet_prune.export.experiment import export_experiment, export_file, pack_command
from espnet_prune.export.report import ExportReport
from espnet_prune.export.sizes import pruning_sizes
from espnet_prune.utils.finite import NonFiniteError
from espnet_prune.utils.output_dir import OutputDirError


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
                        help="also write the compact frontend to this ONNX file "
                             "(see espnet_prune.asr.frontend.onnx_export)")
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
    if args.output is not None:
        if len(pruning_sizes(args.train_config)) > 1:
            sys.exit(f"export: {args.train_config} yields several sizes (targets of frontend_conf.pruning or "
                     "model_conf.pruning): export them with --output_dir D, one standalone experiment per size in "
                     "D/target0.80/ ...")
        export_file(args.train_config, args.model_file, args.output, args.task, onnx=args.onnx,
                    onnx_int8=onnx_int8).log()
        return
    exported = export_experiment(args.train_config, args.model_file, args.output_dir, args.task, onnx=args.onnx,
                                 onnx_int8=onnx_int8)
    for report in exported.reports:
        _log_experiment(report)
    if exported.summary is not None:
        print(exported.table())
        logging.info("wrote %s and %s", args.output_dir / "summary.md", args.output_dir / "summary.json")


def _log_experiment(report: ExportReport) -> None:
    report.log()
    if report.task == "asr":
        logging.info("pack it with: %s", " ".join(pack_command(report)))


if __name__ == "__main__":
    main()
