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
speed depends on the current gap, and for lambda2 also on how long the gap has been stalled
(:meth:`PruningController.advance`).

The constraint value is the cost of the deterministic mask, the structure that export
keeps, with the expected cost's gradient (a straight-through estimate): it is the exported
size that has to meet the target. That mask rounds the gates jointly so that its cost
matches the expected cost (:meth:`PruningController.deterministic_counts`); rounding each gate
alone made an undecided sublayer cost all or nothing of it, steps of ~11 % on small models.
"""

import heapq
import itertools
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from espnet_prune.layers.hard_concrete import HardConcreteGate
from espnet_prune.pruning.config import PruningConfig
from espnet_prune.pruning.multisize import SNAPSHOTS_ATTRIBUTE, SizeSchedule, SizeSnapshots, size_label
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
#: The gap counts as stalled while, at the speed it shrank since the previous step, it would
#: take more than this many steps to vanish (or while it widens).
STALLED_STEPS = 200
#: lambda2's step (its full rate times ``lambda2_rates``) grows by this factor per step for as
#: long as the gap is stalled at or above GAP_SCALE (see :meth:`PruningController.advance`) ...
LAMBDA2_RATE_GROWTH = 1.02
#: ... up to this many times its full rate ...
LAMBDA2_RATE_MAX = 32.0
#: ... and shrinks by this factor (not below 1) when the gap changes sides.
LAMBDA2_RATE_SHRINK = 0.5
#: A budget counts as reached when its deterministic (exported) ratio is this close to its target.
BUDGET_TOLERANCE = 0.02
#: Recommended run length: at least this many times ``warmup_steps`` optimizer steps.
RUN_LENGTH_PER_WARMUP = 2.0
#: Recommended minimum of ``warmup_steps * reg_lr`` per metric: the gates need about ``5 / reg_lr``
#: steps to start moving, which should be a small part of the ramp, and lambda1 grows by at most
#: ``reg_lr`` per step. A params budget needs about twice the multiplier of a MAC budget: most
#: parameters sit in Transformer heads and FFN units, which the task resists losing, while MACs
#: can go with CNN channels (README, "Reaching the budget").
MIN_WARMUP_TIMES_LR = {"macs": 10.0, "params": 20.0}
#: Passes of the budget-matching rounding (:meth:`PruningController.deterministic_counts`).
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
        warmup_steps, reference_seconds = pruning.warmup_steps, pruning.reference_seconds
        temperature, init_keep_prob = pruning.temperature, pruning.init_keep_prob

        self.config = config
        self.units = units
        self.metric = metric
        self.warmup_steps = int(warmup_steps)
        self.reference_seconds = float(reference_seconds)
        # The budgets of the (last, with ``targets``: smallest) size; see _init_sizes.
        self.budgets: Dict[str, float] = {name: float(value) for name, value in pruning.sizes()[-1].items()}

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
        self._plan = None  # (log_alpha values, kept counts, unit counts) of deterministic_counts()
        dense = self._cost(cost.structure_counts(config))
        self.dense_cost = {k: float(v) for k, v in dense.items()}
        self._check_reachable()
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
        self.multiplier_lr: Optional[float] = None  # reg_lr, as last given to advance()
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
        if not self.training:
            self.deterministic_counts()  # plans the gates' kept counts (budget-matching rounding)
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
        """Exact unit counts of the deterministic (eval / export) mask, as Python numbers.

        Budget-matching rounding: every gate first keeps its rounded expected number of units
        (a sublayer gate: the layers with the largest ``log_alpha``); then units are added or
        removed one gate step at a time, the most probable additions and least probable removals
        first, while that brings the structure's budget ratios closer to the expected ones
        (:meth:`expected_ratios`). Rounding each gate alone misses the expected cost by up to a
        whole sublayer when a sublayer gate is undecided (keep probability ~0.5: half the
        sublayer's cost in expectation, none or all of it in the structure), a step of ~11 % on the
        demo's 3-layer encoder; the CNN channels, heads and FFN units of the kept sublayers (or the
        next sublayer, when no fine unit is left to move) absorb that difference. The chosen counts
        are stored as the gates' ``planned_kept``, so the eval masks, and export, keep exactly this
        structure.
        """
        movable = self._movable_gates()
        # The plan depends on log_alpha only: reuse it until an optimizer step (or a load) changes them.
        key = torch.cat([gate.log_alpha.detach().reshape(-1) for gate, _, _ in movable]).cpu()
        if self._plan is not None and torch.equal(self._plan[0], key):
            for (gate, _, _), count in zip(movable, self._plan[1]):
                gate.planned_kept = count
            return {name: list(values) for name, values in self._plan[2].items()}
        rounded = self.rounded_counts()
        with torch.no_grad():
            expected = {name: float(value) for name, value in self.expected_ratios().items()}
            # Keep probabilities by descending log_alpha: keep_prob is monotone in log_alpha, so this is
            # keep_prob sorted (a sort is cheaper than gathering by argsort, which spreads over threads).
            order = [gate.keep_prob().sort(descending=True).values.tolist() for gate, _, _ in movable]
        names = list(self.budgets)

        def gaps(counts: cost.UnitCounts) -> List[float]:
            found = self.budget_ratios(self._cost(counts))
            return [expected[name] - float(found[name]) for name in names]

        def fill(kept: List[int]) -> Tuple[float, List[int], cost.UnitCounts]:
            """Greedy moves of the fine gates from ``kept``; sublayer gates stay."""
            kept = list(kept)
            counts = {key: list(values) for key, values in rounded.items()}
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
                    probe = now + 1 if now < gate.num_units else now - 1
                    assign(counts, probe)
                    deltas[position] = [(before - after) / (probe - now)
                                        for before, after in zip(residual, gaps(counts))]
                    assign(counts, now)
                # Candidates (priority, gate position, +1 add / -1 remove), most probable first: each
                # gate's additions and removals are already in that order, so they are merged (stably,
                # as a sort of all of them would order them) rather than sorted, and a stream stops
                # once blocked: the loop below would skip its remaining candidates anyway.
                blocked = set()

                def stream(position: int, sign: int):
                    probs, count = order[position], kept[position]
                    if sign > 0:
                        items = ((p, position, 1) for p in probs[count:] if p >= PLAN_MIN_ADD_PROB)
                    else:
                        min_keep = movable[position][0].min_keep
                        items = ((1.0 - probs[i], position, -1) for i in range(count - 1, min_keep - 1, -1))
                    for item in items:
                        yield item
                        if (position, sign) in blocked:
                            return

                streams = [stream(position, sign) for position, delta in deltas.items() if any(delta)
                           for sign in (1, -1)]
                for _, position, sign in heapq.merge(*streams, key=lambda item: -item[0]):
                    if (position, sign) in blocked:
                        continue
                    moved = [r - sign * d for r, d in zip(residual, deltas[position])]
                    if sum(abs(r) for r in moved) >= sum(abs(r) for r in residual) - 1e-12:
                        blocked.add((position, sign))  # its next units overshoot as much
                        continue
                    kept[position] += sign
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
        for (gate, assign, _), count in zip(movable, kept):
            gate.planned_kept = count
        self._plan = (key, kept, {name: list(values) for name, values in counts.items()})
        return counts

    def _movable_gates(self) -> List[Tuple[HardConcreteGate, Callable[[cost.UnitCounts, int], None], bool]]:
        """``(gate, assign, is_sublayer_gate)`` of every gate; ``assign(counts, k)`` writes "the gate
        keeps k units" into unit counts."""
        movable = []
        for unit in self.gated_units:
            if unit.name not in self.gates:
                continue
            gates = self.gates[unit.name]
            if unit.scalar:
                layers = getattr(self, f"_{unit.name}_layers").tolist()

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

    def rounded_counts(self) -> cost.UnitCounts:
        """Unit counts when every gate rounds alone (its rounded expected count, no budget
        matching), as Python numbers; clears the gates' ``planned_kept``."""
        for module in self.modules():
            if isinstance(module, HardConcreteGate):
                module.planned_kept = None
        counts = cost.structure_counts(self.config)
        with torch.no_grad():
            for unit in self.gated_units:
                counts[unit.name] = self._per_layer(unit, lambda gate: gate.num_kept(),  # = kept().sum()
                                                    lambda gate: [int(kept) for kept in gate.kept().tolist()],
                                                    counts[unit.name])
        return counts

    def deterministic_ratios(self) -> Dict[str, float]:
        """Keep ratio of each budget for the structure the deterministic mask keeps (what
        export produces), ``{budget: float}``."""
        ratios = self.budget_ratios(self._cost(self.deterministic_counts()))
        return {name: float(value) for name, value in ratios.items()}

    def minimum_ratios(self) -> Dict[str, float]:
        """Keep ratio of each budget when every gate keeps as little as it can (``min_keep``
        units; no sublayer): the floor the gated ``units`` can reach on this encoder."""
        counts = cost.structure_counts(self.config)
        movable = self._movable_gates()
        for gate, assign, _ in movable:
            assign(counts, gate.min_keep)
        for gate, _, _ in movable:
            gate.planned_kept = None
        return {name: float(value) for name, value in self.budget_ratios(self._cost(counts)).items()}

    def ungated_units(self, budget: str) -> List[str]:
        """Units that ``units`` does not gate but could lower ``budget`` (``total``, ``cnn`` or
        ``transformer``) on this encoder: CNN units for ``cnn``, Transformer units for
        ``transformer``, either for ``total``; only those the encoder has (:meth:`Unit.gated_layers`)."""
        return [unit.name for unit in UNITS
                if unit.name not in self.units and unit.gated_layers(self.config)
                and (budget == "total" or unit.cnn == (budget == "cnn"))]

    def _check_reachable(self) -> None:
        """A target within :data:`BUDGET_TOLERANCE` of :meth:`minimum_ratios` (or below) is reached
        only by removing (nearly) every gated unit: say so before training."""
        floor = self.minimum_ratios()
        for size in self.pruning.sizes():
            for name, target in size.items():
                if target < floor[name] + BUDGET_TOLERANCE:
                    more = self.ungated_units(name)
                    remedy = (f", or gate more units (add {', '.join(more)} to units)" if more else
                              f" (units already gates every unit of this encoder that counts in budget '{name}')")
                    raise ValueError(
                        f"pruning budget '{name}' ({self.metric}) target {target:g} is out of reach: removing "
                        f"every unit that units {self.units} gate leaves {floor[name]:.4f} of the encoder's "
                        f"{self.metric} (the rest is in units that are not gated), and a target within "
                        f"{BUDGET_TOLERANCE:g} of that is met only by removing (nearly) all of them; choose a "
                        f"target above {floor[name] + BUDGET_TOLERANCE:.2f}{remedy}")

    def current_targets(self) -> Dict[str, float]:
        """Each budget's target at the current step: linear from its start (1.0, see
        ``ramp_start``) to its final value over ``warmup_steps``, then constant."""
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

        Gradient ascent of the Lagrangian in the multipliers from the gaps ``g`` of the latest
        :meth:`regularization`, normalised by :data:`GAP_SCALE` and clipped, so that a step
        depends on the current gap (no memory of the ramp's large gaps; lambda2's ``rate``
        below remembers only how long the gap has been stalled)::

            lambda1 += multiplier_lr * clip(g / GAP_SCALE, -1, 1)   # unless the gap is closing
            lambda2 += multiplier_lr * lambda2_lr_scale * rate * min((g / GAP_SCALE)^2, 1)

        lambda1 is held while the expected ratio's gap closes (shrinks without changing
        sign since the previous step, fast enough to vanish within :data:`CLOSING_STEPS`
        steps): the gates are already moving toward the target, and integrating further
        would only wind lambda1 up. Saturated gates (keep probability
        near 1 at the start) respond only to a large multiplier; without this hold that
        multiplier, far above what the gates need once they move, overshoots the target
        after the ramp and takes ``lambda1 / multiplier_lr`` steps to unwind.

        ``rate`` (``lambda2_rates``, one per budget, 1 at the start) grows by
        :data:`LAMBDA2_RATE_GROWTH` per step, up to :data:`LAMBDA2_RATE_MAX`, while the gap is
        stalled (at its current speed it would not vanish within :data:`STALLED_STEPS` steps)
        at or above :data:`GAP_SCALE`, and shrinks by :data:`LAMBDA2_RATE_SHRINK`, not below 1,
        when the gap changes sides. The force the budget needs is the price at which the task
        gives up units, which scales with the task loss and the units' share of the cost
        (measured: 600-step runs whose lambda1 still rose at its full rate when they ended 2-16
        points above the target); a fixed step reaches a high price only late. The growing
        step goes to the quadratic term and not to lambda1: its force ``2 lambda2 g`` turns
        with the gap at once, so a large lambda2 holds the structure at the target, while a
        lambda1 grown as large keeps pushing past it until it has been integrated back (runs
        where lambda1's step grew overshot the target by 3 points and swung lambda1 negative).

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
                index = self.budget_names.index(name)
                scaled = gap / GAP_SCALE
                now = self._last_expected_gaps[name]
                before = float(self.previous_expected_gaps[index])
                # On the same side as the step before (NaN: no step before), shrinking this much per step.
                same_side, shrink = now * before > 0, abs(before) - abs(now)
                closing = same_side and shrink * CLOSING_STEPS > abs(now)
                stalled = same_side and shrink * STALLED_STEPS <= abs(now)
                rate = float(self.lambda2_rates[index])
                if now * before < 0:
                    rate = max(1.0, rate * LAMBDA2_RATE_SHRINK)
                elif stalled and abs(gap) >= GAP_SCALE:
                    rate = min(LAMBDA2_RATE_MAX, rate * LAMBDA2_RATE_GROWTH)
                self.lambda2_rates[index] = rate
                if not closing:
                    self.lambda_1[name].add_(multiplier_lr * max(-1.0, min(1.0, scaled)))
                self.lambda_2[name].add_(multiplier_lr * rate * lambda2_lr_scale * min(scaled * scaled, 1.0))
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
        if self.size_schedule is not None:
            return self._size_budget_report(tolerance)
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
                elif (self.multiplier_lr is not None
                      and warmup * self.multiplier_lr < MIN_WARMUP_TIMES_LR[self.metric]):
                    advice = (f"warmup_steps x reg_lr = {warmup * self.multiplier_lr:g} is below "
                              f"{MIN_WARMUP_TIMES_LR[self.metric]:g} (for a {self.metric} budget), so the gates "
                              "and lambda1 lag behind the ramp: raise reg_lr or warmup_steps (and train at least "
                              "twice warmup_steps)")
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
        """Reporter statistics of a run with several sizes (``{}`` otherwise): ``stage`` (1-based
        size being ramped to or held), ``holding`` (1 once its ramp is over) and ``size_<budget>``
        (that size's target; ``target_<budget>`` of :meth:`regularization` is the ramped one)."""
        if self.size_schedule is None:
            return {}
        step = int(self.step)
        stage = self.size_schedule.stage_at(step)
        stats = {"stage": float(stage.index + 1), "holding": float(self.size_schedule.holding(step))}
        stats.update({f"size_{name}": value for name, value in stage.targets.items()})
        return stats

    def take_due_snapshots(self, model: nn.Module, tolerance: float = BUDGET_TOLERANCE) -> None:
        """After an optimizer step: keep ``model``'s state of the size whose hold ends now (once it
        lasted ``hold_steps`` and the structure is within ``tolerance`` of the size's targets, or the
        extension is used up; see :class:`~espnet_prune.pruning.multisize.SizeSchedule`)."""
        if self.size_schedule is None:
            return
        step = int(self.step)
        stage = self.size_schedule.stage_at(step)
        if stage.index == len(self.sizes) - 1 or step < stage.hold_end:
            return
        deterministic = self.deterministic_ratios()
        on_target = all(abs(deterministic[name] - target) <= tolerance for name, target in stage.targets.items())
        if self.size_schedule.due(step, on_target) is None:
            return
        with torch.no_grad():
            expected = {name: float(value) for name, value in self.expected_ratios().items()}
        self.snapshots.take(stage.index, model, step, deterministic, expected)

    def _size_budget_report(self, tolerance: float) -> Dict[str, Dict]:
        """:meth:`budget_report` of the selected size (the live gates hold its state)."""
        with torch.no_grad():
            expected = {name: float(value) for name, value in self.expected_ratios().items()}
        kept = self.deterministic_ratios()
        stage = self.size_schedule.stages[self.selected_size]
        report = {}
        for name, target in self.budgets.items():
            reached = abs(kept[name] - target) <= tolerance
            report[name] = {"target": target, "expected": expected[name], "deterministic": kept[name],
                            "reached": reached,
                            "advice": None if reached else self.size_schedule.advice(int(self.step), stage)}
        return report

    def sizes_report(self, tolerance: float = BUDGET_TOLERANCE) -> List[Dict]:
        """Where every size stands (a run with several sizes): per size ``{"size": k, "targets",
        "taken", "step", "budgets": {budget: {target, expected, deterministic, reached, advice}}}``.
        Sizes but the last come from their snapshots (``taken`` 0 when training stopped before
        the end of their hold), the last from the live gates."""
        schedule = self.size_schedule
        step = int(self.step)
        entries = []
        for stage in schedule.stages:
            if stage.index == len(schedule.stages) - 1:
                saved = (self.selected_size, self.budgets)
                self.select_size(stage.index)
                budgets = self._size_budget_report(tolerance)
                self.selected_size, self.budgets = saved
                entries.append({"size": stage.index, "targets": stage.targets, "taken": 1.0, "step": step,
                                "budgets": budgets})
                continue
            info = self.snapshots.info(stage.index)
            budgets = {}
            for name, target in stage.targets.items():
                if info["taken"] == 1.0:
                    kept = info[f"deterministic_{name}"]
                    reached = abs(kept - target) <= tolerance
                    advice = None if reached else schedule.advice(int(info["step"]), stage)
                    budgets[name] = {"target": target, "expected": info[f"expected_{name}"], "deterministic": kept,
                                     "reached": reached, "advice": advice}
                else:
                    budgets[name] = {"target": target, "expected": None, "deterministic": None, "reached": False,
                                     "advice": f"training stopped at step {step}, before this size's hold ended at "
                                               f"step {stage.hold_end}: train at least {schedule.recommended_steps} "
                                               "optimizer steps"}
            entries.append({"size": stage.index, "targets": stage.targets, "taken": info["taken"],
                            "step": int(info["step"]) if info["taken"] == 1.0 else None, "budgets": budgets})
        return entries

    def size_warnings(self, tolerance: float = BUDGET_TOLERANCE) -> List[str]:
        """One sentence per budget of every size that ends more than ``tolerance`` from its target
        (or was never reached); ``[]`` for a run with one size."""
        if self.size_schedule is None:
            return []
        warnings = []
        count = len(self.sizes)
        for entry in self.sizes_report(tolerance):
            for name, budget in entry["budgets"].items():
                if budget["reached"]:
                    continue
                where = (f"size {entry['size'] + 1} of {count} (target {size_label(entry['targets'])}): pruning "
                         f"budget '{name}' ({self.metric}) missed its target")
                if budget["deterministic"] is None:
                    warnings.append(f"{where}: {budget['advice']}")
                else:
                    warnings.append(f"{where}: the pruned structure keeps {budget['deterministic']:.3f} (expected "
                                    f"under the gates {budget['expected']:.3f}) against a target of "
                                    f"{budget['target']:.3f} at step {entry['step']}; {budget['advice']}")
        return warnings
