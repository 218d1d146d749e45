"""What can be pruned, as the pruning core sees it: a prunable part and its cost.

A :class:`PrunablePart` describes one prunable module -- the SSL encoder of a ``pruned_ssl``
frontend, a downstream encoder, an attention decoder -- by

* its units table (``table``: :class:`~espnet_prune.ssl.units.Unit`-like entries with a name,
  per-layer widths read from ``structure``, the layers that have them, a minimum keep) and the
  ``structure`` object those entries read;
* its cost per metric (:meth:`PrunablePart.macs`, :meth:`PrunablePart.params`): a function of unit
  counts (:data:`UnitCounts`) that gives plain numbers for exact counts and differentiable tensors
  for the expected counts under the gates, as a dict of cost parts with a ``total``;
* the budgets its costs can be split into (:meth:`PrunablePart.budget_costs`: ``total`` and, for
  the SSL encoder, ``cnn`` and ``transformer``).

The module itself applies the masks the controller gives (``{unit: [per-layer tensor]}``, see
:meth:`~espnet_prune.pruning.gates.GateBank.masks`). Which metric calls which cost method is
decided in :mod:`espnet_prune.pruning.metrics` alone. :class:`SSLPart` is the SSL encoder's part;
:class:`~espnet_prune.pruning.whole_model.WholeModelPart` joins several parts under one budget.
"""

from abc import ABC, abstractmethod
from typing import Any, Dict, List, Optional, Sequence

from espnet_prune.ssl import cost, latency
from espnet_prune.ssl.config import EncoderConfig
from espnet_prune.ssl.units import UNITS, Unit

#: ``{unit name: [one count per layer]}`` (:data:`espnet_prune.ssl.cost.UnitCounts`).
UnitCounts = cost.UnitCounts
Number = cost.Number


class PrunablePart(ABC):
    """One prunable module as the pruning core sees it (module docstring).

    Attributes:
        name: the part's name (``frontend``, ``encoder``, ``decoder``).
        table: its pruning units, in the order its masks are consumed.
        structure: what the units read their widths and presence from (e.g. an
            :class:`~espnet_prune.ssl.config.EncoderConfig`).
        default_units: the unit names gated when the budget does not name any.
    """

    name: str
    table: Sequence[Unit]
    structure: Any
    default_units: Sequence[str] = ()

    @property
    def unit_names(self) -> List[str]:
        """The names of :attr:`table`'s units."""
        return [unit.name for unit in self.table]

    def exact_counts(self) -> UnitCounts:
        """The cost terms of the structure as it is (:meth:`Unit.exact_counts` of every unit)."""
        return {unit.name: unit.exact_counts(self.structure) for unit in self.table}

    @abstractmethod
    def macs(self, counts: Optional[UnitCounts] = None) -> Dict[str, Number]:
        """MACs of ``counts`` (``None``: :meth:`exact_counts`), ``{..., "total"}``."""

    @abstractmethod
    def params(self, counts: Optional[UnitCounts] = None) -> Dict[str, Number]:
        """Parameters of ``counts`` (``None``: :meth:`exact_counts`), ``{..., "total"}``."""

    def latency(self, counts: Optional[UnitCounts] = None) -> Dict[str, Number]:
        """Predicted latency (ms) of ``counts`` from a measured table, ``{..., "total"}``; only
        parts built with a latency table have one."""
        raise ValueError(f"metric latency: the {self.name} part has no latency table (the SSL frontend's in "
                         "frontend_conf.pruning.latency_table, a whole model's decode table in "
                         "model_conf.pruning.latency_table)")

    @abstractmethod
    def with_structure(self, structure: Any) -> "PrunablePart":
        """The same part with another structure (e.g. the compact one export builds)."""

    def budget_costs(self, costs: Dict[str, Number]) -> Dict[str, Number]:
        """The cost each budget name of this part measures, from :meth:`macs` / :meth:`params`'s
        dict: ``{"total": ...}`` (and whatever else the part can be budgeted by)."""
        return {"total": costs["total"]}

    def ungated_units(self, units: Sequence[str], budget: str) -> List[str]:
        """Units of this part that ``units`` does not gate but could lower ``budget``."""
        return [unit.name for unit in self.table if unit.name not in units and unit.gated_layers(self.structure)]


class SSLPart(PrunablePart):
    """The SSL encoder (:class:`~espnet_prune.ssl.model.SSLEncoder`) of a ``pruned_ssl`` frontend.

    Args:
        config: the encoder's structure.
        reference_seconds: the audio duration (s) its MACs are counted for.
        name: the part's name.
        latency_table: the encoder's latency table (:mod:`espnet_prune.ssl.latency`, checked
            against it), needed by :meth:`latency`; ``None``: none.
    Costs come from :mod:`espnet_prune.ssl.cost` (``{"cnn", "pos_conv", "transformer", "total"}``);
    budgets ``total``, ``cnn`` (the CNN feature extractor) and ``transformer`` (the rest).
    """

    table = UNITS
    default_units = ("conv", "head", "interm")

    def __init__(self, config: EncoderConfig, reference_seconds: float, name: str = "frontend",
                 latency_table: Optional[Dict[str, Any]] = None):
        self.structure = config
        self.reference_seconds = float(reference_seconds)
        self.name = name
        self.latency_table = latency_table

    @classmethod
    def for_pruning(cls, config: EncoderConfig, pruning) -> "SSLPart":
        """The part of ``config`` priced as the pruning settings say (:class:`~espnet_prune.
        pruning.config.PruningConfig`: ``reference_seconds``, ``latency_table`` loaded and checked
        against ``config``, ``latency_batch``)."""
        table = None
        if pruning.latency_table is not None:
            table = latency.load_table(pruning.latency_table, "pruning.latency_table")
            latency.check_table(table, config, pruning.reference_seconds, pruning.latency_batch)
        return cls(config, pruning.reference_seconds, latency_table=table)

    def with_structure(self, structure: EncoderConfig) -> "SSLPart":
        return SSLPart(structure, self.reference_seconds, self.name, self.latency_table)

    def latency(self, counts: Optional[UnitCounts] = None) -> Dict[str, Number]:
        if self.latency_table is None:
            return super().latency(counts)
        return latency.latency_cost(self.structure, self.reference_seconds, counts, self.latency_table)

    def macs(self, counts: Optional[UnitCounts] = None) -> Dict[str, Number]:
        return cost.count_macs(self.structure, self.reference_seconds, counts)

    def params(self, counts: Optional[UnitCounts] = None) -> Dict[str, Number]:
        return cost.count_params(self.structure, counts)

    def budget_costs(self, costs: Dict[str, Number]) -> Dict[str, Number]:
        """``total``, ``cnn`` and ``transformer`` (everything but the CNN: feature projection,
        positional convolution, layers)."""
        return {"total": costs["total"], "cnn": costs["cnn"], "transformer": costs["total"] - costs["cnn"]}

    def ungated_units(self, units: Sequence[str], budget: str) -> List[str]:
        """CNN units for ``cnn``, Transformer units for ``transformer``, either for ``total``; only
        those the encoder has (:meth:`Unit.gated_layers`)."""
        return [unit.name for unit in self.table
                if unit.name not in units and unit.gated_layers(self.structure)
                and (budget == "total" or unit.cnn == (budget == "cnn"))]


def copy_counts(counts):
    """A copy of unit counts (:data:`UnitCounts`, or ``{part: UnitCounts}`` of several parts) whose
    lists can be changed without touching ``counts``."""
    return {name: copy_counts(values) if isinstance(values, dict) else list(values)
            for name, values in counts.items()}
