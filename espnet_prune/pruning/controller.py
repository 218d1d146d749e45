"""The pruning controller: the orchestration of HJ-Pruning's gates, cost, budgets and multipliers.

The pruned modules only consume masks. The controller gates whatever prunable part it is given
(:mod:`~espnet_prune.pruning.parts`: the SSL encoder of a frontend, or the whole model's parts
under one budget), holds the state of the pruning -- the gates, the Lagrange multipliers and the
step -- and ties together the pieces that each do one thing:

* :mod:`~espnet_prune.pruning.gates`: one hard-concrete gate per pruning unit, the masks, the
  expected and rounded unit counts;
* :mod:`~espnet_prune.pruning.metrics`: the cost of unit counts in the budget's metric (parameters
  or MACs, the part's cost functions);
* :mod:`~espnet_prune.pruning.rounding`: the budget-matching rounding of the deterministic mask;
* :mod:`~espnet_prune.pruning.multipliers`: the multipliers' update, once per optimizer step;
* :mod:`~espnet_prune.pruning.multisize`: the schedule and snapshots of a run with several sizes;
* :mod:`~espnet_prune.pruning.reports`: where the budgets stand, and what to change.

The budget(s)' target ramps down during warm-up; the Lagrange multipliers are maximised while
everything else is minimised. The constraint value is the cost of the deterministic mask, the
structure that export keeps, with the expected cost's gradient (a straight-through estimate): it
is the exported size that has to meet the target. That mask rounds the gates jointly so that its
cost matches the expected cost (:meth:`PruningController.deterministic_counts`); rounding each
gate alone made an undecided sublayer cost all or nothing of it, steps of ~11 % on small models.
"""

from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from espnet_prune.pruning import reports
from espnet_prune.pruning.config import PruningConfig
from espnet_prune.pruning.gates import GateBank, PartGates
from espnet_prune.pruning.metrics import budget_ratios, metric_cost
from espnet_prune.pruning.multipliers import multiplier_step
from espnet_prune.pruning.multisize import SNAPSHOTS_ATTRIBUTE, SizeSchedule, SizeSnapshots
from espnet_prune.pruning.parts import PrunablePart, SSLPart, copy_counts
from espnet_prune.pruning.reports import BUDGET_TOLERANCE
from espnet_prune.pruning.rounding import match_budgets
from espnet_prune.ssl import cost
from espnet_prune.ssl.config import EncoderConfig
from espnet_prune.ssl.model import Masks


