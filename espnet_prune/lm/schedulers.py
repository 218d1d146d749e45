"""Pruning schedulers: how the LM travels from dense to each target size.

``oneshot``
    every target is reached from the dense LM in one pruning step, then fine-tuned.
``incremental``
    one run from the dense LM through all targets, largest first; each target is
    approached in ``num_increments`` equal steps of the parameter ratio, with
    fine-tuning after every step; the next (smaller) target continues from the
    fine-tuned previous one. One run thus yields the whole family of sizes.

Ratios are fractions of the dense LM's parameter count.
"""

import logging
from typing import Callable, List, Optional, Sequence, Tuple

from espnet2.lm.espnet_model import ESPnetLanguageModel

from espnet_prune.lm.choices import SCHEDULERS

# A chain starts from the dense LM: [(ratio after the step, target reached or None), ...]
Chain = List[Tuple[float, Optional[float]]]


def plan_schedule(targets: Sequence[float], scheduler: str, num_increments: int = 1) -> List[Chain]:
    """The pruning steps of a schedule.

    Args:
        targets: parameter ratios in (0, 1).
        scheduler: ``oneshot`` or ``incremental``.
        num_increments: steps per target (``incremental``).

    Returns:
        chains of steps, each chain starting from the dense LM.

    >>> plan_schedule([0.5, 0.75], "incremental", 2)
    [[(0.875, None), (0.75, 0.75), (0.625, None), (0.5, 0.5)]]
    """
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler '{scheduler}', choose from {SCHEDULERS}")
    if num_increments < 1:
        raise ValueError(f"num_increments must be >= 1, got {num_increments}")
    ordered = sorted(set(targets), reverse=True)
    if scheduler == "oneshot":
        return [[(target, target)] for target in ordered]
    chain: Chain = []
    previous = 1.0
    for target in ordered:
        for k in range(1, num_increments + 1):
            ratio = target if k == num_increments else previous + (target - previous) * k / num_increments
            chain.append((ratio, target if k == num_increments else None))
        previous = target
    return [chain]


def run_schedule(
    dense: ESPnetLanguageModel,
    dense_params: int,
    chains: List[Chain],
    prune: Callable[[ESPnetLanguageModel, int], ESPnetLanguageModel],
    finetune: Optional[Callable[[ESPnetLanguageModel, str], ESPnetLanguageModel]],
    emit: Callable[[float, ESPnetLanguageModel], None],
) -> None:
    """Execute a schedule.

    Args:
        dense: the dense LM (unchanged).
        dense_params: its parameter count (ratios are relative to it).
        chains: from :func:`plan_schedule`.
        prune: ``prune(model, target_params)`` -> pruned model (one step).
        finetune: ``finetune(model, tag)`` -> fine-tuned model, or None for no
            fine-tuning.
        emit: called with ``(target, model)`` whenever a target is reached.
    """
    total = sum(len(chain) for chain in chains)
    step = 0
    for chain in chains:
        model = dense
        for ratio, target in chain:
            step += 1
            logging.info(f"pruning step {step}/{total}: to {ratio:.4f} of the dense parameters")
            model = prune(model, round(ratio * dense_params))
            if finetune is not None:
                model = finetune(model, f"step{step:02d}_ratio{ratio:.4f}")
            if target is not None:
                emit(target, model)
