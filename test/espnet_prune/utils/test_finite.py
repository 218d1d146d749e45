"""NaN-proof numeric checks: a non-finite value never reads as a small difference."""

import math

import pytest
import torch

from espnet_prune.utils.finite import NonFiniteError, check_finite, first_nonfinite, max_abs_diff, worst


def test_max_abs_diff_is_nan_for_any_non_finite_value():
    a = torch.tensor([1.0, 2.0, 3.0])
    assert max_abs_diff(a, a + 0.5) == 0.5
    for bad in (math.nan, math.inf, -math.inf):
        b = a.clone()
        b[1] = bad
        assert math.isnan(max_abs_diff(a, b)) and math.isnan(max_abs_diff(b, a))
        assert math.isnan(max_abs_diff(b, b))  # an Inf on both sides is no agreement
        assert not max_abs_diff(a, b) <= 1e-3
    assert max_abs_diff(torch.zeros(0), torch.zeros(0)) == 0.0


def test_worst_keeps_nan_where_max_drops_it():
    assert max(0.0, math.nan) == 0.0  # the pattern this replaces
    assert math.isnan(worst([0.1, math.nan, 0.2]))
    assert worst([0.1, 0.3, 0.2]) == 0.3 and worst([]) == 0.0


def test_check_finite_names_the_first_bad_tensor():
    module = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2))
    assert first_nonfinite(module) is None
    check_finite(module, "model")
    with torch.no_grad():
        module[1].weight[0, 2] = math.nan
        module[1].bias[1] = math.inf
    assert first_nonfinite(module) == ("1.weight", 1, 6)
    with pytest.raises(NonFiniteError, match=r"model.pth: tensor '1.weight' has 1 non-finite"):
        check_finite(module, "model.pth")
    assert first_nonfinite([("steps", torch.tensor([1, 2]))]) is None  # integer tensors have no NaN
