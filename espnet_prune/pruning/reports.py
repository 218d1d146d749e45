"""Where the budgets stand: the reports, warnings and advice of a pruning run.

One run prunes to one size or to several (:mod:`espnet_prune.pruning.multisize`); one size is
the case K = 1 of several and takes the same path here: :func:`sizes_report` describes every
size (the last, or only, one from the live gates, the others from their snapshots), and its
warnings and ``train.log`` lines (:func:`log_budgets`, called when ESPnet's training ends) are
one sentence per budget. :func:`budget_summary` is what export reports for the size it exports.

Every function reads a :class:`~espnet_prune.pruning.controller.PruningController` through its
public interface (ratios, step, settings, schedule and snapshots) and changes nothing in it.
"""

import logging
from typing import TYPE_CHECKING, Any, Callable, Dict, List

import torch

from espnet_prune.pruning.gates import UNDECIDED
from espnet_prune.pruning.metrics import MIN_WARMUP_TIMES_LR, metric_cost
from espnet_prune.pruning.multisize import size_label

if TYPE_CHECKING:
    from espnet_prune.pruning.controller import PruningController

#: A budget counts as reached when its deterministic (exported) ratio is this close to its target.
BUDGET_TOLERANCE = 0.02
#: Recommended run length: at least this many times ``warmup_steps`` optimizer steps.
RUN_LENGTH_PER_WARMUP = 2.0


def run_length_advice(step: int, warmup: int, reg_lr: float, metric: str) -> str:
    """What to change when a run with one size missed its target after ``step`` steps."""
    recommended = int(round(RUN_LENGTH_PER_WARMUP * warmup))
    if step < warmup:
        return (f"training stopped during the target ramp (step {step} of warmup_steps {warmup}): "
                f"train at least {recommended} optimizer steps, or lower warmup_steps to at most "
                f"{int(step / RUN_LENGTH_PER_WARMUP)}")
    if step < recommended:
        return (f"only {step - warmup} steps followed the ramp: train at least {recommended} optimizer "
                f"steps ({RUN_LENGTH_PER_WARMUP:g} x warmup_steps), or lower warmup_steps to at most "
                f"{int(step / RUN_LENGTH_PER_WARMUP)}")
    if warmup * reg_lr < MIN_WARMUP_TIMES_LR[metric]:
        return (f"warmup_steps x reg_lr = {warmup * reg_lr:g} is below "
                f"{MIN_WARMUP_TIMES_LR[metric]:g} (for a {metric} budget), so the gates "
                "and lambda1 lag behind the ramp: raise reg_lr or warmup_steps (and train at least "
                "twice warmup_steps)")
    return ("the gates did not settle: train longer after the ramp, or raise reg_lr "
            "(gates and multipliers move faster)")


def _advice(controller: "PruningController", index: int) -> Callable[[int], str]:
    """What to change when size ``index`` missed its target at a step."""
    schedule = controller.size_schedule
    if schedule is None:
        pruning = controller.pruning
        return lambda step: run_length_advice(step, controller.warmup_steps, pruning.reg_lr, controller.metric)
    stage = schedule.stages[index]
    return lambda step: schedule.advice(step, stage)


def budget_entry(target: float, expected: float, deterministic: float, tolerance: float,
                 advice: Callable[[], str]) -> Dict[str, Any]:
    """``{target, expected, deterministic, reached, advice}`` of one budget; ``reached`` when the
    deterministic ratio is within ``tolerance`` of ``target``, ``advice()`` otherwise."""
    reached = abs(deterministic - target) <= tolerance
    return {"target": target, "expected": expected, "deterministic": deterministic, "reached": reached,
            "advice": None if reached else advice()}


def _live_budgets(controller: "PruningController", index: int, tolerance: float) -> Dict[str, Dict]:
    """:func:`budget_entry` of every budget of size ``index`` for the live gates."""
    with torch.no_grad():
        expected = {name: float(value) for name, value in controller.expected_ratios().items()}
    kept = controller.deterministic_ratios()
    step, advice = int(controller.step), _advice(controller, index)
    return {name: budget_entry(float(target), expected[name], kept[name], tolerance, lambda: advice(step))
            for name, target in controller.sizes[index].items()}


