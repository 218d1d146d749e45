"""The Lagrange multipliers' update: one clipped, gap-driven ascent step per budget.

Why the multipliers are not trained by the YAML's optimizer: Adam (and every optimizer
that divides by a running gradient scale) moves a multiplier by about its learning rate
per step whatever the size of the gap, and remembers the large gaps of the ramp for
~1000 steps (``beta2 = 0.999``). After the ramp the gap is small compared with that
memory, so the multipliers nearly stop: a multiplier wound up while the gates lagged
behind the ramp unwinds only slowly (the cost ends *below* the target), and one still
short of the task's price rises only slowly (the cost ends *above* it). The controller
therefore updates them itself, once per optimizer step (``PruningController.advance``), by
:func:`multiplier_step`: clipped gradient ascent whose speed depends on the current gap, and
for lambda2 also on how long the gap has been stalled.

:func:`multiplier_step` is stateless: the controller keeps the multipliers, the previous step's
expected gap and lambda2's rate (its checkpointed buffers) and passes them in.
"""

from typing import NamedTuple, Optional

#: Gap (ratio points) at and above which a multiplier moves at its full rate per step;
#: below it the step is proportional to the gap (lambda1) or to its square (lambda2).
GAP_SCALE = 0.01
#: lambda1 is held while the expected gap closes fast enough to vanish within this many steps.
CLOSING_STEPS = 50
#: The gap counts as stalled while, at the speed it shrank since the previous step, it would
#: take more than this many steps to vanish (or while it widens).
STALLED_STEPS = 200
#: lambda2's step (its full rate times ``lambda2_rates``) grows by this factor per step for as
#: long as the gap is stalled at or above GAP_SCALE (see :func:`multiplier_step`) ...
LAMBDA2_RATE_GROWTH = 1.02
#: ... up to this many times its full rate ...
LAMBDA2_RATE_MAX = 32.0
#: ... and shrinks by this factor (not below 1) when the gap changes sides.
LAMBDA2_RATE_SHRINK = 0.5


class MultiplierStep(NamedTuple):
    """What one step adds to a budget's multipliers, and lambda2's new rate."""

    #: Added to lambda1; ``None`` while lambda1 is held (the gap is closing).
    lambda_1: Optional[float]
    #: Added to lambda2.
    lambda_2: float
    #: lambda2's step in units of its full rate, from now on.
    rate: float


def multiplier_step(gap: float, expected_gap: float, previous_expected_gap: float, rate: float,
                    multiplier_lr: float, lambda2_lr_scale: float) -> MultiplierStep:
    """One step of gradient ascent of the Lagrangian in a budget's multipliers.

    The gap ``g`` of the latest regularization is normalised by :data:`GAP_SCALE` and clipped, so
    that a step depends on the current gap (no memory of the ramp's large gaps; lambda2's ``rate``
    remembers only how long the gap has been stalled)::

        lambda1 += multiplier_lr * clip(g / GAP_SCALE, -1, 1)   # unless the gap is closing
        lambda2 += multiplier_lr * lambda2_lr_scale * rate * min((g / GAP_SCALE)^2, 1)

    lambda1 is held while the expected ratio's gap closes (shrinks without changing
    sign since the previous step, fast enough to vanish within :data:`CLOSING_STEPS`
    steps): the gates are already moving toward the target, and integrating further
    would only wind lambda1 up. Saturated gates (keep probability
    near 1 at the start) respond only to a large multiplier; without this hold that
    multiplier, far above what the gates need once they move, overshoots the target
    after the ramp and takes ``lambda1 / multiplier_lr`` steps to unwind.

    ``rate`` (one per budget, 1 at the start) grows by :data:`LAMBDA2_RATE_GROWTH` per step, up
    to :data:`LAMBDA2_RATE_MAX`, while the gap is stalled (at its current speed it would not
    vanish within :data:`STALLED_STEPS` steps) at or above :data:`GAP_SCALE`, and shrinks by
    :data:`LAMBDA2_RATE_SHRINK`, not below 1, when the gap changes sides. The force the budget
    needs is the price at which the task gives up units, which scales with the task loss and
    the units' share of the cost (measured: 600-step runs whose lambda1 still rose at its full
    rate when they ended 2-16 points above the target); a fixed step reaches a high price only
    late. The growing step goes to the quadratic term and not to lambda1: its force
    ``2 lambda2 g`` turns with the gap at once, so a large lambda2 holds the structure at the
    target, while a lambda1 grown as large keeps pushing past it until it has been integrated
    back (runs where lambda1's step grew overshot the target by 3 points and swung lambda1
    negative).

    Args:
        gap: the constraint value's gap (deterministic structure's ratio minus the target).
        expected_gap: the expected ratio's gap at this step ...
        previous_expected_gap: ... and at the step before (NaN: no step before).
        rate: lambda2's step in units of its full rate so far.
        multiplier_lr: full-rate step of lambda1 (``reg_lr``).
        lambda2_lr_scale: lambda2 moves this many times faster (the quadratic term is the
            restoring force that damps the oscillation around the target).
    """
    scaled = gap / GAP_SCALE
    now, before = expected_gap, previous_expected_gap
    # On the same side as the step before (NaN: no step before), shrinking this much per step.
    same_side, shrink = now * before > 0, abs(before) - abs(now)
    closing = same_side and shrink * CLOSING_STEPS > abs(now)
    stalled = same_side and shrink * STALLED_STEPS <= abs(now)
    if now * before < 0:
        rate = max(1.0, rate * LAMBDA2_RATE_SHRINK)
    elif stalled and abs(gap) >= GAP_SCALE:
        rate = min(LAMBDA2_RATE_MAX, rate * LAMBDA2_RATE_GROWTH)
    lambda_1 = None if closing else multiplier_lr * max(-1.0, min(1.0, scaled))
    return MultiplierStep(lambda_1, multiplier_lr * rate * lambda2_lr_scale * min(scaled * scaled, 1.0), rate)
