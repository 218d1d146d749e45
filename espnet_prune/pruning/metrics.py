"""The cost metrics a budget can be set in: the one place that maps a metric name to its cost.

A metric is a cost function of an encoder structure (exact unit counts give plain numbers,
expected counts under the gates a differentiable tensor, see :mod:`espnet_prune.ssl.cost`) and
the advice constant that goes with it. Everything that needs a metric's cost -- the controller's
budgets, the budget-matching rounding, export's budget summary -- calls :func:`metric_cost`;
``PruningConfig`` accepts exactly the names of :data:`METRICS`. Adding a metric is one cost
function (in :mod:`espnet_prune.ssl.cost`, or wherever it is computed) and one entry here.
A measured metric (``latency``) reads a table (``pruning.latency_table``, loaded by
:func:`espnet_prune.ssl.latency.load_table`), which every cost function is passed and the
others ignore.
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Optional, Union

from torch import Tensor

from espnet_prune.ssl import cost, latency
from espnet_prune.ssl.config import EncoderConfig


@dataclass(frozen=True)
class Metric:
    """A cost metric.

    Args:
        name: the ``metric`` key's value (``macs``, ``params``, ``latency``).
        cost: ``(config, reference_seconds, counts or None, table or None) -> {"cnn", "pos_conv",
            "transformer", "total"}``; ``counts`` ``None``: the config's own structure; ``table``:
            the latency table, if the pruning config names one.
        min_warmup_times_lr: recommended minimum of ``warmup_steps * reg_lr`` for a budget in this
            metric: the gates need about ``5 / reg_lr`` steps to start moving, which should be a
            small part of the ramp, and lambda1 grows by at most ``reg_lr`` per step.
    """

    name: str
    cost: Callable[[EncoderConfig, float, Optional[cost.UnitCounts], Optional[Dict[str, Any]]],
                   Dict[str, cost.Number]]
    min_warmup_times_lr: float


#: Every metric by name. A params budget needs about twice the multiplier of a MAC budget: most
#: parameters sit in Transformer heads and FFN units, which the task resists losing, while MACs
#: can go with CNN channels (doc/budget.md). A latency budget moves like a MAC
#: budget (doc/latency.md).
METRICS: Dict[str, Metric] = {metric.name: metric for metric in (
    Metric("macs", lambda config, seconds, counts=None, table=None: cost.count_macs(config, seconds, counts), 10.0),
    Metric("params", lambda config, seconds, counts=None, table=None: cost.count_params(config, counts), 20.0),
    Metric("latency", latency.latency_cost, 10.0),
)}
#: Recommended minimum of ``warmup_steps * reg_lr`` per metric (:attr:`Metric.min_warmup_times_lr`).
MIN_WARMUP_TIMES_LR: Dict[str, float] = {name: metric.min_warmup_times_lr for name, metric in METRICS.items()}


def metric_cost(metric: str, config: EncoderConfig, reference_seconds: float,
                counts: Optional[cost.UnitCounts] = None,
                table: Optional[Dict[str, Any]] = None) -> Dict[str, cost.Number]:
    """The ``metric`` cost of ``config`` (or of ``counts`` on it), MACs and latency for
    ``reference_seconds``; ``table``: the latency table (needed by ``latency`` only)."""
    return METRICS[metric].cost(config, reference_seconds, counts, table)


def budget_ratios(budgets: Iterable[str], costs: Dict[str, Union[float, Tensor]],
                  dense: Dict[str, float]) -> Dict[str, Union[float, Tensor]]:
    """Keep ratio of each budget for ``costs`` against the ``dense`` cost (both ``{"cnn", "total",
    ...}`` of one metric): ``total`` / dense total, ``cnn`` / dense CNN, ``transformer`` =
    everything but the CNN."""
    ratios = {}
    for name in budgets:
        if name == "total":
            ratios[name] = costs["total"] / dense["total"]
        elif name == "cnn":
            ratios[name] = costs["cnn"] / dense["cnn"]
        else:
            ratios[name] = (costs["total"] - costs["cnn"]) / (dense["total"] - dense["cnn"])
    return ratios
