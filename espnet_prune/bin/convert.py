"""Convert a trained ESPnet model with an SSL frontend into one that espnet_prune can prune.

An ESPnet experiment (``config.yaml`` + model file, or the zip that ``espnet2.bin.pack`` /
asr.sh's packing stage writes) whose frontend is ESPnet's ``s3prl`` frontend around a
wav2vec 2.0 / HuBERT / WavLM upstream becomes an experiment directory with ``frontend:
pruned_ssl`` and ``model: pruned_espnet``::

    python -m espnet_prune.bin.convert --asr_train_config exp/asr_x/config.yaml \\
        --asr_model_file exp/asr_x/valid.acc.ave.pth --output_dir exp/asr_x_converted \\
        [--pruning hj_macs0.6]
    python -m espnet_prune.bin.convert --slu_train_config ... --slu_model_file ... --output_dir ...
    python -m espnet_prune.bin.convert --model_zip asr_model.zip --output_dir ...

``D/config.yaml`` is the original config with ``frontend: pruned_ssl`` (``checkpoint: null``,
the encoder's structure as ``arch``, the layer choice or the learned layer weights of
``multilayer_feature``, see :mod:`espnet_prune.asr.frontend.from_s3prl`) and ``model:
pruned_espnet``; ``D/<model file name>`` holds the same weights under pruned_ssl's names.
Everything else (normalisation, pre-encoder, encoder, decoder, CTC, token list, BPE model and
statistics paths) is unchanged. So that the config serves as ``--asr_config`` of a fine-tuning
run, the data and shape file lists of the original run (:data:`RUN_ARGUMENTS`) are emptied
(ESPnet would append that run's lists to them) and the entries ESPnet records in
``config.yaml`` but refuses in a ``--config`` file (``required``, ``version``) are left out.
Run convert from the
directory the config's relative paths start from (the recipe directory), as
``espnet_prune.bin.export``. From a zip, the files it bundles are copied into ``D`` and the
config points there.

Without ``--pruning`` the converted model decodes what the original decodes. ``--pruning``
(a preset name from ``conf/pruning/`` or a YAML file with the keys of
``frontend_conf.pruning``) adds the pruning section, ready for fine-tuning with
``--init_param D/<model file name>``.

Only local files are read; nothing is downloaded. The upstream's architecture comes from its
s3prl name or, for ``*_local`` / ``*_url`` / ``*_custom`` upstreams, from the checkpoint at
``path_or_url`` (or the local copy given with ``--upstream_checkpoint``).
"""

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import yaml

from espnet_prune import register
from espnet_prune.export.compact import task_class
from espnet_prune.export.sizes import read_config
from espnet_prune.utils.output_dir import check_output_dir, claim_output_dir, replace_file

TASKS = ("asr", "slu")
#: The name under which convert claims its output directory (see espnet_prune.utils.output_dir).
COMMAND = "espnet_prune.bin.convert"
#: Frontend state-dict prefixes of the s3prl upstream's model: ESPnet 202511, and ESPnet
#: models trained before s3prl's ``S3PRLUpstream`` (``frontend.upstream.model.*``).
_LEGACY_UPSTREAM_PREFIX = "upstream.model."
#: Models whose pruning-aware subclass is ``model: pruned_espnet`` (ESPnet's default, ``espnet``).
_CONVERTIBLE_MODELS = ("espnet",)
#: Training-run arguments with ``action="append"`` that asr.sh / slu.sh always pass on the
#: command line: the converted config leaves them empty, or ESPnet would add a fine-tuning
#: run's data and shape files to the original run's.
RUN_ARGUMENTS = ("train_data_path_and_name_and_type", "valid_data_path_and_name_and_type", "train_shape_file",
                 "valid_shape_file", "fold_length")


def pruning_section(value: str) -> Dict[str, Any]:
    """``frontend_conf.pruning`` from ``--pruning``: a preset name or a YAML file (checked)."""
    from espnet_prune.presets import presets
    from espnet_prune.pruning.config import PruningConfig

    if value in presets("pruning"):
        section = {"preset": value}
    elif Path(value).is_file():
        with open(value, encoding="utf-8") as f:
            section = yaml.safe_load(f)
        if not isinstance(section, dict):
            raise ValueError(f"--pruning file {value} must hold a mapping of frontend_conf.pruning keys")
    else:
        raise ValueError(f"--pruning '{value}' is neither a preset ({sorted(presets('pruning'))}) nor a YAML file")
    PruningConfig.from_dict(section, where="--pruning")
    return section


