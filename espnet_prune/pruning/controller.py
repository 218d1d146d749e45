"""The pruning controller: gates, expected cost, target schedule and Lagrangian in one place.

The encoder (:class:`espnet_prune.ssl.model.SSLEncoder`) only consumes masks. This
module owns everything else of HJ-Pruning: one hard-concrete gate per pruning unit,
the differentiable expected cost (parameters or MACs, via :mod:`espnet_prune.ssl.cost`),
the budget(s) whose target ramps from 1.0 down during warm-up, and the Lagrange
multipliers that are maximised while everything else is minimised.

Why the multipliers are not trained by the YAML's optimizer: Adam (and every optimizer
that divides by a running gradient scale) moves a multiplier by about its learning rate
per step whatever the size of the gap, and remembers the large gaps of the ramp for
~1000 steps (``beta2 = 0.999``). After the ramp the gap is small compared with that
memory, so the multipliers nearly stop: a multiplier wound up while the gates lagged
behind the ramp unwinds only slowly (the cost ends *below* the target), and one still
short of the task's price rises only slowly (the cost ends *above* it). The controller
therefore updates them itself, once per optimizer step, by clipped gradient ascent whose
speed depends on the current gap only (:meth:`PruningController.advance`).

The constraint value is the cost of the deterministic mask, the structure that export
keeps, with the expected cost's gradient (a straight-through estimate): rounding gates
that are still undecided (keep probabilities between 0 and 1) can make the two differ by
several points on small models, and it is the exported size that has to meet the target.
"""

from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from espnet_prune.layers.hard_concrete import HardConcreteGate
from espnet_prune.pruning.config import PruningConfig
from espnet_prune.ssl import cost
from espnet_prune.ssl.config import EncoderConfig
from espnet_prune.ssl.model import Masks
from espnet_prune.ssl.units import UNITS, Unit

#: The order in which gates are created and sampled (their initial noise and samples come from
#: the global RNG in this order, so seeded runs reproduce): vector units, then scalar units.
GATE_ORDER = tuple(unit for unit in UNITS if not unit.scalar) + tuple(unit for unit in UNITS if unit.scalar)

#: Gap (ratio points) at and above which a multiplier moves at its full rate per step;
#: below it the step is proportional to the gap (lambda1) or to its square (lambda2).
GAP_SCALE = 0.01
#: lambda1 is held while the expected gap closes fast enough to vanish within this many steps.
CLOSING_STEPS = 50
#: A budget counts as reached when its deterministic (exported) ratio is this close to its target.
BUDGET_TOLERANCE = 0.02
#: Recommended run length: at least this many times ``warmup_steps`` optimizer steps.
RUN_LENGTH_PER_WARMUP = 2.0
#: Recommended minimum of ``warmup_steps * reg_lr``: the gates need about ``5 / reg_lr`` steps
#: to start moving, which should be a small part of the ramp.
MIN_WARMUP_TIMES_LR = 10.0
#: A unit is "undecided" when its keep probability lies strictly between these bounds.
UNDECIDED = (0.1, 0.9)


