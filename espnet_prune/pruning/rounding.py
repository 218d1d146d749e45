"""Budget-matching rounding: the whole units the deterministic (eval / export) mask keeps.

Every gate first keeps its rounded expected number of units (a sublayer gate: the layers with
the largest ``log_alpha``); then units are added or removed one gate step at a time, the most
probable additions and least probable removals first, while that brings the structure's budget
ratios closer to the expected ones. Rounding each gate alone misses the expected cost by up to a
whole sublayer when a sublayer gate is undecided (keep probability ~0.5: half the sublayer's cost
in expectation, none or all of it in the structure), a step of ~11 % on the demo's 3-layer
encoder; the CNN channels, heads and FFN units of the kept sublayers (or the next sublayer, when
no fine unit is left to move) absorb that difference.

:func:`match_budgets` is a function of the gates' state and a cost: it knows neither the
controller nor the metric.
"""

import heapq
import itertools
from typing import Callable, Dict, List, Tuple, Union

import torch
from torch import Tensor

from espnet_prune.pruning.gates import Movable
from espnet_prune.pruning.parts import copy_counts
from espnet_prune.ssl import cost

#: Passes of the budget-matching rounding (:func:`match_budgets`).
PLAN_PASSES = 3
#: The budget-matching rounding stops when the structure's ratios are this close to the expected
#: ones (summed over the budgets); further off, it also tries one sublayer more or less.
PLAN_TOLERANCE = 0.001
#: The budget-matching rounding adds no unit less likely kept than this: its eval mask value E[z]
#: would be (numerically) zero, and physical pruning removes units whose mask is zero.
PLAN_MIN_ADD_PROB = 1e-3
#: ... and adds or removes a whole sublayer only when the gates have not decided it: when the
#: change is at least this likely (the next sublayer kept with this probability, or the last kept
#: one removed with it). A nearer budget match is not worth removing an attention or FFN sublayer
#: the gates keep with probability 0.99 (measured: a separate-budget run at 0.9 lost its first FFN
#: that way, validation CER 0.41 against 0.21).
PLAN_MIN_SUBLAYER_MOVE_PROB = 0.1