class PruningController(nn.Module):
    """Hard-concrete gates of a prunable part with their cost budget(s).

    Args:
        config: structure of the SSL encoder to prune (its :class:`~espnet_prune.pruning.parts.
            SSLPart`, MACs for ``reference_seconds``), or the prunable part itself (e.g. a
            :class:`~espnet_prune.pruning.whole_model.WholeModelPart`, whose ``units`` are
            ``{part name: [unit, ...]}``).
        pruning: the pruning settings (:class:`~espnet_prune.pruning.config.PruningConfig`:
            units, metric, budget(s), warm-up, MAC reference duration, learning rates,
            hard-concrete temperature and initial keep probability), validated there ...
        **settings: ... or its keys as keyword arguments (``units=[...], target=0.5``).
    """

    def __init__(self, config: Union[EncoderConfig, PrunablePart], pruning: Optional[PruningConfig] = None,
                 **settings):
        super().__init__()
        if pruning is None:
            pruning = PruningConfig.from_dict(settings)
        elif settings:
            raise TypeError(f"PruningController takes a PruningConfig or its keys, not both: {sorted(settings)}")
        self.pruning = pruning
        self.part = config if isinstance(config, PrunablePart) else SSLPart.for_pruning(config, pruning)
        #: The SSL encoder's latency table (``pruning.latency_table``), checked against it, or ``None``.
        self.latency_table: Optional[Dict] = getattr(self.part, "latency_table", None)
        self.config = self.part.structure
        self.units = pruning.units
        self.metric = pruning.metric
        self.warmup_steps = int(pruning.warmup_steps)
        self.reference_seconds = float(pruning.reference_seconds)
        # The budgets of the (last, with ``targets``: smallest) size; see _init_sizes.
        self.budgets: Dict[str, float] = {name: float(value) for name, value in pruning.sizes()[-1].items()}

        # One gate per gated layer of a vector unit (``gates[unit][str(layer)]``, for the CNN
        # ``gates["conv"][layer]`` with min_keep=1), one gate over the gated layers of a scalar
        # unit (``gates[unit]``); see espnet_prune.pruning.gates.
        # Several parts: gates[part][unit]... (espnet_prune.pruning.gates.PartGates).
        self.gates = (PartGates(self.part.parts, self.units, pruning.temperature, pruning.init_keep_prob,
                                pruning.align)
                      if hasattr(self.part, "parts") else
                      GateBank(self.part, self.units, pruning.temperature, pruning.init_keep_prob, pruning.align))

        # The multipliers are state updated by advance(), not trained by the optimizer
        # (espnet_prune.pruning.multipliers); parameters without gradient so that checkpoints keep them.
        self.lambda_1 = nn.ParameterDict({name: nn.Parameter(torch.zeros(()), requires_grad=False)
                                          for name in self.budgets})
        self.lambda_2 = nn.ParameterDict({name: nn.Parameter(torch.zeros(()), requires_grad=False)
                                          for name in self.budgets})
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._plan = None  # (log_alpha values, kept counts, unit counts) of deterministic_counts()
        dense = self._cost(self.part.exact_counts())
        self.dense_cost = {k: float(v) for k, v in dense.items()}
        reports.check_reachable(self)
        # The ramp starts where the deterministic structure starts (~0.98 at init_keep_prob
        # 0.99: it costs what the gates are expected to), so that the first gaps are not negative.
        self.ramp_start = {name: max(float(value), self.budgets[name])
                           for name, value in self.deterministic_ratios().items()}
        self._last_gaps: Dict[str, float] = {}
        self._last_expected_gaps: Dict[str, float] = {}
        # The expected gaps of the step before, one per budget (NaN: none yet); a buffer, so
        # that a resumed run holds or moves lambda1 at its first step exactly as an unbroken one.
        self.budget_names: Tuple[str, ...] = tuple(self.budgets)
        self.register_buffer("previous_expected_gaps", torch.full((len(self.budget_names),), float("nan"),
                                                                  dtype=torch.float64))
        # lambda2's step of each budget in units of its full rate (see advance()).
        self.register_buffer("lambda2_rates", torch.ones(len(self.budget_names), dtype=torch.float64))
        self._init_sizes()

    def complete_old_state(self, state_dict: Dict[str, Tensor], prefix: str) -> None:
        """Add to ``state_dict`` (in place) the controller state that checkpoints of older versions
        lack: without ``previous_expected_gaps`` a run resumes as if the step before had none
        (lambda1 moves at the first step instead of possibly holding); without ``lambda2_rates``
        lambda2's step restarts at its full rate. A state dict without any controller key under
        ``prefix`` is left alone."""
        if not any(name.startswith(prefix) for name in state_dict):
            return
        defaults = {"previous_expected_gaps": torch.full_like(self.previous_expected_gaps, float("nan")),
                    "lambda2_rates": torch.ones_like(self.lambda2_rates)}
        for name, value in defaults.items():
            state_dict.setdefault(prefix + name, value)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        self.complete_old_state(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    # ------------------------------------------------------------------ masks
    def forward(self) -> Masks:
        """Masks for the part(s) (:meth:`GateBank.masks`): samples in training mode, deterministic
        masks (the budget-matching plan of :meth:`deterministic_counts`) in eval mode."""
        if not self.training:
            self.deterministic_counts()  # plans the gates' kept counts (budget-matching rounding)
        return self.gates.masks(self.step.device)

    # ------------------------------------------------------------------ cost
    def _cost(self, counts: cost.UnitCounts) -> Dict[str, Tensor]:
        return metric_cost(self.metric, self.part, counts)

    def expected_cost(self) -> Dict[str, Tensor]:
        """Expected cost (MACs or params) of the part, e.g. ``{"cnn", "pos_conv", "transformer",
        "total"}`` of the SSL encoder."""
        return self._cost(self.gates.expected_counts())

    def budget_ratios(self, costs: Dict[str, Union[float, Tensor]]) -> Dict[str, Union[float, Tensor]]:
        """Keep ratio of each budget for ``costs`` (``{"cnn", "total", ...}`` of this metric;
        :func:`~espnet_prune.pruning.metrics.budget_ratios`)."""
        return budget_ratios(self.part, self.budgets, costs, self.dense_cost)

    def expected_ratios(self) -> Dict[str, Tensor]:
        """Expected keep ratio of each budget: ``total``, or ``cnn`` and ``transformer``."""
        return self.budget_ratios(self.expected_cost())

    def deterministic_counts(self) -> cost.UnitCounts:
        """Exact unit counts of the deterministic (eval / export) mask, as Python numbers: the
        budget-matching rounding (:func:`~espnet_prune.pruning.rounding.match_budgets`) of the
        gates to the expected ratios (:meth:`expected_ratios`). The chosen counts are stored as the
        gates' ``planned_kept``, so the eval masks, and export, keep exactly this structure.
        """
        movable = self.gates.movable()
        # The plan depends on log_alpha only: reuse it until an optimizer step (or a load) changes them.
        key = torch.cat([gate.log_alpha.detach().reshape(-1) for gate, _, _ in movable]).cpu()
        if self._plan is not None and torch.equal(self._plan[0], key):
            for (gate, _, _), count in zip(movable, self._plan[1]):
                gate.planned_kept = count
            return copy_counts(self._plan[2])
        rounded = self.rounded_counts()
        with torch.no_grad():
            expected = {name: float(value) for name, value in self.expected_ratios().items()}
        kept, counts = match_budgets(movable, rounded, expected, lambda counts: self.budget_ratios(self._cost(counts)))
        for (gate, _, _), count in zip(movable, kept):
            gate.planned_kept = count
        self._plan = (key, kept, copy_counts(counts))
        return counts

    def rounded_counts(self) -> cost.UnitCounts:
        """Unit counts when every gate rounds alone (:meth:`GateBank.rounded_counts`)."""
        return self.gates.rounded_counts()

    def deterministic_ratios(self) -> Dict[str, float]:
        """Keep ratio of each budget for the structure the deterministic mask keeps (what
        export produces), ``{budget: float}``."""
        ratios = self.budget_ratios(self._cost(self.deterministic_counts()))
        return {name: float(value) for name, value in ratios.items()}

    def minimum_ratios(self) -> Dict[str, float]:
        """Keep ratio of each budget when every gate keeps as little as it can (``min_keep``
        units; no sublayer): the floor the gated ``units`` can reach on this encoder."""
        counts = self.gates.minimum_counts()
        return {name: float(value) for name, value in self.budget_ratios(self._cost(counts)).items()}

    def current_targets(self) -> Dict[str, float]:
        """Each budget's target at the current step: linear from ``ramp_start`` (the deterministic
        structure's ratio at initialisation, ~0.98) to its final value over ``warmup_steps``, then
        constant; with several sizes, the schedule's (``SizeSchedule.targets_at``)."""
        if self.size_schedule is not None:
            return self.size_schedule.targets_at(int(self.step))
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
            ``target_<budget>``, ``lambda1_<budget>``, ``lambda2_<budget>``, ``lambda2_rate_<budget>``
            (lambda2's step in units of its full rate, see :meth:`advance`) as floats.
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
                          f"lambda2_{name}": float(lambda_2),
                          f"lambda2_rate_{name}": float(self.lambda2_rates[self.budget_names.index(name)])})
        return loss, stats

    @torch.no_grad()
    def advance(self, multiplier_lr: float = 0.0, lambda2_lr_scale: Optional[float] = None) -> None:
        """One optimisation step: move the multipliers, then the target schedule.

        Each budget's multipliers take one :func:`~espnet_prune.pruning.multipliers.multiplier_step`
        from the gaps of the latest :meth:`regularization` (lambda1 held while the expected gap
        closes; lambda2's step grows while the gap is stalled, see there).

        Args:
            multiplier_lr: full-rate step of lambda1 (``reg_lr``); 0 only counts the step.
            lambda2_lr_scale: lambda2 moves this many times faster (the quadratic term is the
                restoring force that damps the oscillation around the target); ``None``: the
                pruning config's ``lambda2_lr_scale``.
        """
        if lambda2_lr_scale is None:
            lambda2_lr_scale = self.pruning.lambda2_lr_scale
        if multiplier_lr > 0:
            for name, gap in self._last_gaps.items():
                index = self.budget_names.index(name)
                step = multiplier_step(gap, self._last_expected_gaps[name], float(self.previous_expected_gaps[index]),
                                       float(self.lambda2_rates[index]), multiplier_lr, lambda2_lr_scale)
                self.lambda2_rates[index] = step.rate
                if step.lambda_1 is not None:
                    self.lambda_1[name].add_(step.lambda_1)
                self.lambda_2[name].add_(step.lambda_2)
        self.previous_expected_gaps.copy_(torch.tensor(
            [self._last_expected_gaps.get(name, float("nan")) for name in self.budget_names], dtype=torch.float64))
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
        """``{gate name: units whose keep probability lies inside UNDECIDED}`` (:meth:`GateBank.undecided_units`)."""
        return self.gates.undecided_units()

    def budget_report(self, tolerance: float = BUDGET_TOLERANCE) -> Dict[str, Dict]:
        """Where every budget of the selected size stands: ``{budget: {target, expected,
        deterministic, reached, advice}}``; ``reached`` when the deterministic ratio is within
        ``tolerance`` of the final target, ``advice`` (a sentence, or ``None``) says what to change
        otherwise (:mod:`espnet_prune.pruning.reports`)."""
        return reports.budget_report(self, tolerance)

    def budget_warnings(self, tolerance: float = BUDGET_TOLERANCE) -> List[str]:
        """One sentence per budget of the selected size that ends more than ``tolerance`` from its target."""
        return reports.budget_warnings(self, tolerance)

    def sizes_report(self, tolerance: float = BUDGET_TOLERANCE) -> List[Dict]:
        """Where every size stands (:func:`~espnet_prune.pruning.reports.sizes_report`)."""
        return reports.sizes_report(self, tolerance)

    def size_warnings(self, tolerance: float = BUDGET_TOLERANCE) -> List[str]:
        """One sentence per budget of every size that ends more than ``tolerance`` from its target
        (or was never reached); ``[]`` for a run with one size."""
        return reports.training_warnings(self, tolerance) if self.size_schedule is not None else []

    # ------------------------------------------------------------------ several sizes
    # (``targets`` / ``cnn_targets`` / ``transformer_targets``; see espnet_prune.pruning.multisize)
    def _init_sizes(self) -> None:
        """The stage schedule and the snapshots of a run with several sizes (``None`` otherwise)."""
        self.sizes: List[Dict[str, float]] = self.pruning.sizes()
        self.size_schedule: Optional[SizeSchedule] = None
        self.selected_size = len(self.sizes) - 1
        if len(self.sizes) < 2:
            return
        start = {name: max(float(value), self.sizes[0][name]) for name, value in self.deterministic_ratios().items()}
        self.ramp_start = start
        setattr(self, SNAPSHOTS_ATTRIBUTE, SizeSnapshots(len(self.sizes) - 1, list(self.budgets)))
        # The steps the snapshots were taken at are part of the checkpointed state (their records).
        self.size_schedule = SizeSchedule(self.sizes, self.warmup_steps, self.pruning.effective_hold_steps, start,
                                          ends=self.snapshots.ends)

    @property
    def snapshots(self) -> Optional[SizeSnapshots]:
        """The :class:`SizeSnapshots` of a run with several sizes, else ``None``."""
        return getattr(self, SNAPSHOTS_ATTRIBUTE, None)

    def select_size(self, index: int) -> None:
        """Report (``budget_report``) on size ``index``: its targets become ``budgets``."""
        if not 0 <= index < len(self.sizes):
            raise IndexError(f"size {index} of {len(self.sizes)}")
        self.selected_size = index
        self.budgets = {name: float(value) for name, value in self.sizes[index].items()}

    def schedule_stats(self) -> Dict[str, float]:
        """Reporter statistics of a run with several sizes (``{}`` otherwise, see
        :meth:`SizeSchedule.stats`; ``target_<budget>`` of :meth:`regularization` is the ramped one)."""
        return {} if self.size_schedule is None else self.size_schedule.stats(int(self.step))

    def take_due_snapshots(self, model: nn.Module, tolerance: float = BUDGET_TOLERANCE) -> None:
        """After an optimizer step: keep ``model``'s state of the size whose hold ends now (once it
        lasted ``hold_steps`` and the structure is within ``tolerance`` of the size's targets, or the
        extension is used up; see :class:`~espnet_prune.pruning.multisize.SizeSchedule`)."""
        step = int(self.step)
        stage = None if self.size_schedule is None else self.size_schedule.awaiting_snapshot(step)
        if stage is None:
            return
        deterministic = self.deterministic_ratios()
        on_target = all(abs(deterministic[name] - target) <= tolerance for name, target in stage.targets.items())
        if self.size_schedule.due(step, on_target) is None:
            return
        with torch.no_grad():
            expected = {name: float(value) for name, value in self.expected_ratios().items()}
        self.snapshots.take(stage.index, model, step, deterministic, expected)
