"""Random-weight whole models pruned to a budget by the deterministic rounding, to time decoding.

:func:`compact_experiment` prunes the gated model of any whole-model experiment config to a budget
this way (the decode latency profile's structures, :mod:`espnet_prune.inference.decode_profile`);
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
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

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


def decode_pricing(pruning: Mapping[str, Any], every: Sequence[str]) -> Dict[str, Any]:
    """``model_conf.pruning`` that prices every part in ``every`` for the decoding and duration of
    ``pruning`` (a budget's mapping), with its latency table if it has one (the whole decode's
    MACs, and its predicted latency)."""
    priced = {"target": 1.0, "parts": list(every)}
    for key in ("reference_seconds", "decoding", "latency_table"):
        if pruning.get(key) is not None:
            priced[key] = pruning[key]
    return priced


def compact_experiment(gated_config: Path, target: float, directory: Path, seed: int = 0, task: str = "asr"
                       ) -> Tuple[Path, Path, Dict[str, Any]]:
    """Build the gated model of ``gated_config`` (an experiment's ``config.yaml`` with
    ``model_conf.pruning`` whose target is ``target``; random weights from ``seed``; built by ESPnet's
    ``task``, ``asr`` or ``slu``), set its gates to ``target`` of its budget (:func:`gates_at_budget`),
    compact it with the deterministic (budget-matching) structure and write it as an experiment in
    ``directory``.

    Returns:
        ``config.yaml``, the model file and ``{"budget_ratio": the structure's ratio of its budget,
        "minimum_ratio": the lowest ratio of its budget the gated units can reach, "decode_ratio": the whole
        decode's MACs over the dense ones, "gmacs": {part: GMACs in the decode}, "dense_gmacs", "<part>_ratio":
        each part's MAC ratio}``, with a latency table also ``"latency_ms"`` / ``"dense_latency_ms"`` (the whole
        decode's predicted milliseconds).
    """
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    from espnet_prune.asr.whole_model import compact_model, model_parts, model_tables
    from espnet_prune.export.compact import task_class
    from espnet_prune.export.experiment import standalone_config
    from espnet_prune.export.report import Structure
    from espnet_prune.pruning.config import ModelPruningConfig

    with open(gated_config, encoding="utf-8") as f:
        trained = yaml.safe_load(f)
    torch.manual_seed(seed)
    model, _ = task_class(task).build_model_from_file(str(gated_config), None, "cpu")
    controller = model.controller
    gates_at_budget(controller, target)
    every = ModelPruningConfig.from_dict(decode_pricing(trained["model_conf"]["pruning"], model_tables(model)),
                                         "decode pricing")
    priced = model_parts(model, every)
    dense = priced.macs()
    model.eval()
    budget_ratio = controller.deterministic_ratios()["total"]
    minimum_ratio = float(controller.minimum_ratios()["total"])
    structures = compact_model(model)
    compact = {"frontend": model.frontend.encoder.config}
    for name in ("encoder", "decoder"):
        if hasattr(getattr(model, name, None), "structure"):
            compact[name] = getattr(model, name).structure
    found = priced.with_structure(compact).macs()
    names = list(model_tables(model))
    info: Dict[str, Any] = {
        "budget_ratio": budget_ratio, "minimum_ratio": minimum_ratio,
        "decode_ratio": float(found["total"]) / float(dense["total"]),
        "gmacs": {name: float(found[name]) / 1e9 for name in names},
        "dense_gmacs": {name: float(dense[name]) / 1e9 for name in names},
        **{f"{name}_ratio": float(found[name]) / float(dense[name]) if dense[name] else 1.0 for name in names}}
    if priced.latency_fits is not None:
        info["latency_ms"] = float(priced.with_structure(compact).latency()["total"])
        info["dense_latency_ms"] = float(priced.latency()["total"])
    frontend = structures.pop("frontend")["after"]
    new = standalone_config(trained, frontend, directory, {name: Structure(**value) for name, value in
                                                           structures.items()})
    path = directory / "config.yaml"
    directory.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        yaml_no_alias_safe_dump(new, f, indent=4, sort_keys=False)
    model_file = directory / "model.pth"
    torch.save(model.state_dict(), model_file)
    return path, model_file, info


def budget_pruning(parts: Sequence[str], target: float, seconds: float, decode_config: Mapping[str, Any],
                   tokens: int, metric: str = "macs", latency_table: Optional[Path] = None) -> Dict[str, Any]:
    """``model_conf.pruning`` of a budget of ``target`` on ``parts`` in ``metric``, priced for
    ``decode_config`` (beam size, CTC weight) with ``tokens`` tokens in ``seconds`` of audio."""
    decoding = {"beam_size": int(decode_config["beam_size"]), "ctc_weight": float(decode_config["ctc_weight"]),
                "tokens_per_second": tokens / seconds}
    pruning = {"target": target, "parts": list(parts), "reference_seconds": seconds, "decoding": decoding,
               "metric": metric}
    if latency_table is not None:
        pruning["latency_table"] = str(latency_table)
    return pruning


def budget_experiment(shape: str, arch: Union[str, Dict[str, Any]], vocabulary: int, small: bool,
                      parts: Sequence[str], target: float, seconds: float, decode_config: Mapping[str, Any],
                      tokens: int, directory: Path, metric: str = "macs", latency_table: Optional[Path] = None
                      ) -> Tuple[Path, Path, Dict[str, Any]]:
    """Write the compact experiment of ``shape`` pruned on ``parts`` to ``target`` of their cost in
    ``metric`` (:func:`budget_pruning`; ``latency`` needs the shape's decode ``latency_table``),
    as :func:`compact_experiment` does and returns."""
    pruning = budget_pruning(parts, target, seconds, decode_config, tokens, metric, latency_table)
    config = whole_model_train_config(shape, arch, vocabulary, small, pruning)
    gated_config = shapes.write_train_config(config, directory / "gated" / "config.yaml")
    return compact_experiment(gated_config, target, directory)
