"""The cost metrics a budget can be set in: the one place that maps a metric name to its cost.

A metric is a cost function of a prunable part's unit counts (exact counts give plain numbers,
expected counts under the gates a differentiable tensor; :class:`~espnet_prune.pruning.parts.
PrunablePart`) and the advice constant that goes with it. Everything that needs a metric's cost
-- the controller's budgets, the budget-matching rounding, export's budget summary -- calls
:func:`metric_cost`; ``PruningConfig`` accepts exactly the names of :data:`METRICS`. Adding a
metric is one cost function (a method of the parts, or a function of them) and one entry here.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Iterable, Optional, Union

from torch import Tensor

from espnet_prune.ssl import cost

if TYPE_CHECKING:
    from espnet_prune.pruning.parts import PrunablePart


@dataclass(frozen=True)
class Metric:
    """A cost metric.

    Args:
        name: the ``metric`` key's value (``macs``, ``params``, ``latency``).
        cost: ``(part, counts or None) -> {..., "total"}`` (:class:`~espnet_prune.pruning.parts.
            PrunablePart`); ``counts`` ``None``: the part's own structure.
        min_warmup_times_lr: recommended minimum of ``warmup_steps * reg_lr`` for a budget in this
            metric: the gates need about ``5 / reg_lr`` steps to start moving, which should be a
            small part of the ramp, and lambda1 grows by at most ``reg_lr`` per step.
    """

    name: str
    cost: Callable[["PrunablePart", Optional[cost.UnitCounts]], Dict[str, cost.Number]]
    min_warmup_times_lr: float


#: Every metric by name. A params budget needs about twice the multiplier of a MAC budget: most
#: parameters sit in Transformer heads and FFN units, which the task resists losing, while MACs
#: can go with CNN channels (doc/budget.md). A latency budget moves like a MAC budget
#: (doc/latency.md).
METRICS: Dict[str, Metric] = {metric.name: metric for metric in (
    Metric("macs", lambda part, counts=None: part.macs(counts), 10.0),
    Metric("params", lambda part, counts=None: part.params(counts), 20.0),
    Metric("latency", lambda part, counts=None: part.latency(counts), 10.0),
)}
#: Recommended minimum of ``warmup_steps * reg_lr`` per metric (:attr:`Metric.min_warmup_times_lr`).
MIN_WARMUP_TIMES_LR: Dict[str, float] = {name: metric.min_warmup_times_lr for name, metric in METRICS.items()}


def metric_cost(metric: str, part: "PrunablePart", counts: Optional[cost.UnitCounts] = None
                ) -> Dict[str, cost.Number]:
    """The ``metric`` cost of ``part`` (or of ``counts`` on it): its cost parts and ``total``."""
    return METRICS[metric].cost(part, counts)


def budget_ratios(part: "PrunablePart", budgets: Iterable[str], costs: Dict[str, Union[float, Tensor]],
                  dense: Dict[str, float]) -> Dict[str, Union[float, Tensor]]:
    """Keep ratio of each budget for ``costs`` against the ``dense`` cost (both :func:`metric_cost`
    dicts of ``part`` in one metric): the budget's cost (:meth:`PrunablePart.budget_costs`, e.g.
    ``total``, the SSL encoder's ``cnn`` and ``transformer``) over its dense cost."""
    names = list(budgets)
    found, reference = part.budget_costs(costs), part.budget_costs(dense)
    return {name: found[name] / reference[name] for name in names}