def budget_report(controller: "PruningController", tolerance: float = BUDGET_TOLERANCE) -> Dict[str, Dict]:
    """Where every budget of the selected size stands for the live gates (see
    ``PruningController.budget_report``)."""
    return _live_budgets(controller, controller.selected_size, tolerance)


def sizes_report(controller: "PruningController", tolerance: float = BUDGET_TOLERANCE) -> List[Dict]:
    """Where every size stands: per size ``{"size": k, "targets", "taken", "step", "budgets":
    {budget: {target, expected, deterministic, reached, advice}}}``. Sizes but the last come from
    their snapshots (``taken`` 0 when training stopped before the end of their hold), the last
    (with one size: the only one) from the live gates."""
    schedule, snapshots = controller.size_schedule, controller.snapshots
    step, last = int(controller.step), len(controller.sizes) - 1
    entries = []
    for index, targets in enumerate(controller.sizes):
        if index == last:
            entries.append({"size": index, "targets": targets, "taken": 1.0, "step": step,
                            "budgets": _live_budgets(controller, index, tolerance)})
            continue
        info, stage, advice = snapshots.info(index), schedule.stages[index], _advice(controller, index)
        taken = info["taken"] == 1.0
        budgets = {}
        for name, target in targets.items():
            if taken:
                budgets[name] = budget_entry(target, info[f"expected_{name}"], info[f"deterministic_{name}"],
                                             tolerance, lambda: advice(int(info["step"])))
            else:
                budgets[name] = {"target": target, "expected": None, "deterministic": None, "reached": False,
                                 "advice": f"training stopped at step {step}, before this size's hold ended at "
                                           f"step {stage.hold_end}: train at least {schedule.recommended_steps} "
                                           "optimizer steps"}
        entries.append({"size": index, "targets": targets, "taken": info["taken"],
                        "step": int(info["step"]) if taken else None, "budgets": budgets})
    return entries


def _missed(metric: str, name: str, budget: Dict, when: str, where: str = "") -> str:
    """The sentence for a budget that missed its target (``where``: which size, if several)."""
    head = f"{where}pruning budget '{name}' ({metric}) missed its target"
    if budget["deterministic"] is None:
        return f"{head}: {budget['advice']}"
    return (f"{head}: the pruned structure keeps {budget['deterministic']:.3f} (expected under the gates "
            f"{budget['expected']:.3f}) against a target of {budget['target']:.3f} {when}; {budget['advice']}")


def _where(entry: Dict, count: int) -> str:
    return "" if count < 2 else f"size {entry['size'] + 1} of {count} (target {size_label(entry['targets'])}): "


def budget_warnings(controller: "PruningController", tolerance: float = BUDGET_TOLERANCE) -> List[str]:
    """One sentence per budget of the selected size that ends more than ``tolerance`` from its target."""
    step = int(controller.step)
    return [_missed(controller.metric, name, entry, f"after {step} optimizer steps")
            for name, entry in budget_report(controller, tolerance).items() if not entry["reached"]]


def training_warnings(controller: "PruningController", tolerance: float = BUDGET_TOLERANCE) -> List[str]:
    """One sentence per budget of every size that ends more than ``tolerance`` from its target (or
    was never reached); with one size, :func:`budget_warnings`."""
    entries = sizes_report(controller, tolerance)
    count = len(entries)
    return [_missed(controller.metric, name, budget,
                    f"after {entry['step']} optimizer steps" if count < 2 else f"at step {entry['step']}",
                    _where(entry, count))
            for entry in entries for name, budget in entry["budgets"].items() if not budget["reached"]]


