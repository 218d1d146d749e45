"""What asr.sh / slu.sh stages 10-12 run, as launcher commands, for the end-to-end tests (stages 10-11
from :mod:`espnet_prune.utils.recipe_steps`).

Every step goes through ``python -m espnet_prune -m espnet2.bin.<tool>`` exactly as the
recipes do with ``--python "python3 -m espnet_prune"``.
"""

from pathlib import Path
from typing import Dict, Sequence

import yaml

from espnet_prune.utils.recipe_steps import collect_stats, data_args, launch, token_args, train

#: Stages 10-11 live in the package (``benchmark_latency`` runs them too); re-exported for the tests.
__all__ = ["NO_PLOTS", "TINY_ARCH", "collect_stats", "data_args", "decode", "launch", "token_args", "train",
           "training_config", "write_config"]

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
