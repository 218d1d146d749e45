"""The compact model of one size: load the gated model once, select a size, prune it physically,
check it against the gated one, and describe it in an :class:`~espnet_prune.export.report.ExportReport`.

:func:`compact_sizes` builds the gated ESPnet model once for every size of a run (each size but
the last is compacted from a copy, the last from the model itself); :func:`compact_frontend` is
the part that needs no ESPnet (any model with a ``pruned_ssl``-like ``frontend``).
"""

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import torch

from espnet_prune.export.report import (
    BudgetSummary,
    EncoderCost,
    ExportReport,
    ModelCost,
    ParamCount,
    SizeInfo,
    Structure,
)
from espnet_prune.export.sizes import TrainConfig, read_config
from espnet_prune.pruning.espnet_glue import find_controller
from espnet_prune.pruning.metrics import METRICS, metric_cost
from espnet_prune.pruning.multisize import size_label, size_name
from espnet_prune.pruning.parts import SSLPart
from espnet_prune.pruning.reports import budget_summary
from espnet_prune.ssl.config import EncoderConfig
from espnet_prune.utils.finite import check_finite, max_abs_diff

TASKS = ("asr", "slu")
#: Largest allowed difference between the gated and the compact frontend's features.
TOLERANCE = 1e-3


def detect_task(train_config: TrainConfig) -> str:
    """``slu`` for configs written by slu_train (they have SLU-only keys), else ``asr``."""
    config = train_config if isinstance(train_config, dict) else read_config(train_config)
    return "slu" if "deliberationencoder" in config or "postdecoder" in config else "asr"


def task_class(task: str):
    """ESPnet's task class of ``task`` (``asr``: ``ASRTask``, ``slu``: ``SLUTask``)."""
    if task == "asr":
        from espnet2.tasks.asr import ASRTask

        return ASRTask
    if task == "slu":
        from espnet2.tasks.slu import SLUTask

        return SLUTask
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def encoder_cost(config: EncoderConfig, seconds: float, latency_table: Optional[Dict[str, Any]] = None
                 ) -> Dict[str, Dict[str, float]]:
    """``{metric: {"cnn", "pos_conv", "transformer", "total"}}`` of ``config`` in every metric;
    ``latency`` (predicted milliseconds) only with a ``latency_table``."""
    part = SSLPart(config, seconds, latency_table=latency_table)
    metrics = [metric for metric in METRICS if metric != "latency" or latency_table is not None]
    return {metric: {k: float(v) for k, v in metric_cost(metric, part).items()} for metric in metrics}


