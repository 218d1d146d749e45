"""The gate bank: one hard-concrete gate per pruning unit of a prunable part, and what they keep.

:class:`GateBank` gates one part (:class:`~espnet_prune.pruning.parts.PrunablePart`):
``gates[unit][str(layer)]`` for a vector unit (for the CNN ``gates["conv"][layer]``, a list over
every layer), ``gates[unit]`` for a scalar unit (one gate over the layers that have the sublayer).
From the gates it gives the part's masks (sampled in training, deterministic in eval), the
expected and the rounded unit counts of its cost model (:data:`~espnet_prune.ssl.cost.UnitCounts`),
the handles with which the budget-matching rounding (:mod:`espnet_prune.pruning.rounding`) moves
each gate's kept count, and the units that are still undecided. :class:`PartGates` is the same
over several parts (``gates[part][unit]...``, counts and masks ``{part: ...}``). Neither knows
anything of costs or budgets.
"""

from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn

from espnet_prune.layers.hard_concrete import HardConcreteGate
from espnet_prune.pruning.parts import PrunablePart
from espnet_prune.ssl import cost
from espnet_prune.ssl.model import Masks
from espnet_prune.ssl.units import UNITS, Unit


def gate_order(table: Sequence[Unit]) -> Tuple[Unit, ...]:
    """The order in which gates are created and sampled (their initial noise and samples come from
    the global RNG in this order, so seeded runs reproduce): vector units, then scalar units."""
    return tuple(unit for unit in table if not unit.scalar) + tuple(unit for unit in table if unit.scalar)


#: :func:`gate_order` of the SSL encoder's units.
GATE_ORDER = gate_order(UNITS)
#: The units whose kept counts ``align`` rounds to its multiples (CNN channels, FFN units: the
#: matrix dimensions the hardware tiles; heads are whole blocks already).
ALIGNED_UNITS = ("conv", "interm")
#: A unit is "undecided" when its keep probability lies strictly between these bounds.
UNDECIDED = (0.1, 0.9)

#: ``(gate, assign, is_sublayer_gate)``: ``assign(counts, k)`` writes "the gate keeps k units" into unit counts.
Movable = Tuple[HardConcreteGate, Callable[[cost.UnitCounts, int], None], bool]


class GateBank(nn.ModuleDict):
    """The hard-concrete gates of ``units`` on the prunable ``part``.

    Args:
        part: the part to prune (its units table and structure).
        units: names of its pruning units to gate.
        temperature: hard-concrete temperature beta.
        init_keep_prob: initial keep probability of every unit.
        align: the gates of :data:`ALIGNED_UNITS` keep multiples of this many units
            (:class:`HardConcreteGate`'s ``align``).
    """

    def __init__(self, part: PrunablePart, units: Sequence[str], temperature: float, init_keep_prob: float,
                 align: int = 1):
        super().__init__()
        self.part = part
        self.config = config = part.structure
        self.gated_units: List[Unit] = [unit for unit in gate_order(part.table) if unit.name in units]
        #: The gated layers of each scalar unit (its gate's entries, in order).
        self.scalar_layers: Dict[str, List[int]] = {}
        for unit in self.gated_units:
            layers = unit.gated_layers(config)
            widths = unit.widths(config)
            if not unit.scalar:
                gates = {str(layer): HardConcreteGate(widths[layer], temperature=temperature,
                                                      init_keep_prob=init_keep_prob, min_keep=unit.min_keep,
                                                      align=align if unit.name in ALIGNED_UNITS else 1)
                         for layer in layers}
                # A unit that every layer has (the CNN's channels) gets a list indexed by layer.
                self[unit.name] = (nn.ModuleList(gates.values()) if unit.present is None
                                   else nn.ModuleDict(gates))
            elif layers:
                self[unit.name] = HardConcreteGate(len(layers), temperature=temperature,
                                                   init_keep_prob=init_keep_prob)
                self.scalar_layers[unit.name] = list(layers)

    def _per_layer(self, unit: Unit, vector, scalar, default: List) -> List:
        """One value per layer of ``unit``: ``vector(gate)`` from each gated layer's gate of a
        vector unit, or the entries of ``scalar(gate)`` scattered to the gated layers of a
        scalar unit; ``default[l]`` where a layer has no gate."""
        values = list(default)
        if unit.name not in self:
            return values
        gates = self[unit.name]
        if unit.scalar:
            for value, layer in zip(scalar(gates), self.scalar_layers[unit.name]):
                values[layer] = value
        else:
            layers = enumerate(gates) if isinstance(gates, nn.ModuleList) else (
                (int(name), gate) for name, gate in gates.items())
            for layer, gate in layers:
                values[layer] = vector(gate)
        return values

    def masks(self, device: torch.device) -> Masks:
        """Masks for the part: samples in training mode, deterministic masks in eval mode.

        Returns:
            ``{"conv": [(C_i,)...], "head": [(H_l,)...], "attn_layer": [() ...], ...}`` for
            the gated unit types; ungated layers of a gated type get all-ones masks.
        """
        return {unit.name: self._per_layer(unit, lambda gate: gate(), lambda gate: gate(),
                                           [torch.ones(unit.mask_shape(self.config, layer), device=device)
                                            for layer in range(unit.num_layers(self.config))])
                for unit in self.gated_units if unit.name in self}

    def expected_counts(self) -> cost.UnitCounts:
        """Expected unit counts under the gate distributions (differentiable w.r.t. ``log_alpha``).

        Heads and FFN units of a layer count as kept only with their sublayer; the
        sublayer probability multiplies them in the cost model.
        """
        counts = self.part.exact_counts()
        for unit in self.gated_units:
            counts[unit.name] = self._per_layer(unit, lambda gate: gate.expected_kept(),
                                                lambda gate: gate.keep_prob(), counts[unit.name])
        return counts

    def rounded_counts(self) -> cost.UnitCounts:
        """Unit counts when every gate rounds alone (its rounded expected count, no budget
        matching), as Python numbers; clears the gates' ``planned_kept``."""
        for module in self.modules():
            if isinstance(module, HardConcreteGate):
                module.planned_kept = None
        counts = self.part.exact_counts()
        with torch.no_grad():
            for unit in self.gated_units:
                counts[unit.name] = self._per_layer(unit, lambda gate: gate.num_kept(),  # = kept().sum()
                                                    lambda gate: [int(kept) for kept in gate.kept().tolist()],
                                                    counts[unit.name])
        return counts

    def movable(self) -> List[Movable]:
        """``(gate, assign, is_sublayer_gate)`` of every gate; ``assign(counts, k)`` writes "the gate
        keeps k units" into unit counts."""
        movable = []
        for unit in self.gated_units:
            if unit.name not in self:
                continue
            gates = self[unit.name]
            if unit.scalar:
                layers = self.scalar_layers[unit.name]

                def assign(counts, k, gate=gates, layers=layers, key=unit.name):
                    gate.planned_kept = k
                    for keep, layer in zip(gate.kept().tolist(), layers):
                        counts[key][layer] = int(keep)
                movable.append((gates, assign, True))
                continue
            pairs = enumerate(gates) if isinstance(gates, nn.ModuleList) else (
                (int(name), gate) for name, gate in gates.items())
            for layer, gate in pairs:
                def assign(counts, k, key=unit.name, layer=layer):
                    counts[key][layer] = k
                movable.append((gate, assign, False))
        return movable

    def minimum_counts(self) -> cost.UnitCounts:
        """Unit counts when every gate keeps as little as it can (``min_keep`` units; no sublayer)."""
        counts = self.part.exact_counts()
        movable = self.movable()
        for gate, assign, _ in movable:
            assign(counts, gate.min_keep)
        for gate, _, _ in movable:
            gate.planned_kept = None
        return counts

    def undecided_units(self) -> Dict[str, int]:
        """``{gate name: units whose keep probability lies inside UNDECIDED}``, non-zero only;
        the deterministic mask rounds these, so they make expected and exported cost differ."""
        low, high = UNDECIDED
        undecided = {}
        with torch.no_grad():
            for name, module in self.named_modules():
                if isinstance(module, HardConcreteGate):
                    p = module.keep_prob()
                    count = int(((p > low) & (p < high)).sum())
                    if count:
                        undecided[name] = count
        return undecided

    def log_alphas(self) -> List[nn.Parameter]:
        """All ``log_alpha`` parameters."""
        return [p for name, p in self.named_parameters() if name.endswith("log_alpha")]