def convert_state(config: Dict[str, Any], state: Dict[str, torch.Tensor], model_file: Path,
                  upstream_checkpoint: Optional[Path] = None,
                  pruning: Optional[Dict[str, Any]] = None) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """The converted config and model state of an ESPnet ``s3prl``-frontend model.

    Args:
        config: the training config (``config.yaml`` as a dict).
        state: its model state dict.
        model_file: where ``state`` comes from, for error messages.
        upstream_checkpoint: local copy of the upstream's checkpoint (architecture source).
        pruning: ``frontend_conf.pruning`` to add, or ``None``.
    Raises:
        ValueError: a frontend or model that cannot be converted, a model file that does not
            match the config (named).
    """
    from espnet_prune.asr.frontend.from_s3prl import UPSTREAM_PREFIX, convert_s3prl_frontend

    frontend = config.get("frontend")
    if frontend == "huggingface":
        raise ValueError(
            "frontend 'huggingface' cannot be converted: ESPnet 202511's HuggingFaceFrontend returns its output "
            "lengths in input samples (or the input's shape when the feature extractor gives no attention mask), "
            "not in frames, so no frame-based frontend decodes what it decodes; convert maps the 's3prl' frontend")
    if frontend == "pruned_ssl":
        raise ValueError("the config already has frontend: pruned_ssl; there is nothing to convert")
    if frontend != "s3prl":
        raise ValueError(
            f"frontend '{frontend}' is not a self-supervised speech model convert can map; it converts ESPnet's "
            "'s3prl' frontend around a wav2vec 2.0 / HuBERT / WavLM upstream")
    model = config.get("model", "espnet")
    if model not in _CONVERTIBLE_MODELS:
        raise ValueError(f"model '{model}' cannot be converted; convert maps model: espnet to model: pruned_espnet")
    frontend_state = {}
    for key, value in state.items():
        if key.startswith("frontend."):
            key = key[len("frontend."):]
            if key.startswith(_LEGACY_UPSTREAM_PREFIX):
                key = UPSTREAM_PREFIX + key[len(_LEGACY_UPSTREAM_PREFIX):]
            frontend_state[key] = value
    frontend_conf, converted_frontend = convert_s3prl_frontend(
        config.get("frontend_conf") or {}, frontend_state, model_file, upstream_checkpoint, pruning)
    converted = {**config, "frontend": "pruned_ssl", "frontend_conf": frontend_conf, "model": "pruned_espnet"}
    converted.update({key: [] for key in RUN_ARGUMENTS if key in config})
    new_state = {k: v for k, v in state.items() if not k.startswith("frontend.")}
    new_state.update({f"frontend.{k}": v for k, v in converted_frontend.items()})
    return converted, new_state


def usable_as_config(task: str, config: Dict[str, Any]) -> Dict[str, Any]:
    """``config`` without the entries that ``<task>_train --config`` refuses: the ones that are
    no option of its parser (``required`` and ``version``, which ESPnet adds to ``config.yaml``)."""
    register()
    options = {action.dest for action in task_class(task).get_parser()._actions}
    return {key: value for key, value in config.items() if key in options}


def check_model(task: str, config: Dict[str, Any], state: Dict[str, torch.Tensor], train_config: Path,
                model_file: Path) -> None:
    """Build the converted model from ``config`` and load ``state`` into it, strictly.

    Raises:
        ValueError: the model cannot be built (e.g. a file the config names is missing) or the
            state does not fit it (the model file does not match its config).
    """
    register()
    try:
        model = task_class(task).build_model(argparse.Namespace(**config))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, AssertionError, RuntimeError) as error:
        raise ValueError(f"cannot build the converted model from {train_config} ({type(error).__name__}: {error}); "
                         "run convert from the directory the config's relative paths start from (the recipe "
                         "directory)") from error
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()][1:4]
        raise ValueError(f"model file {model_file} does not match its config {train_config}: "
                         f"{' '.join(lines)[:600]}") from error


def write_experiment(output_dir: Path, config: Dict[str, Any], state: Dict[str, torch.Tensor], model_name: str,
                     files: Optional[Dict[str, Path]] = None) -> List[Path]:
    """Write the converted experiment: ``output_dir/config.yaml``, ``output_dir/<model_name>``
    and ``files`` (``{path relative to output_dir: source file}``, copied).

    ``output_dir`` must be new, empty or an earlier conversion's (see
    :mod:`espnet_prune.utils.output_dir`); every file is written beside its destination and
    then moved onto it, never through a symlink.

    Returns:
        the paths written.
    """
    claim_output_dir(output_dir, COMMAND)
    written = []

    def place(relative: str, write) -> None:
        target = output_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with replace_file(target) as f:
            write(f)
        written.append(target)

    for relative, source in (files or {}).items():
        def copy(f, source=source):
            with open(source, "rb") as original:
                shutil.copyfileobj(original, f)
        place(relative, copy)
    place(model_name, lambda f: torch.save(state, f))
    place("config.yaml", lambda f: f.write(yaml.safe_dump(config, sort_keys=False).encode("utf-8")))
    return written


def _relocate(value: Any, root: str, output_dir: Path, files: Dict[str, Path]) -> Any:
    """``value`` (a config) with every path under ``root`` moved under ``output_dir``;
    ``files`` collects ``{relative path: source}``."""
    if isinstance(value, dict):
        return {k: _relocate(v, root, output_dir, files) for k, v in value.items()}
    if isinstance(value, list):
        return [_relocate(v, root, output_dir, files) for v in value]
    if isinstance(value, str) and value.startswith(root + os.sep) and Path(value).is_file():
        relative = os.path.relpath(value, root)
        files[relative] = Path(value)
        return str(output_dir / relative)
    return value


