"""What asr.sh / slu.sh stages 10-12 run, as launcher commands, for the end-to-end tests.

Every step goes through ``python -m espnet_prune -m espnet2.bin.<tool>`` exactly as the
recipes do with ``--python "python3 -m espnet_prune"``.
"""

import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import yaml

#: A wav2vec2-architecture encoder small enough to train in seconds on CPU (total stride 320).
TINY_ARCH = dict(
    model_type="wav2vec2",
    extractor_mode="group_norm",
    conv_layers=[[32, 10, 5], [32, 3, 2], [32, 3, 2], [32, 3, 2], [32, 3, 2], [32, 2, 2], [32, 2, 2]],
    embed_dim=48,
    num_layers=2,
    num_heads=4,
    ffn_dims=96,
    pos_conv_kernel=16,
    pos_conv_groups=4,
    encoder_projection_dropout=0.0,
    encoder_dropout=0.0,
    attention_dropout=0.0,
)


#: ``training_config`` overrides for runs whose tests read neither ``images/`` nor ``tensorboard/``:
#: ESPnet's per-epoch plots of every reported statistic cost seconds of CPU per epoch.
#: (asr/test_espnet_integration.py keeps ESPnet's defaults and checks the TensorBoard events.)
NO_PLOTS = dict(use_matplotlib=False, use_tensorboard=False)


def training_config(pruning: Dict = None, model: str = "pruned_espnet", **overrides) -> Dict:
    """A tiny ESPnet ASR/SLU training config with the ``pruned_ssl`` frontend."""
    frontend_conf = {"arch": TINY_ARCH}
    if pruning is not None:
        frontend_conf["pruning"] = pruning
    config = {
        "frontend": "pruned_ssl",
        "frontend_conf": frontend_conf,
        "normalize": "utterance_mvn",
        "encoder": "transformer",
        "encoder_conf": {"output_size": 32, "attention_heads": 2, "linear_units": 64, "num_blocks": 1,
                         "input_layer": "linear", "dropout_rate": 0.0, "attention_dropout_rate": 0.0,
                         "positional_dropout_rate": 0.0},
        "decoder": "transformer",
        "decoder_conf": {"attention_heads": 2, "linear_units": 64, "num_blocks": 1, "dropout_rate": 0.0,
                         "self_attention_dropout_rate": 0.0, "src_attention_dropout_rate": 0.0,
                         "positional_dropout_rate": 0.0},
        "model": model,
        "model_conf": {"ctc_weight": 0.5, "lsm_weight": 0.0},
        "optim": "adam",
        "optim_conf": {"lr": 0.002},
        "batch_type": "unsorted",
        "batch_size": 4,
        "max_epoch": 2,
        "num_att_plot": 0,
        "num_workers": 0,
        "seed": 0,
        "best_model_criterion": [["valid", "acc", "max"]],
        "keep_nbest_models": 1,
    }
    config.update(overrides)
    return config


def write_config(path: Path, config: Dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def launch(args: Sequence[str], cwd: Path, log: Path) -> subprocess.CompletedProcess:
    """``python -m espnet_prune ARGS`` with the output kept in ``log``; raises with its tail on failure."""
    with open(log, "w", encoding="utf-8") as out:
        result = subprocess.run([sys.executable, "-m", "espnet_prune", *map(str, args)], cwd=cwd,
                                stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-4000:]
        raise AssertionError(f"{' '.join(map(str, args))} failed ({result.returncode}):\n{tail}")
    return result


def data_args(option: str, data_dir: Path, text_files: Sequence[str]) -> List[str]:
    args = [option, f"{data_dir}/wav.scp,speech,sound"]
    for name in text_files:
        args += [option, f"{data_dir}/{name},{name},text"]
    return args


def token_args(token_list: Path, nlsyms: Path = None) -> List[str]:
    return ["--use_preprocessor", "true", "--token_type", "char", "--token_list", token_list,
            "--non_linguistic_symbols", nlsyms or "none", "--cleaner", "none", "--g2p", "none"]


def collect_stats(task: str, work: Path, data: Dict[str, Path], config: Path, text_files: Sequence[str],
                  extra: Sequence[str] = ()) -> Path:
    """Stage 10: ``<task>_train --collect_stats true`` then ``aggregate_stats_dirs``."""
    stats = work / f"{task}_stats"
    launch([
        "-m", f"espnet2.bin.{task}_train", "--collect_stats", "true",
        *token_args(data["token_list"], data.get("nlsyms")),
        *data_args("--train_data_path_and_name_and_type", data["train"], text_files),
        *data_args("--valid_data_path_and_name_and_type", data["valid"], text_files),
        "--train_shape_file", data["train"] / "wav.scp", "--valid_shape_file", data["valid"] / "wav.scp",
        "--output_dir", stats / "logdir" / "stats.1", "--config", config, "--frontend_conf", "fs=16k", *extra,
    ], work, work / f"{task}_stats.log")
    launch(["-m", "espnet2.bin.aggregate_stats_dirs", "--input_dir", stats / "logdir" / "stats.1",
            "--output_dir", stats], work, work / f"{task}_aggregate.log")
    return stats


def train(task: str, work: Path, data: Dict[str, Path], config: Path, stats: Path, text_files: Sequence[str],
          output_dir: Path, extra: Sequence[str] = ()) -> Path:
    """Stage 11: ``<task>_train`` on the shapes from stage 10."""
    shape_args = []
    for split in ("train", "valid"):
        shape_args += [f"--{split}_shape_file", stats / split / "speech_shape"]
        for name in text_files:
            shape_args += [f"--{split}_shape_file", stats / split / f"{name}_shape.char"]
    launch([
        "-m", f"espnet2.bin.{task}_train", *token_args(data["token_list"], data.get("nlsyms")),
        *data_args("--train_data_path_and_name_and_type", data["train"], text_files),
        *data_args("--valid_data_path_and_name_and_type", data["valid"], text_files),
        *shape_args, "--resume", "true", "--fold_length", "80000", *(["--fold_length", "150"] * len(text_files)),
        "--output_dir", output_dir, "--config", config, "--frontend_conf", "fs=16k", *extra,
    ], work, work / f"{output_dir.name}.log")
    return output_dir


def decode(task: str, work: Path, data_dir: Path, train_config: Path, model_file: Path, output_dir: Path,
           extra: Sequence[str] = ()) -> Dict[str, str]:
    """Stage 12: ``<task>_inference``; returns the 1-best text per utterance."""
    launch([
        "-m", f"espnet2.bin.{task}_inference", "--batch_size", "1", "--ngpu", "0",
        "--data_path_and_name_and_type", f"{data_dir}/wav.scp,speech,sound", "--key_file", data_dir / "wav.scp",
        f"--{task}_train_config", train_config, f"--{task}_model_file", model_file, "--output_dir", output_dir,
        "--beam_size", "2", *extra,
    ], work, work / f"{output_dir.name}.log")
    hypotheses = {}
    for line in (output_dir / "1best_recog" / "text").read_text(encoding="utf-8").splitlines():
        key, _, text = line.partition(" ")
        hypotheses[key] = text
    return hypotheses