class PartGates(nn.ModuleDict):
    """One :class:`GateBank` per prunable part: ``gates[part][unit]...``; the same interface as a
    :class:`GateBank`, with masks and unit counts ``{part name: ...}``.

    Args:
        parts: the parts, in order (their gates are created, and sampled, in this order).
        units: ``{part name: names of its units to gate}``; a part without an entry is not gated
            (its counts stay its structure's).
        temperature: hard-concrete temperature beta.
        init_keep_prob: initial keep probability of every unit.
        align: :class:`GateBank`'s ``align``, for every part.
    """

    def __init__(self, parts: Sequence[PrunablePart], units: Dict[str, Sequence[str]], temperature: float,
                 init_keep_prob: float, align: int = 1):
        super().__init__()
        self.parts = {part.name: part for part in parts}
        for part in parts:
            if units.get(part.name):
                self[part.name] = GateBank(part, units[part.name], temperature, init_keep_prob, align)

    def _each(self, method: str) -> Dict[str, cost.UnitCounts]:
        return {name: getattr(self[name], method)() if name in self else part.exact_counts()
                for name, part in self.parts.items()}

    def masks(self, device: torch.device) -> Dict[str, Masks]:
        """``{part name: its masks}`` (:meth:`GateBank.masks`) of the gated parts."""
        return {name: bank.masks(device) for name, bank in self.items()}

    def expected_counts(self) -> Dict[str, cost.UnitCounts]:
        """``{part name: expected unit counts}`` (:meth:`GateBank.expected_counts`)."""
        return self._each("expected_counts")

    def rounded_counts(self) -> Dict[str, cost.UnitCounts]:
        """``{part name: unit counts when every gate rounds alone}`` (:meth:`GateBank.rounded_counts`)."""
        return self._each("rounded_counts")

    def movable(self) -> List[Movable]:
        """:meth:`GateBank.movable` of every part; ``assign`` writes into ``counts[part]``."""
        movable = []
        for name, bank in self.items():
            for gate, assign, sublayer in bank.movable():
                movable.append((gate, lambda counts, k, assign=assign, name=name: assign(counts[name], k), sublayer))
        return movable

    def minimum_counts(self) -> Dict[str, cost.UnitCounts]:
        """``{part name: unit counts when every gate keeps as little as it can}``."""
        return self._each("minimum_counts")

    def undecided_units(self) -> Dict[str, int]:
        """``{"<part>.<gate name>": undecided units}`` (:meth:`GateBank.undecided_units`)."""
        return {f"{name}.{gate}": count for name, bank in self.items()
                for gate, count in bank.undecided_units().items()}

    def log_alphas(self) -> List[nn.Parameter]:
        """All ``log_alpha`` parameters."""
        return [p for name, p in self.named_parameters() if name.endswith("log_alpha")]
