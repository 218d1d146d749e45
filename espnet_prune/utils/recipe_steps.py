"""What asr.sh / slu.sh stages 10-11 run, as launcher commands: statistics and training.

Every step goes through ``python -m espnet_prune -m espnet2.bin.<tool>`` exactly as the
recipes do with ``--python "python3 -m espnet_prune"``. The data are Kaldi data directories
(``wav.scp`` and one text file per name in ``text_files``) and a char token list:
``data = {"train": dir, "valid": dir, "token_list": tokens.txt[, "nlsyms": file]}``. Used by
``espnet_prune.bin.benchmark_latency`` and by the end-to-end tests.
"""

import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence


class LaunchError(RuntimeError):
    """A launched ESPnet command exited with an error; the message ends with its log's tail."""


def launch(args: Sequence, cwd: Path, log: Path, env: Optional[Mapping[str, str]] = None
           ) -> subprocess.CompletedProcess:
    """``python -m espnet_prune ARGS`` in ``cwd`` (environment ``env``, default this process's)
    with the output kept in ``log``; raises :class:`LaunchError` with the log's tail on failure."""
    with open(log, "w", encoding="utf-8") as out:
        result = subprocess.run([sys.executable, "-m", "espnet_prune", *map(str, args)], cwd=cwd,
                                stdout=out, stderr=subprocess.STDOUT, env=None if env is None else dict(env))
    if result.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-4000:]
        raise LaunchError(f"{' '.join(map(str, args))} failed ({result.returncode}):\n{tail}")
    return result


def data_args(option: str, data_dir: Path, text_files: Sequence[str]) -> List[str]:
    args = [option, f"{data_dir}/wav.scp,speech,sound"]
    for name in text_files:
        args += [option, f"{data_dir}/{name},{name},text"]
    return args


def token_args(token_list: Path, nlsyms: Optional[Path] = None) -> List:
    return ["--use_preprocessor", "true", "--token_type", "char", "--token_list", token_list,
            "--non_linguistic_symbols", nlsyms or "none", "--cleaner", "none", "--g2p", "none"]


def collect_stats(task: str, work: Path, data: Dict[str, Path], config: Path, text_files: Sequence[str],
                  extra: Sequence = (), env: Optional[Mapping[str, str]] = None) -> Path:
    """Stage 10: ``<task>_train --collect_stats true`` then ``aggregate_stats_dirs``, into
    ``work/<task>_stats``; logs in ``work``."""
    stats = work / f"{task}_stats"
    launch([
        "-m", f"espnet2.bin.{task}_train", "--collect_stats", "true",
        *token_args(data["token_list"], data.get("nlsyms")),
        *data_args("--train_data_path_and_name_and_type", data["train"], text_files),
        *data_args("--valid_data_path_and_name_and_type", data["valid"], text_files),
        "--train_shape_file", data["train"] / "wav.scp", "--valid_shape_file", data["valid"] / "wav.scp",
        "--output_dir", stats / "logdir" / "stats.1", "--config", config, "--frontend_conf", "fs=16k", *extra,
    ], work, work / f"{task}_stats.log", env)
    launch(["-m", "espnet2.bin.aggregate_stats_dirs", "--input_dir", stats / "logdir" / "stats.1",
            "--output_dir", stats], work, work / f"{task}_aggregate.log", env)
    return stats


def train(task: str, work: Path, data: Dict[str, Path], config: Path, stats: Path, text_files: Sequence[str],
          output_dir: Path, extra: Sequence = (), env: Optional[Mapping[str, str]] = None) -> Path:
    """Stage 11: ``<task>_train`` on the shapes from stage 10 into ``output_dir``; its log is
    ``work/<output_dir name>.log``."""
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
    ], work, work / f"{output_dir.name}.log", env)
    return output_dir
