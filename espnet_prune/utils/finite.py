"""Numeric checks that a NaN or an Inf cannot pass.

Python's comparisons are all false for NaN, so ``if diff > tol: fail`` lets a NaN through and
``max(0.0, nan)`` returns 0.0. The checks here are written the other way round (a value
passes only if ``value <= tol`` holds) and every difference is NaN as soon as either side
holds a non-finite value.
"""

import math
from typing import Iterable, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn


class NonFiniteError(ValueError):
    """A model or a feature tensor holds NaN or Inf values."""


def first_nonfinite(tensors: Union[nn.Module, Mapping[str, Tensor], Iterable[Tuple[str, Tensor]]]
                    ) -> Optional[Tuple[str, int, int]]:
    """The first floating-point tensor with NaN or Inf values, in the order given.

    Args:
        tensors: a module (its ``state_dict()``, parameters and buffers), a state dict, or
            ``(name, tensor)`` pairs.

    Returns:
        ``(name, non-finite count, element count)``, or ``None`` when every value is finite.
    """
    if isinstance(tensors, nn.Module):
        tensors = tensors.state_dict()
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    for name, tensor in items:
        if isinstance(tensor, Tensor) and tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                return name, bad, tensor.numel()
    return None


def check_finite(tensors: Union[nn.Module, Mapping[str, Tensor], Iterable[Tuple[str, Tensor]]], what: str) -> None:
    """Raise :class:`NonFiniteError` naming the first tensor of ``what`` with NaN or Inf values."""
    found = first_nonfinite(tensors)
    if found is not None:
        name, bad, total = found
        raise NonFiniteError(f"{what}: tensor '{name}' has {bad} non-finite (NaN or Inf) values of {total}")


def max_abs_diff(expected: Tensor, actual: Tensor) -> float:
    """``max |expected - actual|`` over all elements; NaN if either holds a non-finite value.

    (Inf - Inf is NaN but Inf - 1 is Inf, and an Inf on both sides at the same place would read
    as equal; a non-finite value on either side is treated as a disagreement.)
    """
    if not (bool(torch.isfinite(expected).all()) and bool(torch.isfinite(actual).all())):
        return math.nan
    if expected.numel() == 0:
        return 0.0
    return float((expected - actual).abs().max())


def worst(values: Iterable[float]) -> float:
    """The largest of ``values``, NaN if any is NaN (``max()`` would skip it), 0.0 for none."""
    result = 0.0
    for value in values:
        if math.isnan(value):
            return math.nan
        result = max(result, value)
    return result

