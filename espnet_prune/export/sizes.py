"""Does a training config prune, and to which sizes: the one place that decides it.

Export (the standalone config, the sizes it writes, ``bin/export``'s refusal of ``--output`` for
several sizes) and ``egs2/TEMPLATE_prune/prune_stages.sh`` (whose inline Python prints
:func:`size_names`) ask :func:`pruning_sizes`. A config prunes when its frontend is ``pruned_ssl`` with
``frontend_conf.pruning``, or when it has ``model_conf.pruning`` (the whole model); it yields one
size for ``target`` (or separate targets) and several for ``targets`` (:mod:`espnet_prune.pruning.multisize`).
"""

from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import yaml

from espnet_prune.pruning.config import ModelPruningConfig, PruningConfig
from espnet_prune.pruning.multisize import size_name

#: ESPnet's training config, as a file or as the mapping read from it.
TrainConfig = Union[Path, str, Dict[str, Any]]


def read_config(train_config: Union[Path, str]) -> Dict[str, Any]:
    """The ESPnet training config ``train_config`` (a YAML file) as a mapping."""
    with open(train_config, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ValueError(f"{train_config} is not an ESPnet training config (not a YAML mapping)")
    return config


def model_pruning(config: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """``model_conf.pruning`` of ``config`` (one budget over the whole model), or ``None``."""
    return (config.get("model_conf") or {}).get("pruning") or None


def no_pruning_reason(config: TrainConfig) -> Optional[str]:
    """Why ``config`` does not prune (``None`` when it does)."""
    config = config if isinstance(config, dict) else read_config(config)
    if model_pruning(config) is not None:
        return None
    if config.get("frontend") != "pruned_ssl":
        return f"frontend is {config.get('frontend')!r}, not pruned_ssl"
    if not (config.get("frontend_conf") or {}).get("pruning"):
        return "neither frontend_conf nor model_conf has pruning"
    return None


def pruning_sizes(config: TrainConfig, required: bool = False) -> List[Dict[str, float]]:
    """The sizes ``config`` prunes to, largest first: one ``{budget: target}`` per size (one entry
    for a single target), none when it does not prune (``required``: a ``ValueError`` saying why).

    Args:
        config: the training config, a file or the mapping read from it.
        required: raise instead of returning no sizes.
    """
    mapping = config if isinstance(config, dict) else read_config(config)
    reason = no_pruning_reason(mapping)
    if reason is not None:
        if required:
            where = "" if isinstance(config, dict) else f"{config}: "
            raise ValueError(f"{where}{reason}; nothing to export")
        return []
    if model_pruning(mapping) is not None:
        return ModelPruningConfig.from_dict(model_pruning(mapping), where="model_conf.pruning").sizes()
    return PruningConfig.from_dict(mapping["frontend_conf"]["pruning"], where="frontend_conf.pruning").sizes()


def size_names(config: TrainConfig) -> List[str]:
    """The directory names of :func:`pruning_sizes` (``target0.80`` ...; one for a single size)."""
    return [size_name(size) for size in pruning_sizes(config)]
