"""Random-weight whole models pruned to a budget by the deterministic rounding, to time decoding.

:func:`budget_experiment` builds a recipe shape (:mod:`espnet_prune.inference.shapes`) with
``encoder: pruned_conformer`` / ``pruned_transformer``, ``decoder: pruned_transformer`` and a
``model_conf.pruning`` budget on the given parts, priced for the decode it will be timed with; sets
the gates so that their expected cost is the target (:func:`gates_at_budget`: one keep logit for
every unit plus fixed random scores, so that units differ), compacts the model with the controller's
deterministic (budget-matching) structure and writes it as an experiment directory that
``Speech2Text`` loads. No training: the weights are random; the structure is what a budget's
rounding gives.
"""

from pathlib import Path
from typing import Any, Dict, Mapping, Sequence, Tuple, Union

import torch
import yaml

from espnet_prune.inference import shapes

#: Downstream classes of the shapes once they are prunable.
PRUNABLE = {"conformer": "pruned_conformer", "transformer": "pruned_transformer"}


def whole_model_train_config(shape: str, arch: Union[str, Dict[str, Any]], vocabulary: int, small: bool,
                             pruning: Mapping[str, Any]) -> Dict[str, Any]:
    """:func:`shapes.train_config` with prunable encoder and decoder and ``model_conf.pruning``."""
    config = shapes.train_config(shape, arch, vocabulary, small)
    if config["encoder_conf"].get("num_blocks", 1) > 0:
        config["encoder"] = PRUNABLE[config["encoder"]]
        config["encoder_conf"] = {**config["encoder_conf"], "use_flash_attn": False}
    if config.get("decoder") == "transformer":
        config["decoder"] = "pruned_transformer"
    config["model"] = "pruned_espnet"
    config["model_conf"] = {**config["model_conf"], "pruning": dict(pruning)}
    return config


@torch.no_grad()
def gates_at_budget(controller, target: float, seed: int = 0, spread: float = 2.0) -> float:
    """Set every gate's ``log_alpha`` to ``c + spread * score`` (scores fixed standard normal draws)
    with ``c`` bisected so that the expected ``total`` ratio is ``target``; returns that ratio."""
    generator = torch.Generator().manual_seed(seed)
    gates = controller.gate_parameters()
    scores = [torch.randn(gate.shape, generator=generator) for gate in gates]
    low, high = -20.0, 20.0
    ratio = float("nan")
    for _ in range(50):
        middle = (low + high) / 2
        for gate, score in zip(gates, scores):
            gate.copy_(middle + spread * score)
        ratio = float(controller.expected_ratios()["total"])
        if ratio > target:
            high = middle
        else:
            low = middle
    return ratio


def budget_experiment(shape: str, arch: Union[str, Dict[str, Any]], vocabulary: int, small: bool,
                      parts: Sequence[str], target: float, seconds: float, decode_config: Mapping[str, Any],
                      tokens: int, directory: Path) -> Tuple[Path, Path, Dict[str, float]]:
    """Write the compact experiment of ``shape`` pruned on ``parts`` to ``target`` of their MACs,
    priced for ``decode_config`` (beam size, CTC weight) with ``tokens`` tokens in ``seconds`` of audio.

    Returns:
        ``config.yaml``, the model file and ``{"budget_ratio": the deterministic structure's ratio of
        its budget, "decode_ratio": the whole decode's MACs (every part) over the dense ones}``.
    """
    from espnet2.tasks.asr import ASRTask
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    from espnet_prune.asr.whole_model import compact_model, model_parts, model_tables
    from espnet_prune.export.experiment import standalone_config
    from espnet_prune.export.report import Structure
    from espnet_prune.pruning.config import ModelPruningConfig

    decoding = {"beam_size": int(decode_config["beam_size"]), "ctc_weight": float(decode_config["ctc_weight"]),
                "tokens_per_second": tokens / seconds}
    pruning = {"target": target, "parts": list(parts), "reference_seconds": seconds, "decoding": decoding}
    config = whole_model_train_config(shape, arch, vocabulary, small, pruning)
    gated_config = shapes.write_train_config(config, directory / "gated" / "config.yaml")
    torch.manual_seed(0)
    model, _ = ASRTask.build_model_from_file(str(gated_config), None, "cpu")
    controller = model.controller
    gates_at_budget(controller, target)
    every = ModelPruningConfig.from_dict({"target": 1.0, "reference_seconds": seconds, "decoding": decoding,
                                          "parts": list(model_tables(model))}, "decode pricing")
    priced = model_parts(model, every)
    dense = float(priced.macs()["total"])
    model.eval()
    budget_ratio = controller.deterministic_ratios()["total"]
    structures = compact_model(model)
    compact = {"frontend": model.frontend.encoder.config}
    for name in ("encoder", "decoder"):
        if hasattr(getattr(model, name, None), "structure"):
            compact[name] = getattr(model, name).structure
    decode_ratio = float(priced.with_structure(compact).macs()["total"]) / dense
    with open(gated_config, encoding="utf-8") as f:
        trained = yaml.safe_load(f)
    frontend = structures.pop("frontend")["after"]
    new = standalone_config(trained, frontend, directory, {name: Structure(**value) for name, value in
                                                           structures.items()})
    path = directory / "config.yaml"
    with open(path, "w", encoding="utf-8") as f:
        yaml_no_alias_safe_dump(new, f, indent=4, sort_keys=False)
    model_file = directory / "model.pth"
    torch.save(model.state_dict(), model_file)
    return path, model_file, {"budget_ratio": budget_ratio, "decode_ratio": decode_ratio}
