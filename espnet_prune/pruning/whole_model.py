"""Several prunable parts under one budget: the cost of a whole decode.

:class:`WholeModelPart` joins the parts a ``model_conf.pruning`` budget covers (the SSL frontend,
the downstream encoder, the attention decoder, each already priced for the decoding by the model
that builds it, see :mod:`espnet_prune.asr.whole_model`) and the fixed costs no unit can remove
(:class:`FixedPart`: the CTC layer and its prefix scoring) into one :class:`~espnet_prune.pruning.
parts.PrunablePart`. Its unit counts, masks and structures are ``{part name: ...}``; its cost is
``{part name: that part's total, ..., "total": their sum}``, with the frontend's ``cnn`` and
``transformer`` beside them (MACs and parameters), and it can be budgeted by ``total``, by part,
or by the frontend's ``cnn`` / ``transformer``. With a measured decode latency model (``latency_fits``)
it also has a latency: per part a fixed time plus a time per MAC.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

from espnet_prune.pruning.parts import Number, PrunablePart, UnitCounts


class FixedPart(PrunablePart):
    """A cost that no unit can remove (no units), e.g. the CTC layer and its prefix scoring.

    Args:
        name: the part's name.
        macs: its MACs in the decode the budget is priced for.
        params: its parameters.
    """

    table = ()

    def __init__(self, name: str, macs: float, params: float):
        self.name = name
        self.structure = {"macs": float(macs), "params": float(params)}

    def macs(self, counts: Optional[UnitCounts] = None) -> Dict[str, Number]:
        return {"total": self.structure["macs"]}

    def params(self, counts: Optional[UnitCounts] = None) -> Dict[str, Number]:
        return {"total": self.structure["params"]}

    def with_structure(self, structure: Any) -> "FixedPart":
        return self


class WholeModelPart(PrunablePart):
    """The parts one budget covers, as one part (module docstring).

    Args:
        parts: the covered parts, in the order the model runs them (their names unique).
        latency_fits: ``{part name: (fixed_ms, ms_per_gmac)}`` for every part, the measured decode
            latency model (:mod:`espnet_prune.pruning.decode_latency`) that :meth:`latency` prices
            with; ``None``: no latency.
    """

    name = "model"
    table = ()

    def __init__(self, parts: Sequence[PrunablePart], latency_fits: Optional[Dict[str, Tuple[float, float]]] = None):
        names = [part.name for part in parts]
        if len(set(names)) != len(names):
            raise ValueError(f"the parts of a whole-model budget must have distinct names, got {names}")
        missing = [name for name in names if latency_fits is not None and name not in latency_fits]
        if missing:
            raise ValueError(f"the decode latency model has no fit for the part(s) {missing}")
        self.parts: List[PrunablePart] = list(parts)
        self.structure = {part.name: part.structure for part in parts}
        self.latency_fits = None if latency_fits is None else dict(latency_fits)

    def exact_counts(self) -> Dict[str, UnitCounts]:
        return {part.name: part.exact_counts() for part in self.parts}

    def _join(self, method: str, counts: Optional[Dict[str, UnitCounts]]) -> Dict[str, Number]:
        costs: Dict[str, Number] = {}
        total: Number = 0
        for part in self.parts:
            found = getattr(part, method)(None if counts is None else counts.get(part.name))
            costs[part.name] = found["total"]
            total = total + found["total"]
            if part.name == "frontend" and "cnn" in found:
                costs["cnn"] = found["cnn"]
                costs["transformer"] = found["total"] - found["cnn"]
        costs["total"] = total
        return costs

    def macs(self, counts: Optional[Dict[str, UnitCounts]] = None) -> Dict[str, Number]:
        """``{part: its MACs in the decode, ..., "cnn", "transformer" (of the frontend), "total"}``."""
        return self._join("macs", counts)

    def params(self, counts: Optional[Dict[str, UnitCounts]] = None) -> Dict[str, Number]:
        """``{part: its parameters, ..., "cnn", "transformer" (of the frontend), "total"}``."""
        return self._join("params", counts)

    def latency(self, counts: Optional[Dict[str, UnitCounts]] = None) -> Dict[str, Number]:
        """``{part: its predicted milliseconds in the decode, ..., "total"}``: per part
        ``fixed_ms + ms_per_gmac x`` its GMACs (:attr:`latency_fits`)."""
        if self.latency_fits is None:
            return super().latency(counts)
        costs: Dict[str, Number] = {}
        total: Number = 0
        for part in self.parts:
            fixed, slope = self.latency_fits[part.name]
            macs = part.macs(None if counts is None else counts.get(part.name))["total"]
            costs[part.name] = fixed + slope * macs / 1e9
            total = total + costs[part.name]
        costs["total"] = total
        return costs

    def budget_costs(self, costs: Dict[str, Number]) -> Dict[str, Number]:
        return dict(costs)

    def with_structure(self, structure: Dict[str, Any]) -> "WholeModelPart":
        """The same parts with ``structure[part]`` where given (e.g. the compact ones)."""
        return WholeModelPart([part.with_structure(structure[part.name]) if part.name in structure else part
                               for part in self.parts], self.latency_fits)

    def ungated_units(self, units: Dict[str, Sequence[str]], budget: str) -> List[str]:
        """``part.unit`` of the units that ``units`` does not gate but could lower ``budget``."""
        found = []
        for part in self.parts:
            if budget in ("total", part.name) or (part.name == "frontend" and budget in ("cnn", "transformer")):
                inner = "total" if budget in ("total", part.name) else budget
                found += [f"{part.name}.{name}" for name in part.ungated_units(units.get(part.name, ()), inner)]
        return found
