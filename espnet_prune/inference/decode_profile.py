"""Measure a whole-model decode latency table (:mod:`espnet_prune.pruning.decode_latency`) on this device.

:func:`profile_decode` takes an experiment config with ``model_conf.pruning`` (what ``asr_train``
writes, or a training config filled with ESPnet's defaults), prunes its model (random weights) to a
handful of MAC ratios of its budget, from dense to near the smallest the gated units allow
(:func:`~espnet_prune.inference.budget_shapes.compact_experiment`: the gates set to the ratio, the
deterministic structure compacted), and decodes one ``reference_seconds`` utterance with ESPnet's
``Speech2Text`` (``Speech2Understand`` for an SLU config; batch 1) with every structure, interleaved
(:func:`time_parts`), exactly ``tokens_per_second x reference_seconds`` output steps with the
budget's beam size and CTC weight. Per structure it records each part's GMACs and the milliseconds
spent inside it (``model.frontend`` and ``model.encoder`` forward, the decoder's ``batch_score``
that the beam search calls), and the whole decode's; the round with the fastest whole decode gives a
structure's numbers (on a shared machine other jobs only ever add time).
"""

import datetime
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
import yaml

from espnet_prune.pruning import decode_latency

#: Where the profiled structures lie between the dense model (1) and the smallest one the gated
#: units allow (0: the lowest reachable MAC ratio of the budget, plus a margin), the dense first.
DEFAULT_POINTS = (1.0, 0.75, 0.5, 0.25, 0.0)
#: The profiled structures stay this far above the lowest reachable MAC ratio (the controller
#: refuses targets closer to it).
FLOOR_MARGIN = 0.03


class PartClocks:
    """Add up the wall time spent in each timed part of a ``Speech2Text``'s model: the frontend's
    and the encoder's ``forward`` and the decoder's ``batch_score`` (wrapped on the instance,
    outputs untouched; :meth:`close` unwraps).

    Args:
        model: the ESPnet model (``Speech2Text.asr_model``).
        synchronize: called before reading the clock (``torch.cuda.synchronize`` on a GPU).
    """

    def __init__(self, model: torch.nn.Module, synchronize: Optional[Callable[[], None]] = None):
        self.seconds: Dict[str, float] = {}
        self._synchronize = synchronize or (lambda: None)
        self._wrapped = []
        for name, method in zip(decode_latency.TIMED_PARTS, ("forward", "forward", "batch_score")):
            module = getattr(model, name, None)
            if module is None:
                continue
            self.seconds[name] = 0.0
            setattr(module, method, self._timed(name, getattr(module, method)))
            self._wrapped.append((module, method))

    def _timed(self, name: str, call: Callable) -> Callable:
        def timed(*args, **kwargs):
            self._synchronize()
            start = time.perf_counter()
            out = call(*args, **kwargs)
            self._synchronize()
            self.seconds[name] += time.perf_counter() - start
            return out
        return timed

    def reset(self) -> None:
        for name in self.seconds:
            self.seconds[name] = 0.0

    def close(self) -> None:
        for module, method in self._wrapped:
            delattr(module, method)


def time_parts(decoders: Mapping[str, Any], waveform: np.ndarray, rounds: int, warmup: int = 1,
               device: str = "cpu", on_round: Optional[Callable[[int], None]] = None) -> Dict[str, Dict[str, Any]]:
    """Decode ``waveform`` (``(S,)`` float32) with every decoder in interleaved rounds (the order
    rotating) after ``warmup`` untimed ones; per decoder the round with the fastest whole decode:
    ``{"total_ms", "ms": {part: ms}, "tokens": decoded steps}``."""
    from espnet_prune.inference.decode_timing import decoded_steps

    synchronize = torch.cuda.synchronize if device.startswith("cuda") else None
    clocks = {name: PartClocks(decoder.asr_model, synchronize) for name, decoder in decoders.items()}
    best: Dict[str, Dict[str, Any]] = {}
    names = list(decoders)
    try:
        for index in range(warmup + rounds):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                clocks[name].reset()
                if synchronize is not None:
                    synchronize()
                start = time.perf_counter()
                with torch.no_grad():
                    result = decoders[name](waveform)
                if synchronize is not None:
                    synchronize()
                total = 1000.0 * (time.perf_counter() - start)
                if index >= warmup and (name not in best or total < best[name]["total_ms"]):
                    best[name] = {"total_ms": total, "tokens": decoded_steps(result),
                                  "ms": {part: 1000.0 * s for part, s in clocks[name].seconds.items()}}
            if on_round is not None and index >= warmup:
                on_round(index - warmup)
    finally:
        for clock in clocks.values():
            clock.close()
    return best