def log_budgets(controller: "PruningController") -> List[str]:
    """Log where every budget of every size ended (``train.log``): one INFO line per budget within
    ``BUDGET_TOLERANCE`` of its target, one WARNING (:func:`training_warnings`) per budget that is not.

    Returns:
        The warning sentences (empty when every budget is reached).
    """
    entries = sizes_report(controller)
    count = len(entries)
    for entry in entries:
        for name, budget in entry["budgets"].items():
            if budget["reached"]:
                logging.info("%spruning budget '%s' (%s) reached%s: the pruned structure keeps %.3f (expected under "
                             "the gates %.3f), target %.3f", _where(entry, count), name, controller.metric,
                             "" if count < 2 else f" at step {entry['step']}", budget["deterministic"],
                             budget["expected"], budget["target"])
    warnings = training_warnings(controller)
    for warning in warnings:
        logging.warning(warning)
    return warnings


def budget_summary(controller: "PruningController", compact_config) -> Dict[str, Any]:
    """Where the controller's budgets stand for the model being exported, whose structure is
    ``compact_config`` (the structure of the controller's part after compaction, see
    :meth:`~espnet_prune.pruning.parts.PrunablePart.with_structure`).

    ``budgets[name]`` holds the final ``target``, the ``expected`` ratio under the gates, the
    ratio of the ``exported`` structure, ``reached`` (exported within
    ``BUDGET_TOLERANCE`` of the target) and ``advice``; ``explanation`` says why exported and
    expected ratios differ by more than 0.01 (``None`` otherwise); ``warnings`` repeats the
    end-of-training warning of each missed budget.
    """
    report = controller.budget_report()
    compact = metric_cost(controller.metric, controller.part.with_structure(compact_config))
    exported = controller.budget_ratios({k: float(v) for k, v in compact.items()})
    budgets, differ = {}, []
    for name, entry in report.items():
        budgets[name] = {"target": entry["target"], "expected": entry["expected"], "exported": exported[name],
                         "reached": entry["reached"], "advice": entry["advice"]}
        if abs(exported[name] - entry["expected"]) > 0.01:
            differ.append(f"{name}: exported {exported[name]:.3f}, expected {entry['expected']:.3f}")
    undecided = controller.undecided_units()
    explanation = None
    if differ:
        where = ", ".join(f"{gate} {count}" for gate, count in undecided.items()) or "none"
        explanation = (f"exported and expected {controller.metric} ratios differ ({'; '.join(differ)}): the "
                       "deterministic mask rounds every gate to whole units and then adds or removes units (one "
                       "sublayer more or less at most) to match the expected cost, but no such structure came "
                       "closer: units with keep probabilities between "
                       f"{UNDECIDED[0]} and {UNDECIDED[1]} (undecided: {where}) count fractionally in the "
                       "expectation but wholly or not at all in the structure, and the units left to move are "
                       "too coarse (whole sublayers, heads) or decided; the training steers the exported "
                       "structure, not the expectation, to the target")
    return {"metric": controller.metric, "steps": int(controller.step), "warmup_steps": controller.warmup_steps,
            **({"hold_steps": controller.pruning.effective_hold_steps} if controller.size_schedule is not None else {}),
            "budgets": budgets, "undecided_units": undecided, "explanation": explanation,
            "warnings": controller.budget_warnings()}


def check_reachable(controller: "PruningController") -> None:
    """A target within :data:`BUDGET_TOLERANCE` of the controller's ``minimum_ratios()`` (or below)
    is reached only by removing (nearly) every gated unit: say so before training."""
    floor = controller.minimum_ratios()
    for size in controller.pruning.sizes():
        for name, target in size.items():
            if target < floor[name] + BUDGET_TOLERANCE:
                more = controller.part.ungated_units(controller.units, name)
                remedy = (f", or gate more units (add {', '.join(more)} to units)" if more else
                          f" (units already gates every unit of this encoder that counts in budget '{name}')")
                raise ValueError(
                    f"pruning budget '{name}' ({controller.metric}) target {target:g} is out of reach: removing "
                    f"every unit that units {controller.units} gate leaves {floor[name]:.4f} of the encoder's "
                    f"{controller.metric} (the rest is in units that are not gated), and a target within "
                    f"{BUDGET_TOLERANCE:g} of that is met only by removing (nearly) all of them; choose a "
                    f"target above {floor[name] + BUDGET_TOLERANCE:.2f}{remedy}")