class PruningController(nn.Module):
    """Hard-concrete gates of an encoder with their cost budget(s).

    Args:
        config: structure of the encoder to prune.
        pruning: the pruning settings (:class:`~espnet_prune.pruning.config.PruningConfig`:
            units, metric, budget(s), warm-up, MAC reference duration, learning rates,
            hard-concrete temperature and initial keep probability), validated there ...
        **settings: ... or its keys as keyword arguments (``units=[...], target=0.5``).
    """

    def __init__(self, config: EncoderConfig, pruning: Optional[PruningConfig] = None, **settings):
        super().__init__()
        if pruning is None:
            pruning = PruningConfig.from_dict(settings)
        elif settings:
            raise TypeError(f"PruningController takes a PruningConfig or its keys, not both: {sorted(settings)}")
        self.pruning = pruning
        units = list(pruning.units)
        metric = pruning.metric
        target, cnn_target, transformer_target = pruning.target, pruning.cnn_target, pruning.transformer_target
        warmup_steps, reference_seconds = pruning.warmup_steps, pruning.reference_seconds
        temperature, init_keep_prob = pruning.temperature, pruning.init_keep_prob

        self.config = config
        self.units = units
        self.metric = metric
        self.warmup_steps = int(warmup_steps)
        self.reference_seconds = float(reference_seconds)
        self.budgets: Dict[str, float] = (
            {"total": float(target)} if target is not None else
            {name: float(value) for name, value in (("cnn", cnn_target), ("transformer", transformer_target))
             if value is not None})

        # One gate per gated layer of a vector unit (``gates[unit][str(layer)]``, for the CNN
        # ``gates["conv"][layer]`` with min_keep=1), one gate over the gated layers of a scalar
        # unit (``gates[unit]``).
        self.gates = nn.ModuleDict()
        self.gated_units: List[Unit] = [unit for unit in GATE_ORDER if unit.name in units]
        for unit in self.gated_units:
            layers = unit.gated_layers(config)
            widths = unit.widths(config)
            if not unit.scalar:
                gates = {str(layer): HardConcreteGate(widths[layer], temperature=temperature,
                                                      init_keep_prob=init_keep_prob, min_keep=unit.min_keep)
                         for layer in layers}
                # A unit that every layer has (the CNN's channels) gets a list indexed by layer.
                self.gates[unit.name] = (nn.ModuleList(gates.values()) if unit.present is None
                                         else nn.ModuleDict(gates))
            elif layers:
                self.gates[unit.name] = HardConcreteGate(len(layers), temperature=temperature,
                                                         init_keep_prob=init_keep_prob)
                self.register_buffer(f"_{unit.name}_layers", torch.tensor(layers), persistent=False)

        # The multipliers are state updated by advance(), not trained by the optimizer
        # (module docstring); parameters without gradient so that checkpoints keep them.
        self.lambda_1 = nn.ParameterDict({name: nn.Parameter(torch.zeros(()), requires_grad=False)
                                          for name in self.budgets})
        self.lambda_2 = nn.ParameterDict({name: nn.Parameter(torch.zeros(()), requires_grad=False)
                                          for name in self.budgets})
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        dense = self._cost(cost.structure_counts(config))
        self.dense_cost = {k: float(v) for k, v in dense.items()}
        # The ramp starts where the deterministic structure starts (1.0 unless init_keep_prob
        # is so low that rounding drops units), so that the first gaps are not negative.
        self.ramp_start = {name: max(float(value), self.budgets[name])
                           for name, value in self.deterministic_ratios().items()}
        self._last_gaps: Dict[str, float] = {}
        self._last_expected_gaps: Dict[str, float] = {}
        self._previous_expected_gaps: Dict[str, float] = {}
        self.multiplier_lr: Optional[float] = None  # reg_lr, as last given to advance()

    # ------------------------------------------------------------------ masks
    def _per_layer(self, unit: Unit, vector, scalar, default: List) -> List:
        """One value per layer of ``unit``: ``vector(gate)`` from each gated layer's gate of a
        vector unit, or the entries of ``scalar(gate)`` scattered to the gated layers of a
        scalar unit; ``default[l]`` where a layer has no gate."""
        values = list(default)
        if unit.name not in self.gates:
            return values
        gates = self.gates[unit.name]
        if unit.scalar:
            for value, layer in zip(scalar(gates), getattr(self, f"_{unit.name}_layers").tolist()):
                values[layer] = value
        else:
            layers = enumerate(gates) if isinstance(gates, nn.ModuleList) else (
                (int(name), gate) for name, gate in gates.items())
            for layer, gate in layers:
                values[layer] = vector(gate)
        return values

    def forward(self) -> Masks:
        """Masks for the encoder: samples in training mode, deterministic masks in eval mode.

        Returns:
            ``{"conv": [(C_i,)...], "head": [(H_l,)...], "attn_layer": [() ...], ...}`` for
            the gated unit types; ungated layers of a gated type get all-ones masks.
        """
        device = self.step.device
        return {unit.name: self._per_layer(unit, lambda gate: gate(), lambda gate: gate(),
                                           [torch.ones(unit.mask_shape(self.config, layer), device=device)
                                            for layer in range(unit.num_layers(self.config))])
                for unit in self.gated_units if unit.name in self.gates}

    # ------------------------------------------------------------------ cost
    def expected_counts(self) -> cost.UnitCounts:
        """Expected unit counts under the gate distributions (differentiable w.r.t. ``log_alpha``).

        Heads and FFN units of a layer count as kept only with their sublayer; the
        sublayer probability multiplies them in the cost model.
        """
        counts = cost.structure_counts(self.config)
        for unit in self.gated_units:
            counts[unit.name] = self._per_layer(unit, lambda gate: gate.expected_kept(),
                                                lambda gate: gate.keep_prob(), counts[unit.name])
        return counts

    def _cost(self, counts: cost.UnitCounts) -> Dict[str, Tensor]:
        if self.metric == "macs":
            return cost.count_macs(self.config, self.reference_seconds, counts)
        return cost.count_params(self.config, counts)

    def expected_cost(self) -> Dict[str, Tensor]:
        """Expected ``{"cnn", "pos_conv", "transformer", "total"}`` cost (MACs or params)."""
        return self._cost(self.expected_counts())

    def budget_ratios(self, costs: Dict[str, Union[float, Tensor]]) -> Dict[str, Union[float, Tensor]]:
        """Keep ratio of each budget for ``costs`` (``{"cnn", "total", ...}`` of this metric):
        ``total`` / dense total, ``cnn`` / dense CNN, ``transformer`` = everything but the CNN."""
        dense = self.dense_cost
        ratios = {}
        for name in self.budgets:
            if name == "total":
                ratios[name] = costs["total"] / dense["total"]
            elif name == "cnn":
                ratios[name] = costs["cnn"] / dense["cnn"]
            else:
                ratios[name] = (costs["total"] - costs["cnn"]) / (dense["total"] - dense["cnn"])
        return ratios

    def expected_ratios(self) -> Dict[str, Tensor]:
        """Expected keep ratio of each budget: ``total``, or ``cnn`` and ``transformer``."""
        return self.budget_ratios(self.expected_cost())

    def deterministic_counts(self) -> cost.UnitCounts:
        """Exact unit counts of the deterministic (eval / export) mask, as Python numbers."""
        counts = cost.structure_counts(self.config)
        with torch.no_grad():
            for unit in self.gated_units:
                counts[unit.name] = self._per_layer(unit, lambda gate: int(gate.kept().sum()),
                                                    lambda gate: [int(kept) for kept in gate.kept().tolist()],
                                                    counts[unit.name])
        return counts

    def deterministic_ratios(self) -> Dict[str, float]:
        """Keep ratio of each budget for the structure the deterministic mask keeps (what
        export produces), ``{budget: float}``."""
        ratios = self.budget_ratios(self._cost(self.deterministic_counts()))
        return {name: float(value) for name, value in ratios.items()}

    def current_targets(self) -> Dict[str, float]:
        """Each budget's target at the current step: linear from its start (1.0, see
        ``ramp_start``) to its final value over ``warmup_steps``, then constant."""
        progress = 1.0 if self.warmup_steps == 0 else min(1.0, int(self.step) / self.warmup_steps)
        return {name: self.ramp_start[name] - (self.ramp_start[name] - final) * progress
                for name, final in self.budgets.items()}

    # ------------------------------------------------------------------ Lagrangian
    def regularization(self) -> Tuple[Tensor, Dict[str, float]]:
        """Lagrangian term ``sum_b lambda1_b g_b + lambda2_b g_b^2`` and stats.

        ``g_b`` is the gap of budget b between the deterministic structure's ratio and the
        current target, with the gradient of the expected ratio (straight-through): its value
        is what export will keep, its gradient reaches the gates. Minimising the loss trains
        the gates toward the budget; the multipliers are constants here and are moved by
        :meth:`advance` from the gaps of the latest call.

        Returns:
            ``(loss, stats)``; stats hold ``expected_<budget>`` (ratio under the gate
            distributions), ``deterministic_<budget>`` (ratio of the deterministic mask),
            ``target_<budget>``, ``lambda1_<budget>``, ``lambda2_<budget>`` as floats.
        """
        ratios = self.expected_ratios()
        kept = self.deterministic_ratios()
        targets = self.current_targets()
        loss = torch.zeros((), device=self.step.device)
        stats: Dict[str, float] = {}
        self._last_gaps, self._last_expected_gaps = {}, {}
        for name, ratio in ratios.items():
            gap = ratio + (kept[name] - ratio.detach()) - targets[name]
            lambda_1, lambda_2 = self.lambda_1[name].detach(), self.lambda_2[name].detach()
            loss = loss + lambda_1 * gap + lambda_2 * gap * gap
            self._last_gaps[name] = float(gap.detach())
            self._last_expected_gaps[name] = float(ratio.detach()) - targets[name]
            stats.update({f"expected_{name}": float(ratio.detach()), f"deterministic_{name}": kept[name],
                          f"target_{name}": targets[name], f"lambda1_{name}": float(lambda_1),
                          f"lambda2_{name}": float(lambda_2)})
        return loss, stats

    @torch.no_grad()
    def advance(self, multiplier_lr: float = 0.0, lambda2_lr_scale: Optional[float] = None) -> None:
        """One optimisation step: move the multipliers, then the target schedule.

        Gradient ascent of the Lagrangian in the multipliers from the gaps ``g`` of the latest
        :meth:`regularization`, normalised by :data:`GAP_SCALE` and clipped, so that a step
        depends only on the current gap (no memory of the ramp's large gaps)::

            lambda1 += multiplier_lr * clip(g / GAP_SCALE, -1, 1)   # unless the gap is closing
            lambda2 += multiplier_lr * lambda2_lr_scale * min((g / GAP_SCALE)^2, 1)

        lambda1 is held while the expected ratio's gap closes (shrinks without changing
        sign since the previous step, fast enough to vanish within :data:`CLOSING_STEPS`
        steps): the gates are already moving toward the target, and integrating further
        would only wind lambda1 up. Saturated gates (keep probability
        near 1 at the start) respond only to a large multiplier; without this hold that
        multiplier, far above what the gates need once they move, overshoots the target
        after the ramp and takes ``lambda1 / multiplier_lr`` steps to unwind.

        Args:
            multiplier_lr: full-rate step of lambda1 (``reg_lr``); 0 only counts the step.
            lambda2_lr_scale: lambda2 moves this many times faster (the quadratic term is the
                restoring force that damps the oscillation around the target); ``None``: the
                pruning config's ``lambda2_lr_scale``.
        """
        if lambda2_lr_scale is None:
            lambda2_lr_scale = self.pruning.lambda2_lr_scale
        if multiplier_lr > 0:
            self.multiplier_lr = float(multiplier_lr)
            for name, gap in self._last_gaps.items():
                scaled = gap / GAP_SCALE
                now, before = self._last_expected_gaps[name], self._previous_expected_gaps.get(name)
                closing = (before is not None and now * before > 0
                           and (abs(before) - abs(now)) * CLOSING_STEPS > abs(now))
                if not closing:
                    self.lambda_1[name].add_(multiplier_lr * max(-1.0, min(1.0, scaled)))
                self.lambda_2[name].add_(multiplier_lr * lambda2_lr_scale * min(scaled * scaled, 1.0))
        self._previous_expected_gaps = self._last_expected_gaps
        self._last_gaps, self._last_expected_gaps = {}, {}
        self.step += 1

    def gate_parameters(self) -> List[nn.Parameter]:
        """All ``log_alpha`` parameters."""
        return [p for name, p in self.named_parameters() if name.endswith("log_alpha")]

    def lagrangian_parameters(self) -> List[nn.Parameter]:
        """The multipliers lambda1 and lambda2 of every budget (no gradient; see :meth:`advance`)."""
        return list(self.lambda_1.values()) + list(self.lambda_2.values())

    def parameter_groups(self, reg_lr: float) -> List[Dict]:
        """Optimizer parameter group of the gates: ``reg_lr``, no weight decay.

        The multipliers are in no group: :meth:`advance` moves them.
        """
        return [{"params": self.gate_parameters(), "lr": reg_lr, "weight_decay": 0.0}]

    # ------------------------------------------------------------------ budget check
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
                        undecided[name.replace("gates.", "", 1)] = count
        return undecided

    def budget_report(self, tolerance: float = BUDGET_TOLERANCE) -> Dict[str, Dict]:
        """Where every budget stands: ``{budget: {target, expected, deterministic, reached,
        advice}}``; ``reached`` when the deterministic ratio is within ``tolerance`` of the
        final target, ``advice`` (a sentence, or ``None``) says what to change otherwise."""
        with torch.no_grad():
            expected = {name: float(value) for name, value in self.expected_ratios().items()}
        kept = self.deterministic_ratios()
        step, warmup = int(self.step), self.warmup_steps
        recommended = int(round(RUN_LENGTH_PER_WARMUP * warmup))
        report = {}
        for name, target in self.budgets.items():
            reached = abs(kept[name] - target) <= tolerance
            advice = None
            if not reached:
                if step < warmup:
                    advice = (f"training stopped during the target ramp (step {step} of warmup_steps {warmup}): "
                              f"train at least {recommended} optimizer steps, or lower warmup_steps to at most "
                              f"{int(step / RUN_LENGTH_PER_WARMUP)}")
                elif step < recommended:
                    advice = (f"only {step - warmup} steps followed the ramp: train at least {recommended} optimizer "
                              f"steps ({RUN_LENGTH_PER_WARMUP:g} x warmup_steps), or lower warmup_steps to at most "
                              f"{int(step / RUN_LENGTH_PER_WARMUP)}")
                elif self.multiplier_lr is not None and warmup * self.multiplier_lr < MIN_WARMUP_TIMES_LR:
                    advice = (f"warmup_steps x reg_lr = {warmup * self.multiplier_lr:g} is below "
                              f"{MIN_WARMUP_TIMES_LR:g}, so the gates lag far behind the ramp: raise reg_lr or "
                              "warmup_steps (and train at least twice warmup_steps)")
                else:
                    advice = ("the gates did not settle: train longer after the ramp, or raise reg_lr "
                              "(gates and multipliers move faster)")
            report[name] = {"target": target, "expected": expected[name], "deterministic": kept[name],
                            "reached": reached, "advice": advice}
        return report

    def budget_warnings(self, tolerance: float = BUDGET_TOLERANCE) -> List[str]:
        """One sentence per budget that ends more than ``tolerance`` from its target."""
        warnings = []
        for name, entry in self.budget_report(tolerance).items():
            if not entry["reached"]:
                warnings.append(
                    f"pruning budget '{name}' ({self.metric}) missed its target: the pruned structure keeps "
                    f"{entry['deterministic']:.3f} (expected under the gates {entry['expected']:.3f}) against a "
                    f"target of {entry['target']:.3f} after {int(self.step)} optimizer steps; {entry['advice']}")
        return warnings
