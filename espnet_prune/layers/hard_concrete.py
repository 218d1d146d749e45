"""Hard-concrete gates for L0-regularised structured pruning (Louizos et al., 2018).

One :class:`HardConcreteGate` holds ``log_alpha`` for ``n`` units. In training it
samples a stretched, clamped concrete variable per unit; in eval it returns a
deterministic mask that keeps the expected number of units. The probability of a
unit being non-zero is differentiable and feeds the expected cost.
"""

import math
from typing import Optional

import torch
from torch import Tensor, nn


def _logit(p: Tensor) -> Tensor:
    return torch.log(p) - torch.log1p(-p)


class HardConcreteGate(nn.Module):
    """Gates for ``num_units`` pruning units.

    Args:
        num_units: number of units n the gate controls.
        temperature: concrete temperature beta.
        stretch_low: lower end l of the stretch interval (negative).
        stretch_high: upper end r of the stretch interval (above 1).
        init_keep_prob: initial probability that a unit is kept (sets ``log_alpha``).
        init_noise: std of Gaussian noise added to the initial ``log_alpha``.
        min_keep: the deterministic mask keeps at least this many units.
        align: the deterministic mask keeps a multiple of this many units (or all of them); a
            ``min_keep`` above 0 is raised to a multiple of it.

    Attributes:
        planned_kept: ``None``, or the number of units :meth:`kept` keeps instead of the rounded
            expected count; set by a controller that rounds several gates jointly (see
            ``PruningController.deterministic_counts``).
    """

    def __init__(
        self,
        num_units: int,
        temperature: float = 2.0 / 3.0,
        stretch_low: float = -0.1,
        stretch_high: float = 1.1,
        init_keep_prob: float = 0.9,
        init_noise: float = 0.01,
        min_keep: int = 0,
        align: int = 1,
    ):
        super().__init__()
        if num_units < 1:
            raise ValueError(f"A gate needs at least one unit, got num_units={num_units}")
        if not stretch_low < 0.0 < 1.0 < stretch_high:
            raise ValueError(f"Need stretch_low < 0 < 1 < stretch_high, got ({stretch_low}, {stretch_high})")
        if not 0.0 < init_keep_prob < 1.0:
            raise ValueError(f"init_keep_prob must lie in (0, 1), got {init_keep_prob}")
        self.num_units = num_units
        self.temperature = temperature
        self.stretch_low = stretch_low
        self.stretch_high = stretch_high
        if align < 1:
            raise ValueError(f"align must be >= 1, got {align}")
        self.align = align
        self.min_keep = min(-(-min_keep // align) * align, num_units)
        self.planned_kept: Optional[int] = None
        # P(z != 0) = sigmoid(log_alpha - beta * log(-l / r)); invert for the initial keep probability.
        self._shift = temperature * math.log(-stretch_low / stretch_high)
        init = math.log(init_keep_prob / (1.0 - init_keep_prob)) + self._shift
        self.log_alpha = nn.Parameter(torch.full((num_units,), init) + init_noise * torch.randn(num_units))

    def keep_prob(self) -> Tensor:
        """Probability that each unit is non-zero, shape ``(n,)``; differentiable."""
        return torch.sigmoid(self.log_alpha - self._shift)

    def expected_kept(self) -> Tensor:
        """Expected number of non-zero units (a differentiable scalar)."""
        return self.keep_prob().sum()

    def sample(self) -> Tensor:
        """A training sample z in [0, 1], shape ``(n,)``; differentiable w.r.t. ``log_alpha``."""
        eps = 1e-6
        u = torch.rand_like(self.log_alpha).clamp(eps, 1.0 - eps)
        s = torch.sigmoid((_logit(u) + self.log_alpha) / self.temperature)
        s = s * (self.stretch_high - self.stretch_low) + self.stretch_low
        return s.clamp(0.0, 1.0)

    def num_kept(self) -> int:
        """Units the deterministic mask keeps: ``planned_kept`` if set, else the expected count
        rounded to a multiple of ``align``; at least ``min_keep``, at most ``num_units``."""
        if self.planned_kept is not None:
            kept = int(self.planned_kept)
        else:
            kept = int(round(self.expected_kept().detach().item() / self.align)) * self.align
        return max(self.min_keep, min(self.num_units, kept))

    def expected_value(self, grid_points: int = 64) -> Tensor:
        """E[z] per unit, shape ``(n,)``; always positive, close to 1 for units almost surely kept.

        z is 1 for noise ``u > u1``, 0 for ``u < u0`` and smooth in between, so
        ``E[z] = (1 - u1) + integral_{u0}^{u1} z(u) du``, the integral by the midpoint rule.
        """
        span = self.stretch_high - self.stretch_low
        low_s = torch.tensor(-self.stretch_low / span)  # s where z reaches 0
        high_s = torch.tensor((1.0 - self.stretch_low) / span)  # s where z reaches 1
        u0 = torch.sigmoid(self.temperature * _logit(low_s) - self.log_alpha)
        u1 = torch.sigmoid(self.temperature * _logit(high_s) - self.log_alpha)
        grid = torch.arange(grid_points, dtype=self.log_alpha.dtype, device=self.log_alpha.device)
        steps = (grid + 0.5) / grid_points
        u = u0[:, None] + (u1 - u0)[:, None] * steps[None, :]
        z = torch.sigmoid((_logit(u) + self.log_alpha[:, None]) / self.temperature) * span + self.stretch_low
        return (1.0 - u1) + (u1 - u0) * z.clamp(0.0, 1.0).mean(1)

    def kept(self) -> Tensor:
        """Which units the deterministic mask keeps, a bool tensor of shape ``(n,)``: the
        ``num_kept()`` units with the largest ``log_alpha``."""
        with torch.no_grad():
            kept = torch.zeros(self.num_units, dtype=torch.bool, device=self.log_alpha.device)
            kept[torch.topk(self.log_alpha, self.num_kept()).indices] = True
            return kept

    def deterministic(self) -> Tensor:
        """Eval mask, shape ``(n,)``.

        The units of ``kept()`` keep their expected value E[z] (so the next layer sees, on
        average, what it saw in training); all others are exactly zero. Physical pruning
        removes the zero units and folds the rest into weights.
        """
        with torch.no_grad():
            return torch.where(self.kept(), self.expected_value(), torch.zeros_like(self.log_alpha))

    def forward(self) -> Tensor:
        """``sample()`` in training mode, ``deterministic()`` in eval mode; shape ``(n,)``."""
        return self.sample() if self.training else self.deterministic()