def convert(task: str, train_config: Path, model_file: Path, output_dir: Path,
            upstream_checkpoint: Optional[Path] = None, pruning: Optional[str] = None,
            unpacked_root: Optional[Path] = None) -> List[Path]:
    """Convert one experiment (see the module docstring) and write it to ``output_dir``.

    Args:
        unpacked_root: the directory a zip was unpacked into; files of the config under it are
            copied into ``output_dir``.
    Returns:
        the paths written.
    """
    for path in (train_config, model_file):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
    config = read_config(train_config)
    pruning_conf = None if pruning is None else pruning_section(pruning)
    try:
        state = torch.load(model_file, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"cannot read model file {model_file}: {type(error).__name__}: {error}") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"model file {model_file} is not an ESPnet model state dict")
    converted, new_state = convert_state(config, state, model_file, upstream_checkpoint, pruning_conf)
    check_model(task, converted, new_state, train_config, model_file)
    converted = usable_as_config(task, converted)
    files: Dict[str, Path] = {}
    if unpacked_root is not None:
        converted = _relocate(converted, str(unpacked_root), output_dir, files)
    return write_experiment(output_dir, converted, new_state, model_file.name, files)


def convert_zip(model_zip: Path, output_dir: Path, upstream_checkpoint: Optional[Path] = None,
                pruning: Optional[str] = None) -> List[Path]:
    """Convert a packed model (``espnet2.bin.pack`` zip), unpacked as ``Speech2Text.from_pretrained``
    unpacks it (``espnet2.main_funcs.pack_funcs.unpack``) into a temporary directory."""
    from espnet2.main_funcs.pack_funcs import unpack

    if not model_zip.is_file():
        raise FileNotFoundError(f"{model_zip} does not exist")
    with tempfile.TemporaryDirectory(prefix="espnet_prune_convert_") as directory:
        try:
            files = unpack(model_zip, directory)
        except Exception as error:
            raise ValueError(f"cannot unpack {model_zip} as an ESPnet packed model: {type(error).__name__}: "
                             f"{error}") from error
        for task in TASKS:
            if f"{task}_train_config" in files and f"{task}_model_file" in files:
                return convert(task, Path(files[f"{task}_train_config"]), Path(files[f"{task}_model_file"]),
                               output_dir, upstream_checkpoint, pruning, unpacked_root=Path(directory))
        raise ValueError(f"{model_zip} holds no ASR or SLU model (its meta.yaml names {sorted(files)})")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    inputs = parser.add_argument_group("input (one of: ASR config + model, SLU config + model, packed zip)")
    for task in TASKS:
        inputs.add_argument(f"--{task}_train_config", type=Path, default=None,
                            help=f"config.yaml of the {task.upper()} experiment")
        inputs.add_argument(f"--{task}_model_file", type=Path, default=None,
                            help="its model file (e.g. valid.acc.ave.pth)")
    inputs.add_argument("--model_zip", type=Path, default=None, help="a packed model (espnet2.bin.pack zip)")
    parser.add_argument("--output_dir", type=Path, required=True, help="the converted experiment directory")
    parser.add_argument("--pruning", default=None,
                        help="add frontend_conf.pruning: a preset name from conf/pruning/ (e.g. hj_macs0.6) or a "
                             "YAML file of its keys")
    parser.add_argument("--upstream_checkpoint", type=Path, default=None,
                        help="local copy of the s3prl upstream's checkpoint to read its architecture from "
                             "(needed when path_or_url of a *_local/*_url/*_custom upstream is not a local file)")
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    given = [task for task in TASKS
             if getattr(args, f"{task}_train_config") is not None or getattr(args, f"{task}_model_file") is not None]
    if len(given) + (args.model_zip is not None) != 1:
        sys.exit("convert: give one input: --asr_train_config and --asr_model_file, --slu_train_config and "
                 "--slu_model_file, or --model_zip")
    try:
        check_output_dir(args.output_dir, COMMAND)
        if args.model_zip is not None:
            written = convert_zip(args.model_zip, args.output_dir, args.upstream_checkpoint, args.pruning)
        else:
            task = given[0]
            train_config, model_file = getattr(args, f"{task}_train_config"), getattr(args, f"{task}_model_file")
            if train_config is None or model_file is None:
                sys.exit(f"convert: give both --{task}_train_config and --{task}_model_file")
            written = convert(task, train_config, model_file, args.output_dir, args.upstream_checkpoint,
                              args.pruning)
    except (ValueError, FileNotFoundError, yaml.YAMLError) as error:
        sys.exit(f"convert: {' '.join(str(error).split())}")
    model = written[-2]
    logging.info("wrote %s", ", ".join(map(str, written)))
    logging.info("fine-tune it with: asr.sh --stage 11 --asr_config %s --asr_args \"--init_param %s\" "
                 "(slu.sh alike)", written[-1], model)


if __name__ == "__main__":
    main()