def probe(frontend, check_seconds: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """A fixed random waveform ``(1, S)`` and its length ``(1,)``, at least one CNN frame long."""
    generator = torch.Generator().manual_seed(0)
    samples = max(int(check_seconds * frontend.encoder.config.sample_rate), frontend.encoder.receptive_field)
    return torch.randn(1, samples, generator=generator), torch.tensor([samples])


def select_size(model: torch.nn.Module, model_file: Path, size: Optional[int]) -> Optional[SizeInfo]:
    """Put the model state of ``size`` of a run with several sizes into ``model`` (gated).

    Sizes but the last come from their snapshots; the last is the model file's own state, which
    is that size only if the file was saved after every snapshot. Returns which size, or ``None``
    for a run with one size (where ``size`` must be ``None``).
    """
    controller = find_controller(model)
    schedule = controller.size_schedule
    if schedule is None:
        if size is not None:
            raise ValueError("size is only for a run with several sizes (frontend_conf.pruning.targets)")
        return None
    count = len(controller.sizes)
    if size is None or not 0 <= size < count:
        raise ValueError(f"this run has {count} sizes ({[size_label(s) for s in controller.sizes]}); give the "
                         f"index of one (0 to {count - 1}), got {size!r}")
    # The last size is the model itself: it is that size only once every snapshot was taken.
    needed = size if size < count - 1 else count - 2
    stage = schedule.stages[needed]
    taken = controller.snapshots.taken(needed)
    if taken != 1.0:
        what = ("was saved before that step" if taken == 0.0 else
                f"averages checkpoints from before and after that step (taken = {taken:g})")
        subject = (f"the model state of size {size + 1} (target {size_label(controller.sizes[size])})" if size == needed
                   else f"the last size (target {size_label(controller.sizes[size])}): the model is that size only "
                        f"after the snapshot of size {needed + 1}")
        last = stage.hold_end + schedule.max_extension
        raise ValueError(f"{model_file} does not hold {subject}, which is kept at the end of that size's hold (step "
                         f"{stage.hold_end}, or up to {last} if the hold is extended); {model_file} {what}. Export a "
                         f"model file saved after step {last}: the last epoch's (latest.pth, or NNepoch.pth), or an "
                         "average of epochs after it")
    step = int(controller.step)
    if size < count - 1:
        model.load_state_dict(controller.snapshots.model_state(size))
        controller = find_controller(model)
        step = int(controller.snapshots.info(size)["step"])
        controller.step.fill_(step)
    controller.select_size(size)
    return SizeInfo(index=size, name=size_name(controller.sizes[size]), targets=dict(controller.sizes[size]),
                    step=step)


@dataclass
class CompactFrontend:
    """What :func:`compact_frontend` did to a model's frontend.

    Args:
        size: which size (``None`` for a run with one size).
        structure: the encoder structure before and after.
        pruning: where the budgets stand for the compact structure.
        dense_cost: the dense encoder's cost in every metric (:func:`encoder_cost`).
        reference_seconds: the audio length MACs are counted for.
        gated_features: the gated model's output on the probe (:func:`probe_output`).
        max_abs_diff: largest difference of the compact model's output from ``gated_features``.
        downstream: the downstream modules' ``pruned_structure`` before and after (``model_conf.pruning``
            only, else ``None``).
        model: the whole-model cost before and after (``model_conf.pruning`` only, else ``None``;
            :func:`model_cost`).
    """

    size: Optional[SizeInfo]
    structure: Structure
    pruning: BudgetSummary
    dense_cost: Dict[str, Dict[str, float]]
    reference_seconds: float
    gated_features: torch.Tensor
    max_abs_diff: float
    downstream: Optional[Dict[str, Structure]] = None
    model: Optional[ModelCost] = None


def model_cost(controller, compact: Dict[str, Any]) -> ModelCost:
    """The cost of the parts a whole-model ``controller`` (``model_conf.pruning``) covers, priced for
    its decoding, dense (the gated model's structures) and with the ``compact`` structures
    (``{part: structure}``), in MACs and parameters, and with a decode latency table also in the
    milliseconds it predicts (``latency``)."""
    dense, pruned = controller.part, controller.part.with_structure(compact)
    metrics = ("macs", "params") + (("latency",) if dense.latency_fits is not None else ())
    before = {metric: {k: float(v) for k, v in metric_cost(metric, dense).items()} for metric in metrics}
    after = {metric: {k: float(v) for k, v in metric_cost(metric, pruned).items()} for metric in metrics}
    decoding = controller.pruning.decoding
    return ModelCost.of([part.name for part in dense.parts],
                        {"beam_size": decoding.beam_size, "tokens_per_second": decoding.tokens_per_second,
                         "ctc_weight": decoding.ctc_weight}, before, after)


def probe_output(model: torch.nn.Module, whole: bool, check_seconds: float) -> torch.Tensor:
    """What the compact model is checked on: the frontend's features ``(1, T, D)`` on the probe
    (:func:`probe`); for a whole-model export (``whole``) the encoder's output on it and the
    decoder's ``batch_score`` of two fixed prefixes over that output, flattened into one vector."""
    waveform, lengths = probe(model.frontend, check_seconds)
    if not whole:
        return model.frontend(waveform, lengths)[0]
    encoded, _ = model.encode(waveform, lengths)
    outputs = [encoded.reshape(-1)]
    decoder = getattr(model, "decoder", None)
    if decoder is not None:
        ys = torch.tensor([[model.sos], [model.sos]])
        ys = torch.cat([ys, torch.tensor([[1], [2]]) % model.vocab_size], dim=1)
        scores, _ = decoder.batch_score(ys, [None, None], encoded.expand(2, -1, -1))
        outputs.append(scores.reshape(-1))
    return torch.cat(outputs)


def compact_frontend(model: torch.nn.Module, model_file: Path, size: Optional[int] = None,
                     check_seconds: float = 1.0) -> CompactFrontend:
    """Select ``size`` (:func:`select_size`) and prune ``model.frontend`` physically, in place.

    Raises ``RuntimeError`` (nothing else changed but the frontend) when the compact frontend's
    features on a probe input differ from the gated one's by more than :data:`TOLERANCE`.
    """
    selected = select_size(model, model_file, size)
    frontend = model.frontend
    controller = find_controller(model)
    whole = controller is not frontend.controller  # model_conf.pruning: every gated part is compacted
    seconds = controller.reference_seconds
    dense = encoder_cost(frontend.encoder.config, seconds, controller.latency_table)
    model.eval()
    downstream = None
    with torch.no_grad():
        gated_features = probe_output(model, whole, check_seconds)
        if whole:
            from espnet_prune.asr.whole_model import compact_model as compact_parts

            config = frontend.encoder.config.to_dict()
            structures = compact_parts(model)
            structure = structures.pop("frontend", {"before": config, "after": config})
            downstream = {name: Structure(**value) for name, value in structures.items()}
            compact = {"frontend": frontend.encoder.config, **{name: getattr(model, name).structure
                                                              for name in structures}}
        else:
            structure = frontend.make_compact()
            compact = frontend.encoder.config
        compact_features = probe_output(model, whole, check_seconds)
    check_finite([("features", gated_features)], f"the gated model of {model_file} on a probe input")
    diff = max_abs_diff(gated_features, compact_features)
    if not diff <= TOLERANCE:
        raise RuntimeError(f"compact model differs from the gated one by {diff:.3g}; nothing written")
    summary = BudgetSummary.from_json(budget_summary(controller, compact))
    return CompactFrontend(selected, Structure(**structure), summary, dense, seconds, gated_features, diff,
                           downstream, model_cost(controller, compact) if whole else None)


def load_gated(train_config: Path, model_file: Path, task: str) -> torch.nn.Module:
    """The gated ESPnet model of ``task`` (eval mode, CPU), its weights checked finite, its frontend
    checked to prune."""
    from espnet_prune import register
    from espnet_prune.asr.frontend.pruned_ssl import PrunedSSLFrontend

    register()
    model, _ = task_class(task).build_model_from_file(str(train_config), str(model_file), "cpu")
    model.eval()
    # The controller's buffers hold NaN on purpose ("no earlier value"); its gates are parameters.
    check_finite([*model.named_parameters(), *((name, buffer) for name, buffer in model.named_buffers()
                                              if not (name.startswith("controller.") or ".controller." in name))],
                 f"{model_file} cannot be exported")
    frontend = model.frontend
    if not isinstance(frontend, PrunedSSLFrontend) or find_controller(model) is None:
        raise ValueError(f"{train_config} does not describe a pruning model (frontend: pruned_ssl with "
                         "frontend_conf.pruning, or model_conf.pruning); nothing to export")
    return model


@dataclass
class Compacted:
    """One size, compacted: the model (eval mode), its report (without output paths) and the
    gated frontend's features ``(1, T, D)`` on the probe input."""

    model: torch.nn.Module
    report: ExportReport
    gated_features: torch.Tensor


def compact(model: torch.nn.Module, train_config: Path, model_file: Path, task: str, size: Optional[int] = None,
            check_seconds: float = 1.0) -> Compacted:
    """Compact the gated ESPnet ``model`` (in place) to ``size`` and report it."""
    params_before = sum(p.numel() for p in model.parameters())
    latency_table = find_controller(model).latency_table  # compaction drops the controller
    done = compact_frontend(model, model_file, size, check_seconds)
    report = ExportReport(
        train_config=str(train_config), model_file=str(model_file), task=task,
        reference_seconds=done.reference_seconds,
        encoder=EncoderCost.of(done.dense_cost, encoder_cost(model.frontend.encoder.config, done.reference_seconds,
                                                             latency_table)),
        model_params=ParamCount(params_before, sum(p.numel() for p in model.parameters())),
        structure=done.structure, max_abs_diff_gated_vs_compact=done.max_abs_diff, pruning=done.pruning,
        size=done.size, downstream=done.downstream, model=done.model)
    return Compacted(model, report, done.gated_features)


def compact_sizes(train_config: Path, model_file: Path, task: Optional[str] = None, count: int = 1,
                  check_seconds: float = 1.0) -> Iterator[Compacted]:
    """Every one of the ``count`` sizes of a run (one: a run with one size), largest first, from
    one build of the gated model: each size but the last is compacted from a copy of it."""
    task = task or detect_task(train_config)
    model = load_gated(train_config, model_file, task)
    for index in range(count):
        gated = model if index == count - 1 else copy.deepcopy(model)
        yield compact(gated, train_config, model_file, task, None if count == 1 else index, check_seconds)


def compact_model(train_config: Path, model_file: Path, task: Optional[str] = None, check_seconds: float = 1.0,
                  size: Optional[int] = None) -> Compacted:
    """The compact model of one size (``size``: its index, for a run with several sizes)."""
    task = task or detect_task(train_config)
    return compact(load_gated(train_config, model_file, task), train_config, model_file, task, size, check_seconds)

