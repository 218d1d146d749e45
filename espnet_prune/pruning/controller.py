"""The pruning controller: gates, expected cost, target schedule and Lagrangian in one place.

The encoder (:class:`espnet_prune.ssl.model.SSLEncoder`) only consumes masks. This
module owns everything else of HJ-Pruning: one hard-concrete gate per pruning unit,
the differentiable expected cost (parameters or MACs, via :mod:`espnet_prune.ssl.cost`),
the budget(s) whose target ramps from 1.0 down during warm-up, and the Lagrange
multipliers that are maximised while everything else is minimised.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from espnet_prune.layers.hard_concrete import HardConcreteGate
from espnet_prune.pruning.config import METRICS, PruningConfig
from espnet_prune.ssl import cost
from espnet_prune.ssl.config import EncoderConfig
from espnet_prune.ssl.model import UNIT_TYPES, Masks


class _ReverseGradient(torch.autograd.Function):
    """Identity forward, negated gradient backward: turns descent into ascent."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return -grad


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

        def gate(n: int) -> HardConcreteGate:
            return HardConcreteGate(n, temperature=temperature, init_keep_prob=init_keep_prob)

        num_layers = config.num_layers
        self.gates = nn.ModuleDict()
        if "conv" in units:
            # A CNN layer must keep one channel, or the encoder's input is cut off.
            self.gates["conv"] = nn.ModuleList(
                HardConcreteGate(c, temperature=temperature, init_keep_prob=init_keep_prob, min_keep=1)
                for c in config.conv_channels)
        for unit, widths, present in (("head", config.num_heads, config.use_attention),
                                      ("interm", config.ffn_dims, config.use_ffn)):
            if unit in units:
                self.gates[unit] = nn.ModuleDict(
                    {str(l): gate(widths[l]) for l in range(num_layers) if present[l] and widths[l] > 0})
        for unit, present in (("attn_layer", config.use_attention), ("ffn_layer", config.use_ffn)):
            if unit in units:
                layers = [l for l in range(num_layers) if present[l]]
                if layers:
                    self.gates[unit] = gate(len(layers))
                    self.register_buffer(f"_{unit}_layers", torch.tensor(layers), persistent=False)

        self.lambda_1 = nn.ParameterDict({name: nn.Parameter(torch.zeros(())) for name in self.budgets})
        self.lambda_2 = nn.ParameterDict({name: nn.Parameter(torch.zeros(())) for name in self.budgets})
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        dense = self._cost(cost.structure_counts(config))
        self.dense_cost = {k: float(v) for k, v in dense.items()}

    # ------------------------------------------------------------------ masks
    def _layer_masks(self, unit: str, values: Optional[Tensor]) -> List[Tensor]:
        """Scatter per-present-layer gate values to a list of L scalars (1 where ungated)."""
        ones = [torch.ones((), device=self.step.device) for _ in range(self.config.num_layers)]
        if values is None:
            return ones
        for value, layer in zip(values, getattr(self, f"_{unit}_layers").tolist()):
            ones[layer] = value
        return ones

    def forward(self) -> Masks:
        """Masks for the encoder: samples in training mode, deterministic masks in eval mode.

        Returns:
            ``{"conv": [(C_i,)...], "head": [(H_l,)...], "attn_layer": [() ...], ...}`` for
            the gated unit types; ungated layers of a gated type get all-ones masks.
        """
        masks: Dict[str, List[Tensor]] = {}
        if "conv" in self.gates:
            masks["conv"] = [g() for g in self.gates["conv"]]
        for unit, widths in (("head", self.config.num_heads), ("interm", self.config.ffn_dims)):
            if unit in self.gates:
                gates = self.gates[unit]
                masks[unit] = [gates[str(l)]() if str(l) in gates else
                               torch.ones(widths[l], device=self.step.device)
                               for l in range(self.config.num_layers)]
        for unit in ("attn_layer", "ffn_layer"):
            if unit in self.gates:
                masks[unit] = self._layer_masks(unit, self.gates[unit]())
        return masks

    # ------------------------------------------------------------------ cost
    def expected_counts(self) -> cost.UnitCounts:
        """Expected unit counts under the gate distributions (differentiable w.r.t. ``log_alpha``).

        Heads and FFN units of a layer count as kept only with their sublayer; the
        sublayer probability multiplies them in the cost model.
        """
        exact = cost.structure_counts(self.config)
        counts: Dict[str, list] = {key: list(values) for key, values in exact.items()}
        if "conv" in self.gates:
            counts["conv"] = [g.expected_kept() for g in self.gates["conv"]]
        for unit, key in (("head", "heads"), ("interm", "interm")):
            if unit in self.gates:
                for name, g in self.gates[unit].items():
                    counts[key][int(name)] = g.expected_kept()
        for unit in ("attn_layer", "ffn_layer"):
            if unit in self.gates:
                probs = self.gates[unit].keep_prob()
                for p, layer in zip(probs, getattr(self, f"_{unit}_layers").tolist()):
                    counts[unit][layer] = p
        return counts

    def _cost(self, counts: cost.UnitCounts) -> Dict[str, Tensor]:
        if self.metric == "macs":
            return cost.count_macs(self.config, self.reference_seconds, counts)
        return cost.count_params(self.config, counts)

    def expected_cost(self) -> Dict[str, Tensor]:
        """Expected ``{"cnn", "pos_conv", "transformer", "total"}`` cost (MACs or params)."""
        return self._cost(self.expected_counts())

    def expected_ratios(self) -> Dict[str, Tensor]:
        """Expected keep ratio of each budget: ``total``, or ``cnn`` and ``transformer``."""
        expected = self.expected_cost()
        dense = self.dense_cost
        ratios = {}
        for name in self.budgets:
            if name == "total":
                ratios[name] = expected["total"] / dense["total"]
            elif name == "cnn":
                ratios[name] = expected["cnn"] / dense["cnn"]
            else:
                ratios[name] = (expected["total"] - expected["cnn"]) / (dense["total"] - dense["cnn"])
        return ratios

    def current_targets(self) -> Dict[str, float]:
        """Each budget's target at the current step: linear from 1.0 to its final value."""
        progress = 1.0 if self.warmup_steps == 0 else min(1.0, int(self.step) / self.warmup_steps)
        return {name: 1.0 - (1.0 - final) * progress for name, final in self.budgets.items()}

    # ------------------------------------------------------------------ Lagrangian
    def regularization(self) -> Tuple[Tensor, Dict[str, float]]:
        """Lagrangian term ``sum_b lambda1_b (c_b - t_b) + lambda2_b (c_b - t_b)^2`` and stats.

        Minimising the returned loss trains the gates toward the budget and, through a
        reversed gradient, maximises the multipliers, whatever optimizer is used.

        Returns:
            ``(loss, stats)``; stats hold ``expected_<budget>``, ``target_<budget>``,
            ``lambda1_<budget>``, ``lambda2_<budget>`` as floats.
        """
        ratios = self.expected_ratios()
        targets = self.current_targets()
        loss = torch.zeros((), device=self.step.device)
        stats: Dict[str, float] = {}
        for name, ratio in ratios.items():
            gap = ratio - targets[name]
            lambda_1 = _ReverseGradient.apply(self.lambda_1[name])
            lambda_2 = _ReverseGradient.apply(self.lambda_2[name])
            loss = loss + lambda_1 * gap + lambda_2 * gap * gap
            stats.update({f"expected_{name}": float(ratio.detach()), f"target_{name}": targets[name],
                          f"lambda1_{name}": float(self.lambda_1[name].detach()),
                          f"lambda2_{name}": float(self.lambda_2[name].detach())})
        return loss, stats

    def advance(self) -> None:
        """Count one optimisation step (moves the target schedule)."""
        self.step += 1

    def gate_parameters(self) -> List[nn.Parameter]:
        """All ``log_alpha`` parameters."""
        return [p for name, p in self.named_parameters() if name.endswith("log_alpha")]

    def lagrangian_parameters(self) -> List[nn.Parameter]:
        """The multipliers lambda1 and lambda2 of every budget."""
        return list(self.lambda_1.values()) + list(self.lambda_2.values())

    def parameter_groups(self, reg_lr: float, lambda2_lr_scale: float = 10.0) -> List[Dict]:
        """Optimizer parameter groups: gates and lambda1 at ``reg_lr``, lambda2 faster.

        The quadratic term ``lambda2 (c - t)^2`` reacts to the gap at once, the linear one
        only as lambda1 accumulates; letting lambda2 grow faster damps the oscillation of
        the expected cost around the target. No weight decay on any of them.
        """
        return [
            {"params": self.gate_parameters() + list(self.lambda_1.values()), "lr": reg_lr, "weight_decay": 0.0},
            {"params": list(self.lambda_2.values()), "lr": reg_lr * lambda2_lr_scale, "weight_decay": 0.0},
        ]

    def describe(self) -> str:
        """One line per unit type: kept / total units of the deterministic mask."""
        was_training = self.training
        self.eval()
        with torch.no_grad():
            masks = self()
        self.train(was_training)
        lines = []
        for unit, values in masks.items():
            kept = sum(int((v != 0).sum()) for v in values)
            total = sum(v.numel() for v in values)
            lines.append(f"{unit}: {kept}/{total} kept")
        return "; ".join(lines)