def without_latency(pruning: Mapping[str, Any]) -> Dict[str, Any]:
    """``pruning`` in MACs: the budget a latency table is measured for, before there is one."""
    return {key: value for key, value in pruning.items() if key not in ("latency_table", "metric")}


def decode_options(pruning: Mapping[str, Any]) -> Dict[str, Any]:
    """``Speech2Text``'s options for the decode a budget is priced for: its beam size and CTC
    weight, and exactly ``ceil(tokens_per_second x reference_seconds)`` output steps."""
    from espnet_prune.pruning.config import ModelPruningConfig

    config = ModelPruningConfig.from_dict(without_latency(pruning),
                                          "model_conf.pruning")
    tokens = max(2, int(math.ceil(config.decoding.tokens_per_second * config.reference_seconds)))
    return dict(beam_size=config.decoding.beam_size, ctc_weight=config.decoding.ctc_weight, lm_weight=0.0,
                penalty=0.0, maxlenratio=-float(tokens), minlenratio=-float(tokens - 1))


def profile_decode(train_config: Path, work_dir: Path, points: Sequence[float] = DEFAULT_POINTS,
                   rounds: int = 3, warmup: int = 1, device: str = "cpu",
                   progress: Optional[Callable[[str], None]] = None, token_list: Optional[Path] = None,
                   task: Optional[str] = None) -> Dict[str, Any]:
    """The decode latency table (:func:`espnet_prune.pruning.decode_latency.make_table`) of the
    whole model ``train_config`` describes (module docstring), measured on ``device`` with this
    process's threads; ``work_dir`` holds the pruned experiments; ``progress`` gets a line per
    structure built and per round timed.

    Args:
        points: where the structures lie between the dense model (1) and the smallest one the
            gated units allow (0), the first 1 (:data:`DEFAULT_POINTS`).
        token_list: the token list file, for a training YAML that names none.
        task: ``asr`` (``Speech2Text``) or ``slu`` (``Speech2Understand``); ``None``: what the
            config says (:func:`espnet_prune.export.compact.detect_task`).
    Raises:
        ValueError: the config has no ``model_conf.pruning``, or ``points`` do not lie in [0, 1]
            with the first 1.
    """
    from espnet_prune import register
    from espnet_prune.export.compact import detect_task, task_class
    from espnet_prune.inference.budget_shapes import compact_experiment
    from espnet_prune.inference.decode_timing import DecodeSystem, build_decoder
    from espnet_prune.pruning.config import ModelPruningConfig
    from espnet_prune.ssl.latency import processor_name

    if not points or points[0] != 1.0 or not all(0.0 <= p <= 1.0 for p in points):
        raise ValueError(f"points must lie in [0, 1], the first 1.0 (the dense model), got {list(points)}")
    register()
    with open(train_config, encoding="utf-8") as f:
        given = yaml.safe_load(f) or {}
    task = task or detect_task(given)
    # As asr_train reads a --config: ESPnet's defaults under it, each value through its option's
    # type; of an experiment's config.yaml only the options (it also records e.g. ``required``).
    parser = task_class(task).get_parser()
    options = {action.dest for action in parser._actions}
    work_dir.mkdir(parents=True, exist_ok=True)
    with open(work_dir / "given.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump({key: value for key, value in given.items() if key in options}, f, sort_keys=False)
    argv = ["--config", str(work_dir / "given.yaml")]
    config = vars(parser.parse_args(argv + (["--token_list", str(token_list)] if token_list is not None else [])))
    if not config.get("token_list"):
        raise ValueError(f"{train_config} names no token_list; give the token list (asr.sh's --token_list)")
    pruning = (config.get("model_conf") or {}).get("pruning")
    if not isinstance(pruning, Mapping):
        raise ValueError(f"{train_config} has no model_conf.pruning (a whole-model budget); the SSL frontend alone "
                         "is profiled by python -m espnet_prune.bin.profile_latency")
    priced = ModelPruningConfig.from_dict(without_latency(pruning),
                                          "model_conf.pruning")
    # The structures are pruned by a MAC budget with the same parts and units; one size.
    profiled = {key: value for key, value in without_latency(pruning).items()
                if key != "targets" and not key.endswith("_target") and not key.endswith("_targets")}
    options = decode_options(pruning)

    def gated_config(name: str, target: float) -> Path:
        path = work_dir / name / "gated" / "config.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        budget = {**profiled, "metric": "macs", "target": target}
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump({**config, "model_conf": {**config["model_conf"], "pruning": budget}}, f, sort_keys=False)
        return path

    decoders, gmacs, fractions = {}, {}, []
    floor = 1.0  # set by the dense structure, the first point
    for point in points:
        fraction = round(floor + point * (1.0 - floor), 4)
        name = f"macs{fraction:g}"
        path, model_file, info = compact_experiment(gated_config(name, fraction), fraction, work_dir / name,
                                                    task=task)
        if not fractions:
            floor = info["minimum_ratio"] + FLOOR_MARGIN
        gmacs[name] = info["gmacs"]
        fractions.append(fraction)
        decoders[name] = build_decoder(task, DecodeSystem(name, path, model_file), options, device)
        if progress is not None:
            progress(f"built {name}: whole-decode MACs x{info['decode_ratio']:.3f} of dense")
    waveform = (0.1 * torch.randn(int(round(priced.reference_seconds * 16000)),
                                  generator=torch.Generator().manual_seed(0))).numpy()
    logging.getLogger("espnet.nets.beam_search").setLevel(logging.ERROR)  # the fixed length is meant

    def on_round(index: int) -> None:
        if progress is not None:
            progress(f"round {index + 1}/{rounds} timed")

    timed = time_parts(decoders, waveform, rounds, warmup, device, on_round)
    steps = {row["tokens"] for row in timed.values()}
    if len(steps) != 1:
        raise RuntimeError(f"the profiled structures decoded different numbers of tokens: {steps}")
    measured: List[Dict[str, Any]] = []
    for fraction, name in zip(fractions, decoders):
        row = timed[name]
        # a part no unit prunes (e.g. an ESPnet encoder) is part of the fixed rest
        covered = [part for part in row["ms"] if part in gmacs[name]]
        measured.append({"target": fraction, "gmacs": {part: gmacs[name][part] for part in covered},
                         "ms": {part: row["ms"][part] for part in covered}, "total_ms": row["total_ms"]})
    measured_on = {"device": "cpu" if device == "cpu" else "cuda",
                   "device_name": processor_name() if device == "cpu" else torch.cuda.get_device_name(),
                   "threads": torch.get_num_threads(), "dtype": "float32", "batch": 1,
                   "seconds": priced.reference_seconds, "rounds": rounds, "tokens": steps.pop(),
                   "statistic": "the round with the fastest whole decode", "torch": torch.__version__,
                   "date": datetime.date.today().isoformat()}
    decoding = {"beam_size": priced.decoding.beam_size, "tokens_per_second": priced.decoding.tokens_per_second,
                "ctc_weight": priced.decoding.ctc_weight}
    return decode_latency.make_table(measured, measured_on, decoding, priced.reference_seconds)