def match_budgets(movable: List[Movable], rounded: cost.UnitCounts, expected: Dict[str, float],
                  ratios: Callable[[cost.UnitCounts], Dict[str, Union[float, Tensor]]]
                  ) -> Tuple[List[int], cost.UnitCounts]:
    """The kept count of every gate and the resulting unit counts (module docstring).

    Args:
        movable: every gate with its count setter (:meth:`GateBank.movable`).
        rounded: unit counts when every gate rounds alone (:meth:`GateBank.rounded_counts`).
        expected: each budget's expected keep ratio under the gates, the ratios to match.
        ratios: each budget's keep ratio of given unit counts.
    Returns:
        ``(kept count per movable gate, unit counts)``; the sublayer gates' ``planned_kept`` are
        left at whatever was tried last (the caller sets every gate's plan).
    """
    with torch.no_grad():
        # Keep probabilities by descending log_alpha: keep_prob is monotone in log_alpha, so this is
        # keep_prob sorted (a sort is cheaper than gathering by argsort, which spreads over threads).
        order = [gate.keep_prob().sort(descending=True).values.tolist() for gate, _, _ in movable]
    names = list(expected)

    def gaps(counts: cost.UnitCounts) -> List[float]:
        found = ratios(counts)
        return [expected[name] - float(found[name]) for name in names]

    def fill(kept: List[int]) -> Tuple[float, List[int], cost.UnitCounts]:
        """Greedy moves of the fine gates from ``kept``; sublayer gates stay."""
        kept = list(kept)
        counts = copy_counts(rounded)
        for (_, assign, _), count in zip(movable, kept):
            assign(counts, count)
        residual = gaps(counts)
        for _ in range(PLAN_PASSES):
            if sum(abs(r) for r in residual) <= PLAN_TOLERANCE:
                break
            # Every cost is linear in one gate's count while the others stay: one probe per
            # gate gives the ratio change per unit (0 for units of a removed sublayer).
            deltas = {}
            for position, (gate, assign, sublayer) in enumerate(movable):
                if sublayer:
                    continue
                now = kept[position]
                probe = min(now + gate.align, gate.num_units) if now < gate.num_units else max(now - gate.align, 0)
                assign(counts, probe)
                deltas[position] = [(before - after) / (probe - now)
                                    for before, after in zip(residual, gaps(counts))]
                assign(counts, now)
            # Candidates (priority, gate position, signed step: units added > 0 or removed < 0), most
            # probable first: one unit, or a block of the gate's ``align`` units (the priority of
            # its least probable addition / most probable removal). Each gate's additions and
            # removals are already in that order, so they are merged (stably, as a sort of all of
            # them would order them) rather than sorted, and a stream stops once blocked: the loop
            # below would skip its remaining candidates anyway.
            blocked = set()

            def stream(position: int, sign: int):
                gate = movable[position][0]
                probs, count, align = order[position], kept[position], gate.align
                if sign > 0:
                    ends = range(count + align, gate.num_units + align, align)
                    items = ((probs[min(end, gate.num_units) - 1], position, min(end, gate.num_units) - start)
                             for start, end in zip(range(count, gate.num_units, align), ends))
                    items = itertools.takewhile(lambda item: item[0] >= PLAN_MIN_ADD_PROB, items)
                else:
                    # down to the multiple of align below the count (the full width need not be one)
                    starts = range((count - 1) // align * align, gate.min_keep - 1, -align)
                    items = ((1.0 - probs[start], position, start - end)
                             for start, end in zip(starts, itertools.chain([count], starts)))
                for item in items:
                    yield item
                    if (position, sign) in blocked:
                        return

            streams = [stream(position, sign) for position, delta in deltas.items() if any(delta)
                       for sign in (1, -1)]
            for _, position, step in heapq.merge(*streams, key=lambda item: -item[0]):
                sign = 1 if step > 0 else -1
                if (position, sign) in blocked:
                    continue
                moved = [r - step * d for r, d in zip(residual, deltas[position])]
                if sum(abs(r) for r in moved) >= sum(abs(r) for r in residual) - 1e-12:
                    blocked.add((position, sign))  # its next units overshoot as much
                    continue
                kept[position] += step
                movable[position][1](counts, kept[position])
                residual = moved
            residual = gaps(counts)  # exact again (costs of neighbouring CNN layers interact)
        return sum(abs(r) for r in residual), kept, counts

    start = [gate.num_kept() for gate, _, _ in movable]
    best = fill(start)
    sublayers = [position for position, (_, _, sublayer) in enumerate(movable) if sublayer]
    # When the fine units cannot absorb the sublayers' rounding, try one sublayer more or less
    # per undecided sublayer gate: fewest changes first, then the most probable change (the next
    # sublayer's keep probability, or one minus the last kept one's; each at least
    # PLAN_MIN_SUBLAYER_MOVE_PROB); the first that matches is taken.
    def likelihood(offset: Tuple[int, ...]) -> float:
        value = 1.0
        for position, step in zip(sublayers, offset):
            probs, now = order[position], start[position]
            change = 1.0
            if step > 0:
                change = probs[now] if now < len(probs) else 0.0
            elif step < 0:
                change = 1.0 - probs[now - 1] if now > 0 else 0.0
            value *= change if change >= PLAN_MIN_SUBLAYER_MOVE_PROB else 0.0
        return value

    offsets = [o for o in itertools.product((-1, 0, 1), repeat=len(sublayers)) if any(o)]
    offsets = [o for o in offsets if likelihood(o) > 0.0]
    offsets.sort(key=lambda o: (sum(map(abs, o)), -likelihood(o)))
    for offset in offsets:
        if best[0] <= PLAN_TOLERANCE:
            break
        kept = list(start)
        for position, step in zip(sublayers, offset):
            kept[position] += step
        tried = fill(kept)
        if tried[0] < best[0] - 1e-12:
            best = tried
    _, kept, counts = best
    return kept, counts
